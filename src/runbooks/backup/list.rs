//! backup list: the committed backups, newest first.

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::catalog;
use crate::ctx::Ctx;
use crate::error::Result;
use crate::output::table::{bytes, ms, new_table};

/// One row of `backup list` (contract "JSON output").
pub struct Listed {
    pub json: Value,
    pub row: Vec<String>,
}

pub async fn list(cx: &Ctx, env: Option<&str>) -> Result<(Value, String)> {
    if let Some(e) = env {
        cx.config.env(e)?;
    }
    let state = cx.journal.state().await?;
    let newest_first: Vec<_> = state.committed(env).into_iter().rev().collect();
    // Manifests are read a few at a time: the list costs round trips per backup kept, not per entry.
    let rows: Vec<Listed> = futures_util::stream::iter(newest_first.iter().map(|c| describe(cx, c)))
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let mut t = new_table(&["id", "env", "type", "started", "duration", "size", "sha256", "verified", "wal"]);
    for r in &rows {
        t.add_row(r.row.clone());
    }
    let text = if rows.is_empty() { "no backups\n".to_string() } else { format!("{t}\n") };
    Ok((json!({ "backups": rows.into_iter().map(|r| r.json).collect::<Vec<_>>() }), text))
}

/// The table's sha256 column: the first 12 hex digits, as `git log --oneline` shortens commits.
pub fn short_sha(sha: &str) -> String {
    sha.chars().take(12).collect()
}

/// What is known, and no more: the manifest is present and is exactly the one the journal
/// committed (its sha256), and when `verify-chain --backups --deep` last re-hashed the objects.
/// JSON `verified` is true only when that last re-hash matched; never re-read is not verified.
async fn describe(cx: &Ctx, c: &catalog::Committed) -> Result<Listed> {
    let m = catalog::read_manifest(&*cx.store, c).await?;
    let (deep_text, verified, deep_at) = match &c.deep {
        None => ("never re-hashed".to_string(), false, None),
        Some(d) if d.ok => (format!("re-hashed {}", d.time), true, Some(d.time.clone())),
        Some(d) => (format!("FAILED re-hash {}", d.time), false, Some(d.time.clone())),
    };
    Ok(match m {
        Ok(m) => Listed {
            row: vec![
                m.id.clone(),
                m.env.clone(),
                m.kind.clone(),
                m.started.clone(),
                ms(m.duration_ms),
                bytes(m.bytes),
                // Enough to tell backups apart and to match by prefix; the JSON carries all 64.
                short_sha(&m.sha256),
                format!("manifest ok, {deep_text}"),
                // Base backups: the first and last segment the restore needs (then the archive on).
                match (&m.wal_start, &m.wal_end) {
                    (Some(a), Some(b)) => format!("{a} .. {b}"),
                    _ => "-".into(),
                },
            ],
            json: json!({
                "id": m.id, "env": m.env, "type": m.kind, "started": m.started, "duration_ms": m.duration_ms,
                "bytes": m.bytes, "sha256": m.sha256, "verified": verified, "manifest_ok": true,
                "deep_verified_at": deep_at, "wal_start": m.wal_start, "wal_end": m.wal_end,
            }),
        },
        Err(problem) => {
            cx.out.warn(&format!("backup {}: {problem}", c.id));
            Listed {
                row: vec![
                    c.id.clone(),
                    c.env.clone(),
                    "?".into(),
                    c.time.clone(),
                    "?".into(),
                    "?".into(),
                    "?".into(),
                    format!("NO: {problem}"),
                    "?".into(),
                ],
                json: json!({
                    "id": c.id, "env": c.env, "type": null, "started": null, "duration_ms": null, "bytes": null,
                    "sha256": null, "verified": false, "manifest_ok": false, "deep_verified_at": deep_at,
                    "wal_start": null, "wal_end": null, "problem": problem,
                }),
            }
        }
    })
}
