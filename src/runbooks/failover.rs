//! failover --to ENV: the incident command. The seed ADR's procedure was a page of console clicks
//! and psql at 3 a.m.; here it is one run of steps that already exist, composed, not re-written:
//!
//! 1. promote-replica's steps when ENV is a `replica_of` env: fence the old primary if it answers,
//!    wait until ENV replayed what it wrote, promote, lift the replicated fence, prove ENV writes;
//! 2. mark-cutover: ENV's WAL position and row counters, journaled before traffic moves, so that
//!    `rollback` can tell what was written on ENV since (and refuse to abandon it silently); and
//!    how old ENV's data is (the RPO actually lost);
//! 3. dns-cutover's point-record: one Route 53 batch, journaled before the wait, INSYNC, read back;
//! 4. readiness: ENV's role, whether it writes, its health, the record now, the data age and the
//!    achieved RTO, journaled and shown as a table.
//!
//! One set of locks (`dns`, `env:ENV`; a sync of ENV holding the latter is taken over, and that
//! sync stops at its next lock check without swapping), one preflight, one confirmation. An old
//! primary that does not answer is the normal case in an incident: reported, never a refusal.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::clients::dns::{Dns, RecordSet, RecordType};
use crate::clients::pg;
use crate::clients::pg::replication as repl;
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::engine::run::{Confirm, Runbook};
use crate::engine::step::{Check, Step, StepLog};
use crate::error::{Error, Result};
use crate::journal::fold::{Cutover, run_key};
use crate::runbooks::check::health;
use crate::runbooks::sync::target::maintenance_url;
use crate::runbooks::{dns_cutover, promote_replica};

pub async fn failover(cx: &Ctx, to: &EnvConfig) -> Result<Runbook> {
    // dns-cutover's builder checks [dns] and ENV's dns_target (config errors, exit 2).
    let cutover = dns_cutover::dns_cutover(cx, to).await?;
    let old = old_primary(cx, to);
    let mut rb = Runbook::new("failover", Some(&to.name), format!("--to {}", to.name))
        .lock("dns".into())
        .lock(format!("env:{}", to.name))
        .resumable();
    // A sync refreshing ENV must not swap old data in under the traffic just sent there.
    rb.take_over.push((format!("env:{}", to.name), "sync "));
    let dns = cx.config.dns.as_ref().expect("dns_cutover checked [dns]");
    let how = match &to.replica_of {
        Some(p) => format!("promote {} (fencing {p} if it answers), then point", to.name),
        None => "point".to_string(),
    };
    rb.confirm = Some(Confirm {
        env: to.name.clone(),
        question: format!("fail over to {}: {how} {} {} at it", to.name, dns.kind, dns.record),
    });
    if to.replica_of.is_some() {
        rb = rb.then(promote_replica::promote_replica(cx, to).await?);
    }
    let record = Record {
        api: Arc::new(cx.dns_api().await),
        zone: dns.zone_id.clone(),
        name: dns.record.clone(),
        kind: dns.kind.clone(),
    };
    Ok(rb
        .step(MarkCutover { to: to.clone(), old, record: record.clone() })
        .then(cutover)
        .step(Readiness { to: to.clone(), record }))
}

/// The env ENV takes over from: the primary it replicates, the env it is a warm standby of, or
/// (when it declares neither) none known before the record is read.
fn old_primary(cx: &Ctx, to: &EnvConfig) -> Option<EnvConfig> {
    let name = to.replica_of.as_ref().or(to.sync_from.as_ref())?;
    cx.config.env(name).ok().cloned()
}

/// Where the record is, for the steps that ask whether this failover already happened.
#[derive(Clone)]
struct Record {
    api: Arc<dyn Dns>,
    zone: String,
    name: String,
    kind: String,
}

impl Record {
    async fn current(&self) -> Result<Option<RecordSet>> {
        let rtype = RecordType::parse(&self.kind).unwrap_or(RecordType::Cname);
        self.api.current(&self.zone, &self.name, rtype).await
    }
}

/// The cutover this failover is (or resumes): the newest one, when it is a failover to `to` not
/// rolled back (runs that move the record hold the `dns` lock, so no other can be newer), and
/// either this run resumes one of its runs or the record still points at `to`. A record moved
/// since by hand is a new failover, not this one done.
async fn current_cutover(cx: &Ctx, to: &EnvConfig, record: &Record) -> Result<Option<Cutover>> {
    let state = cx.journal.state().await?;
    let Some(c) = state
        .cutovers
        .last()
        .filter(|c| c.runbook == "failover" && c.to == to.name && c.rolled_back_by.is_none())
        .cloned()
    else {
        return Ok(None);
    };
    if cx.run.resumes().is_some_and(|r| c.run_ids.iter().any(|id| id == r)) {
        return Ok(Some(c));
    }
    let live = match &to.dns_target {
        Some(t) => record.current().await?.is_some_and(|r| r.points_at(t)),
        None => false,
    };
    Ok(live.then_some(c))
}

