//! drill of a base backup: the backup restored with pitr-restore's own steps (restore-base,
//! write-recovery, start-server, wait-recovery) into a scratch data directory on a free loopback
//! port, recovered to the backup's consistent end (`recovery_target = 'immediate'`: the WAL the
//! backup itself needs, fetched through wal-fetch), promoted and written to; then verified: the
//! env's database answers on the copy, every leaf table's rows are counted (a base backup's
//! manifest holds no counts to compare with), and every chain configured for the env verifies on
//! the copy, held to the anchors journaled before the backup started.
//!
//! The scratch directory is `$TMPDIR/drctl-drill-<store>-<run>` (the whole cluster is unpacked
//! there: point TMPDIR at a disk with room). A finally step stops its server (immediate) and
//! removes it whatever happened; after a kill -9 the next drill finds it, sees that no live lock
//! names its run, and does the same before anything else.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::logical::{store_tag, verify_chains_on};
use crate::catalog::{Committed, Manifest, manifest_key};
use crate::clients::pg;
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::dburl::DbUrl;
use crate::engine::run::Runbook;
use crate::engine::step::{Step, StepLog};
use crate::error::{Error, Result};
use crate::journal::fold::DRILL_DONE;
use crate::output::table::count;
use crate::runbooks::backup::{encryption, live_run_ids, quote_ident};
use crate::runbooks::pitr_restore::local::{free_port, loopback_url, rehearse_into, stop_and_remove};

/// `drctl-drill-<store>-<run>`: `<store>` as in a logical drill's scratch database name.
fn dir_prefix(store_url: &str) -> String {
    format!("drctl-drill-{}-", store_tag(store_url))
}

fn scratch_dir(store_url: &str, run_id: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}{run_id}", dir_prefix(store_url)))
}

struct Plan {
    env: EnvConfig,
    backup: Committed,
    manifest: Manifest,
    dir: PathBuf,
    port: u16,
    /// Set once `drill-done` is journaled, so the finally step journals a failure only when the
    /// restore never got as far as the verification.
    recorded: Mutex<bool>,
}

impl Plan {
    fn what(&self) -> String {
        format!("base backup {} of {}", self.backup.id, self.env.name)
    }
    fn url(&self) -> DbUrl {
        loopback_url(&self.env, self.port)
    }
    /// The data's age when the drill began: what a recovery from this backup alone would lose.
    fn rpo_s(&self, cx: &Ctx) -> Option<u64> {
        let started = cx.run.invoked().unwrap_or_else(SystemTime::now);
        let stop = self.manifest.base.as_ref().and_then(|b| humantime::parse_rfc3339_weak(&b.stop_time).ok())?;
        Some(started.duration_since(stop).unwrap_or_default().as_secs())
    }
}

pub fn drill_base(
    cx: &Ctx,
    env: &EnvConfig,
    backup: Committed,
    manifest: std::result::Result<Manifest, String>,
    args: String,
) -> Result<Runbook> {
    let manifest = manifest.map_err(|why| {
        Error::integrity(format!("base backup {} of {}", backup.id, env.name), manifest_key(&env.name, &backup.id), why)
    })?;
    // An encrypted backup needs the identity before anything is created.
    encryption::identities_for(cx, &manifest)?;
    let plan = Arc::new(Plan {
        env: env.clone(),
        dir: scratch_dir(cx.store.url(), &cx.run_id),
        port: free_port()?,
        backup,
        manifest,
        recorded: Mutex::new(false),
    });
    let rb = Runbook::new("drill", Some(&env.name), args)
        .lock(format!("drill:{}", env.name))
        // Scratch directories (and their servers) of this store's drills that died go first.
        .step(RemoveLeftovers { plan: plan.clone() });
    let id = plan.backup.id.clone();
    Ok(rehearse_into(rb, env, &id, &plan.dir, plan.port)
        // The copy answers; its rows are counted and its chains verified; `drill-done` journaled.
        .step(VerifyCopy { plan: plan.clone() })
        // Whatever happened above: the server stops and the directory goes.
        .finally(RemoveScratch { plan }))
}

