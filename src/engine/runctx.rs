//! What the engine tells a step about the run it is part of, through `Ctx::run`: the run this one
//! resumes, what an earlier attempt of it sent to an outside system and did not see take, and the
//! report's runbook-specific fields. A step reads all of it here rather than through cells its
//! runbook handed it, so it works the same alone or composed into another runbook's run (failover
//! runs promote-replica's steps, then dns-cutover's, as one run).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

#[derive(Default)]
pub struct RunCtx {
    resumes: OnceLock<String>,
    sent: OnceLock<BTreeMap<String, Value>>,
    finished: OnceLock<BTreeMap<String, Value>>,
    invoked: OnceLock<std::time::SystemTime>,
    fields: Mutex<Map<String, Value>>,
}

impl RunCtx {
    /// Set by the engine before preflight when this run continues an unfinished one.
    pub(crate) fn set_resumed(&self, run_id: String, sent: BTreeMap<String, Value>, finished: BTreeMap<String, Value>) {
        let _ = self.resumes.set(run_id);
        let _ = self.sent.set(sent);
        let _ = self.finished.set(finished);
    }

    /// When the engine began this run (before its locks and preflight): journaled with
    /// `run-started` as `invoked`, where failover's RTO is counted from.
    pub(crate) fn set_invoked(&self, t: std::time::SystemTime) {
        let _ = self.invoked.set(t);
    }

    pub fn invoked(&self) -> Option<std::time::SystemTime> {
        self.invoked.get().copied()
    }

    /// The unfinished run (of the same runbook, env and arguments) this run continues.
    pub fn resumes(&self) -> Option<&str> {
        self.resumes.get().map(String::as_str)
    }

    /// What step `step` of the run this one resumes journaled as sent (`StepLog::sent`) without a
    /// `step-done` after it: the change is out there, so the step waits on it and never sends again.
    pub fn sent(&self, step: &str) -> Option<&Value> {
        self.sent.get().and_then(|m| m.get(step))
    }

    /// What step `step` of a run this one resumes sent and then saw take (`step-done`): done, and
    /// what it found is there for the steps after it (the fenced primary's final LSN).
    pub fn finished(&self, step: &str) -> Option<&Value> {
        self.finished.get().and_then(|m| m.get(step))
    }

    /// A runbook-specific report field (the JSON document's top level).
    pub fn report(&self, key: &str, value: impl Into<Value>) {
        self.fields.lock().expect("report fields").insert(key.to_string(), value.into());
    }

    pub fn report_field(&self, key: &str) -> Option<Value> {
        self.fields.lock().expect("report fields").get(key).cloned()
    }

    pub(crate) fn report_fields(&self) -> Map<String, Value> {
        self.fields.lock().expect("report fields").clone()
    }
}

/// Poll `probe` every `every` until it answers `Some`, for at most `timeout`: past it the run ends
/// with exit 6 (outcome unknown), naming what was sent, since the change may still take. `every`
/// is a few seconds (Route 53 changes take ~60 s; the SDK's own waiters poll every 30 s).
pub async fn wait_for<T, F, Fut>(sent: &str, timeout: Duration, every: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let t0 = Instant::now();
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        let waited = t0.elapsed();
        if waited >= timeout {
            return Err(Error::OutcomeUnknown {
                sent: sent.to_string(),
                waited: humantime::format_duration(Duration::from_secs(waited.as_secs())).to_string(),
            });
        }
        tokio::time::sleep(every.min(timeout - waited)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::wait_for;
    use crate::error::Error;

    #[tokio::test]
    async fn a_wait_ends_when_the_probe_answers_or_with_outcome_unknown_past_the_deadline() {
        let polls = AtomicU32::new(0);
        let got = wait_for("change C1", Duration::from_secs(5), Duration::from_millis(1), || async {
            Ok((polls.fetch_add(1, Ordering::SeqCst) >= 2).then_some("insync"))
        })
        .await
        .unwrap();
        assert_eq!((got, polls.load(Ordering::SeqCst)), ("insync", 3));

        let e = wait_for::<(), _, _>("change C2", Duration::from_millis(30), Duration::from_millis(5), || async {
            Ok(None)
        })
        .await
        .unwrap_err();
        assert!(matches!(&e, Error::OutcomeUnknown { sent, .. } if sent == "change C2"), "{e}");
        assert_eq!(e.exit_code(), crate::error::exit::UNKNOWN_OUTCOME);
    }
}
