//! backup prune: apply [retention] to one env's backups.
//!
//! Kept: the newest `keep_last`, the newest of each of the last `keep_daily` days that have a backup,
//! the newest of each of the last `keep_weekly` ISO weeks that have one, and always the newest good
//! backup. Without a [retention] section nothing expires (prune only cleans up dead runs): deleting
//! backups is never a default. Each expired backup is journaled `backup-pruned` before its objects
//! are deleted, so a crash in between leaves objects that the next prune deletes, never a listed
//! backup without objects.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::catalog::{self, Committed, backup_prefix};
use super::{CleanPartial, live_run_ids};
use crate::config::{EnvConfig, Retention};
use crate::ctx::Ctx;
use crate::engine::run::Runbook;
use crate::engine::step::{Step, StepLog};
use crate::error::{Error, Result};
use crate::journal;
use crate::output::table::count;

pub fn prune(cx: &Ctx, env: &EnvConfig) -> Runbook {
    let rb =
        Runbook::new("backup-prune", Some(&env.name), format!("--env {}", env.name)).lock(format!("env:{}", env.name));
    let result = rb.result.clone();
    rb.step(CleanPartial { env: env.name.clone(), own_id: cx.run_id.clone() }).step(Expire {
        env: env.name.clone(),
        retention: cx.config.retention.clone(),
        result,
    })
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
    result: Arc<std::sync::Mutex<serde_json::Map<String, Value>>>,
}

impl Expire {
    /// (backups to prune now, pruned backups whose objects are still there)
    async fn plan(&self, cx: &Ctx) -> Result<(Vec<Committed>, Vec<String>)> {
        let entries = journal::read_all(&*cx.store).await?;
        let committed = catalog::committed(&entries, Some(&self.env));
        let expire = expired(&committed, &self.retention);
        let live = live_run_ids(cx).await?;
        let mut leftover = Vec::new();
        for id in catalog::pruned_ids(&entries, &self.env) {
            if !live.contains(&id) && !cx.store.list(&backup_prefix(&self.env, &id)).await?.is_empty() {
                leftover.push(id);
            }
        }
        let mut r = self.result.lock().expect("result");
        r.insert("would_prune".into(), json!(expire.iter().map(|b| b.id.clone()).collect::<Vec<_>>()));
        r.insert("kept".into(), json!(committed.len() - expire.len()));
        Ok((expire, leftover))
    }
}

#[async_trait]
impl Step for Expire {
    fn id(&self) -> &'static str {
        "expire"
    }
    async fn is_done(&self, cx: &Ctx) -> Result<bool> {
        let (expire, leftover) = self.plan(cx).await?;
        Ok(expire.is_empty() && leftover.is_empty())
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let (expire, mut leftover) = self.plan(cx).await?;
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        for b in &expire {
            log.journal.append("backup-pruned", json!({ "id": b.id, "committed_seq": b.seq, "at": now })).await?;
            leftover.push(b.id.clone());
        }
        let mut deleted = 0u64;
        for id in &leftover {
            for o in cx.store.list(&backup_prefix(&self.env, id)).await? {
                cx.store.delete(&o.key).await?;
                deleted += 1;
            }
        }
        let ids: Vec<String> = expire.iter().map(|b| b.id.clone()).collect();
        log.set("pruned", json!(ids));
        log.set("deleted_objects", deleted);
        log.summary(format!("pruned {}, deleted {}", count(ids.len() as u64, "backup"), count(deleted, "object")));
        self.result.lock().expect("result").insert("pruned".into(), json!(ids));
        Ok(())
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        let (expire, leftover) = self.plan(cx).await?;
        if expire.is_empty() && leftover.is_empty() {
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
        Committed { id: id.into(), env: "p".into(), manifest_sha256: String::new(), seq: 0, time: time.into() }
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