// ---------------------------------------------------------------------------------------------

struct RemoveLeftovers {
    plan: Arc<Plan>,
}

impl RemoveLeftovers {
    /// This store's drill directories whose run holds no live lock (never this run's own).
    async fn leftovers(&self, cx: &Ctx) -> Result<Vec<PathBuf>> {
        let prefix = dir_prefix(cx.store.url());
        let live: Vec<PathBuf> = live_run_ids(cx).await?.iter().map(|id| scratch_dir(cx.store.url(), id)).collect();
        let tmp = std::env::temp_dir();
        let Ok(entries) = std::fs::read_dir(&tmp) else { return Ok(Vec::new()) };
        let mut out: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)))
            .map(|e| e.path())
            .filter(|p| *p != self.plan.dir && !live.contains(p))
            .collect();
        out.sort();
        Ok(out)
    }
}

#[async_trait]
impl Step for RemoveLeftovers {
    fn id(&self) -> &'static str {
        "remove-leftovers"
    }
    async fn is_done(&self, cx: &Ctx) -> Result<bool> {
        Ok(self.leftovers(cx).await?.is_empty())
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let dead = self.leftovers(cx).await?;
        for d in &dead {
            stop_and_remove(&self.plan.env, d).await?;
        }
        let shown: Vec<String> = dead.iter().map(|d| d.display().to_string()).collect();
        log.set("removed", Value::from(shown.clone()));
        log.summary(format!(
            "removed {} of drills that died: {}",
            count(dead.len() as u64, "scratch data directory"),
            shown.join(", ")
        ));
        Ok(())
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        match self.leftovers(cx).await?.first() {
            None => Ok(()),
            Some(d) => Err(Error::step("remove-leftovers", format!("{} is still there", d.display()))),
        }
    }
}

// ---------------------------------------------------------------------------------------------

struct VerifyCopy {
    plan: Arc<Plan>,
}

/// What the restored copy showed.
struct Counted {
    tables: u64,
    rows: u64,
    chains: Vec<Value>,
    problems: Vec<String>,
}

async fn count_and_verify(cx: &Ctx, plan: &Plan) -> Result<Counted> {
    let url = plan.url();
    let mut client = pg::connect(&url).await?;
    let tx = client.build_transaction().read_only(true).start().await.map_err(|e| pg::db_error(&url, &e))?;
    let tables = crate::runbooks::backup::leaf_tables(&tx).await.map_err(|e| pg::db_error(&url, &e))?;
    let mut rows = 0u64;
    for (schema, table) in &tables {
        let q = format!("SELECT count(*) FROM {}.{}", quote_ident(schema), quote_ident(table));
        let n: i64 = tx.query_one(&q, &[]).await.map_err(|e| pg::db_error(&url, &e))?.get(0);
        rows += n.max(0) as u64;
    }
    tx.commit().await.map_err(|e| pg::db_error(&url, &e))?;
    let started = plan.manifest.base.as_ref().and_then(|b| humantime::parse_rfc3339_weak(&b.start_time).ok());
    let (chains, problems) = verify_chains_on(cx, &plan.env, &url, started).await?;
    Ok(Counted { tables: tables.len() as u64, rows, chains, problems })
}

