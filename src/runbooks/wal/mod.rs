//! wal-push (archive_command) and wal-fetch (restore_command): one WAL file a run, started by
//! PostgreSQL from the data directory with the server's environment, as often as every few
//! seconds. They replace the hand-written `aws s3 cp %p s3://…` archive_command, which checks
//! nothing, overwrites whatever is there, and whose restore twin exits 1 for every failure, so a
//! network blip during recovery reads as "end of WAL" and promotes early.
//!
//! They bypass the runbook engine: no journal entry (one a segment would dwarf the journal), no
//! lock (PostgreSQL runs one archiver; the store's conditional writes settle the rest), config
//! from `-c`, `$DRCTL_CONFIG` or `/etc/drctl/drctl.toml` only, a single-threaded runtime, and
//! the AWS clients built only when the store is first used. The on-store format is `crate::wal`.

pub mod archiving;
mod fetch;
mod push;

use std::ffi::OsString;
use std::sync::Arc;

pub use fetch::fetch_main;
pub use push::push_main;

use crate::cli::Global;
use crate::clients::aws::Aws;
use crate::config::{Config, Discovery};
use crate::error::{Error, Result, store_hint};
use crate::store::Store;

/// The config, the env's name and its store, found the way the server's commands find them.
async fn open(global: &Global, env: Option<&str>) -> Result<(Config, String, Arc<dyn Store>)> {
    let path = crate::config::discover(global.config.as_deref(), Discovery::Server)?;
    let config = Config::load(&path)?;
    let env = config.resolve_env(env)?.name.clone();
    let aws = Aws::new(config.aws.clone());
    let store = crate::store::open_with(&config.store_url, &aws, config.store_sse.clone()).await?;
    Ok((config, env, Arc::from(store)))
}

/// One thread is plenty for one file, and starts faster than a pool.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Error::io("tokio runtime", e))
}

/// `e` as the error of `command` on WAL file `name`, with the hint an operator of that command
/// needs (the generic "rerun the same command" is never it: PostgreSQL does the rerunning).
fn wal_error(command: &'static str, name: &str, e: Error, generic: &str) -> Error {
    let hint = match &e {
        Error::Wal { .. } => return e,
        Error::Config { .. } | Error::Usage { .. } => e.hint(),
        Error::Store { url, problem, .. } => store_hint(url, problem).or_else(|| Some(generic.to_string())),
        _ => Some(generic.to_string()),
    };
    Error::Wal { command, name: name.to_string(), cause: Box::new(e), hint }
}

/// Test builds only: `DRCTL_TEST_KILL_AFTER=POINT` SIGKILLs this process at POINT, as the
/// engine's steps do (`wal-push-stored`: the object is stored, its index line not yet).
fn failpoint(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("DRCTL_TEST_KILL_AFTER").is_ok_and(|s| s == point) {
        // SAFETY: kill(2) on our own pid.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    #[cfg(debug_assertions)]
    if std::env::var("DRCTL_TEST_PANIC_AT").is_ok_and(|s| s == point) {
        panic!("DRCTL_TEST_PANIC_AT={point}");
    }
    let _ = point;
}

/// For a command line clap refused: `Some(NAME)` when it is a wal-fetch one (NAME as far as it
/// can be told), so `lib::parse_failed` exits 126 instead of clap's 2.
pub fn fetch_command_line(args: &[OsString]) -> Option<String> {
    use clap::CommandFactory;
    let lenient = crate::cli::Cli::command().ignore_errors(true).try_get_matches_from(args);
    let by_clap = lenient.as_ref().ok().and_then(|m| m.subcommand_matches("wal-fetch"));
    let at = args.iter().skip(1).position(|a| a == "wal-fetch");
    if by_clap.is_none() && at.is_none() {
        return None;
    }
    let given = by_clap.and_then(|m| m.get_one::<String>("name").cloned());
    let guessed = || {
        args.iter()
            .skip(at? + 2)
            .filter_map(|a| a.to_str())
            .find(|a| crate::wal::WalFile::parse(a).is_some())
            .map(str::to_string)
    };
    Some(given.or_else(guessed).unwrap_or_else(|| "(no WAL file name)".to_string()))
}
