//! verify-chain: prove the journal, the backups, the application's hash-chained tables and its
//! content-addressed artifacts are what was written.
//!
//! Replaces "we'll find out at restore time" and the application's own replay tool. The journal is
//! walked link by link (seq continuity, prev_hash, each hash recomputed); each listed backup's
//! manifest must be the one its `backup-done` entry committed (by sha256), and each object must be
//! there at its size — with `--deep`, re-read and re-hashed. Tables (`table.rs`) and artifacts
//! (`artifacts.rs`) have their own files. Takes no lock; writes nothing but the `chain-anchor`
//! journal entries of tables that verified, one `backups-verified` entry per `--deep` run, and a
//! `journal-index/verified-<seq>.json` checkpoint after a clean journal walk (none under
//! `--dry-run`).

pub mod artifacts;
pub mod scan;
pub mod table;
pub mod wal;

use std::time::Instant;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::catalog;
use crate::cli::VerifyChainArgs;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::journal;
use crate::output::metrics::Series;
use crate::output::table::{count, new_table};

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

/// What a run reports: the document, the table text, the error that sets the exit code, and the
/// env and bytes for `--metrics-file`.
pub struct Verdict {
    pub json: Value,
    pub text: String,
    pub error: Option<Error>,
    pub env: String,
    pub bytes: Option<u64>,
    /// Per-table gauges (`drctl_chain_*{env,chain}`).
    pub extra: Vec<Series>,
}

impl Verdict {
    fn refused(e: Error) -> Verdict {
        Verdict {
            json: Value::Null,
            text: String::new(),
            error: Some(e),
            env: String::new(),
            bytes: None,
            extra: vec![],
        }
    }
}

pub async fn verify_chain(cx: &Ctx, a: &VerifyChainArgs) -> Verdict {
    // `--deep` alone means the default run, deeply; with other selections it adds the backups.
    let nothing_chosen = !a.journal && !a.backups && a.env.is_none() && a.artifacts.is_none();
    let (do_journal, do_backups) = if nothing_chosen { (true, true) } else { (a.journal, a.backups || a.deep) };
    // Resolve every table before touching anything: a bad env or an env without chains is exit 2.
    let (env, specs) = match &a.env {
        None => (None, Vec::new()),
        Some(name) => match table_specs(cx, name, a) {
            Ok((env, specs)) => (Some(env), specs),
            Err(e) => return Verdict::refused(e),
        },
    };
    let env_name = env.map(|e| e.name.clone()).unwrap_or_default();
    let mut chains = Vec::new();
    let mut fatal = None;
    if do_journal {
        match verify_journal(cx, a.since_checkpoint).await {
            Ok(rs) => chains.extend(rs),
            Err(e) => return Verdict { env: env_name, ..Verdict::refused(e) },
        }
    }
    let state = match cx.journal.state().await {
        Ok(s) => s,
        Err(e) => return Verdict { env: env_name, ..Verdict::refused(e) },
    };
    if do_backups {
        match verify_backups(cx, &state, a.deep).await {
            Ok(r) => chains.push(r),
            Err(e) => fatal = Some(e),
        }
    }
    let mut tables = Vec::new();
    for spec in &specs {
        let env = env.expect("specs come with their env");
        match table::verify(cx, env, spec, &state).await {
            Ok(r) => {
                if r.is_empty() && !spec.allow_empty {
                    fatal.get_or_insert(Error::NothingToVerify {
                        what: format!("table {} on {} has no rows", spec.table, env.name),
                        hint: format!(
                            "check the table name; if it may be empty, pass --allow-empty (or set allow_empty = true \
                             under [environments.{}.chains.{}])",
                            env.name, spec.table
                        ),
                    });
                }
                if r.errors.is_empty()
                    && !cx.global.dry_run
                    && let Err(e) = table::record_anchor(cx, &env.name, &r, &state).await
                {
                    fatal.get_or_insert(e);
                }
                tables.push(r);
            }
            // A missing table or column is the operator's to fix: exit 2, no document.
            Err(e) if e.exit_code() == crate::error::exit::USAGE => {
                return Verdict { env: env_name, ..Verdict::refused(e) };
            }
            Err(e) => {
                fatal.get_or_insert(e);
            }
        }
    }
    let arts = match &a.artifacts {
        None => None,
        Some(url) => match artifacts::verify(cx, url.trim_end_matches('/')).await {
            Ok(r) => {
                // A typo in the prefix lists nothing, which must not read as "all intact".
                if r.checked == 0 {
                    fatal.get_or_insert(Error::NothingToVerify {
                        what: format!("no objects under {}", r.url),
                        hint: "check the prefix (s3://BUCKET/PREFIX, the directory holding the ab/ shards)".into(),
                    });
                }
                Some(r)
            }
            Err(e) if e.exit_code() == crate::error::exit::USAGE => {
                return Verdict { env: env_name, ..Verdict::refused(e) };
            }
            Err(e) => {
                fatal.get_or_insert(e);
                None
            }
        },
    };

    let ok = chains.iter().all(|c| c.first_bad.is_none())
        && tables.iter().all(|t| t.errors.is_empty())
        && arts.as_ref().is_none_or(|r| r.bad.is_empty());
    let mut chain_docs: Vec<Value> = chains.iter().map(ChainResult::json).collect();
    chain_docs.extend(tables.iter().map(table::TableResult::json));
    let doc = json!({
        "ok": ok && fatal.is_none(),
        "chains": chain_docs,
        "artifacts": arts.as_ref().map(artifacts::ArtifactsResult::json),
    });
    let text = render(&chains, &tables, arts.as_ref(), a.all_errors);
    let error = fatal.or_else(|| {
        chains
            .iter()
            .find_map(|c| {
                c.first_bad.as_ref().map(|(i, k, r)| Error::integrity(&c.chain, format!("entry {i} ({k})"), r))
            })
            .or_else(|| {
                tables.iter().find_map(|t| {
                    t.errors.first().map(|b| {
                        Error::integrity(&t.chain, format!("entry {} ({} {})", b.index, "key", b.key), &b.reason)
                    })
                })
            })
            .or_else(|| {
                arts.as_ref().and_then(|r| {
                    r.bad.first().map(|b| {
                        Error::integrity(
                            "artifacts",
                            &b.key,
                            format!(
                                "{}: {} ({} bad of {})",
                                b.problem,
                                b.detail,
                                r.bad.len(),
                                count(r.checked, "object")
                            ),
                        )
                    })
                })
            })
    });
    let extra = chain_series(&env_name, &tables);
    Verdict { json: doc, text, error, env: env_name, bytes: arts.as_ref().map(|r| r.bytes), extra }
}

