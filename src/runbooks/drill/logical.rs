//! drill of a logical backup: its stored dump streamed back (each object's sha256 checked as it
//! streams, age-decrypted with the identity file, zstd-decompressed: `readback::stream_into`) into
//! pg_restore of a scratch database on the env's own server, created through its maintenance_db
//! like the env's database (sync's `create_like`); then verified: every table's exact row count
//! against the manifest (sync's `differences`), and every chain configured for the env
//! (`[environments.ENV.chains.TABLE]`) hash-chain-verified on the copy (verify-chain's
//! `table::verify`), held to the anchors journaled before the backup's snapshot.
//!
//! The scratch database is `drctl_drill_<store>_<run>`: recognisable, never an app's name, unique
//! per run, and tagged with the store, so drills of another drctl store on the same server are not
//! this store's to clean. It is dropped by a finally step whatever happens (success, a failed
//! verification, an error, SIGINT/SIGTERM); after a kill -9 the next drill finds it, sees that no
//! live lock names its run, and drops it before anything else.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::catalog::{Committed, Manifest, manifest_key, sha256_hex};
use crate::cli::VerifyChainArgs;
use crate::clients::{pg, pgtools::PgTools};
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::dburl::DbUrl;
use crate::engine::run::Runbook;
use crate::engine::step::{Check, Step, StepLog};
use crate::error::{Error, Result};
use crate::journal::fold::{Anchor, DRILL_DONE, State};
use crate::output::table::count;
use crate::runbooks::backup::{encryption, live_run_ids, quote_ident, reach, readback, store_writable};
use crate::runbooks::sync::load::spawn_restore_into;
use crate::runbooks::sync::pipeline::{create_like, differences};
use crate::runbooks::sync::target::maintenance_url;
use crate::runbooks::verify_chain::table;

/// Every drill's scratch database starts with this.
pub const SCRATCH_PREFIX: &str = "drctl_drill_";

/// `drctl_drill_<store>_<run>`: the first 8 hex digits of the sha256 of the store's URL, then the
/// run id in lower case with `_` for `-` (no quoting needed): 44 bytes, within PostgreSQL's 63.
pub fn scratch_name(store_url: &str, run_id: &str) -> String {
    format!("{}{}", store_prefix(store_url), run_id.to_ascii_lowercase().replace('-', "_"))
}

/// The names of this store's drills start with this.
pub fn store_prefix(store_url: &str) -> String {
    format!("{SCRATCH_PREFIX}{}_", store_tag(store_url))
}

/// What tells this store's drill copies from another store's on the same server or host: the
/// first 8 hex digits of the sha256 of its URL.
pub fn store_tag(store_url: &str) -> String {
    sha256_hex(store_url.as_bytes())[..8].to_string()
}

pub struct Plan {
    env: EnvConfig,
    backup: Committed,
    /// The manifest the journal committed, or why it is not (missing, changed, unparseable).
    manifest: std::result::Result<Manifest, String>,
    scratch: String,
}

impl Plan {
    fn maint_url(&self) -> DbUrl {
        maintenance_url(&self.env)
    }
    async fn maint(&self) -> Result<tokio_postgres::Client> {
        pg::connect(&self.maint_url()).await
    }
    async fn exists(&self, db: &str) -> Result<bool> {
        let url = self.maint_url();
        let found = self
            .maint()
            .await?
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
            .await
            .map_err(|e| pg::db_error(&url, &e))?;
        Ok(found.is_some())
    }
    async fn drop_db(&self, db: &str) -> Result<()> {
        let url = self.maint_url();
        self.maint()
            .await?
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(db)))
            .await
            .map_err(|e| pg::db_error(&url, &e))
    }
    fn what(&self) -> String {
        format!("backup {} of {}", self.backup.id, self.env.name)
    }
}

pub fn drill_logical(
    cx: &Ctx,
    env: &EnvConfig,
    backup: Committed,
    manifest: std::result::Result<Manifest, String>,
    args: String,
) -> Result<Runbook> {
    // An encrypted backup needs the identity before anything is created: exit 2 naming
    // age_identity_file, nothing left behind.
    if let Ok(m) = &manifest {
        encryption::identities_for(cx, m)?;
    }
    let plan = Arc::new(Plan { env: env.clone(), backup, manifest, scratch: scratch_name(cx.store.url(), &cx.run_id) });
    Ok(Runbook::new("drill", Some(&env.name), args)
        .lock(format!("drill:{}", env.name))
        // Preflight lives here. Scratch databases of this store's drills that died go first.
        .step(DropLeftovers { plan: plan.clone() })
        // Restore, verify, time; `drill-done` journaled whether the copy verified or not.
        .step(RestoreAndVerify { plan: plan.clone() })
        // Whatever happened above, even SIGINT: the scratch database goes.
        .finally(DropScratch { plan }))
}

