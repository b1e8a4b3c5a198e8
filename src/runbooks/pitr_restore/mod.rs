//! pitr-restore: recover an env's database to a point in time, into a new data directory
//! (self-managed: a base backup plus the WAL archive) or a new RDS instance
//! (RestoreDBInstanceToPointInTime). Either way the source is only read.

pub mod local;
pub mod rds;

use crate::cli::PitrRestoreArgs;
use crate::ctx::Ctx;
use crate::engine::run::Runbook;
use crate::error::{Error, Result};

pub async fn pitr_restore(cx: &Ctx, args: &PitrRestoreArgs) -> Result<Runbook> {
    let env = cx.config.resolve_env(args.env.env.as_deref())?;
    match (&env.rds_instance, &args.target_instance, &args.data_dir) {
        (Some(_), Some(id), None) => rds::pitr_restore_rds(cx, env, args, id).await,
        (None, None, Some(dir)) => local::pitr_restore_local(cx, env, args, dir).await,
        (Some(instance), None, _) => Err(Error::Usage {
            problem: format!("env {} is the RDS instance {instance}: pitr-restore creates a new instance", env.name),
            hint: Some("give --target-instance NEW_ID instead of --data-dir".into()),
        }),
        (None, Some(_), _) => Err(Error::Usage {
            problem: format!("--target-instance needs an env with rds_instance; {} has none", env.name),
            hint: Some("give --data-dir DIR to restore a self-managed env's base backup".into()),
        }),
        (Some(_), Some(_), Some(_)) | (None, None, None) => {
            unreachable!("clap: exactly one of --data-dir and --target-instance")
        }
    }
}