// ---------------------------------------------------------------------------------------------

struct MarkCutover {
    to: EnvConfig,
    old: Option<EnvConfig>,
    record: Record,
}

#[async_trait]
impl Step for MarkCutover {
    fn id(&self) -> &'static str {
        "mark-cutover"
    }
    fn check_ids(&self) -> &'static [&'static str] {
        &["db-reachable", "old-primary"]
    }
    /// `db-reachable`: ENV's server answers (its maintenance_db: a replica's app database may be
    /// fenced until it is promoted). `old-primary`: whether the env ENV takes over from answers.
    /// Reported, never a refusal: in an incident it is usually down.
    async fn preflight(&self, _cx: &Ctx) -> Vec<Check> {
        const ID: &str = "old-primary";
        let reachable = match pg::connect(&maintenance_url(&self.to)).await {
            Ok(_) => Check::pass("db-reachable", format!("{} answers", self.to.name)),
            Err(e) => Check::fail("db-reachable", format!("{} must take over but does not answer: {e}", self.to.name)),
        };
        let Some(old) = &self.old else {
            return vec![
                reachable,
                Check::pass(ID, format!("{} declares neither replica_of nor sync_from", self.to.name)),
            ];
        };
        let c = match pg::connect(&maintenance_url(old)).await {
            Ok(c) => c,
            Err(e) => {
                return vec![
                    reachable,
                    Check::pass(
                        ID,
                        format!("{} does not answer ({e}): expected when it is down; it is not fenced", old.name),
                    ),
                ];
            }
        };
        let detail = match (repl::in_recovery(&c).await, repl::current_lsn(&c).await) {
            (Ok(false), Ok(lsn)) => format!("{} answers: a primary at LSN {lsn}", old.name),
            (Ok(true), _) => format!("{} answers, in recovery (not a primary)", old.name),
            (_, Err(e)) | (Err(e), _) => format!("{} answers but: {}", old.name, pg::describe(&e)),
        };
        vec![reachable, Check::pass(ID, detail)]
    }
    async fn is_done(&self, cx: &Ctx) -> Result<bool> {
        Ok(current_cutover(cx, &self.to, &self.record).await?.is_some_and(|c| c.mark.is_some()))
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let to = &self.to;
        let err = |e: tokio_postgres::Error| pg::db_error(&to.database_url, &e);
        let c = pg::connect(&to.database_url).await?;
        let lsn = if repl::in_recovery(&c).await.map_err(err)? {
            repl::replay_lsn(&c).await.map_err(err)?.unwrap_or_default()
        } else {
            repl::current_lsn(&c).await.map_err(err)?
        };
        let tables: Map<String, Value> = repl::table_counters(&c)
            .await
            .map_err(err)?
            .into_iter()
            .map(|(t, i, u, d)| (t, json!([i, u, d])))
            .collect();
        // How much the users lose: nothing when ENV replayed all a fenced primary wrote; else
        // up to the last transaction it replayed, or its last sync's snapshot.
        let fenced = cx.run.report_field("primary_fenced").and_then(|v| v.as_bool()).unwrap_or(false)
            || cx.run.sent("fence-primary").is_some();
        let (as_of, age, note) = if to.replica_of.is_some() {
            let replayed = repl::last_replayed(&c).await.map_err(err)?;
            match (fenced, replayed) {
                (true, r) => (
                    r.map(|(t, _)| t),
                    Some(0),
                    format!("nothing lost: {} replayed everything the fenced primary wrote", to.name),
                ),
                (false, Some((t, age))) => (
                    Some(t.clone()),
                    Some(age.max(0)),
                    format!("the last transaction {} replayed was committed at {t}: later ones are lost", to.name),
                ),
                (false, None) => (None, None, format!("{} replayed no transaction: data age unknown", to.name)),
            }
        } else if to.sync_from.is_some() {
            let state = cx.journal.state().await?;
            match state.syncs.get(&to.name) {
                Some(s) => {
                    let age = humantime::parse_rfc3339(&s.snapshot_time)
                        .ok()
                        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
                        .map(|d| d.as_secs() as i64);
                    (
                        Some(s.snapshot_time.clone()),
                        age,
                        format!("{} holds the data of its last sync's snapshot {}", to.name, s.snapshot_time),
                    )
                }
                None => (None, None, format!("{} was never synced by drctl: data age unknown", to.name)),
            }
        } else {
            (None, None, format!("{} declares neither replica_of nor sync_from: its data is its own", to.name))
        };
        log.set("lsn", lsn.clone());
        log.set("tables", Value::Object(tables));
        log.set("data_as_of", json!(as_of));
        log.set("data_age_s", json!(age));
        log.set("data_note", note.clone());
        log.summary(format!("{} at LSN {lsn}; {note}", to.name));
        cx.run.report("lsn_at_cutover", lsn);
        cx.run.report("data_as_of", json!(as_of));
        cx.run.report("data_age_s", json!(age));
        Ok(())
    }
    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

