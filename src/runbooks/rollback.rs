//! rollback [--run RUN_ID]: undo a dns-cutover or failover, without silently abandoning the
//! writes made since.
//!
//! The cutover is read from the journal: the exact record set it replaced, what it fenced, and
//! (after a failover) the taking-over env's WAL position and row counters at the cutover. Before
//! anything moves, the env that took over is asked what was written there since: any row
//! inserted, updated or deleted would be left behind on an env users no longer reach, so the run
//! refuses (`writes-since-cutover`, exit 3, naming the figures) unless the operator accepts it.
//! Then the old primary drctl fenced is unfenced (connections allowed again, or its server started
//! when drctl had stopped it), and the previous record set goes back exactly, by the same
//! read-check-change-INSYNC-verify step dns-cutover uses.
//!
//! Without --run it undoes the newest cutover only: once that is rolled back, a rerun is "already
//! done" and never walks back further (an older cutover needs its run id, on purpose).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::clients::dns::{Dns, RecordSet};
use crate::clients::pg;
use crate::clients::pg::replication as repl;
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::engine::run::{Confirm, Runbook};
use crate::engine::step::{Check, Step, StepLog};
use crate::error::{Error, Result};
use crate::journal::fold::{CUTOVERS_KEPT, Cutover};
use crate::runbooks::dns_cutover::{PointRecord, Restore};
use crate::runbooks::sync::target::maintenance_url;

pub async fn rollback(cx: &Ctx, run: Option<&str>) -> Result<Runbook> {
    let file = cx.config.file.display().to_string();
    let dns = cx
        .config
        .dns
        .clone()
        .ok_or_else(|| Error::config(&file, "rollback needs a [dns] section: zone_id, record, type"))?;
    let state = cx.journal.state().await?;
    let cut = match run {
        Some(id) => state.cutover_by_run(id).cloned().ok_or_else(|| {
            Error::usage(format!("--run {id}: no dns-cutover or failover of that run is in the journal")).with_hint(
                format!("`drctl log --runbook failover` and `--runbook dns-cutover` list them (the newest {CUTOVERS_KEPT} can be rolled back)"),
            )
        })?,
        None => state.cutovers.last().cloned().ok_or_else(|| {
            Error::usage("nothing to roll back: the journal has no dns-cutover or failover that moved the record")
        })?,
    };
    let first = cut.run_ids.first().cloned().unwrap_or_default();
    let Some(change) = cut.change.clone() else {
        return Err(Error::usage(format!(
            "run {first} ({} --to {}) sent no record change (the record already pointed at {}): there is no \
             previous record to return to",
            cut.runbook, cut.to, cut.to
        )));
    };
    let previous: Option<RecordSet> = serde_json::from_value(change["previous"].clone()).map_err(|e| {
        Error::step("restore-record", format!("run {first}'s journaled previous record is unreadable: {e}"))
    })?;
    let set: Option<RecordSet> = serde_json::from_value(change["new"].clone()).ok();
    let Some(previous) = previous else {
        return Err(Error::usage(format!(
            "run {first} created {} (there was no record before it): rollback restores a previous record, \
             and there is none; delete the record by hand if that is what you want",
            dns.record
        )));
    };
    // The env returned to: the one whose dns_target the previous record names.
    let back: Option<EnvConfig> = cx
        .config
        .environments
        .values()
        .find(|e| e.dns_target.as_deref().is_some_and(|t| previous.points_at(t)))
        .cloned();
    let took = cx.config.env(&cut.to).ok().cloned();
    let mut rb = Runbook::new("rollback", back.as_ref().map(|e| e.name.as_str()), format!("--run {first}"))
        .lock("dns".into())
        .resumable();
    if let Some(b) = &back {
        rb = rb.lock(format!("env:{}", b.name));
    }
    let fenced = cut.fenced.clone().and_then(|f| {
        let name = f["primary"].as_str()?.to_string();
        Some((cx.config.env(&name).ok()?.clone(), f))
    });
    let back_name = back.as_ref().map(|b| b.name.clone()).unwrap_or_else(|| "rollback".into());
    rb.confirm = Some(Confirm {
        env: back_name,
        question: format!(
            "undo {} run {first}: point {} {} back at {}{}",
            cut.runbook,
            dns.kind,
            dns.record,
            RecordSet::shown(Some(&previous)),
            match &fenced {
                Some((p, _)) => format!(", unfencing {}", p.name),
                None => String::new(),
            }
        ),
    });
    // What a dry run and a refusal report too: which cutover, and what goes back.
    cx.run.report("rolls_back", first.clone());
    cx.run.report("previous", serde_json::to_value(&set).unwrap_or_default());
    cx.run.report("restores", serde_json::to_value(&previous).unwrap_or_default());
    let api: Arc<dyn Dns> = Arc::new(cx.dns_api().await);
    let check_at_act = matches!((&fenced, &back), (Some((p, _)), Some(b)) if p.name == b.name);
    let restore = PointRecord::restore(
        cx,
        &dns,
        back.as_ref(),
        previous,
        Restore { rolls_back: first.clone(), set, check_at_act },
        api,
    );
    Ok(rb.step(UnfencePrimary { fenced, cut: cut.clone(), took }).step(restore))
}

