//! log: the journal, newest first: a table on a TTY, one entry a line otherwise (for grep and awk).

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::cli::LogArgs;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::journal;
use crate::output::table::{new_table, plain_lines};

pub async fn log(cx: &Ctx, a: &LogArgs) -> Result<(Value, String)> {
    let since = match &a.since {
        None => None,
        Some(s) => Some(match humantime::parse_rfc3339_weak(s) {
            Ok(t) => t,
            Err(_) => {
                let d: Duration = crate::cli::parse_duration(s).map_err(|p| Error::usage(format!("--since: {p}")))?;
                SystemTime::now() - d
            }
        }),
    };
    // Newest first, a batch at a time from the head: `--limit 20` reads about 20 entries however
    // long the journal is (a filter that matches rarely reads further back).
    let state = cx.journal.state().await?;
    let mut shown = Vec::new();
    let mut next = state.head.as_ref().map(|h| h.seq);
    'read: while let Some(from) = next {
        let batch = (a.limit as u64).clamp(1, 256);
        for s in journal::index::read_back(&*cx.store, from, batch).await? {
            let Ok(e) = &s.entry else {
                cx.out.warn(&format!("{} cannot be read; run `drctl verify-chain --journal`", s.key));
                continue;
            };
            if let Some(since) = since
                && let Ok(t) = humantime::parse_rfc3339(&e.time)
                && t < since
            {
                // Entries carry the store's clock, so they are in time order but for a writer on
                // another host whose reading of that clock lagged; an hour past `since` nothing can.
                if t + Duration::from_secs(3600) < since {
                    break 'read;
                }
                continue;
            }
            if a.runbook.as_deref().is_some_and(|r| r != e.runbook) {
                continue;
            }
            shown.push(e.clone());
            if shown.len() >= a.limit {
                break 'read;
            }
        }
        next = from.checked_sub(batch);
    }
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                e.time.clone(),
                e.runbook.clone(),
                e.env.clone().unwrap_or_else(|| "-".into()),
                e.event.clone(),
                e.run_id.clone(),
                serde_json::to_string(&e.details).unwrap_or_default(),
            ]
        })
        .collect();
    let text = if shown.is_empty() {
        "the journal is empty\n".into()
    } else if cx.out.stdout_tty() {
        let mut t = new_table(&["seq", "time", "runbook", "env", "event", "run_id", "details"]);
        for r in rows {
            t.add_row(r);
        }
        format!("{t}\n")
    } else {
        // Off a TTY there is no width to fit: a table would pad every row to the longest details.
        plain_lines(&rows)
    };
    Ok((json!({ "entries": shown }), text))
}
