//! pitr-restore. NOT BUILT YET: placeholder so the command line is in place.

use crate::cli::PitrRestoreArgs;
use crate::ctx::Ctx;
use crate::engine::run::Runbook;
use crate::error::{Error, Result};

pub async fn pitr_restore(_cx: &Ctx, _args: &PitrRestoreArgs) -> Result<Runbook> {
    Err(Error::Usage { problem: "pitr-restore is not built yet".into(), hint: None })
}
