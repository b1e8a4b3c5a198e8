//! drill --env ENV [--from-backup ID]: a recovery rehearsal. The env's newest (or the named)
//! committed backup is restored into a scratch copy, verified, timed, and removed again.
//!
//! Replaces trusting that backups restore: a backup nobody restored is a hope, and the restore's
//! real duration (the RTO achieved) and the data it would lose (the RPO achieved) are learnt in a
//! rehearsal instead of an incident. The result, passed or failed, is journaled (`drill-done`);
//! `status` shows each env's last drill, and `status --audit`'s `backup-drilled` wants the newest
//! backup drilled successfully within `policy.drill_max_age`.
//!
//! One drill of an env at a time (lock `drill:ENV`); the env's own database is only read. How a
//! backup is restored depends on its type, chosen from its manifest: a logical backup
//! (`logical.rs`) into a scratch database on the env's server; a base backup (`base.rs`) into a
//! scratch data directory on a free port, recovered with pitr-restore's steps.

pub mod base;
pub mod logical;

use async_trait::async_trait;

use crate::catalog::{self, Committed};
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::engine::run::Runbook;
use crate::engine::step::{Check, Step, StepLog};
use crate::error::{Error, Result};

pub async fn drill(cx: &Ctx, env: &EnvConfig, from_backup: Option<&str>) -> Result<Runbook> {
    let state = cx.journal.state().await?;
    let committed = state.committed(Some(&env.name));
    let chosen: Committed = match from_backup {
        Some(id) => committed.iter().find(|c| c.id == id).cloned().ok_or_else(|| {
            let others: Vec<String> = state.committed(None).into_iter().filter(|c| c.id == id).map(|c| c.env).collect();
            let why = if state.pruned_ids(&env.name).contains(id) {
                format!("backup {id} of {} was pruned", env.name)
            } else if let Some(other) = others.first() {
                format!("backup {id} is a backup of env {other}, not of {}", env.name)
            } else {
                format!("env {} has no committed backup {id}", env.name)
            };
            Error::usage(format!("--from-backup {id}: {why}"))
                .with_hint(format!("`drctl backup list --env {}` lists the backups a drill can restore", env.name))
        })?,
        None => match committed.last() {
            Some(c) => c.clone(),
            // Refused by preflight (exit 3), with the run's report and the refusal journaled.
            None => {
                return Ok(Runbook::new("drill", Some(&env.name), format!("--env {}", env.name))
                    .lock(format!("drill:{}", env.name))
                    .step(NoBackup { env: env.name.clone() }));
            }
        },
    };
    // The manifest says how to restore; one the journal did not commit (changed, missing) is the
    // drill's first finding, journaled as a failed drill by the restore step.
    let manifest = catalog::read_manifest(&*cx.store, &chosen).await?;
    let args = match from_backup {
        Some(id) => format!("--env {} --from-backup {id}", env.name),
        None => format!("--env {}", env.name),
    };
    let kind = manifest.as_ref().ok().map(|m| m.kind.clone());
    match kind.as_deref() {
        Some("logical") | None => logical::drill_logical(cx, env, chosen, manifest, args),
        // A scratch data directory, pitr-restore's steps to the backup's consistent end.
        Some("base") => base::drill_base(cx, env, chosen, manifest, args),
        Some(other) => Err(Error::usage(format!(
            "backup {} of {} is of type `{other}`, which this drctl cannot drill",
            chosen.id, env.name
        ))),
    }
}

/// The env has no committed backup: preflight check `backup-exists` fails, nothing else runs.
struct NoBackup {
    env: String,
}

#[async_trait]
impl Step for NoBackup {
    fn id(&self) -> &'static str {
        "restore"
    }
    fn check_ids(&self) -> &'static [&'static str] {
        &["backup-exists"]
    }
    async fn preflight(&self, _cx: &Ctx) -> Vec<Check> {
        vec![Check::fail(
            "backup-exists",
            format!(
                "env {} has no committed backup to drill: take one first, `drctl backup --env {}`",
                self.env, self.env
            ),
        )]
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        Ok(false)
    }
    async fn apply(&self, _cx: &Ctx, _log: &mut StepLog) -> Result<()> {
        Err(Error::step("restore", format!("env {} has no committed backup to drill", self.env)))
    }
    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        Ok(())
    }
}