/// `--metrics-file` gauges per table: rows verified by this run; and, only when the table
/// verified, its head's order value (when an integer) and the time — so an alert on the age of
/// `drctl_chain_verified_timestamp_seconds` fires when verification stops succeeding.
fn chain_series(env: &str, tables: &[table::TableResult]) -> Vec<Series> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let mut out = Vec::new();
    for t in tables {
        let labels = vec![("env", env.to_string()), ("chain", t.chain.clone())];
        let series = |name, help, value| Series { name, help, labels: labels.clone(), value };
        out.push(series("drctl_chain_entries", "Rows the last verify-chain run of this table read.", t.entries as f64));
        if !t.errors.is_empty() {
            continue;
        }
        if let Some((scan::Key::Int(k), _, _)) = &t.head {
            out.push(series("drctl_chain_head", "Order value of the last verified head of this table.", *k as f64));
        }
        out.push(series("drctl_chain_verified_timestamp_seconds", "Unix time this table last verified.", now));
    }
    out
}

/// The env and the tables to verify: --table, or every configured chain of the env.
fn table_specs<'c>(
    cx: &'c Ctx,
    env: &str,
    a: &VerifyChainArgs,
) -> Result<(&'c crate::config::EnvConfig, Vec<table::Spec>)> {
    let env = cx.config.env(env)?;
    let specs = match &a.table {
        Some(t) => vec![table::Spec::new(t, env.chains.get(t), a)],
        None if env.chains.is_empty() => {
            return Err(Error::usage(format!("env {} has no hash-chained tables configured", env.name))
                .with_hint(format!("pass --table T, or add [environments.{}.chains.TABLE] to drctl.toml", env.name)));
        }
        None => env.chains.iter().map(|(t, c)| table::Spec::new(t, Some(c), a)).collect(),
    };
    Ok((env, specs))
}

fn render(
    chains: &[ChainResult],
    tables: &[table::TableResult],
    arts: Option<&artifacts::ArtifactsResult>,
    all_errors: bool,
) -> String {
    let mut t = new_table(&["chain", "entries", "entries/s", "ok", "first bad entry", "reason"]);
    for c in chains {
        let (key, reason) = c.first_bad.as_ref().map(|(i, k, r)| (format!("#{i} {k}"), r.clone())).unwrap_or_default();
        let eps = if c.elapsed_s > 0.0 { (c.entries as f64 / c.elapsed_s) as u64 } else { c.entries };
        let ok = if c.first_bad.is_none() { "ok" } else { "BROKEN" };
        t.add_row(vec![c.chain.clone(), c.entries.to_string(), eps.to_string(), ok.into(), key, reason]);
    }
    for r in tables {
        let first = r.errors.first();
        let eps = if r.elapsed_s > 0.0 { (r.entries as f64 / r.elapsed_s) as u64 } else { r.entries };
        t.add_row(vec![
            r.chain.clone(),
            r.entries.to_string(),
            eps.to_string(),
            if first.is_none() { "ok".into() } else { "BROKEN".into() },
            first.map(|b| format!("#{} {}", b.index, b.key)).unwrap_or_default(),
            first.map(|b| b.reason.clone()).unwrap_or_default(),
        ]);
    }
    let mut text = format!("{t}\n");
    if all_errors {
        for r in tables.iter().filter(|r| r.errors.len() > 1) {
            let mut e = new_table(&["chain", "index", "key", "reason"]);
            for b in &r.errors {
                e.add_row(vec![r.chain.clone(), b.index.to_string(), b.key.to_string(), b.reason.clone()]);
            }
            text.push_str(&format!("{e}\n"));
        }
    }
    if let Some(a) = arts {
        text.push_str(&format!(
            "artifacts {}: {} ({}) checked, {} bad\n",
            a.url,
            count(a.checked, "object"),
            count(a.bytes, "byte"),
            a.bad.len()
        ));
        if !a.bad.is_empty() {
            let mut e = new_table(&["key", "problem", "detail"]);
            for b in &a.bad {
                e.add_row(vec![b.key.clone(), b.problem.to_string(), b.detail.clone()]);
            }
            text.push_str(&format!("{e}\n"));
        }
    }
    text
}

