//! `Ctx`: what a run needs, built once after the config loads and passed down as `&Ctx`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio_util::sync::CancellationToken;

use crate::cli::Global;
use crate::clients::aws::Aws;
use crate::config::Config;
use crate::journal::Journal;
use crate::output::Output;
use crate::store::Store;

pub struct Ctx {
    pub config: Config,
    pub global: Global,
    pub aws: Aws,
    pub store: Arc<dyn Store>,
    /// The journal, read once per run (newest checkpoint + the entries after it) and shared.
    pub journal: Arc<Journal>,
    pub run_id: String,
    /// The run this process is: what it resumes, what an earlier attempt sent, report fields.
    pub run: crate::engine::runctx::RunCtx,
    pub out: Output,
    /// Cancelled on SIGINT / SIGTERM; `signal` says which.
    pub cancel: CancellationToken,
    pub signal: Arc<AtomicI32>,
}

impl Ctx {
    /// Route 53, through the process's one AWS config.
    pub async fn dns_api(&self) -> crate::clients::dns::Route53Dns {
        crate::clients::dns::Route53Dns::new(self.aws.route53().await)
    }

    /// RDS, through the process's one AWS config.
    pub async fn rds_api(&self) -> crate::clients::rds::SdkRds {
        crate::clients::rds::SdkRds::new(self.aws.rds().await)
    }

    /// `live`: `None` without `[dns]`; otherwise whether `[dns].record` points at `env`'s
    /// dns_target now, and what it points at (for messages).
    pub async fn is_live(&self, env: &crate::config::EnvConfig) -> crate::error::Result<Option<(bool, String)>> {
        use crate::clients::dns::{Dns, RecordSet, RecordType};
        let Some(dns) = &self.config.dns else { return Ok(None) };
        let rtype = RecordType::parse(&dns.kind).unwrap_or(RecordType::Cname);
        let current = self.dns_api().await.current(&dns.zone_id, &dns.record, rtype).await?;
        let live = match (&current, &env.dns_target) {
            (Some(c), Some(t)) => c.points_at(t),
            _ => false,
        };
        Ok(Some((live, format!("{} {} -> {}", dns.kind, dns.record, RecordSet::shown(current.as_ref())))))
    }

    pub fn interrupted_by(&self) -> Option<i32> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}

/// A fresh run id: sortable by time, unique across hosts (`20261125T205201Z-3f9a1c`).
pub fn new_run_id() -> String {
    let mut r = [0u8; 3];
    getrandom::fill(&mut r).expect("the OS random source");
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    format!("{}-{}", t.replace(['-', ':'], ""), hex::encode(r))
}

/// A `Ctx` over `store` for the engine's unit tests: a config with one env `x`, global flags
/// parsed from `args` as on a command line (`["--yes"]`), a fresh run id.
#[cfg(test)]
pub fn for_test(store: Arc<dyn Store>, args: &[&str]) -> Ctx {
    for_test_with(store, args, "[environments.x]\ndatabase_url = \"postgres://u@127.0.0.1:1/x\"\n")
}

/// The same with `config` (TOML, `[store]` excluded) as the config's sections.
#[cfg(test)]
pub fn for_test_with(store: Arc<dyn Store>, args: &[&str], config: &str) -> Ctx {
    use clap::Parser;
    let argv = std::iter::once("drctl").chain(args.iter().copied()).chain(["-q", "status"]);
    let cli = crate::cli::Cli::try_parse_from(argv).expect("test flags");
    let config = Config::parse(
        &format!("[store]\nurl = \"file:///nonexistent\"\n\n{config}"),
        std::path::Path::new("/test/drctl.toml"),
    )
    .expect("test config");
    let run_id = new_run_id();
    Ctx {
        config,
        global: cli.global.clone(),
        aws: Aws::new(Default::default()),
        journal: Arc::new(Journal::new(store.clone(), &run_id)),
        store,
        run_id,
        run: Default::default(),
        out: Output::new(&cli.global),
        cancel: CancellationToken::new(),
        signal: Default::default(),
    }
}
