//! failover --to ENV (being built).
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::engine::run::Runbook;
use crate::error::{Error, Result};

pub async fn failover(_cx: &Ctx, _to: &EnvConfig) -> Result<Runbook> {
    Err(Error::usage("failover: not built yet"))
}
