//! drill. NOT BUILT YET: placeholder so the command line is in place.

use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::engine::run::Runbook;
use crate::error::{Error, Result};

pub async fn drill(_cx: &Ctx, _env: &EnvConfig, _from_backup: Option<&str>) -> Result<Runbook> {
    Err(Error::Usage { problem: "drill is not built yet".into(), hint: None })
}
