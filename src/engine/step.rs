//! The whole contract between the engine and a step.

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value};

use super::run::JournalWriter;
use crate::ctx::Ctx;
use crate::error::Result;

/// One preflight check's result. `id` is the stable kebab-case name `--accept` takes.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    pub detail: String,
    pub accepted: bool,
}

impl Check {
    pub fn pass(id: &str, detail: impl Into<String>) -> Check {
        Check { check: id.to_string(), ok: true, detail: detail.into(), accepted: false }
    }
    pub fn fail(id: &str, detail: impl Into<String>) -> Check {
        Check { check: id.to_string(), ok: false, detail: detail.into(), accepted: false }
    }
    pub fn from_result(id: &str, r: std::result::Result<String, String>) -> Check {
        match r {
            Ok(d) => Check::pass(id, d),
            Err(d) => Check::fail(id, d),
        }
    }
}

/// What a step's `apply` records: journaled with `step-done` (or with `step-failed`, as far as it
/// got) and shown in the report. Steps that commit something to the journal themselves (backup's
/// `backup-done`) use `journal`.
pub struct StepLog {
    pub step: &'static str,
    pub details: Map<String, Value>,
    /// One line for the report's `detail` column.
    pub summary: Option<String>,
    pub journal: JournalWriter,
}

pub use crate::journal::fold::STEP_SENT;

impl StepLog {
    pub fn new(journal: JournalWriter, step: &'static str) -> Self {
        StepLog { step, details: Map::new(), summary: None, journal }
    }

    /// Journal what this step just sent to an outside system (a Route 53 change id and the exact
    /// record set it replaced, an RDS promotion), *before* waiting for it to take. A rerun of this
    /// run then finds it in `cx.run.sent(step)` and resumes by waiting, never by sending again.
    /// The same details are kept for the step's `step-done` or `step-failed`.
    pub async fn sent(&mut self, details: Map<String, Value>) -> Result<()> {
        let mut entry = details.clone();
        entry.insert("step".into(), self.step.into());
        self.journal.append(STEP_SENT, Value::Object(entry)).await?;
        self.details.extend(details);
        Ok(())
    }
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.details.insert(key.to_string(), value.into());
    }
    pub fn summary(&mut self, s: impl Into<String>) {
        self.summary = Some(s.into());
    }
}

/// Checks that `--accept` cannot waive: without what they check the run cannot work at all (an
/// unwritable store, an unreachable database, a name PostgreSQL cannot hold, tools too old to
/// read the server), so waiving them would only move the failure into a step.
pub const NOT_WAIVABLE: &[&str] = &[
    "store-writable",
    "db-reachable",
    "source-reachable",
    "target-reachable",
    "target-not-replica",
    "declared-role",
    "name-length",
    "pg-dump-version",
    "pg-restore-version",
    "target-instance-free",
    "backup-exists",
];

pub fn waivable(id: &str) -> bool {
    !NOT_WAIVABLE.contains(&id)
}

#[async_trait]
pub trait Step: Send + Sync {
    /// Stable id in the journal; renaming it breaks resume of old runs.
    fn id(&self) -> &'static str;
    /// The ids of every check `preflight` can report, so `--accept` can be validated before the
    /// run takes its locks.
    fn check_ids(&self) -> &'static [&'static str] {
        &[]
    }
    /// Read-only. Every step's checks run before the first change (exit 3 = nothing touched).
    async fn preflight(&self, _cx: &Ctx) -> Vec<Check> {
        Vec::new()
    }
    /// Is the world already as apply() would leave it? Then skip and report `done`.
    async fn is_done(&self, cx: &Ctx) -> Result<bool>;
    /// For an irreversible step: its guards, re-checked by the engine just before `apply` (after
    /// everything before it ran, maybe minutes after preflight). A failing one stops the run
    /// (exit 3) unless `--accept` waives it, as in preflight; the ids must be in `check_ids`.
    async fn guard(&self, _cx: &Ctx) -> Vec<Check> {
        Vec::new()
    }
    /// Undo what preparing for the act left behind, when a guard refused it (sync drops the
    /// scratch copy it restored). Errors are reported as warnings: the refusal is the outcome.
    async fn refused(&self, _cx: &Ctx) -> Result<()> {
        Ok(())
    }
    /// The one change. It may find a crashed earlier attempt half-way.
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()>;
    /// Proof it took, by looking again, never by trusting apply.
    async fn verify(&self, cx: &Ctx) -> Result<()>;
}
