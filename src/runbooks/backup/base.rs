//! backup --type base. NOT BUILT YET: placeholder so the command line is in place.

use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::engine::run::Runbook;
use crate::error::{Error, Result};

pub fn backup_base(_cx: &Ctx, _env: &EnvConfig) -> Result<Runbook> {
    Err(Error::Usage { problem: "backup --type base is not built yet".into(), hint: None })
}
