//! `[notify]`: one line to a Slack-compatible incoming webhook after a failover, a rollback, and
//! any failed run (`{"text": "..."}`).
//!
//! `message` decides whether a run notifies and what it says; `post` sends it. A POST that fails
//! is a warning and never changes the run's exit code. The webhook URL is a secret (Slack's token
//! is its path): it is never printed, journaled or put in an error, reqwest's included.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::cli::{BackupAction, Command};
use crate::error::error_chain;
use crate::runbooks::Done;

/// How long a POST may take before it is given up (with a warning).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The command's name and env as a failure message names them, for commands whose failure
/// notifies: every state-changing command and verify-chain (a broken chain found by cron is what
/// the on-call must hear about). `None` for read-only commands, which never notify.
fn subject(command: &Command) -> Option<(&'static str, Option<&str>)> {
    Some(match command {
        Command::Backup(a) => match &a.action {
            None => ("backup", a.env.env.as_deref()),
            Some(BackupAction::Prune { env }) => ("backup-prune", env.env.as_deref()),
            Some(BackupAction::List { .. }) => return None,
        },
        Command::VerifyChain(a) => ("verify-chain", a.env.as_deref()),
        Command::Sync(a) => ("sync", Some(a.to.as_str())),
        Command::PromoteReplica(a) => ("promote-replica", a.env.as_deref()),
        Command::DnsCutover(a) => ("dns-cutover", Some(a.to.as_str())),
        Command::Failover(a) => ("failover", Some(a.to.as_str())),
        Command::Rollback(_) => ("rollback", None),
        Command::PitrRestore(a) => ("pitr-restore", a.env.env.as_deref()),
        Command::Drill(a) => ("drill", a.env.env.as_deref()),
        // PostgreSQL retries a failed archive_command and aborts recovery on a failed
        // restore_command; a message a segment would flood the channel (and they run apart).
        Command::WalPush(_) | Command::WalFetch(_) => return None,
        Command::Check(_) | Command::Status(_) | Command::Log(_) | Command::Completions { .. } | Command::Man => {
            return None;
        }
    })
}

/// The one line a run posts, or `None` when it posts nothing: never under `--dry-run`; a
/// failover or rollback that changed something (status `ok`, not `already_done`: a rerun of a
/// completed failover posts no second message); any failed run of a state-changing command or of
/// verify-chain. Successful backups, syncs and the like, and read-only commands, post nothing.
pub fn message(command: &Command, run_id: &str, done: &Done, dry_run: bool) -> Option<String> {
    if dry_run {
        return None;
    }
    match done {
        Done::Run(o) => {
            let r = &o.report;
            let env = r.env.as_deref();
            match &o.error {
                Some(e) => {
                    let why = r.error.clone().unwrap_or_else(|| e.to_string());
                    Some(failed(&r.runbook, env, e.exit_code(), &r.status, &why, &r.run_id))
                }
                None if r.status != "ok" => None,
                None => match r.runbook.as_str() {
                    "failover" => Some(failover(&r.extra, env, &r.run_id)),
                    "rollback" => Some(rollback(&r.extra, env, &r.run_id)),
                    _ => None,
                },
            }
        }
        // A command that ended before a runbook could run (its env unknown, a config it needs
        // missing), or verify-chain's document.
        Done::Doc { error: Some(e), .. } => {
            let (name, env) = subject(command)?;
            Some(failed(name, env, e.exit_code(), e.status(), &e.to_string(), run_id))
        }
        Done::Doc { error: None, .. } => None,
    }
}

/// `drctl backup prod FAILED (exit 3, preflight_failed): preflight failed: …. Run R.`
fn failed(runbook: &str, env: Option<&str>, code: u8, status: &str, why: &str, run_id: &str) -> String {
    let what = match env.filter(|e| !e.is_empty()) {
        Some(env) => format!("{runbook} {env}"),
        None => runbook.to_string(),
    };
    let why = why.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no error message");
    let why = why.trim_end_matches('.');
    format!("drctl {what} FAILED (exit {code}, {status}): {why}. Run {run_id}.")
}

fn failover(extra: &Map<String, Value>, env: Option<&str>, run_id: &str) -> String {
    let record = text(extra, "record").unwrap_or("the record");
    let to = env.unwrap_or("the target env");
    let target = text(extra, "target").map(|t| format!(" ({t})")).unwrap_or_default();
    let rto = extra.get("rto_ms").and_then(Value::as_u64).map(|ms| human((ms + 500) / 1000));
    let age = extra.get("data_age_s").and_then(Value::as_u64).map(human);
    format!(
        "FAILOVER EXECUTED: {record} now points to {to}{target}. RTO {}, data age {}. Run {run_id}.",
        rto.as_deref().unwrap_or("unknown"),
        age.as_deref().unwrap_or("unknown"),
    )
}