/// The journal walked entry by entry (many reads in flight, bounded memory), every checkpoint on
/// the way compared with the state refolded from the chain; then, when all of it holds and this is
/// not a dry run, a `verified-` checkpoint at the head for `--since-checkpoint` to start from.
async fn verify_journal(cx: &Ctx, since_checkpoint: bool) -> Result<Vec<ChainResult>> {
    let t0 = Instant::now();
    let progress = cx.out.progress("verifying the journal", None, false);
    // The head as this run loaded it (no listing): the walk reads ahead that far only.
    let end = cx.journal.state().await?.next_seq();
    let w = journal::index::walk(&*cx.store, since_checkpoint, Some(end), |_| progress.inc(1)).await?;
    progress.finish();
    let elapsed_s = t0.elapsed().as_secs_f64();
    if since_checkpoint {
        cx.out.info(&format!("journal verified from seq {} (the newest verified checkpoint)", w.from_seq));
    }
    let journal = ChainResult {
        chain: "journal".into(),
        entries: w.entries,
        first_bad: w.first_bad.as_ref().map(|b| (b.index, b.key.clone(), b.reason.clone())),
        elapsed_s,
    };
    let checkpoints = ChainResult {
        chain: "journal-checkpoints".into(),
        entries: w.checkpoints_checked,
        first_bad: w.bad_checkpoint.as_ref().map(|(k, r)| (0, k.clone(), r.clone())),
        elapsed_s,
    };
    if w.first_bad.is_none() && w.bad_checkpoint.is_none() && !cx.global.dry_run {
        // A cache: failing to write it only makes the next --since-checkpoint walk longer.
        if let Err(e) = journal::index::record_verified(&*cx.store, &w, &cx.run_id).await {
            cx.out.warn(&format!("could not write the verified journal checkpoint: {e}"));
        }
    }
    Ok(vec![journal, checkpoints])
}

async fn verify_backups(cx: &Ctx, state: &journal::fold::State, deep: bool) -> Result<ChainResult> {
    let t0 = Instant::now();
    let committed = state.committed(None);
    let mut first_bad = None;
    let progress_total: Option<u64> = None;
    let progress = cx.out.progress(if deep { "re-reading backups" } else { "checking backups" }, progress_total, deep);
    let mut results = Vec::new();
    let mut archive = wal::Archive::default();
    for (i, c) in committed.iter().enumerate() {
        let bad = check_backup(cx, c, deep, &progress, &mut archive).await?;
        results.push(json!({"env": c.env, "id": c.id, "ok": bad.is_none()}));
        if let Some(reason) = bad {
            first_bad = Some((i, format!("{}/{}", c.env, c.id), reason));
            break;
        }
    }
    progress.finish();
    // What a deep run re-hashed is journaled, so `backup list` and `status` can say when each
    // backup's objects were last proven intact (and when that failed) instead of assuming it.
    if deep && !results.is_empty() && !cx.global.dry_run {
        cx.journal
            .append(journal::NewEntry {
                run_id: cx.run_id.clone(),
                runbook: "verify-chain".into(),
                env: None,
                event: journal::fold::BACKUPS_VERIFIED.into(),
                fences: Default::default(),
                details: json!({ "deep": true, "results": results }),
            })
            .await?;
    }
    let checked = first_bad.as_ref().map(|(i, _, _)| *i as u64).unwrap_or(committed.len() as u64);
    Ok(ChainResult { chain: "backups".into(), entries: checked, first_bad, elapsed_s: t0.elapsed().as_secs_f64() })
}

/// `Some(reason)` when the backup is not intact (for a base backup: also when the WAL archive
/// cannot restore it, read through `archive`, which base backups of one cluster share).
async fn check_backup(
    cx: &Ctx,
    c: &catalog::Committed,
    deep: bool,
    progress: &crate::output::progress::Progress,
    archive: &mut wal::Archive,
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
    // The archive from the backup on: a base backup without its WAL restores nothing.
    archive.check(cx, &m, deep, progress).await
}