// ---------------------------------------------------------------------------------------------

struct DropLeftovers {
    plan: Arc<Plan>,
}

impl DropLeftovers {
    /// This store's drill scratch databases on the env's server whose run holds no live lock
    /// (never this run's own).
    async fn leftovers(&self, cx: &Ctx) -> Result<Vec<String>> {
        let url = self.plan.maint_url();
        let prefix = store_prefix(cx.store.url());
        let rows = self
            .plan
            .maint()
            .await?
            .query("SELECT datname::text FROM pg_database WHERE starts_with(datname::text, $1) ORDER BY 1", &[&prefix])
            .await
            .map_err(|e| pg::db_error(&url, &e))?;
        let live: BTreeSet<String> =
            live_run_ids(cx).await?.iter().map(|id| scratch_name(cx.store.url(), id)).collect();
        Ok(rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .filter(|db| *db != self.plan.scratch && !live.contains(db))
            .collect())
    }

    async fn checks(&self, cx: &Ctx) -> Vec<Check> {
        let plan = &self.plan;
        let url = plan.maint_url();
        let mut checks = Vec::new();
        let server = match reach(&url).await {
            Ok((c, major)) => {
                checks.push(Check::pass("db-reachable", format!("{}: PostgreSQL {major}", url.redacted())));
                checks.push(scratch_privileges(&c, &plan.env).await);
                Some(major)
            }
            Err(e) => {
                checks.push(Check::fail("db-reachable", e));
                None
            }
        };
        let tools = PgTools::new(plan.env.pg_bin.as_deref());
        let dumped: Option<u32> = plan.manifest.as_ref().ok().and_then(|m| m.pg_dump_version.parse().ok());
        checks.push(match tools.major_version("pg_restore").await {
            // pg_restore reads archives of its own version and older, and must know the server.
            Ok(r) if dumped.is_none_or(|d| r >= d) && server.is_none_or(|s| r >= s) => Check::pass(
                "pg-restore-version",
                format!(
                    "pg_restore {r} reads pg_dump {}'s archive into PostgreSQL {}",
                    dumped.map_or("?".into(), |d| d.to_string()),
                    server.map_or("?".into(), |s| s.to_string())
                ),
            ),
            Ok(r) => Check::fail(
                "pg-restore-version",
                format!(
                    "pg_restore {r} at {} must be at least the backup's pg_dump ({}) and the server ({}): set pg_bin \
                     of {}",
                    tools.path("pg_restore").display(),
                    dumped.map_or("?".into(), |d| d.to_string()),
                    server.map_or("?".into(), |s| s.to_string()),
                    plan.env.name
                ),
            ),
            Err(e) => Check::fail("pg-restore-version", e.to_string()),
        });
        checks.push(store_writable(cx).await);
        checks
    }
}

/// `scratch-privileges`: creating the scratch database like the env's (its owner) and dropping it.
async fn scratch_privileges(maint: &tokio_postgres::Client, env: &EnvConfig) -> Check {
    const ID: &str = "scratch-privileges";
    let r = maint
        .query_one(
            "SELECT current_user::text, r.rolsuper, r.rolcreatedb, \
                    pg_has_role(current_user, pg_get_userbyid(d.datdba), 'MEMBER'), pg_get_userbyid(d.datdba)::text \
             FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = $1",
            &[&env.database_url.dbname],
        )
        .await;
    match r {
        Err(e) => Check::fail(ID, pg::describe(&e)),
        Ok(r) => {
            let (user, sup, createdb, member, owner): (String, bool, bool, bool, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
            if sup {
                Check::pass(ID, format!("{user} is a superuser"))
            } else if createdb && member {
                Check::pass(ID, format!("{user} has CREATEDB and is a member of the database owner {owner}"))
            } else {
                let mut missing = Vec::new();
                if !createdb {
                    missing.push("CREATEDB".to_string());
                }
                if !member {
                    missing.push(format!("membership in the database owner {owner}"));
                }
                Check::fail(ID, format!("{user} lacks {} to create the scratch copy", missing.join(" and ")))
            }
        }
    }
}

#[async_trait]
impl Step for DropLeftovers {
    fn id(&self) -> &'static str {
        "drop-leftovers"
    }
    fn check_ids(&self) -> &'static [&'static str] {
        &["db-reachable", "scratch-privileges", "pg-restore-version"]
    }
    async fn preflight(&self, cx: &Ctx) -> Vec<Check> {
        self.checks(cx).await
    }
    async fn is_done(&self, cx: &Ctx) -> Result<bool> {
        Ok(self.leftovers(cx).await?.is_empty())
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let dead = self.leftovers(cx).await?;
        for db in &dead {
            self.plan.drop_db(db).await?;
        }
        log.set("dropped", Value::from(dead.clone()));
        log.summary(format!(
            "dropped {} of drills that died: {}",
            count(dead.len() as u64, "scratch database"),
            dead.join(", ")
        ));
        Ok(())
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        match self.leftovers(cx).await?.first() {
            None => Ok(()),
            Some(db) => Err(Error::step("drop-leftovers", format!("{db} is still there"))),
        }
    }
}