/// Journal `drill-done` (passed or failed) and put the verdict in the report.
async fn record(
    cx: &Ctx,
    log: &mut StepLog,
    plan: &Plan,
    rto_ms: Option<u64>,
    c: Option<&Counted>,
    problems: &[String],
) -> Result<()> {
    let ok = c.is_some() && problems.is_empty();
    let chains: Vec<Value> = c.map(|c| c.chains.clone()).unwrap_or_default();
    let chains_ok = chains.iter().filter(|c| c["ok"] == true).count() as u64;
    let (tables, rows) = c.map_or((0, 0), |c| (c.tables, c.rows));
    let rpo_s = plan.rpo_s(cx);
    let stop_time = plan.manifest.base.as_ref().map(|b| b.stop_time.clone());
    let details = json!({
        "backup_id": plan.backup.id, "backup_type": "base", "ok": ok,
        "scratch_data_dir": plan.dir.display().to_string(), "port": plan.port,
        "rto_ms": rto_ms, "rpo_s": rpo_s, "backup_snapshot": stop_time,
        "tables": tables, "rows": rows, "chains": chains, "problems": problems,
    });
    log.journal.append(DRILL_DONE, details).await?;
    *plan.recorded.lock().expect("recorded") = true;
    let r = &cx.run;
    r.report("ok", ok);
    r.report("backup_type", "base");
    r.report("scratch_data_dir", plan.dir.display().to_string());
    r.report("rto_ms", json!(rto_ms));
    r.report("rpo_s", json!(rpo_s));
    r.report("tables_verified", tables);
    r.report("rows_counted", rows);
    r.report("chains_verified", chains_ok);
    r.report("chains", Value::Array(chains));
    r.report("problems", json!(problems));
    log.set("ok", ok);
    log.set("rto_ms", json!(rto_ms));
    log.set("rpo_s", json!(rpo_s));
    Ok(())
}

#[async_trait]
impl Step for VerifyCopy {
    fn id(&self) -> &'static str {
        "verify-copy"
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        Ok(false)
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let plan = &self.plan;
        cx.run.report("backup_id", plan.backup.id.clone());
        let counted = count_and_verify(cx, plan).await;
        // The RTO: from the drill's start (the restore's first byte) until the copy verified.
        let rto_ms = cx.run.invoked().and_then(|t| t.elapsed().ok()).map(|d| d.as_millis() as u64);
        match counted {
            Err(e) => {
                let problems = vec![format!("the restored copy could not be read: {e}")];
                record(cx, log, plan, None, None, &problems).await?;
                Err(e)
            }
            Ok(c) => {
                let problems = c.problems.clone();
                record(cx, log, plan, rto_ms, Some(&c), &problems).await?;
                if !problems.is_empty() {
                    return Err(Error::integrity(
                        format!("drill of {}", plan.what()),
                        plan.dir.display().to_string(),
                        problems.join("; "),
                    ));
                }
                log.summary(format!(
                    "{} restored into {} and verified: {} counted in {}, {} (RTO {}, RPO {})",
                    plan.what(),
                    plan.dir.display(),
                    count(c.rows, "row"),
                    count(c.tables, "table"),
                    count(c.chains.len() as u64, "chain"),
                    rto_ms.map_or("-".into(), crate::output::table::ms),
                    plan.rpo_s(cx)
                        .map_or("-".into(), |s| humantime::format_duration(std::time::Duration::from_secs(s))
                            .to_string()),
                ));
                Ok(())
            }
        }
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        let state = cx.journal.refresh().await?;
        match state.drills.get(&self.plan.env.name) {
            Some(d) if d.run_id == cx.run_id => Ok(()),
            _ => Err(Error::step("verify-copy", "the drill-done entry is not in the journal")),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// The finally step: this run's scratch server stops and its directory goes, whatever happened
/// before; a drill that failed before its verification is journaled as failed here.
struct RemoveScratch {
    plan: Arc<Plan>,
}

#[async_trait]
impl Step for RemoveScratch {
    fn id(&self) -> &'static str {
        "remove-scratch"
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        Ok(*self.plan.recorded.lock().expect("recorded") && !self.plan.dir.exists())
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        if !*self.plan.recorded.lock().expect("recorded") {
            let problems = vec![format!(
                "{} did not restore to a promoted, writable server (the run's failed step says why)",
                self.plan.what()
            )];
            record(cx, log, &self.plan, None, None, &problems).await?;
        }
        stop_and_remove(&self.plan.env, &self.plan.dir).await?;
        log.set("removed", self.plan.dir.display().to_string());
        log.summary(format!("stopped the scratch server and removed {}", self.plan.dir.display()));
        Ok(())
    }
    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        if self.plan.dir.exists() {
            Err(Error::step("remove-scratch", format!("{} still exists", self.plan.dir.display())))
        } else {
            Ok(())
        }
    }
}
