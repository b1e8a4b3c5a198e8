//! pitr-restore for an RDS env. NOT BUILT YET.

use crate::cli::PitrRestoreArgs;
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::engine::run::Runbook;
use crate::error::{Error, Result};

pub async fn pitr_restore_rds(_cx: &Ctx, _env: &EnvConfig, _args: &PitrRestoreArgs, _target: &str) -> Result<Runbook> {
    Err(Error::Usage { problem: "pitr-restore of an RDS env is not built yet".into(), hint: None })
}
