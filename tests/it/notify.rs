//! `[notify]`: the webhook gets one `{"text": ...}` after a failed run (and after an executed
//! failover or rollback), over real HTTP to a loopback receiver; a failed POST only warns; the
//! webhook URL's token appears in no output and no store file.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::TestDir;
use crate::harness::drctl::{Drctl, RunResult};
use crate::harness::http::Webhook;
use crate::harness::pg::Cluster;

const NOTIFY: &str = "[notify]\nwebhook_url = \"${TEST_WEBHOOK}\"\n";

/// prod's database_url names a loopback port nothing listens on: backup fails its preflight (exit 3).
fn unreachable_config(dir: &TestDir) -> PathBuf {
    let port = crate::harness::free_port();
    dir.write_config(&format!(
        "[store]\nurl = \"file://{}/store\"\n\n[environments.prod]\n\
         database_url = \"postgres://postgres:pw@127.0.0.1:{port}/app?sslmode=disable&connect_timeout=3\"\n\n{NOTIFY}",
        dir.path().display()
    ))
}

/// prod is a fresh database on the shared cluster.
fn reachable_config(dir: &TestDir) -> PathBuf {
    let pg = Cluster::shared();
    let db = crate::harness::unique_name("notify");
    pg.create_db(&db);
    pg.psql(&db, "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10);");
    dir.write_config(&format!(
        "[store]\nurl = \"file://{}/store\"\n\n[environments.prod]\n\
         database_url = \"postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/{db}?sslmode=disable\"\n\n{NOTIFY}",
        dir.path().display(),
        pg.port
    ))
}

fn drctl(config: &Path, hook: &str) -> Drctl {
    Drctl::new().config(config).env("TEST_WEBHOOK", hook).env("TEST_PG_PASSWORD", Cluster::shared().password())
}

/// The `text` of each message the webhook received; each body is exactly `{"text": "..."}`.
fn texts(hook: &Webhook) -> Vec<String> {
    hook.bodies()
        .iter()
        .map(|b| {
            let v: Value = serde_json::from_str(b).unwrap_or_else(|e| panic!("body is not JSON ({e}): {b}"));
            let obj = v.as_object().unwrap_or_else(|| panic!("body is not an object: {b}"));
            assert_eq!(obj.len(), 1, "{b}");
            obj["text"].as_str().unwrap_or_else(|| panic!("no text in {b}")).to_string()
        })
        .collect()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(files(&p)) } else { out.push(p) }
    }
    out.sort();
    out
}

fn assert_store_has_no(store: &Path, token: &str) {
    let all = files(store);
    assert!(!all.is_empty(), "{} is empty", store.display());
    for f in all {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(!text.contains(token), "{} contains the webhook token", f.display());
    }
}

fn checked(r: RunResult, hook: &Webhook) -> RunResult {
    r.assert_no_secret(hook.token());
    r
}

#[test]
fn a_failed_backup_posts_one_message_naming_it_and_never_prints_the_url() {
    let (dir, hook) = (TestDir::new(), Webhook::start());
    let config = unreachable_config(&dir);
    let r = checked(drctl(&config, &hook.url()).args(["backup", "--env", "prod", "-o", "json"]).run(), &hook);
    let r = r.expect_code(3);
    // stdout is still exactly the run's one JSON document.
    let doc = r.json();
    assert_eq!(doc["status"], "preflight_failed");
    let run_id = doc["run_id"].as_str().unwrap();

    let reqs = hook.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, format!("/services/T000/B000/{}", hook.token()));
    let text = &texts(&hook)[0];
    for want in ["drctl backup prod FAILED", "exit 3", "preflight_failed", "db-reachable", run_id] {
        assert!(text.contains(want), "`{want}` not in {text}");
    }
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(!text.contains(hook.token()), "{text}");
    assert!(!r.stderr.contains("notify: could not post"), "{}", r.stderr);

    // Nor in the journal, or anything else the run left in the store.
    checked(drctl(&config, &hook.url()).args(["log", "-o", "json"]).run().expect_code(0), &hook);
    assert_store_has_no(&dir.path().join("store"), hook.token());
    assert_eq!(hook.requests().len(), 1, "log posts nothing");
}

#[test]
fn a_webhook_that_fails_only_warns_and_the_exit_code_is_the_runs() {
    let (dir, hook) = (TestDir::new(), Webhook::start());
    hook.set_status(500);
    let config = unreachable_config(&dir);
    let r = checked(drctl(&config, &hook.url()).args(["backup", "--env", "prod", "-o", "json"]).run(), &hook);
    let r = r.expect_code(3);
    assert_eq!(r.json()["status"], "preflight_failed");
    assert_eq!(hook.bodies().len(), 1);
    assert!(
        r.stderr.contains(
            "notify: could not post to the [notify] webhook: the webhook answered HTTP 500; the run's outcome is \
             unchanged"
        ),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("/services/"), "{}", r.stderr);

    // A webhook nobody answers at: the same warning, naming why, not where.
    let closed = crate::harness::free_port();
    let gone = format!("http://127.0.0.1:{closed}/services/T000/B000/{}", hook.token());
    let r = checked(drctl(&config, &gone).args(["backup", "--env", "prod"]).run(), &hook).expect_code(3);
    let warning = r.stderr.lines().find(|l| l.contains("notify:")).unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(warning.contains("could not post to the [notify] webhook") && warning.contains("refused"), "{warning}");
    assert!(!r.stderr.contains("/services/"), "{}", r.stderr);
    assert_store_has_no(&dir.path().join("store"), hook.token());
}

#[test]
fn a_dry_run_of_the_failing_backup_posts_nothing() {
    let (dir, hook) = (TestDir::new(), Webhook::start());
    let config = unreachable_config(&dir);
    let r = drctl(&config, &hook.url()).args(["backup", "--env", "prod", "--dry-run", "-o", "json"]).run();
    let r = checked(r, &hook).expect_code(3);
    assert_eq!(r.json()["status"], "preflight_failed");
    assert_eq!(hook.bodies(), Vec::<String>::new());
}

#[test]
fn a_successful_backup_posts_nothing_and_a_broken_journal_found_by_verify_chain_posts_one() {
    let (dir, hook) = (TestDir::new(), Webhook::start());
    let config = reachable_config(&dir);
    checked(drctl(&config, &hook.url()).args(["backup", "--env", "prod"]).run().expect_code(0), &hook);
    checked(drctl(&config, &hook.url()).args(["verify-chain", "--journal"]).run().expect_code(0), &hook);
    checked(drctl(&config, &hook.url()).args(["status"]).run(), &hook);
    assert_eq!(hook.bodies(), Vec::<String>::new());

    // Cron's verify-chain finding an edited journal entry is what the on-call must hear about.
    let journal = files(&dir.path().join("store/journal"));
    let entry = journal.first().expect("a journal entry");
    let mut v: Value = serde_json::from_slice(&std::fs::read(entry).unwrap()).unwrap();
    v["details"]["tampered"] = Value::from(1);
    std::fs::write(entry, serde_json::to_vec(&v).unwrap()).unwrap();
    let r = drctl(&config, &hook.url()).args(["verify-chain", "--journal", "-o", "json"]).run();
    let r = checked(r, &hook).expect_code(4);
    r.json();
    let texts = texts(&hook);
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(texts[0].starts_with("drctl verify-chain FAILED (exit 4, integrity_failed): "), "{}", texts[0]);
    assert_store_has_no(&dir.path().join("store"), hook.token());
}