fn rollback(extra: &Map<String, Value>, env: Option<&str>, run_id: &str) -> String {
    let record = text(extra, "record").unwrap_or("the record");
    let to = env.unwrap_or("the previous env");
    let target = text(extra, "target").map(|t| format!(" ({t})")).unwrap_or_default();
    let undoing = match text(extra, "rolls_back") {
        Some(run) => format!(", undoing run {run}"),
        None => String::new(),
    };
    format!("ROLLBACK EXECUTED: {record} points to {to} again{target}{undoing}. Run {run_id}.")
}

fn text<'a>(extra: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    extra.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// `42s`, `1m 3s`, `2h 5m`.
fn human(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// POST `{"text": text}` to the webhook. Err is a sentence for a warning, never holding the URL.
pub async fn post(url: &str, text: &str, timeout: Duration) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        // A webhook answers, it does not redirect: a 3xx is an answer that did not take the message.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| scrub(&error_chain(&e.without_url()), url))?;
    match client.post(url).json(&serde_json::json!({ "text": text })).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("the webhook answered HTTP {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => Err(format!("the webhook did not answer within {}", human(timeout.as_secs()))),
        Err(e) => Err(scrub(&error_chain(&e.without_url()), url)),
    }
}

/// Belt and braces over `without_url`: the URL, or its path and query (where the token lives),
/// never survive into a message, whichever layer put them there.
fn scrub(msg: &str, url: &str) -> String {
    let mut out = msg.replace(url, "[the webhook URL]");
    if let Ok(u) = url::Url::parse(url) {
        let tail = &url[u[..url::Position::BeforePath].len()..];
        if tail.len() > 1 {
            out = out.replace(tail, "/[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;
    use crate::cli::Cli;
    use crate::engine::report::RunReport;
    use crate::engine::run::Outcome;
    use crate::error::Error;

    fn cmd(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("drctl").chain(args.iter().copied())).expect("parses").command
    }

    fn report(runbook: &str, env: Option<&str>, status: &str, extra: Value) -> RunReport {
        RunReport {
            runbook: runbook.into(),
            run_id: "r-1".into(),
            env: env.map(str::to_string),
            status: status.into(),
            preflight: Vec::new(),
            steps: Vec::new(),
            elapsed_ms: 5,
            extra: extra.as_object().cloned().unwrap_or_default(),
            error: None,
        }
    }

    fn ok(runbook: &str, env: Option<&str>, status: &str, extra: Value) -> Done {
        Done::Run(Outcome { report: report(runbook, env, status, extra), error: None })
    }

    fn failed_run(runbook: &str, env: Option<&str>, e: Error) -> Done {
        let mut r = report(runbook, env, e.status(), json!({}));
        r.error = Some(e.to_string());
        Done::Run(Outcome { report: r, error: Some(e) })
    }

    fn failover_extra() -> Value {
        json!({"record": "app.example.com", "target": "dr-lb.example.com", "rto_ms": 62_600, "data_age_s": 4})
    }

    #[test]
    fn an_executed_failover_names_record_env_target_rto_and_data_age() {
        let c = cmd(&["failover", "--to", "dr"]);
        let m = message(&c, "r-1", &ok("failover", Some("dr"), "ok", failover_extra()), false);
        assert_eq!(
            m.as_deref(),
            Some(
                "FAILOVER EXECUTED: app.example.com now points to dr (dr-lb.example.com). RTO 1m 3s, data age 4s. \
                 Run r-1."
            )
        );
        // RTO rounds to seconds; an unknown data age says so; missing names fall back.
        let m =
            message(&c, "r-1", &ok("failover", Some("dr"), "ok", json!({"rto_ms": 42_400, "data_age_s": null})), false)
                .unwrap();
        assert_eq!(m, "FAILOVER EXECUTED: the record now points to dr. RTO 42s, data age unknown. Run r-1.");
    }

    #[test]
    fn a_rerun_of_a_completed_failover_or_rollback_posts_nothing() {
        let c = cmd(&["failover", "--to", "dr"]);
        assert_eq!(message(&c, "r-1", &ok("failover", Some("dr"), "already_done", failover_extra()), false), None);
        let c = cmd(&["rollback"]);
        assert_eq!(message(&c, "r-1", &ok("rollback", Some("prod"), "already_done", json!({})), false), None);
    }

    #[test]
    fn an_executed_rollback_names_the_run_it_undid() {
        let c = cmd(&["rollback"]);
        let extra = json!({"record": "app.example.com", "target": "prod-lb.example.com", "rolls_back": "r-0"});
        let m = message(&c, "r-1", &ok("rollback", Some("prod"), "ok", extra), false);
        assert_eq!(
            m.as_deref(),
            Some(
                "ROLLBACK EXECUTED: app.example.com points to prod again (prod-lb.example.com), undoing run r-0. \
                 Run r-1."
            )
        );
    }

    #[test]
    fn a_failed_run_names_runbook_env_exit_status_and_the_first_line_of_its_error() {
        let c = cmd(&["backup", "--env", "prod"]);
        let e = Error::Preflight { failed: vec!["db-reachable: 127.0.0.1:1: refused\nmore".into()], waivable: vec![] };
        let m = message(&c, "r-1", &failed_run("backup", Some("prod"), e), false).unwrap();
        assert_eq!(
            m,
            "drctl backup prod FAILED (exit 3, preflight_failed): preflight failed: db-reachable: 127.0.0.1:1: refused. \
             Run r-1."
        );
        // No env: no double space.
        let e = Error::step("restore-record", "Route 53 said no");
        let m = message(&cmd(&["rollback"]), "r-1", &failed_run("rollback", None, e), false).unwrap();
        assert_eq!(m, "drctl rollback FAILED (exit 1, failed): step restore-record failed: Route 53 said no. Run r-1.");
    }

    #[test]
    fn a_dry_run_never_posts() {
        let c = cmd(&["backup", "--env", "prod", "--dry-run"]);
        let e = Error::Preflight { failed: vec!["db-reachable: refused".into()], waivable: vec![] };
        assert_eq!(message(&c, "r-1", &failed_run("backup", Some("prod"), e), true), None);
        let c = cmd(&["failover", "--to", "dr", "--dry-run"]);
        assert_eq!(message(&c, "r-1", &ok("failover", Some("dr"), "ok", failover_extra()), true), None);
    }

    #[test]
    fn successful_backups_and_syncs_post_nothing() {
        let c = cmd(&["backup", "--env", "prod"]);
        assert_eq!(message(&c, "r-1", &ok("backup", Some("prod"), "ok", json!({"id": "b1"})), false), None);
        let c = cmd(&["sync", "--from", "prod", "--to", "staging"]);
        assert_eq!(message(&c, "r-1", &ok("sync", Some("staging"), "ok", json!({})), false), None);
    }

    #[test]
    fn documents_notify_only_for_a_failed_verify_chain_or_a_run_that_could_not_start() {
        let doc = |error: Option<Error>| Done::Doc { json: Value::Null, text: String::new(), error, metrics: None };
        let broken = || Error::Integrity { chain: "journal".into(), at: "seq 7".into(), reason: "prev_hash".into() };
        let m = message(&cmd(&["verify-chain"]), "r-2", &doc(Some(broken())), false).unwrap();
        assert_eq!(
            m,
            "drctl verify-chain FAILED (exit 4, integrity_failed): integrity failure in journal at seq 7: prev_hash. \
             Run r-2."
        );
        assert_eq!(message(&cmd(&["verify-chain"]), "r-2", &doc(None), false), None);
        for read_only in [&["status"][..], &["check"], &["log"], &["backup", "list"]] {
            let e = Error::Breach { breaches: vec!["prod: last backup 9h ago".into()] };
            assert_eq!(message(&cmd(read_only), "r-2", &doc(Some(e)), false), None, "{read_only:?}");
        }
        // A failover that failed before its runbook could run is a failed failover.
        let e = Error::usage("env `dr` is not in [environments]");
        let m = message(&cmd(&["failover", "--to", "dr"]), "r-2", &doc(Some(e)), false).unwrap();
        assert_eq!(m, "drctl failover dr FAILED (exit 2, refused): env `dr` is not in [environments]. Run r-2.");
    }

    #[test]
    fn scrub_removes_the_url_and_its_path() {
        let url = "https://hooks.example.com/services/T0/B0/SECRETTOKEN";
        let s = scrub(&format!("error for {url}: /services/T0/B0/SECRETTOKEN refused"), url);
        assert!(!s.contains("SECRETTOKEN"), "{s}");
    }

    #[tokio::test]
    async fn a_webhook_that_cannot_be_reached_is_an_error_without_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/services/T0/B0/SECRETTOKEN");
        let e = post(&url, "hello", Duration::from_secs(5)).await.unwrap_err();
        assert!(!e.contains("SECRETTOKEN") && !e.contains("/services"), "{e}");
        assert!(!e.is_empty());
    }
}