// ---------------------------------------------------------------------------------------------

struct RestoreAndVerify {
    plan: Arc<Plan>,
}

/// What the restored copy showed.
struct Checked {
    tables: usize,
    rows: i64,
    chains: Vec<Value>,
    problems: Vec<String>,
    stored_bytes: u64,
    plain_bytes: u64,
}

/// The drill's result as journaled (`drill-done`) and reported.
struct Verdict {
    ok: bool,
    rto_ms: Option<u64>,
    rpo_s: Option<u64>,
    checked: Option<Checked>,
    problems: Vec<String>,
}

#[async_trait]
impl Step for RestoreAndVerify {
    fn id(&self) -> &'static str {
        "restore"
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        // Every drill restores afresh: the rehearsal is the point.
        Ok(false)
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let plan = &self.plan;
        let started = cx.run.invoked().unwrap_or_else(SystemTime::now);
        log.set("backup_id", plan.backup.id.clone());
        log.set("scratch_database", plan.scratch.clone());
        cx.run.report("backup_id", plan.backup.id.clone());
        cx.run.report("scratch_database", plan.scratch.clone());
        let m = match &plan.manifest {
            Ok(m) => m,
            Err(why) => {
                let v = Verdict { ok: false, rto_ms: None, rpo_s: None, checked: None, problems: vec![why.clone()] };
                record(cx, log, plan, None, v).await?;
                return Err(Error::integrity(plan.what(), manifest_key(&plan.env.name, &plan.backup.id), why));
            }
        };
        // The data's age when the drill began: what a recovery from this backup would lose.
        let snapshot = humantime::parse_rfc3339_weak(&m.started).ok();
        let rpo_s = snapshot.map(|t| started.duration_since(t).unwrap_or_default().as_secs());
        cx.run.report("backup_snapshot", m.started.clone());
        let timeout = cx.config.policy.restore_timeout;
        let t0 = Instant::now();
        let outcome = tokio::time::timeout(timeout, restore_and_check(cx, plan, m.clone(), snapshot)).await;
        let taken = Some(m.started.clone());
        let rto_ms = t0.elapsed().as_millis() as u64;
        let checked = match outcome {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let v = Verdict { ok: false, rto_ms: None, rpo_s, checked: None, problems: vec![e.to_string()] };
                record(cx, log, plan, taken, v).await?;
                return Err(e);
            }
            Err(_) => {
                let waited = humantime::format_duration(Duration::from_millis(timeout.as_millis() as u64)).to_string();
                let why =
                    format!("the restore and its verification did not finish within policy.restore_timeout ({waited})");
                let v = Verdict { ok: false, rto_ms: None, rpo_s, checked: None, problems: vec![why] };
                record(cx, log, plan, taken, v).await?;
                return Err(Error::OutcomeUnknown {
                    sent: format!("the restore of {} into {}", plan.what(), plan.scratch),
                    waited,
                });
            }
        };
        let problems = checked.problems.clone();
        let ok = problems.is_empty();
        let v = Verdict { ok, rto_ms: Some(rto_ms), rpo_s, checked: Some(checked), problems: problems.clone() };
        record(cx, log, plan, taken, v).await?;
        if !ok {
            return Err(Error::integrity(
                format!("drill of {}", plan.what()),
                plan.scratch.clone(),
                problems.join("; "),
            ));
        }
        Ok(())
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        // Read the journal again rather than trust the append.
        let state = cx.journal.refresh().await?;
        match state.drills.get(&self.plan.env.name) {
            Some(d) if d.run_id == cx.run_id => Ok(()),
            _ => Err(Error::step("restore", "the drill-done entry is not in the journal")),
        }
    }
}

