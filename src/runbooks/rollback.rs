//! rollback [--run RUN_ID] (being built).
use crate::ctx::Ctx;
use crate::engine::run::Runbook;
use crate::error::{Error, Result};

pub async fn rollback(_cx: &Ctx, _run: Option<&str>) -> Result<Runbook> {
    Err(Error::usage("rollback: not built yet"))
}