struct Readiness {
    to: EnvConfig,
    record: Record,
}

#[async_trait]
impl Step for Readiness {
    fn id(&self) -> &'static str {
        "readiness"
    }
    async fn is_done(&self, cx: &Ctx) -> Result<bool> {
        Ok(current_cutover(cx, &self.to, &self.record).await?.is_some_and(|c| c.ready.is_some()))
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let to = &self.to;
        let timeout = cx.config.policy.health_timeout;
        let role_writable = async {
            let c = pg::connect(&to.database_url).await?;
            let err = |e: tokio_postgres::Error| pg::db_error(&to.database_url, &e);
            let replica = repl::in_recovery(&c).await.map_err(err)?;
            let promoted = cx.journal.state().await?.promoted.contains(&to.name);
            let role = match (replica, promoted) {
                (true, _) => "replica",
                (false, true) => "promoted",
                (false, false) => "primary",
            };
            Ok::<_, Error>((role, repl::write_probe(&c).await.is_ok()))
        };
        let healthy = async {
            match &to.health_url {
                Some(u) => Some(health(u, timeout).await.ok),
                None => None,
            }
        };
        let (rw, healthy, record) = tokio::join!(role_writable, healthy, self.record.current());
        let (role, writable) = rw?;
        let record = record?;
        let state = cx.journal.state().await?;
        let mark = state.cutovers.last().and_then(|c| c.mark.clone()).unwrap_or_default();
        // The RTO runs from the first attempt's start: a crashed and resumed failover counts whole.
        let since = state.runs.get(&run_key("failover", Some(&to.name))).map(|s| s.since.clone()).unwrap_or_default();
        let rto_ms = humantime::parse_rfc3339(&since)
            .ok()
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .map(|d| d.as_millis() as u64);
        let live = record.as_ref().is_some_and(|r| to.dns_target.as_deref().is_some_and(|t| r.points_at(t)));
        let readiness = json!({
            "env": to.name,
            "role": role,
            "writable": writable,
            "healthy": healthy,
            "record": format!("{} {} -> {}", self.record.kind, self.record.name, RecordSet::shown(record.as_ref())),
            "live": live,
            "data_as_of": mark.get("data_as_of").cloned().unwrap_or(Value::Null),
            "data_age_s": mark.get("data_age_s").cloned().unwrap_or(Value::Null),
            "data_note": mark.get("data_note").cloned().unwrap_or(Value::Null),
        });
        for (k, v) in readiness.as_object().expect("an object") {
            log.set(k, v.clone());
        }
        log.set("rto_ms", json!(rto_ms));
        log.set("started", since);
        log.summary(format!(
            "{} {role}, {}, {}; RTO {}",
            to.name,
            if writable { "writable" } else { "NOT writable" },
            match healthy {
                Some(true) => "healthy",
                Some(false) => "UNHEALTHY",
                None => "no health_url",
            },
            rto_ms.map(crate::output::table::ms).unwrap_or_else(|| "unknown".into())
        ));
        cx.run.report("readiness", readiness.clone());
        cx.run.report("rto_ms", json!(rto_ms));
        cx.run.report("data_age_s", readiness["data_age_s"].clone());
        cx.run.report("data_as_of", readiness["data_as_of"].clone());
        cx.run.report("record", self.record.name.clone());
        if let Some(t) = &to.dns_target {
            cx.run.report("target", t.clone());
        }
        if !writable || !live {
            return Err(Error::step(
                self.id(),
                format!(
                    "{} is {} and the record {}: the failover did not leave it serving",
                    to.name,
                    if writable { "writable" } else { "not writable" },
                    if live { "points at it" } else { "does not point at it" }
                ),
            ));
        }
        Ok(())
    }
    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        Ok(())
    }
}
