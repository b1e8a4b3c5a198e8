//! backup prune: apply [retention] to one env's backups.
//!
//! Kept: the newest `keep_last`, the newest of each of the last `keep_daily` days that have a backup,
//! the newest of each of the last `keep_weekly` ISO weeks that have one, and always the newest good
//! backup — each of these per type (logical dumps and base backups are counted apart). Without a [retention] section nothing expires (prune only cleans up dead runs): deleting
//! backups is never a default. Each expired backup is journaled `backup-pruned` before its objects
//! are deleted, so a crash in between leaves objects that the next prune deletes, never a listed
//! backup without objects.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::json;

use super::{CleanPartial, live_run_ids};
use crate::catalog::Committed;
use crate::config::{EnvConfig, Retention};
use crate::ctx::Ctx;
use crate::engine::run::Runbook;
use crate::engine::step::{Step, StepLog};
use crate::error::{Error, Result};
use crate::journal::fold::BACKUPS_REMOVED;
use crate::output::table::count;

pub fn prune(cx: &Ctx, env: &EnvConfig) -> Runbook {
    let rb =
        Runbook::new("backup-prune", Some(&env.name), format!("--env {}", env.name)).lock(format!("env:{}", env.name));
    rb.step(CleanPartial { env: env.name.clone(), own_id: cx.run_id.clone() })
        .step(Expire { env: env.name.clone(), retention: cx.config.retention.clone() })
        // Archived WAL older than every kept base backup restores nothing any more.
        .step(super::prune_wal::PruneWal { env: env.name.clone() })
}

/// Which committed backups (oldest first) expire under `r`. The newest always stays.
pub fn expired(backups: &[Committed], r: &Retention) -> Vec<Committed> {
    if r.keep_last.is_none() && r.keep_daily.is_none() && r.keep_weekly.is_none() {
        return Vec::new();
    }
    let newest_first: Vec<&Committed> = backups.iter().rev().collect();
    let mut keep: BTreeSet<String> = BTreeSet::new();
    if let Some(b) = newest_first.first() {
        keep.insert(b.id.clone());
    }
    for b in newest_first.iter().take(r.keep_last.unwrap_or(0) as usize) {
        keep.insert(b.id.clone());
    }
    let day = |b: &Committed| unix_secs(&b.time) / 86_400;
    // ISO weeks start on Monday; 1970-01-01 was a Thursday, so shift by 3 days.
    let week = |b: &Committed| (unix_secs(&b.time) / 86_400 + 3) / 7;
    for (n, bucket) in [(r.keep_daily, &day as &dyn Fn(&Committed) -> u64), (r.keep_weekly, &week)] {
        let mut seen = BTreeSet::new();
        for b in &newest_first {
            if seen.len() >= n.unwrap_or(0) as usize {
                break;
            }
            if seen.insert(bucket(b)) {
                keep.insert(b.id.clone());
            }
        }
    }
    backups.iter().filter(|b| !keep.contains(&b.id)).cloned().collect()
}

