//! status: one row per env saying whether it could take over now. Replaces the on-call habit of
//! opening psql on each host, the Route 53 console and the backup bucket before deciding anything.
//! Read-only: no lock, no journal entry.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::catalog;
use crate::clients::pg;
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::error::Error;
use crate::journal::fold::State;
use crate::runbooks::check::health;

struct Row {
    name: String,
    reachable: bool,
    role: Option<&'static str>,
    lag_bytes: Option<i64>,
    live: Option<bool>,
    healthy: Option<bool>,
    last_sync_age_s: Option<u64>,
    last_backup_age_s: Option<u64>,
    /// Whether the newest backup's objects were re-hashed by `verify-chain --deep` and matched.
    last_backup_verified: Option<bool>,
    /// The env's last `drill`: how long ago it finished, whether the copy verified, which backup.
    last_drill_age_s: Option<u64>,
    last_drill_ok: Option<bool>,
    last_drill_backup_id: Option<String>,
    last_drill_rto_ms: Option<u64>,
    last_drill_rpo_s: Option<u64>,
    rpo_ok: Option<bool>,
    notes: Vec<String>,
}

pub async fn status(cx: &Ctx) -> (Value, String, Option<Error>) {
    let state = match cx.journal.state().await {
        Ok(s) => s,
        Err(e) => return (Value::Null, String::new(), Some(e)),
    };
    let now = SystemTime::now();
    let rpo = cx.config.policy.rpo;
    let mut rows = Vec::new();
    for env in cx.config.environments.values() {
        rows.push(row(cx, env, &state, now, rpo).await);
    }
    let mut breaches = Vec::new();
    for r in &rows {
        if r.rpo_ok == Some(false) {
            breaches.push(format!("{}: data older than policy.rpo ({})", r.name, humantime::format_duration(rpo)));
        }
        if r.live == Some(true) && r.healthy == Some(false) {
            breaches.push(format!("{}: live but unhealthy", r.name));
        }
    }
    let doc = json!({
        "ok": breaches.is_empty(),
        "environments": rows.iter().map(|r| json!({
            "name": r.name, "reachable": r.reachable, "role": r.role, "lag_bytes": r.lag_bytes,
            "live": r.live, "healthy": r.healthy, "last_sync_age_s": r.last_sync_age_s,
            "last_backup_age_s": r.last_backup_age_s, "last_backup_verified": r.last_backup_verified,
            "last_drill_age_s": r.last_drill_age_s, "last_drill_ok": r.last_drill_ok,
            "last_drill_backup_id": r.last_drill_backup_id, "last_drill_rto_ms": r.last_drill_rto_ms,
            "last_drill_rpo_s": r.last_drill_rpo_s,
            "rpo_ok": r.rpo_ok, "notes": r.notes,
        })).collect::<Vec<_>>(),
    });
    let mut t = crate::output::table::new_table(&[
        "env",
        "reachable",
        "role",
        "lag",
        "live",
        "healthy",
        "last sync",
        "last backup",
        "last drill",
        "rpo ok",
        "notes",
    ]);
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let age = |s: Option<u64>| opt(s.map(|s| humantime::format_duration(Duration::from_secs(s)).to_string()));
    for r in &rows {
        t.add_row(vec![
            r.name.clone(),
            r.reachable.to_string(),
            opt(r.role.map(str::to_string)),
            opt(r.lag_bytes.map(|b| crate::output::table::bytes(b.max(0) as u64))),
            opt(r.live.map(|b| b.to_string())),
            opt(r.healthy.map(|b| b.to_string())),
            age(r.last_sync_age_s),
            age(r.last_backup_age_s),
            match (r.last_drill_age_s, r.last_drill_ok) {
                (Some(_), Some(ok)) => format!("{} ago, {}", age(r.last_drill_age_s), if ok { "ok" } else { "FAILED" }),
                _ => "-".into(),
            },
            opt(r.rpo_ok.map(|b| b.to_string())),
            r.notes.join("; "),
        ]);
    }
    let error = (!breaches.is_empty()).then_some(Error::Breach { breaches });
    (doc, t.to_string(), error)
}

