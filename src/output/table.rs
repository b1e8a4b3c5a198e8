//! Human tables (comfy-table) for reports.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;

use crate::engine::report::{RunReport, StepState};

pub fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(header.to_vec());
    t
}

/// Rows as plain lines, fields separated by one space and never padded: what `grep`, `awk` and a
/// cron mail want off a TTY. Only the last field may contain spaces.
pub fn plain_lines(rows: &[Vec<String>]) -> String {
    rows.iter().map(|r| r.join(" ") + "\n").collect()
}

/// A runbook's report: preflight checks, steps, then its result fields as `key: value` lines.
pub fn run_report(r: &RunReport) -> String {
    let mut out = String::new();
    if let Some(Value::String(store)) = r.extra.get("store") {
        let env = r.env.as_deref().map(|e| format!(" {e}")).unwrap_or_default();
        out.push_str(&format!("{}{env} · store {store}\n", r.runbook));
    }
    if !r.preflight.is_empty() {
        let mut t = new_table(&["check", "ok", "detail"]);
        for c in &r.preflight {
            let ok = match (c.ok, c.accepted) {
                (true, _) => "ok",
                (false, true) => "ACCEPTED",
                (false, false) => "FAILED",
            };
            t.add_row(vec![c.check.clone(), ok.to_string(), c.detail.clone()]);
        }
        out.push_str(&format!("{t}\n"));
    }
    if !r.steps.is_empty() {
        let mut t = new_table(&["step", "state", "time", "detail"]);
        for s in &r.steps {
            let state = match s.state {
                StepState::Done => "done",
                StepState::Applied => "applied",
                StepState::Failed => "FAILED",
                StepState::Pending => "pending",
            };
            t.add_row(vec![s.step.clone(), state.to_string(), ms(s.duration_ms), s.detail.clone()]);
        }
        out.push_str(&format!("{t}\n"));
    }
    // failover's readiness of the env that took over, as the on-call reads it.
    if let Some(Value::Object(ready)) = r.extra.get("readiness") {
        let mut t = new_table(&["readiness", ""]);
        for (k, v) in ready {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Null => "-".to_string(),
                other => other.to_string(),
            };
            t.add_row(vec![k.clone(), v]);
        }
        out.push_str(&format!("{t}\n"));
    }
    // rollback's figures: what the env that took over was written since the cutover.
    if let Some(Value::Array(tables)) = r.extra.get("writes_since_cutover").and_then(|w| w.get("tables"))
        && !tables.is_empty()
    {
        let mut t = new_table(&["written since the cutover", "inserted", "updated", "deleted"]);
        for w in tables {
            let n = |k: &str| w.get(k).map(|v| v.to_string()).unwrap_or_default();
            t.add_row(vec![w["table"].as_str().unwrap_or("").to_string(), n("inserted"), n("updated"), n("deleted")]);
        }
        out.push_str(&format!("{t}\n"));
    }
    for (k, v) in r.extra.iter().filter(|(k, _)| *k != "store") {
        let v = match v {
            Value::String(s) => s.clone(),
            Value::Null => continue,
            Value::Array(_) | Value::Object(_) => continue,
            other => other.to_string(),
        };
        out.push_str(&format!("{k}: {v}\n"));
    }
    out.push_str(&format!("{} {} ({}) in {}\n", r.runbook, r.status, r.run_id, ms(r.elapsed_ms)));
    out
}

pub fn ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// `1 env`, `2 envs`, `0 entries`: a count with its noun, singular only for exactly one.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        return format!("1 {noun}");
    }
    match noun.strip_suffix('y') {
        // entry -> entries, but day -> days
        Some(stem) if !stem.ends_with(['a', 'e', 'o', 'u']) => format!("{n} {stem}ies"),
        _ => format!("{n} {noun}s"),
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_singular_only_for_one() {
        assert_eq!(count(1, "env"), "1 env");
        assert_eq!(count(2, "env"), "2 envs");
        assert_eq!(count(0, "role"), "0 roles");
        assert_eq!(count(1, "entry"), "1 entry");
        assert_eq!(count(3, "entry"), "3 entries");
        assert_eq!(count(2, "day"), "2 days");
    }

    #[test]
    fn plain_lines_are_not_padded() {
        let rows = vec![
            vec!["1".into(), "a".into(), "{}".into()],
            vec!["2".into(), "b".into(), "{\"k\":\"a long value\"}".into()],
        ];
        assert_eq!(plain_lines(&rows), "1 a {}\n2 b {\"k\":\"a long value\"}\n");
    }
}
