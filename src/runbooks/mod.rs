//! One file per runbook; this maps a command to its runbook and to what it reports.

pub mod audit;
pub mod backup;
pub mod check;
pub mod dns_cutover;
pub mod drill;
pub mod failover;
pub mod log;
pub mod pitr_restore;
pub mod promote_replica;
pub mod rollback;
pub mod status;
pub mod sync;
pub mod verify_chain;
pub mod wal;

use serde_json::Value;

use crate::cli::{BackupAction, BackupType, Command};
use crate::ctx::Ctx;
use crate::engine::run::{Outcome, execute};
use crate::error::Error;

/// What `--metrics-file` records of a run: runbook, env, bytes moved, runbook-specific series.
pub type MetricsOf = (String, String, Option<u64>, Vec<crate::output::metrics::Series>);

/// What a command leaves for `output` to render.
pub enum Done {
    /// A state-changing runbook's report.
    Run(Outcome),
    /// A read-only command's document (JSON) and table (text).
    Doc { json: Value, text: String, error: Option<Error>, metrics: Option<MetricsOf> },
}

impl Done {
    fn doc(r: Result<(Value, String), Error>) -> Done {
        match r {
            Ok((json, text)) => Done::Doc { json, text, error: None, metrics: None },
            Err(e) => Done::Doc { json: Value::Null, text: String::new(), error: Some(e), metrics: None },
        }
    }
}

/// A runbook's own advice after a failed run, where `Error::hint`'s generic "rerun resumes" is not
/// true of it: a backup never resumes (contract "Exit codes"), its rerun takes a new one.
pub fn rerun_hint(runbook: &str, e: &Error) -> Option<String> {
    match (runbook, e) {
        ("backup", Error::Step { .. } | Error::Store { .. } | Error::Db { .. } | Error::Io { .. }) => Some(
            "fix the cause above and rerun: a backup never resumes, the rerun takes a new one and removes this \
             run's partial objects"
                .into(),
        ),
        ("backup", Error::Interrupted { .. }) => Some(
            "rerun the same command: a backup never resumes, the rerun takes a new one and removes this run's \
             partial objects"
                .into(),
        ),
        ("drill", Error::Step { .. } | Error::Store { .. } | Error::Db { .. } | Error::Io { .. }) => Some(
            "fix the cause above and rerun: a drill never resumes, the rerun restores afresh (this run's scratch \
             database was dropped)"
                .into(),
        ),
        ("drill", Error::Interrupted { .. }) => {
            Some("rerun the same command: a drill never resumes, the rerun restores afresh".into())
        }
        ("drill", Error::OutcomeUnknown { .. }) => Some(
            "the drill was stopped and its scratch database dropped: raise [policy] restore_timeout to what a \
             restore of this backup takes, and rerun"
                .into(),
        ),
        _ => None,
    }
}

pub async fn dispatch(cx: &Ctx, command: &Command) -> Done {
    match command {
        Command::Backup(a) => match &a.action {
            None => match cx.config.resolve_env(a.env.env.as_deref()) {
                Ok(env) if a.kind == BackupType::Base => match backup::base::backup_base(cx, env) {
                    Ok(rb) => Done::Run(execute(cx, rb).await),
                    Err(e) => Done::doc(Err(e)),
                },
                Ok(env) => Done::Run(execute(cx, backup::backup(cx, env)).await),
                Err(e) => Done::doc(Err(e)),
            },
            Some(BackupAction::List { env }) => Done::doc(backup::list::list(cx, env.as_deref()).await),
            Some(BackupAction::Prune { env }) => match cx.config.resolve_env(env.env.as_deref()) {
                Ok(env) => Done::Run(execute(cx, backup::prune::prune(cx, env)).await),
                Err(e) => Done::doc(Err(e)),
            },
        },
        Command::VerifyChain(a) => {
            let v = verify_chain::verify_chain(cx, a).await;
            let metrics = Some(("verify-chain".to_string(), v.env, v.bytes, v.extra));
            Done::Doc { json: v.json, text: v.text, error: v.error, metrics }
        }
        Command::Check(a) => match check::check(cx, a.env.as_deref()).await {
            Ok((json, text, error)) => Done::Doc { json, text, error, metrics: None },
            Err(e) => Done::doc(Err(e)),
        },
        Command::Sync(a) => {
            let rb = cx.config.env(&a.from).and_then(|f| {
                cx.config
                    .env(&a.to)
                    .and_then(|t| sync::sync(cx, f, t, a.jobs.map_or_else(sync::default_jobs, usize::from)))
            });
            match rb {
                Ok(rb) => Done::Run(execute(cx, rb).await),
                Err(e) => Done::doc(Err(e)),
            }
        }
        Command::PromoteReplica(a) => {
            let rb = match cx.config.resolve_env(a.env.as_deref()) {
                Ok(env) => promote_replica::promote_replica(cx, env).await,
                Err(e) => Err(e),
            };
            match rb {
                Ok(rb) => Done::Run(execute(cx, rb).await),
                Err(e) => Done::doc(Err(e)),
            }
        }
        Command::DnsCutover(a) => match cx.config.env(&a.to) {
            Ok(to) => match dns_cutover::dns_cutover(cx, to).await {
                Ok(rb) => Done::Run(execute(cx, rb).await),
                Err(e) => Done::doc(Err(e)),
            },
            Err(e) => Done::doc(Err(e)),
        },
        Command::Failover(a) => match cx.config.env(&a.to) {
            Ok(to) => match failover::failover(cx, to).await {
                Ok(rb) => Done::Run(execute(cx, rb).await),
                Err(e) => Done::doc(Err(e)),
            },
            Err(e) => Done::doc(Err(e)),
        },
        Command::Rollback(a) => match rollback::rollback(cx, a.run.as_deref()).await {
            Ok(rb) => Done::Run(execute(cx, rb).await),
            Err(e) => Done::doc(Err(e)),
        },
        Command::Status(a) if a.audit => {
            // Its own metrics series: a failed audit must not read as a stale or unhealthy env.
            let (json, text, error) = audit::audit(cx).await;
            Done::Doc {
                json,
                text,
                error,
                metrics: Some(("status-audit".to_string(), String::new(), None, Vec::new())),
            }
        }
        Command::Status(_) => {
            let (json, text, error) = status::status(cx).await;
            Done::Doc { json, text, error, metrics: Some(("status".to_string(), String::new(), None, Vec::new())) }
        }
        Command::Log(a) => Done::doc(log::log(cx, a).await),
        Command::PitrRestore(a) => match pitr_restore::pitr_restore(cx, a).await {
            Ok(rb) => Done::Run(execute(cx, rb).await),
            Err(e) => Done::doc(Err(e)),
        },
        Command::Drill(a) => match cx.config.resolve_env(a.env.env.as_deref()) {
            Ok(env) => match drill::drill(cx, env, a.from_backup.as_deref()).await {
                Ok(rb) => Done::Run(execute(cx, rb).await),
                Err(e) => Done::doc(Err(e)),
            },
            Err(e) => Done::doc(Err(e)),
        },
        Command::WalPush(_) | Command::WalFetch(_) => {
            unreachable!("wal-push and wal-fetch run before the config loads")
        }
        Command::Completions { .. } | Command::Man => unreachable!("handled before the config loads"),
    }
}