fn unix_secs(t: &str) -> u64 {
    humantime::parse_rfc3339(t).unwrap_or(UNIX_EPOCH).duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

struct Expire {
    env: String,
    retention: Retention,
}

/// What one expire pass finds.
struct Plan {
    /// Committed backups that retention expires now.
    expire: Vec<Committed>,
    /// Objects of backups pruned earlier that are still in the store (a crash between the
    /// `backup-pruned` entry and the deletes), by id.
    leftover: BTreeMap<String, Vec<String>>,
    /// Pruned ids with no objects left: journaled as removed so the journal's state forgets them.
    gone: Vec<String>,
}

impl Expire {
    async fn plan(&self, cx: &Ctx) -> Result<Plan> {
        let state = cx.journal.refresh().await?;
        let committed = state.committed(Some(&self.env));
        // Each type by itself: a newer logical dump never expires the base backup a point-in-time
        // restore starts from, nor a base backup the newest dump.
        let mut expire: Vec<Committed> = ["logical", "base"]
            .iter()
            .flat_map(|kind| {
                let of: Vec<Committed> = committed.iter().filter(|c| c.kind == *kind).cloned().collect();
                expired(&of, &self.retention)
            })
            .collect();
        expire.sort_by_key(|c| c.seq);
        let live = live_run_ids(cx).await?;
        // One listing of the env's backups, whatever the number of backups ever pruned.
        let prefix = format!("backups/{}/", self.env);
        let mut objects: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for o in cx.store.list(&prefix).await? {
            if let Some(id) = o.key[prefix.len()..].split('/').next() {
                objects.entry(id.to_string()).or_default().push(o.key.clone());
            }
        }
        let (mut leftover, mut gone) = (BTreeMap::new(), Vec::new());
        for id in state.pruned_ids(&self.env).into_iter().filter(|id| !live.contains(id)) {
            match objects.remove(&id) {
                Some(keys) => {
                    leftover.insert(id, keys);
                }
                None => gone.push(id),
            }
        }
        for b in &expire {
            leftover.insert(b.id.clone(), objects.remove(&b.id).unwrap_or_default());
        }
        cx.run.report("would_prune", json!(expire.iter().map(|b| b.id.clone()).collect::<Vec<_>>()));
        cx.run.report("kept", json!(committed.len() - expire.len()));
        Ok(Plan { expire, leftover, gone })
    }
}

#[async_trait]
impl Step for Expire {
    fn id(&self) -> &'static str {
        "expire"
    }
    async fn is_done(&self, cx: &Ctx) -> Result<bool> {
        let p = self.plan(cx).await?;
        Ok(p.expire.is_empty() && p.leftover.is_empty() && p.gone.is_empty())
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let Plan { expire, leftover, mut gone } = self.plan(cx).await?;
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        // The commit of the prune comes first: a crash after it leaves objects the next prune
        // deletes, never a listed backup with objects missing.
        for b in &expire {
            log.journal.append("backup-pruned", json!({ "id": b.id, "committed_seq": b.seq, "at": now })).await?;
        }
        let mut deleted = 0u64;
        for (id, keys) in &leftover {
            for k in keys {
                cx.store.delete(k).await?;
                deleted += 1;
            }
            gone.push(id.clone());
        }
        if !gone.is_empty() {
            log.journal.append(BACKUPS_REMOVED, json!({ "ids": gone })).await?;
        }
        let ids: Vec<String> = expire.iter().map(|b| b.id.clone()).collect();
        log.set("pruned", json!(ids));
        log.set("deleted_objects", deleted);
        log.summary(format!("pruned {}, deleted {}", count(ids.len() as u64, "backup"), count(deleted, "object")));
        cx.run.report("pruned", json!(ids));
        Ok(())
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        let p = self.plan(cx).await?;
        if p.expire.is_empty() && p.leftover.is_empty() && p.gone.is_empty() {
            Ok(())
        } else {
            Err(Error::step("expire", "expired backups remain after pruning"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: &str, time: &str) -> Committed {
        Committed {
            id: id.into(),
            env: "p".into(),
            manifest_sha256: String::new(),
            kind: "logical".into(),
            seq: 0,
            time: time.into(),
            deep: None,
            drilled: None,
        }
    }

    #[test]
    fn keeps_last_daily_weekly_and_always_the_newest() {
        let backups = vec![
            b("a", "2026-11-01T01:00:00.000Z"),
            b("b", "2026-11-09T01:00:00.000Z"),
            b("c", "2026-11-20T01:00:00.000Z"),
            b("d", "2026-11-20T05:00:00.000Z"),
            b("e", "2026-11-21T01:00:00.000Z"),
        ];
        let ids = |v: Vec<Committed>| v.into_iter().map(|b| b.id).collect::<Vec<_>>();
        let none = Retention { keep_last: None, keep_daily: None, keep_weekly: None };
        assert!(expired(&backups, &none).is_empty());
        let last1 = Retention { keep_last: Some(1), ..none.clone() };
        assert_eq!(ids(expired(&backups, &last1)), ["a", "b", "c", "d"]);
        let zero = Retention { keep_last: Some(0), ..none.clone() };
        assert_eq!(ids(expired(&backups, &zero)), ["a", "b", "c", "d"], "the newest is never pruned");
        let daily2 = Retention { keep_daily: Some(2), ..none.clone() };
        assert_eq!(ids(expired(&backups, &daily2)), ["a", "b", "c"]);
        let weekly3 = Retention { keep_weekly: Some(3), ..none };
        // weeks: a (Oct 26-Nov 1), b (Nov 9-15), c/d/e (Nov 16-22): newest of each is a, b, e.
        assert_eq!(ids(expired(&backups, &weekly3)), ["c", "d"]);
    }
}