async fn row(cx: &Ctx, env: &EnvConfig, state: &State, now: SystemTime, rpo: Duration) -> Row {
    let mut r = Row {
        name: env.name.clone(),
        reachable: false,
        role: None,
        lag_bytes: None,
        live: None,
        healthy: None,
        last_sync_age_s: None,
        last_backup_age_s: None,
        last_backup_verified: None,
        last_drill_age_s: None,
        last_drill_ok: None,
        last_drill_backup_id: None,
        last_drill_rto_ms: None,
        last_drill_rpo_s: None,
        rpo_ok: None,
        notes: Vec::new(),
    };
    match pg::connect(&env.database_url).await {
        Ok(c) => {
            r.reachable = true;
            match pg::replication::role_and_lag(&c).await {
                Ok((in_recovery, lag)) => {
                    let promoted = state.promoted.contains(&env.name);
                    r.role = Some(declared_role(env, in_recovery, promoted));
                    r.lag_bytes = lag;
                    if let (Some(p), false, false) = (&env.replica_of, in_recovery, promoted) {
                        r.notes.push(format!("declared replica_of = \"{p}\" but not in recovery"));
                    }
                }
                Err(e) => r.notes.push(pg::describe(&e)),
            }
        }
        Err(e) => r.notes.push(e.to_string()),
    }
    match cx.is_live(env).await {
        Ok(l) => r.live = l.map(|(live, _)| live),
        Err(e) => r.notes.push(e.to_string()),
    }
    if let Some(url) = &env.health_url {
        let c = health(url, cx.config.policy.health_timeout).await;
        if !c.ok {
            r.notes.push(c.detail);
        }
        r.healthy = Some(c.ok);
    }
    let age_of =
        |t: &str| humantime::parse_rfc3339(t).ok().map(|t| now.duration_since(t).unwrap_or_default().as_secs());
    if env.sync_from.is_some() {
        // The data's age is the source snapshot's, not the time the swap finished.
        let newest = state.syncs.get(&env.name).map(|s| s.snapshot_time.clone());
        r.last_sync_age_s = newest.as_deref().and_then(age_of);
        if newest.is_none() {
            r.notes.push("never synced".into());
        }
    }
    if let Some(newest) = state.committed(Some(&env.name)).last() {
        r.last_backup_verified = Some(newest.deep.as_ref().is_some_and(|d| d.ok));
        match &newest.deep {
            None => r.notes.push(format!(
                "newest backup {} never deep-verified: run `drctl verify-chain --backups --deep`",
                newest.id
            )),
            Some(d) if !d.ok => {
                r.notes.push(format!("newest backup {} FAILED deep verification at {}", newest.id, d.time))
            }
            Some(_) => {}
        }
        // The manifest's start is when the dump's snapshot was taken; the commit time is later.
        r.last_backup_age_s = match catalog::read_manifest(&*cx.store, newest).await {
            Ok(Ok(m)) => age_of(&m.started),
            _ => age_of(&newest.time),
        };
    }
    if let Some(d) = state.drills.get(&env.name) {
        r.last_drill_age_s = age_of(&d.time);
        r.last_drill_ok = Some(d.ok);
        r.last_drill_backup_id = Some(d.backup_id.clone());
        r.last_drill_rto_ms = d.rto_ms;
        r.last_drill_rpo_s = d.rpo_s;
        if !d.ok {
            r.notes.push(format!(
                "last drill (run {}) of backup {} FAILED: `drctl log --runbook drill` says why",
                d.run_id, d.backup_id
            ));
        }
    }
    let ages: Vec<Option<u64>> =
        [(env.sync_from.is_some(), r.last_sync_age_s), (r.last_backup_age_s.is_some(), r.last_backup_age_s)]
            .into_iter()
            .filter(|(applies, _)| *applies)
            .map(|(_, a)| a)
            .collect();
    if !ages.is_empty() {
        // A standby that was never synced is not within the RPO.
        r.rpo_ok = Some(ages.iter().all(|a| a.is_some_and(|s| s <= rpo.as_secs())));
    }
    r
}

/// What `status` calls an env: `replica` when its server is in recovery; `promoted` for a
/// `replica_of` env drctl promoted (journaled); otherwise `standby` for a warm standby that sync
/// refreshes (`sync_from`), which is a primary server but not the primary anyone should write to,
/// and `primary` for the rest.
fn declared_role(env: &EnvConfig, in_recovery: bool, promoted: bool) -> &'static str {
    match (in_recovery, &env.sync_from) {
        (true, _) => "replica",
        (false, _) if promoted && env.replica_of.is_some() => "promoted",
        (false, Some(_)) => "standby",
        (false, None) => "primary",
    }
}