// ---------------------------------------------------------------------------------------------

/// Lift the fence a failover put on the old primary. Also owns `writes-since-cutover`: it is
/// checked before this, the first change of the run.
struct UnfencePrimary {
    /// The old primary and what fence-primary journaled of its fence.
    fenced: Option<(EnvConfig, Value)>,
    cut: Cutover,
    /// The env that took over (asked what was written on it since the cutover).
    took: Option<EnvConfig>,
}

impl UnfencePrimary {
    fn stopped(&self) -> Option<(&EnvConfig, std::path::PathBuf)> {
        let (env, f) = self.fenced.as_ref()?;
        (f["how"] == "server stopped").then(|| (env, std::path::PathBuf::from(f["data_dir"].as_str().unwrap_or(""))))
    }

    /// What was written on the env that took over since mark-cutover: per-table row deltas and
    /// the WAL between the two positions. `Ok(None)` when nothing was.
    async fn writes(&self, cx: &Ctx) -> std::result::Result<Option<String>, String> {
        let Some(mark) = &self.cut.mark else { unreachable!("checked by the caller") };
        let Some(took) = &self.took else {
            return Err(format!("{} is no longer in the config: cannot ask it what was written", self.cut.to));
        };
        let c = pg::connect(&took.database_url).await.map_err(|e| format!("cannot ask {}: {e}", took.name))?;
        let describe = |e: tokio_postgres::Error| pg::describe(&e);
        let now = repl::table_counters(&c).await.map_err(describe)?;
        let lsn_now = match repl::in_recovery(&c).await.map_err(describe)? {
            true => repl::replay_lsn(&c).await.map_err(describe)?.unwrap_or_default(),
            false => repl::current_lsn(&c).await.map_err(describe)?,
        };
        let lsn_then = mark["lsn"].as_str().unwrap_or_default().to_string();
        let wal = repl::lsn_diff(&c, &lsn_now, &lsn_then).await.unwrap_or(0);
        let then = mark["tables"].as_object().cloned().unwrap_or_default();
        let mut tables = Vec::new();
        let mut reset = Vec::new();
        for (t, i, u, d) in &now {
            let was: Vec<i64> = then
                .get(t)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_else(|| vec![0, 0, 0]);
            let [wi, wu, wd] = was[..] else { continue };
            if *i < wi || *u < wu || *d < wd {
                reset.push(t.clone());
                continue;
            }
            let (di, du, dd) = (i - wi, u - wu, d - wd);
            if di + du + dd > 0 {
                tables.push(json!({"table": t, "inserted": di, "updated": du, "deleted": dd}));
            }
        }
        cx.run.report(
            "writes_since_cutover",
            json!({"lsn_then": lsn_then, "lsn_now": lsn_now, "wal_bytes": wal, "tables": tables, "reset": reset}),
        );
        let shown: Vec<String> = tables
            .iter()
            .map(|t| {
                format!(
                    "{} +{} inserted, {} updated, {} deleted",
                    t["table"], t["inserted"], t["updated"], t["deleted"]
                )
            })
            .collect();
        let lsns = format!("LSN {lsn_then} at the cutover, {lsn_now} now, {wal} bytes of WAL");
        if !tables.is_empty() {
            return Ok(Some(format!(
                "{} was written to since run {} moved traffic to it ({lsns}): {}; rolling back abandons these \
                 rows on {}",
                self.cut.to,
                self.cut.run_ids[0],
                shown.join("; ").replace('"', ""),
                self.cut.to
            )));
        }
        if !reset.is_empty() && wal > 0 {
            return Ok(Some(format!(
                "{}'s statistics were reset since the cutover ({}), so its row counts cannot prove nothing was \
                 written ({lsns})",
                self.cut.to,
                reset.join(", ")
            )));
        }
        Ok(None)
    }
}

