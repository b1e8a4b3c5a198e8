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
    let entries = journal::read_all(&*cx.store).await?;
    let mut shown = Vec::new();
    for s in entries.iter().rev() {
        let Ok(e) = &s.entry else {
            cx.out.warn(&format!("{} cannot be read; run `drctl verify-chain --journal`", s.key));
            continue;
        };
        if a.runbook.as_deref().is_some_and(|r| r != e.runbook) {
            continue;
        }
        if let Some(since) = since
            && humantime::parse_rfc3339(&e.time).map(|t| t < since).unwrap_or(false)
        {
            continue;
        }
        shown.push(e.clone());
        if shown.len() >= a.limit {
            break;
        }
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