/// Create the scratch database, stream the backup into pg_restore, then compare and verify.
/// An integrity failure of the stored bytes is an error (exit 4); what the copy shows is returned.
async fn restore_and_check(cx: &Ctx, plan: &Plan, m: Manifest, snapshot: Option<SystemTime>) -> Result<Checked> {
    let env = &plan.env;
    create_like(&plan.maint_url(), &env.database_url.dbname, &plan.scratch, &env.name).await?;
    let mut restoring = spawn_restore_into(env, &plan.scratch)?;
    let stdin = restoring.stdin.take().ok_or_else(|| Error::step("restore", "pg_restore has no stdin"))?;
    let progress = cx.out.progress("drill", Some(m.bytes), true);
    let streamed = readback::stream_into(cx, &m, stdin, &progress).await;
    progress.finish();
    // On a failed stream pg_restore sees its input end early and exits on its own.
    let restored = restoring.wait().await;
    let read = match (streamed, restored) {
        // Bad stored bytes or a key that does not open them explain pg_restore's failure best.
        (Err(e @ (Error::Integrity { .. } | Error::Config { .. })), _) => return Err(e),
        (_, Err(e)) => return Err(e),
        (Err(e), Ok(_)) => return Err(e),
        (Ok(read), Ok(stderr)) => {
            // --exit-on-error makes any SQL error fatal; anything else pg_restore calls an error is too.
            if let Some(line) = stderr.lines().find(|l| l.contains("error")) {
                return Err(Error::step("restore", format!("pg_restore reported: {line}")));
            }
            read
        }
    };
    let scratch_url = env.database_url.with_dbname(&plan.scratch);
    // Materialized views and sequence values are not in the manifest: the row counts are.
    let mut problems = differences(&scratch_url, &m.tables, None, &[], crate::runbooks::sync::default_jobs()).await?;
    let (chains, chain_problems) = verify_chains_on(cx, env, &scratch_url, snapshot).await?;
    problems.extend(chain_problems);
    Ok(Checked {
        tables: m.tables.len(),
        rows: m.tables.iter().map(|t| t.rows).sum(),
        chains,
        problems,
        stored_bytes: read.stored_bytes,
        plain_bytes: read.plain_bytes,
    })
}

/// Every chain configured for `env` verified on the copy at `copy` (a scratch database, a scratch
/// server), held to the anchors journaled before `since` (the backup's snapshot or start): each
/// chain's `{chain, entries, ok}` and the problems found.
pub(super) async fn verify_chains_on(
    cx: &Ctx,
    env: &EnvConfig,
    copy: &DbUrl,
    since: Option<SystemTime>,
) -> Result<(Vec<Value>, Vec<String>)> {
    let (mut chains, mut problems) = (Vec::new(), Vec::new());
    if env.chains.is_empty() {
        return Ok((chains, problems));
    }
    let on_copy = EnvConfig { database_url: copy.clone(), ..env.clone() };
    let anchors = anchors_before(cx, &env.name, since).await?;
    for (name, config) in &env.chains {
        let spec = table::Spec::new(name, Some(config), &VerifyChainArgs::default());
        let (entries, problem) = match table::verify(cx, &on_copy, &spec, &anchors).await {
            Ok(r) => (
                r.entries,
                r.errors
                    .first()
                    .map(|b| format!("chain {name} on the copy: entry {} ({}): {}", b.index, b.key, b.reason)),
            ),
            Err(e) => (0, Some(format!("chain {name} on the copy: {e}"))),
        };
        chains.push(json!({ "chain": name, "entries": entries, "ok": problem.is_none() }));
        problems.extend(problem);
    }
    Ok((chains, problems))
}

/// The anchors of `env`'s chains journaled before the backup's snapshot: their rows must be in the
/// copy (a chain only grows). Later anchors name rows the backup cannot hold, so they are left out.
async fn anchors_before(cx: &Ctx, env: &str, snapshot: Option<SystemTime>) -> Result<State> {
    let mut kept = State::default();
    let Some(snapshot) = snapshot else { return Ok(kept) };
    let state = cx.journal.state().await?;
    for (chain, anchors) in state.anchors.get(env).into_iter().flatten() {
        // A Vec, not the iterator: a closure type inside the future would keep it from being Send.
        let seqs: Vec<u64> = anchors.iter().map(|a| a.seq).collect();
        let entries = crate::journal::index::read_seqs(&*cx.store, seqs).await?;
        let before: Vec<Anchor> = anchors
            .iter()
            .zip(entries)
            .filter(|(_, s)| {
                s.entry.as_ref().is_ok_and(|e| humantime::parse_rfc3339_weak(&e.time).is_ok_and(|t| t < snapshot))
            })
            .map(|(a, _)| a.clone())
            .collect();
        kept.anchors.entry(env.to_string()).or_default().insert(chain.clone(), before);
    }
    Ok(kept)
}