#[async_trait]
impl Step for UnfencePrimary {
    fn id(&self) -> &'static str {
        "unfence-primary"
    }
    fn check_ids(&self) -> &'static [&'static str] {
        &["writes-since-cutover"]
    }
    async fn preflight(&self, cx: &Ctx) -> Vec<Check> {
        const ID: &str = "writes-since-cutover";
        if let Some(by) = &self.cut.rolled_back_by {
            return vec![Check::pass(ID, format!("run {} was rolled back by run {by}", self.cut.run_ids[0]))];
        }
        if self.cut.mark.is_none() {
            return vec![Check::pass(
                ID,
                format!("{} run {}: no cutover position journaled, not checked", self.cut.runbook, self.cut.run_ids[0]),
            )];
        }
        vec![match self.writes(cx).await {
            Ok(None) => Check::pass(
                ID,
                format!(
                    "no row written on {} since the cutover ({})",
                    self.cut.to,
                    cx.run
                        .report_field("writes_since_cutover")
                        .map(|w| format!("LSN {} then, {} now", w["lsn_then"], w["lsn_now"]).replace('"', ""))
                        .unwrap_or_default()
                ),
            ),
            Ok(Some(found)) => Check::fail(ID, found),
            Err(why) => Check::fail(ID, format!("cannot tell what was written on {}: {why}", self.cut.to)),
        }]
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        let Some((env, f)) = &self.fenced else { return Ok(true) };
        if self.stopped().is_some() {
            return Ok(pg::connect(&maintenance_url(env)).await.is_ok());
        }
        let db = f["database"].as_str().unwrap_or(&env.database_url.dbname);
        match pg::connect(&maintenance_url(env)).await {
            Ok(c) => Ok(repl::allows_connections(&c, db).await.map_err(|e| pg::db_error(&maintenance_url(env), &e))?
                != Some(false)),
            // Reported by apply, which needs it to answer.
            Err(_) => Ok(false),
        }
    }
    async fn apply(&self, _cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let Some((env, f)) = &self.fenced else { return Ok(()) };
        if let Some((env, dir)) = self.stopped() {
            crate::clients::pgtools::PgTools::new(env.pg_bin.as_deref()).start_server(&dir).await?;
            log.set("started", dir.display().to_string());
            log.summary(format!("{}: server started (pg_ctl start -D {})", env.name, dir.display()));
            return Ok(());
        }
        let db = f["database"].as_str().unwrap_or(&env.database_url.dbname).to_string();
        let c = pg::connect(&maintenance_url(env)).await.map_err(|e| {
            Error::step(
                self.id(),
                format!("{} does not answer, so its fence cannot be lifted: {e}; start it and rerun", env.name),
            )
        })?;
        repl::unfence(&c, &db).await.map_err(|e| pg::db_error(&maintenance_url(env), &e))?;
        log.set("unfenced", env.name.clone());
        log.set("database", db.clone());
        log.summary(format!("{}: connections to {db} allowed again", env.name));
        Ok(())
    }
    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        let Some((env, _)) = &self.fenced else { return Ok(()) };
        pg::connect(&env.database_url).await.map(|_| ()).map_err(|e| {
            Error::step(self.id(), format!("{} still refuses connections to its app database: {e}", env.name))
        })
    }
}
