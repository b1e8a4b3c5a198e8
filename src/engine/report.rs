//! What a run reports: the contract's runbook JSON document, also rendered as tables.

use serde::Serialize;
use serde_json::{Map, Value};

use super::step::Check;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Already true: not applied.
    Done,
    Applied,
    Failed,
    /// Not reached, or (dry run) would run.
    Pending,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: String,
    pub state: StepState,
    pub duration_ms: u64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub runbook: String,
    pub run_id: String,
    pub env: Option<String>,
    pub status: String,
    pub preflight: Vec<Check>,
    pub steps: Vec<StepReport>,
    pub elapsed_ms: u64,
    /// Runbook-specific fields (e.g. the backup's id, bytes and sha256), merged into the JSON document.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
