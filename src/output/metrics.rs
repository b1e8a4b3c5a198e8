//! `--metrics-file`: node_exporter textfile-collector output (Prometheus text exposition).
//!
//! Under an exclusive `flock` of the file itself, the series of this (runbook, env) are replaced
//! and the file is rewritten atomically (temp file + rename), keeping every other series, so cron
//! jobs of different runbooks can share one file.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

pub struct RunMetrics<'a> {
    pub runbook: &'a str,
    pub env: &'a str,
    pub success: bool,
    pub finished_unix_s: f64,
    pub duration_s: f64,
    pub bytes: Option<u64>,
    /// Runbook-specific samples (e.g. one per verified chain). Each replaces the sample of the same
    /// name and label set; one not emitted this run keeps its old value, so a gauge emitted only on
    /// success (a last-verified time) still says when that last was.
    pub extra: Vec<Series>,
}

/// One sample beyond the fixed per-(runbook, env) series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Series {
    fn label_text(&self) -> String {
        let l: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
        format!("{{{}}}", l.join(","))
    }
}

const HELP: [(&str, &str); 5] = [
    ("drctl_last_run_timestamp_seconds", "Unix time the last run of this runbook and env ended."),
    ("drctl_last_run_success", "1 if the last run succeeded, else 0."),
    ("drctl_last_success_timestamp_seconds", "Unix time of the last successful run."),
    ("drctl_run_duration_seconds", "Wall time of the last run."),
    ("drctl_bytes", "Bytes moved by the last run."),
];

pub fn update(path: &Path, m: &RunMetrics) -> Result<()> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path.display(), e))?;
    // SAFETY: flock on an fd we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Error::io(path.display(), std::io::Error::last_os_error()));
    }
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let labels = format!("{{runbook=\"{}\",env=\"{}\"}}", escape(m.runbook), escape(m.env));
    let extra: Vec<String> = m.extra.iter().map(|x| format!("{}{}", x.name, x.label_text())).collect();

    // name -> lines (label set + value), keeping other series.
    let mut series: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut last_success: Option<String> = None;
    // Help texts already in the file, for series this run does not emit (another runbook's extras).
    let old_help: BTreeMap<&str, &str> =
        old.lines().filter_map(|l| l.strip_prefix("# HELP ")?.split_once(' ')).collect();
    for line in old.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else { continue };
        let name = name_labels.split('{').next().unwrap_or(name_labels).to_string();
        if extra.iter().any(|x| x == name_labels) {
            continue;
        }
        if name_labels.ends_with(&labels) && name_labels.len() == name.len() + labels.len() {
            if name == "drctl_last_success_timestamp_seconds" {
                last_success = Some(value.to_string());
            }
            continue;
        }
        series.entry(name).or_default().push(line.to_string());
    }
    let now = format!("{}", m.finished_unix_s);
    let success_ts = if m.success { Some(now.clone()) } else { last_success };
    let mut put =
        |name: &str, v: String| series.entry(name.to_string()).or_default().push(format!("{name}{labels} {v}"));
    put("drctl_last_run_timestamp_seconds", now);
    put("drctl_last_run_success", if m.success { "1".into() } else { "0".into() });
    if let Some(ts) = success_ts {
        put("drctl_last_success_timestamp_seconds", ts);
    }
    put("drctl_run_duration_seconds", format!("{:.3}", m.duration_s));
    if let Some(b) = m.bytes {
        put("drctl_bytes", b.to_string());
    }
    for (x, name_labels) in m.extra.iter().zip(&extra) {
        series.entry(x.name.to_string()).or_default().push(format!("{name_labels} {}", x.value));
    }

    let mut text = String::new();
    for (name, lines) in &series {
        let help = HELP.iter().find(|(n, _)| n == name).map(|(_, h)| *h);
        let help = help
            .or_else(|| m.extra.iter().find(|x| x.name == name).map(|x| x.help))
            .or_else(|| old_help.get(name.as_str()).copied());
        if let Some(help) = help {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        }
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir, path)?;
    tmp.1.write_all(text.as_bytes()).and_then(|_| tmp.1.sync_all()).map_err(|e| Error::io(tmp.0.display(), e))?;
    std::fs::rename(&tmp.0, path).map_err(|e| Error::io(path.display(), e))?;
    drop(lock);
    Ok(())
}

