//! backup prune's `prune-wal` step: archived WAL that no kept base backup needs is deleted.
//!
//! A base backup needs its own WAL range and everything archived after it on its timeline, so
//! what may go is what lies before the oldest kept base backup's first segment (`wal_start`),
//! on that timeline and the ones before it, of the same cluster. History files always stay
//! (they are tiny and a restore reads them to follow timelines). With no kept base backup of
//! a cluster its WAL is left alone: deleting the only copy of a history is never a default.
//!
//! Index first, objects after: the lines go from the index chunk with a conditional rewrite (a
//! running wal-push adding a line to the same chunk makes the rewrite retry, never lose its
//! line), then the objects are deleted. A crash in between leaves unlisted objects, which the
//! next prune finds by listing the timeline and deletes.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::json;

use crate::catalog;
use crate::ctx::Ctx;
use crate::engine::step::{Step, StepLog};
use crate::error::{Error, Result};
use crate::output::table::count;
use crate::wal::{self, SystemId, WalFile};

pub struct PruneWal {
    pub env: String,
}

/// What one pass would delete.
#[derive(Default)]
struct Plan {
    /// Per cluster: the first segment kept, its timeline.
    keep_from: BTreeMap<SystemId, WalFile>,
    /// Index chunks (key) and the names to drop from each.
    lines: BTreeMap<String, Vec<String>>,
    /// Objects to delete (listed or not).
    objects: Vec<String>,
}

/// (log, seg) of a file that has a position; history files have none.
fn position(f: &WalFile) -> Option<(u32, u32)> {
    match *f {
        WalFile::Segment { log, seg, .. } | WalFile::Partial { log, seg, .. } | WalFile::Backup { log, seg, .. } => {
            Some((log, seg))
        }
        WalFile::History { .. } => None,
    }
}

/// Whether `f` is older than every kept base backup of its cluster needs.
fn expendable(f: &WalFile, keep: &WalFile) -> bool {
    match (position(f), position(keep)) {
        (Some(p), Some(k)) => f.tli() <= keep.tli() && p < k,
        _ => false,
    }
}

/// An object key's file name: `…/TLI/NAME.zst` or `NAME.zst.age`.
fn object_file(key: &str) -> Option<WalFile> {
    let name = key.rsplit('/').next()?;
    let name = name.strip_suffix(".zst.age").or_else(|| name.strip_suffix(".zst"))?;
    WalFile::parse(name)
}

impl PruneWal {
    async fn plan(&self, cx: &Ctx) -> Result<Plan> {
        let state = cx.journal.refresh().await?;
        let mut plan = Plan::default();
        for c in state.committed(Some(&self.env)).into_iter().filter(|c| c.kind == "base") {
            let Ok(m) = catalog::read_manifest(&*cx.store, &c).await? else { continue };
            let (Some(b), Some(start)) = (m.base, m.wal_start) else { continue };
            let (Ok(sysid), Some(f)) = (b.system_identifier.parse::<SystemId>(), WalFile::parse(&start)) else {
                continue;
            };
            let keep = plan.keep_from.entry(sysid).or_insert(f);
            if (f.tli(), position(&f)) < (keep.tli(), position(keep)) {
                *keep = f;
            }
        }
        for (&sysid, keep) in &plan.keep_from.clone() {
            for tli in wal::timelines(&*cx.store, &self.env, sysid).await?.into_iter().filter(|&t| t <= keep.tli()) {
                let prefix = wal::timeline_prefix(&self.env, sysid, tli);
                for o in cx.store.list(&prefix).await? {
                    let rest = &o.key[prefix.len()..];
                    if let Some(chunk) = rest.strip_prefix("index/") {
                        if chunk == "history.json" {
                            continue;
                        }
                        let Some(v) = cx.store.get(&o.key).await? else { continue };
                        let names: Vec<String> = wal::IndexChunk::parse(&o.key, &v.data)?
                            .files
                            .into_iter()
                            .filter(|a| WalFile::parse(&a.name).is_some_and(|f| expendable(&f, keep)))
                            .map(|a| a.name)
                            .collect();
                        if !names.is_empty() {
                            plan.lines.insert(o.key.clone(), names);
                        }
                    } else if object_file(&o.key).is_some_and(|f| expendable(&f, keep)) {
                        plan.objects.push(o.key.clone());
                    }
                }
            }
        }
        cx.run.report("would_prune_wal", plan.objects.len() as u64);
        Ok(plan)
    }
}

#[async_trait]
impl Step for PruneWal {
    fn id(&self) -> &'static str {
        "prune-wal"
    }
    async fn is_done(&self, cx: &Ctx) -> Result<bool> {
        let p = self.plan(cx).await?;
        Ok(p.lines.is_empty() && p.objects.is_empty())
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let plan = self.plan(cx).await?;
        let mut unlisted = 0u64;
        for (key, names) in &plan.lines {
            unlisted += wal::remove_from_index(&*cx.store, key, names).await? as u64;
        }
        for key in &plan.objects {
            cx.store.delete(key).await?;
        }
        let kept: serde_json::Map<String, serde_json::Value> =
            plan.keep_from.iter().map(|(s, f)| (s.to_string(), json!(f.name()))).collect();
        log.set("wal_kept_from", serde_json::Value::Object(kept.clone()));
        log.set("wal_deleted_objects", plan.objects.len() as u64);
        log.set("wal_unlisted", unlisted);
        cx.run.report("wal_kept_from", serde_json::Value::Object(kept));
        cx.run.report("wal_deleted_objects", plan.objects.len() as u64);
        log.summary(match plan.keep_from.values().next() {
            None => "no kept base backup: archived WAL left as it is".to_string(),
            Some(f) => format!(
                "deleted {} older than {} (the oldest kept base backup's first segment)",
                count(plan.objects.len() as u64, "archived WAL file"),
                f.name()
            ),
        });
        Ok(())
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        let p = self.plan(cx).await?;
        if p.lines.is_empty() && p.objects.is_empty() {
            Ok(())
        } else {
            Err(Error::step("prune-wal", "WAL older than every kept base backup is still in the store"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(n: &str) -> WalFile {
        WalFile::parse(n).unwrap()
    }

    #[test]
    fn only_what_lies_before_the_oldest_kept_start_on_its_timeline_or_earlier_goes() {
        let keep = f("000000020000000100000003");
        assert!(expendable(&f("000000020000000100000002"), &keep));
        assert!(expendable(&f("0000000200000000000000FF"), &keep));
        assert!(expendable(&f("000000010000000100000002"), &keep));
        assert!(expendable(&f("000000020000000100000002.00000028.backup"), &keep));
        assert!(expendable(&f("000000010000000100000001.partial"), &keep));
        assert!(!expendable(&f("000000020000000100000003"), &keep));
        assert!(!expendable(&f("000000020000000100000003.00000028.backup"), &keep));
        assert!(!expendable(&f("000000030000000000000001"), &keep), "a later timeline stays");
        assert!(!expendable(&f("00000002.history"), &keep));
    }

    #[test]
    fn object_keys_name_their_file_with_or_without_age() {
        assert_eq!(
            object_file("p/wal/prod/7/00000001/000000010000000000000003.zst"),
            Some(f("000000010000000000000003"))
        );
        assert_eq!(object_file("wal/prod/7/00000001/00000001.history.zst.age"), Some(f("00000001.history")));
        assert_eq!(object_file("wal/prod/7/00000001/index/00000000.json"), None);
    }
}
