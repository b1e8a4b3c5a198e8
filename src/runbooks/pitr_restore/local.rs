//! pitr-restore for a self-managed env. NOT BUILT YET.

use std::path::Path;

use crate::cli::PitrRestoreArgs;
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::engine::run::Runbook;
use crate::error::{Error, Result};

pub async fn pitr_restore_local(_cx: &Ctx, _env: &EnvConfig, _args: &PitrRestoreArgs, _dir: &Path) -> Result<Runbook> {
    Err(Error::Usage { problem: "pitr-restore into a data directory is not built yet".into(), hint: None })
}