fn tempfile_in(dir: &Path, target: &Path) -> Result<(std::path::PathBuf, std::fs::File)> {
    let name = format!(
        ".{}.{}.tmp",
        target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id()
    );
    let p = dir.join(name);
    let f = std::fs::File::create(&p).map_err(|e| Error::io(p.display(), e))?;
    Ok((p, f))
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_own_series_keeps_others_and_carries_last_success() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("drctl.prom");
        let m = |runbook, env, success, t| RunMetrics {
            runbook,
            env,
            success,
            finished_unix_s: t,
            duration_s: 1.5,
            bytes: Some(10),
            extra: Vec::new(),
        };
        update(&p, &m("backup", "prod", true, 100.0)).unwrap();
        update(&p, &m("sync", "staging", true, 150.0)).unwrap();
        update(&p, &m("backup", "prod", false, 200.0)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("drctl_last_run_success{runbook=\"backup\",env=\"prod\"} 0"), "{text}");
        assert!(text.contains("drctl_last_success_timestamp_seconds{runbook=\"backup\",env=\"prod\"} 100"), "{text}");
        assert!(text.contains("drctl_last_run_timestamp_seconds{runbook=\"backup\",env=\"prod\"} 200"), "{text}");
        assert!(text.contains("drctl_last_run_success{runbook=\"sync\",env=\"staging\"} 1"), "{text}");
        assert_eq!(text.matches("# TYPE drctl_bytes gauge").count(), 1);
        assert_eq!(text.matches("drctl_bytes{runbook=\"backup\",env=\"prod\"}").count(), 1);
    }

    #[test]
    fn extra_series_replace_their_own_label_set_and_absent_ones_keep_their_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("drctl.prom");
        let x = |name, chain: &str, value| Series {
            name,
            help: "test gauge.",
            labels: vec![("env", "prod".to_string()), ("chain", chain.to_string())],
            value,
        };
        let m = |success, t, extra| RunMetrics {
            runbook: "verify-chain",
            env: "prod",
            success,
            finished_unix_s: t,
            duration_s: 1.0,
            bytes: None,
            extra,
        };
        update(&p, &m(true, 100.0, vec![x("drctl_chain_entries", "a", 5.0), x("drctl_chain_verified", "a", 100.0)]))
            .unwrap();
        update(&p, &m(true, 110.0, vec![x("drctl_chain_entries", "b", 7.0)])).unwrap();
        // a fails: its entries change, its verified time is not emitted and stays at 100.
        update(&p, &m(false, 120.0, vec![x("drctl_chain_entries", "a", 3.0)])).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("drctl_chain_entries{env=\"prod\",chain=\"a\"} 3\n"), "{text}");
        assert_eq!(text.matches("drctl_chain_entries{env=\"prod\",chain=\"a\"}").count(), 1, "{text}");
        assert!(text.contains("drctl_chain_entries{env=\"prod\",chain=\"b\"} 7\n"), "{text}");
        assert!(text.contains("drctl_chain_verified{env=\"prod\",chain=\"a\"} 100\n"), "{text}");
        assert_eq!(text.matches("# HELP drctl_chain_entries test gauge.").count(), 1, "{text}");
        assert_eq!(
            text.matches("# HELP drctl_chain_verified test gauge.").count(),
            1,
            "kept though not emitted: {text}"
        );
        assert!(text.contains("drctl_last_run_success{runbook=\"verify-chain\",env=\"prod\"} 0"), "{text}");
        assert!(text.contains("drctl_last_success_timestamp_seconds{runbook=\"verify-chain\",env=\"prod\"} 110"));
    }
}