/// Journal `drill-done` and put the verdict in the report and the step's details.
async fn record(cx: &Ctx, log: &mut StepLog, plan: &Plan, snapshot: Option<String>, v: Verdict) -> Result<()> {
    let details = verdict(cx, log, plan, snapshot, &v);
    log.journal.append(DRILL_DONE, details).await?;
    Ok(())
}

/// The `drill-done` details; the report's fields, the step's details and summary set on the way.
fn verdict(cx: &Ctx, log: &mut StepLog, plan: &Plan, snapshot: Option<String>, v: &Verdict) -> Value {
    let c = v.checked.as_ref();
    let chains: Vec<Value> = c.map(|c| c.chains.clone()).unwrap_or_default();
    let chains_ok = chains.iter().filter(|c| c["ok"] == true).count() as u64;
    let (tables, rows) = match c {
        Some(c) => (c.tables as u64, c.rows.max(0) as u64),
        None => (0, 0),
    };
    let details = json!({
        "backup_id": plan.backup.id, "backup_type": "logical", "ok": v.ok,
        "scratch_database": plan.scratch, "rto_ms": v.rto_ms, "rpo_s": v.rpo_s,
        "backup_snapshot": snapshot, "tables": tables, "rows": rows,
        "chains": chains, "problems": v.problems,
    });
    let r = &cx.run;
    r.report("ok", v.ok);
    r.report("rto_ms", json!(v.rto_ms));
    r.report("rpo_s", json!(v.rpo_s));
    r.report("tables_verified", tables);
    r.report("rows_verified", rows);
    r.report("chains_verified", chains_ok);
    r.report("chains", Value::Array(chains.clone()));
    r.report("problems", json!(v.problems));
    if let Some(c) = c {
        // `bytes` is what --metrics-file records as drctl_bytes: the stored bytes read back.
        r.report("bytes", c.stored_bytes);
        r.report("restored_bytes", c.plain_bytes);
        log.set("bytes", c.stored_bytes);
    }
    log.set("ok", v.ok);
    log.set("rto_ms", json!(v.rto_ms));
    log.set("rpo_s", json!(v.rpo_s));
    let age = |s: u64| humantime::format_duration(Duration::from_secs(s)).to_string();
    let timing = format!(
        "RTO {}, RPO {}",
        v.rto_ms.map_or("-".into(), crate::output::table::ms),
        v.rpo_s.map_or("-".into(), age)
    );
    log.summary(if v.ok {
        format!(
            "{} restored into {} and verified: {} in {}, {} ({timing})",
            plan.what(),
            plan.scratch,
            count(rows, "row"),
            count(tables, "table"),
            count(chains_ok, "chain"),
        )
    } else {
        format!("{} FAILED its drill: {}", plan.what(), v.problems.join("; "))
    });
    details
}

// ---------------------------------------------------------------------------------------------

/// The finally step: this run's scratch database goes, whatever happened before.
struct DropScratch {
    plan: Arc<Plan>,
}

#[async_trait]
impl Step for DropScratch {
    fn id(&self) -> &'static str {
        "drop-scratch"
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        Ok(!self.plan.exists(&self.plan.scratch).await?)
    }
    async fn apply(&self, _cx: &Ctx, log: &mut StepLog) -> Result<()> {
        self.plan.drop_db(&self.plan.scratch).await?;
        log.set("dropped", self.plan.scratch.clone());
        log.summary(format!("dropped {}", self.plan.scratch));
        Ok(())
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        if self.is_done(cx).await? {
            Ok(())
        } else {
            Err(Error::step("drop-scratch", format!("{} still exists", self.plan.scratch)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_are_recognisable_unquoted_per_store_and_fit_postgresql() {
        let a = scratch_name("file:///var/lib/drctl", "20261125T205201Z-3f9a1c");
        assert!(a.starts_with("drctl_drill_") && a.ends_with("_20261125t205201z_3f9a1c"), "{a}");
        assert_eq!(a.len(), 44);
        assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{a}");
        let b = scratch_name("s3://bucket/drctl", "20261125T205201Z-3f9a1c");
        assert_ne!(a, b, "another store's drill has another name");
        assert!(a.starts_with(&store_prefix("file:///var/lib/drctl")));
    }
}
