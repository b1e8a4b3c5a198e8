//! The one error type, kept typed until `main`.
//!
//! Rules: every variant maps to one exit code of the contract (no `_` arm in `exit_code`), every
//! message names what an operator needs (file, key, env, host:port, seq) and never a secret: database
//! URLs reach messages only through `DbUrl`'s redacting `Display`. `hint()` names the next action.

use std::fmt;

pub mod exit {
    pub const OK: u8 = 0;
    pub const STEP_FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const PREFLIGHT: u8 = 3;
    pub const INTEGRITY: u8 = 4;
    pub const LOCKED: u8 = 5;
    pub const UNKNOWN_OUTCOME: u8 = 6;
    /// wal-fetch only: PostgreSQL aborts recovery above 125 instead of reading "end of WAL".
    pub const WAL_FETCH_FAILED: u8 = 126;
    pub const SIGINT: u8 = 130;
    pub const SIGTERM: u8 = 143;
}

/// Whether retrying the same call can help (throttling, 5xx, a dropped connection) or not
/// (access denied, no such bucket). Retries live in one place: the store and client wrappers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transience {
    Temporary,
    Permanent,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// drctl.toml could not be found, read, parsed or validated.
    #[error("{file}: {problem}")]
    Config { file: String, problem: String, hint: Option<String> },

    /// Command-line usage the parser could not catch (unknown env, refusing without --yes).
    #[error("{problem}")]
    Usage { problem: String, hint: Option<String> },

    /// One or more preflight checks failed; nothing was changed.
    #[error("preflight failed: {}", failed.join("; "))]
    Preflight {
        failed: Vec<String>,
        /// The failed checks `--accept` could waive (the hint names them, and only them).
        waivable: Vec<String>,
    },

    /// `status`: an env's data is older than policy.rpo, or a live env is unhealthy (exit 3).
    #[error("health/RPO breach: {}", breaches.join("; "))]
    Breach { breaches: Vec<String> },

    /// `status --audit`: a prerequisite of a recoverable setup is missing (exit 3). `failed` is
    /// each failed item as `id target` (the report shows why), `ids` their ids, once each (the
    /// hint names them).
    #[error("audit failed: {}", failed.join(", "))]
    Audit { failed: Vec<String>, ids: Vec<String> },

    /// verify-chain found nothing to verify where something was expected: an empty artifact
    /// prefix (a typo lists nothing) or an empty chain table (exit 3, like a failed check).
    #[error("nothing to verify: {what}")]
    NothingToVerify { what: String, hint: String },

    /// A store or database that must be reached was not (before or outside a step).
    #[error("{what}: {problem}")]
    Unreachable { what: String, problem: String },

    /// A chain link, checksum or object is wrong or missing.
    #[error("integrity failure in {chain} at {at}: {reason}")]
    Integrity { chain: String, at: String, reason: String },

    /// Another live run holds the lock.
    #[error("lock {target} is held by {holder} on {host} (pid {pid}) since {since}")]
    Locked { target: String, holder: String, host: String, pid: u32, since: String },

    /// This run's lock was taken over (renewal failed or a higher fence was seen).
    #[error("lost lock {target}: {why}")]
    LockLost { target: String, why: String },

    /// A step failed after preflight passed.
    #[error("step {step} failed: {problem}")]
    Step { step: String, problem: String },

    /// A store operation failed.
    #[error("store {url}: {problem}")]
    Store { url: String, problem: String, transience: Transience },

    /// A database operation failed (outside a step's own error context).
    #[error("database {target}: {problem}")]
    Db { target: String, problem: String },

    /// A wait ran past its deadline after a change was sent.
    #[error("outcome unknown: {sent} was sent, no confirmation after {waited}")]
    OutcomeUnknown { sent: String, waited: String },

    /// SIGINT or SIGTERM arrived; the running step was stopped.
    #[error("interrupted by {}", if *.signal == libc::SIGINT { "SIGINT" } else { "SIGTERM" })]
    Interrupted { signal: i32 },

    /// Local I/O (metrics file, temp files) outside the store.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },

    /// wal-push / wal-fetch: what went wrong with one WAL file, named as PostgreSQL named it.
    /// Every wal-fetch failure is exit 126 (PostgreSQL reads 1-125 from restore_command as "not
    /// archived" and would end recovery there); a wal-push failure keeps its cause's code.
    #[error("{command} {name}: {cause}")]
    Wal { command: &'static str, name: String, cause: Box<Error>, hint: Option<String> },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config { .. } | Error::Usage { .. } => exit::USAGE,
            Error::Preflight { .. }
            | Error::Breach { .. }
            | Error::Audit { .. }
            | Error::NothingToVerify { .. }
            | Error::Unreachable { .. } => exit::PREFLIGHT,
            Error::Integrity { .. } => exit::INTEGRITY,
            Error::Locked { .. } | Error::LockLost { .. } => exit::LOCKED,
            Error::Step { .. } | Error::Store { .. } | Error::Db { .. } | Error::Io { .. } => exit::STEP_FAILED,
            Error::OutcomeUnknown { .. } => exit::UNKNOWN_OUTCOME,
            Error::Wal { command: "wal-fetch", .. } => exit::WAL_FETCH_FAILED,
            Error::Wal { cause, .. } => cause.exit_code(),
            Error::Interrupted { signal } => {
                if *signal == libc::SIGINT {
                    exit::SIGINT
                } else {
                    exit::SIGTERM
                }
            }
        }
    }

    /// The contract's JSON `status` for this outcome.
    pub fn status(&self) -> &'static str {
        match self.exit_code() {
            exit::USAGE => "refused",
            exit::PREFLIGHT => "preflight_failed",
            exit::INTEGRITY => "integrity_failed",
            exit::LOCKED => "locked",
            exit::UNKNOWN_OUTCOME => "outcome_unknown",
            exit::SIGINT | exit::SIGTERM => "interrupted",
            _ => "failed",
        }
    }

    /// The operator's next action, where there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Config { hint, .. } | Error::Usage { hint, .. } => hint.clone(),
            Error::NothingToVerify { hint, .. } => Some(hint.clone()),
            Error::Preflight { waivable, .. } if waivable.is_empty() => {
                Some("fix what the failed checks name and rerun".into())
            }
            Error::Preflight { waivable, .. } => Some(format!(
                "fix what the failed checks name and rerun, or waive one deliberately (journaled): {}",
                waivable.iter().map(|id| format!("--accept {id}")).collect::<Vec<_>>().join(", ")
            )),
            Error::Breach { .. } => Some(
                "a stale env needs its sync or backup to run (see `drctl log` for why the last one did not); an unhealthy live env needs a look now".into(),
            ),
            Error::Audit { ids, .. } => Some(format!(
                "fix what each failed item's detail names, then rerun `drctl status --audit`; failed: {}",
                ids.join(", ")
            )),
            Error::Unreachable { .. } => {
                Some("check the address, credentials and network path, then run `drctl check`".into())
            }
            Error::Integrity { .. } => Some(
                "do not fail over to or restore from this data until the break is explained; see `drctl log`".into(),
            ),
            Error::Locked { .. } => Some(
                "wait for that run to finish (or pass --lock-wait 10m); a dead holder's lock is taken over once it expires".into(),
            ),
            Error::LockLost { .. } => Some(
                "another run took over this target; check `drctl log` before rerunning".into(),
            ),
            Error::Store { url, problem, .. } if store_hint(url, problem).is_some() => store_hint(url, problem),
            Error::Step { .. } | Error::Store { .. } | Error::Db { .. } | Error::Io { .. } => Some(
                "fix the cause above and rerun the same command: completed steps are skipped".into(),
            ),
            Error::OutcomeUnknown { .. } => {
                Some("rerun the same command: it resumes by waiting, never by sending again".into())
            }
            Error::Interrupted { .. } => Some("rerun the same command to resume".into()),
            Error::Wal { cause, hint, .. } => hint.clone().or_else(|| cause.hint()),
        }
    }

    pub fn config(file: impl fmt::Display, problem: impl Into<String>) -> Self {
        Error::Config { file: file.to_string(), problem: problem.into(), hint: None }
    }

    pub fn usage(problem: impl Into<String>) -> Self {
        Error::Usage { problem: problem.into(), hint: None }
    }

    pub fn step(step: impl Into<String>, problem: impl fmt::Display) -> Self {
        Error::Step { step: step.into(), problem: problem.to_string() }
    }

    /// Preflight failed on `checks` (those not ok and not accepted).
    pub fn preflight<'a>(checks: impl IntoIterator<Item = &'a crate::engine::step::Check>) -> Self {
        let failed: Vec<&crate::engine::step::Check> = checks.into_iter().filter(|c| !c.ok && !c.accepted).collect();
        Error::Preflight {
            waivable: failed
                .iter()
                .filter(|c| crate::engine::step::waivable(&c.check))
                .map(|c| c.check.clone())
                .collect(),
            failed: failed.iter().map(|c| format!("{}: {}", c.check, c.detail)).collect(),
        }
    }

    pub fn integrity(chain: impl Into<String>, at: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Integrity { chain: chain.into(), at: at.into(), reason: reason.into() }
    }

    pub fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io { path: path.to_string(), source }
    }

    pub fn with_hint(self, h: impl Into<String>) -> Self {
        match self {
            Error::Config { file, problem, .. } => Error::Config { file, problem, hint: Some(h.into()) },
            Error::Usage { problem, .. } => Error::Usage { problem, hint: Some(h.into()) },
            other => other,
        }
    }
}

