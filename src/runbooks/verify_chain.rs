//! verify-chain: prove the journal and the backups are what was written.
//!
//! Replaces "we'll find out at restore time". The journal is walked link by link (seq continuity,
//! prev_hash, each hash recomputed); each listed backup's manifest must be the one its `backup-done`
//! entry committed (by sha256), and each object must be there at its size — with `--deep`, re-read
//! and re-hashed. Read-only: takes no lock and writes nothing.

use std::time::Instant;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::backup::catalog;
use crate::cli::VerifyChainArgs;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::journal;
use crate::output::table::new_table;

/// One chain's verdict (contract "JSON output", verify-chain).
#[derive(Debug, Clone)]
pub struct ChainResult {
    pub chain: String,
    pub entries: u64,
    pub first_bad: Option<(usize, String, String)>,
    pub elapsed_s: f64,
}

impl ChainResult {
    fn json(&self) -> Value {
        let (idx, key, reason) = match &self.first_bad {
            Some((i, k, r)) => (json!(i), json!(k), json!(r)),
            None => (Value::Null, Value::Null, Value::Null),
        };
        let eps = if self.elapsed_s > 0.0 { (self.entries as f64 / self.elapsed_s) as u64 } else { self.entries };
        json!({
            "chain": self.chain, "entries": self.entries, "ok": self.first_bad.is_none(),
            "first_bad_index": idx, "first_bad_key": key, "reason": reason,
            "errors": self.first_bad.as_ref().map(|_| vec![json!({"index": idx, "key": key, "reason": reason})]).unwrap_or_default(),
            "entries_per_second": eps,
        })
    }
}

pub async fn verify_chain(cx: &Ctx, a: &VerifyChainArgs) -> (Value, String, Option<Error>) {
    let (do_journal, do_backups) = match (a.journal, a.backups || a.deep) {
        (false, false) => (true, true),
        (false, true) if !a.backups => (true, true),
        chosen => chosen,
    };
    let mut chains = Vec::new();
    let mut fatal = None;
    let entries = match journal::read_all(&*cx.store).await {
        Ok(e) => e,
        Err(e) => return (Value::Null, String::new(), Some(e)),
    };
    if do_journal {
        let t0 = Instant::now();
        let r = journal::verify(&entries);
        chains.push(ChainResult {
            chain: "journal".into(),
            entries: match &r {
                Ok(n) => *n as u64,
                Err(b) => b.index as u64,
            },
            first_bad: r.err().map(|b| (b.index, b.key, b.reason)),
            elapsed_s: t0.elapsed().as_secs_f64(),
        });
    }
    if do_backups {
        match verify_backups(cx, &entries, a.deep).await {
            Ok(r) => chains.push(r),
            Err(e) => fatal = Some(e),
        }
    }
    let ok = chains.iter().all(|c| c.first_bad.is_none());
    let doc = json!({ "ok": ok && fatal.is_none(), "chains": chains.iter().map(ChainResult::json).collect::<Vec<_>>(), "artifacts": null });
    let mut t = new_table(&["chain", "entries", "ok", "first bad entry", "reason"]);
    for c in &chains {
        let (key, reason) = c.first_bad.as_ref().map(|(i, k, r)| (format!("#{i} {k}"), r.clone())).unwrap_or_default();
        t.add_row(vec![
            c.chain.clone(),
            c.entries.to_string(),
            if c.first_bad.is_none() { "ok".into() } else { "BROKEN".into() },
            key,
            reason,
        ]);
    }
    let error = fatal.or_else(|| {
        chains.iter().find_map(|c| {
            c.first_bad.as_ref().map(|(i, k, r)| Error::integrity(&c.chain, format!("entry {i} ({k})"), r))
        })
    });
    (doc, format!("{t}\n"), error)
}

async fn verify_backups(cx: &Ctx, entries: &[journal::Stored], deep: bool) -> Result<ChainResult> {
    let t0 = Instant::now();
    let committed = catalog::committed(entries, None);
    let mut first_bad = None;
    let progress_total: Option<u64> = None;
    let progress = cx.out.progress(if deep { "re-reading backups" } else { "checking backups" }, progress_total, deep);
    for (i, c) in committed.iter().enumerate() {
        if let Some(reason) = check_backup(cx, c, deep, &progress).await? {
            first_bad = Some((i, format!("{}/{}", c.env, c.id), reason));
            break;
        }
    }
    progress.finish();
    let checked = first_bad.as_ref().map(|(i, _, _)| *i as u64).unwrap_or(committed.len() as u64);
    Ok(ChainResult { chain: "backups".into(), entries: checked, first_bad, elapsed_s: t0.elapsed().as_secs_f64() })
}

/// `Some(reason)` when the backup is not intact.
async fn check_backup(
    cx: &Ctx,
    c: &catalog::Committed,
    deep: bool,
    progress: &crate::output::progress::Progress,
) -> Result<Option<String>> {
    let m = match catalog::read_manifest(&*cx.store, c).await? {
        Ok(m) => m,
        Err(reason) => return Ok(Some(reason)),
    };
    let mut whole = Sha256::new();
    let mut total = 0u64;
    for o in &m.objects {
        match cx.store.head(&o.key).await? {
            None => return Ok(Some(format!("object {} is missing", o.key))),
            Some(h) if h.size != o.size => {
                return Ok(Some(format!("object {} holds {} bytes, the manifest says {}", o.key, h.size, o.size)));
            }
            Some(_) => {}
        }
        if deep {
            let Some(mut rx) = cx.store.download(&o.key).await? else {
                return Ok(Some(format!("object {} is missing", o.key)));
            };
            let mut h = Sha256::new();
            let mut n = 0u64;
            while let Some(chunk) = rx.recv().await {
                let chunk = chunk.map_err(|e| Error::Store {
                    url: cx.store.url().into(),
                    problem: format!("reading {}: {e}", o.key),
                    transience: crate::error::Transience::Temporary,
                })?;
                h.update(&chunk);
                whole.update(&chunk);
                n += chunk.len() as u64;
                progress.inc(chunk.len() as u64);
            }
            let got = hex::encode(h.finalize());
            if n != o.size || got != o.sha256 {
                return Ok(Some(format!(
                    "object {} has sha256 {got} ({n} bytes), the manifest says {} ({} bytes)",
                    o.key, o.sha256, o.size
                )));
            }
            total += n;
        }
    }
    if deep {
        let got = hex::encode(whole.finalize());
        if got != m.sha256 || total != m.bytes {
            return Ok(Some(format!("the backup's objects hash to {got}, the manifest says {}", m.sha256)));
        }
    }
    Ok(None)
}