/// What to do about a store error whose cause the store named with an `(S3 CODE)` suffix
/// (store/s3.rs `describe`): the setup is wrong, so rerunning as is cannot help.
pub fn store_hint(url: &str, problem: &str) -> Option<String> {
    let bucket = url.strip_prefix("s3://").and_then(|r| r.split('/').next()).unwrap_or(url);
    let code = problem.trim_end().strip_suffix(')')?.rsplit_once("(S3 ")?.1;
    Some(match code {
        "NoSuchBucket" => format!(
            "create it (`aws s3 mb s3://{bucket}`, versioning on) or correct [store] url in drctl.toml, then run `drctl check`"
        ),
        "AccessDenied" => format!(
            "grant this host's AWS identity s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket on \
             s3://{bucket} (and kms:GenerateDataKey/kms:Decrypt for an SSE-KMS bucket), then run `drctl check`"
        ),
        "NoCredentials" => "give drctl AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an \
                            instance role), then run `drctl check`"
            .into(),
        "Unreachable" => "check [aws] endpoint_url / AWS_ENDPOINT_URL and the network path to S3, then rerun".into(),
        _ => {
            "check this host's AWS credentials (`aws sts get-caller-identity`) and clock, then run `drctl check`".into()
        }
    })
}

/// An error with its causes, `: `-joined: reqwest's own line hides why a request failed (a TLS
/// handshake, a refused connection).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_its_contract_code() {
        assert_eq!(Error::usage("x").exit_code(), 2);
        assert_eq!(Error::Preflight { failed: vec![], waivable: vec![] }.exit_code(), 3);
        assert_eq!(Error::NothingToVerify { what: "x".into(), hint: "y".into() }.status(), "preflight_failed");
        let audit = Error::Audit { failed: vec!["backup-drilled prod".into()], ids: vec!["backup-drilled".into()] };
        assert_eq!((audit.exit_code(), audit.status()), (3, "preflight_failed"));
        assert!(audit.hint().unwrap().ends_with("failed: backup-drilled"), "{:?}", audit.hint());
        assert_eq!(Error::integrity("journal", "seq 3", "hash").exit_code(), 4);
        assert_eq!(Error::Interrupted { signal: libc::SIGINT }.exit_code(), 130);
        assert_eq!(Error::Interrupted { signal: libc::SIGTERM }.exit_code(), 143);
        assert_eq!(Error::Interrupted { signal: libc::SIGTERM }.status(), "interrupted");
        let wal = |command, cause| Error::Wal {
            command,
            name: "000000010000000000000003".into(),
            cause: Box::new(cause),
            hint: None,
        };
        assert_eq!(wal("wal-fetch", Error::usage("x")).exit_code(), 126);
        assert_eq!(wal("wal-fetch", Error::integrity("wal", "x", "y")).exit_code(), 126);
        assert_eq!(wal("wal-push", Error::integrity("wal", "x", "y")).exit_code(), 4);
        assert_eq!(wal("wal-push", Error::usage("bad")).to_string(), "wal-push 000000010000000000000003: bad");
    }
}
