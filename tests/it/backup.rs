//! backup (logical), backup list / prune and verify-chain --journal --backups, end to end against a
//! real PostgreSQL 15 cluster, the file store and moto's S3.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::TestDir;
use crate::harness::drctl::{Drctl, RunResult};
use crate::harness::moto::Moto;
use crate::harness::pg::Cluster;

/// A database with a few tables: a sequence, an index, a foreign key, an empty table and a
/// 20,000-row one.
pub(crate) fn seeded_db(prefix: &str) -> String {
    let pg = Cluster::shared();
    let db = crate::harness::unique_name(prefix);
    pg.create_db(&db);
    pg.psql(
        &db,
        "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
         CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id), total numeric, note text);
         CREATE INDEX orders_customer ON orders (customer_id);
         CREATE TABLE empty_one (id int);
         CREATE SCHEMA audit;
         CREATE TABLE audit.\"Events\" (id int, payload jsonb);
         INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 300) g;
         INSERT INTO orders (customer_id, total, note) SELECT 1 + g % 300, g * 1.5, md5(g::text) FROM generate_series(1, 20000) g;
         INSERT INTO audit.\"Events\" SELECT g, jsonb_build_object('n', g) FROM generate_series(1, 77) g;",
    );
    db
}

fn file_config(dir: &TestDir, db: &str) -> PathBuf {
    let pg = Cluster::shared();
    dir.write_config(&format!(
        "[store]\nurl = \"file://{}/store\"\n\n[environments.prod]\ndatabase_url = \"postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/{db}?sslmode=disable\"\n",
        dir.path().display(),
        pg.port
    ))
}

fn drctl(config: &Path) -> Drctl {
    Drctl::new().config(config).env("TEST_PG_PASSWORD", Cluster::shared().password())
}

fn json(r: &RunResult) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", r.stdout))
}

fn checked(r: RunResult) -> RunResult {
    r.assert_no_secret(Cluster::shared().password());
    r
}

fn list(config: &Path) -> Vec<Value> {
    let r = checked(drctl(config).args(["backup", "list", "-o", "json"]).run().expect_code(0));
    json(&r)["backups"].as_array().cloned().unwrap_or_default()
}

fn object_files(store: &Path, id: &str) -> Vec<PathBuf> {
    let dir = store.join("backups/prod").join(id);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".dump.zst."))
        .collect();
    v.sort();
    v
}

pub(crate) fn table_counts(db: &str) -> String {
    Cluster::shared().psql(
        db,
        "SELECT (SELECT count(*) FROM customers) || ',' || (SELECT count(*) FROM orders) || ',' || \
         (SELECT count(*) FROM empty_one) || ',' || (SELECT count(*) FROM audit.\"Events\")",
    )
}

#[test]
fn backup_to_file_store_lists_verifies_and_restores_by_hand() {
    let dir = TestDir::new();
    let db = seeded_db("backup_file");
    let config = file_config(&dir, &db);
    let store = dir.path().join("store");

    let r = checked(drctl(&config).args(["backup", "--env", "prod", "-o", "json"]).run().expect_code(0));
    let doc = json(&r);
    assert_eq!(doc["status"], "ok");
    assert_eq!(doc["runbook"], "backup");
    let id = doc["id"].as_str().expect("backup id").to_string();
    let steps: Vec<&str> = doc["steps"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert!(steps.iter().all(|s| *s == "applied" || *s == "done"), "{steps:?}");
    // The progress bar's total (the tables' size) is in the report: an estimate of the raw dump.
    let (expected, dumped) = (doc["expected_bytes"].as_u64(), doc["dump_bytes"].as_u64().unwrap());
    let expected = expected.unwrap_or_else(|| panic!("no expected_bytes in {doc}"));
    assert!(expected > dumped / 4 && expected < dumped * 4, "expected {expected} bytes, dumped {dumped}");

    let backups = list(&config);
    assert_eq!(backups.len(), 1);
    let b = &backups[0];
    assert_eq!(b["id"], id.as_str());
    assert_eq!(b["env"], "prod");
    assert_eq!(b["type"], "logical");
    // Only what is known: the manifest is the committed one; the objects were never re-hashed.
    assert_eq!(b["manifest_ok"], true);
    assert_eq!(b["verified"], false, "never re-read is not verified");
    assert!(b["deep_verified_at"].is_null());
    assert!(b["bytes"].as_u64().unwrap() > 1000);
    let sha = b["sha256"].as_str().unwrap();
    assert_eq!(sha.len(), 64);
    assert!(b["wal_start"].is_null());

    // The table form shows size and the sha256's first 12 hex digits, on one line (the JSON has all).
    let t = checked(drctl(&config).args(["backup", "list"]).run().expect_code(0));
    let row = t.stdout.lines().find(|l| l.contains(&id)).unwrap_or_else(|| panic!("{}", t.stdout));
    assert!(row.contains(&sha[..12]) && !t.stdout.contains(&sha[..13]), "{}", t.stdout);

    // The stored dump restores with the operator's own tools: cat | zstd -dc | pg_restore.
    let objects = object_files(&store, &id);
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert!(objects[0].to_string_lossy().ends_with(".dump.zst.000"));
    let cat =
        format!("cat {} | zstd -dc", objects.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" "));
    // No pipefail here: pg_restore --list stops reading after the TOC, so zstd may get SIGPIPE.
    let listing = sh(&format!("set +o pipefail; {cat} | pg_restore --list"));
    assert!(listing.contains("TABLE DATA public orders"), "{listing}");
    let pg = Cluster::shared();
    let restored = crate::harness::unique_name("restored");
    pg.create_db(&restored);
    sh_env(
        &format!("{cat} | pg_restore --no-owner -d 'postgres://postgres@127.0.0.1:{}/{restored}'", pg.port),
        &[("PGPASSWORD", pg.password())],
    );
    assert_eq!(table_counts(&restored), table_counts(&db));
    assert_eq!(table_counts(&db), "300,20000,0,77");

    // The manifest's per-table counts are the source's.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(store.join("backups/prod").join(&id).join("manifest.json")).unwrap())
            .unwrap();
    let orders = manifest["tables"].as_array().unwrap().iter().find(|t| t["table"] == "orders").unwrap();
    assert_eq!(orders["rows"], 20000);
    assert_eq!(manifest["objects"][0]["sha256"].as_str().unwrap(), sha256_file(&objects[0]));

    // A second run adds a second backup, listed newest first.
    let r2 = checked(drctl(&config).args(["backup", "--env", "prod", "-o", "json"]).run().expect_code(0));
    let id2 = json(&r2)["id"].as_str().unwrap().to_string();
    let backups = list(&config);
    assert_eq!(backups.iter().map(|b| b["id"].as_str().unwrap()).collect::<Vec<_>>(), [id2.as_str(), id.as_str()]);

    let v = checked(
        drctl(&config).args(["verify-chain", "--journal", "--backups", "--deep", "-o", "json"]).run().expect_code(0),
    );
    let doc = json(&v);
    assert_eq!(doc["ok"], true);
    let chains = doc["chains"].as_array().unwrap();
    assert_eq!(chains.iter().find(|c| c["chain"] == "backups").unwrap()["entries"], 2);
    assert!(chains.iter().find(|c| c["chain"] == "journal").unwrap()["entries"].as_u64().unwrap() >= 10);
    // The deep run is journaled per backup: the list now says when each was re-hashed.
    let backups = list(&config);
    assert!(backups.iter().all(|b| b["verified"] == true && b["deep_verified_at"].is_string()), "{backups:?}");
    let t = checked(drctl(&config).args(["backup", "list"]).run().expect_code(0));
    assert!(t.stdout.contains("manifest ok, re-hashed 20"), "{}", t.stdout);

    // Overwrite one stored object with other bytes of the same size: only --deep can see it.
    let victim = &object_files(&store, &id)[0];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(victim, &bytes).unwrap();
    checked(drctl(&config).args(["verify-chain", "--backups"]).run().expect_code(0));
    let v = checked(drctl(&config).args(["verify-chain", "--backups", "--deep", "-o", "json"]).run().expect_code(4));
    let doc = json(&v);
    assert_eq!(doc["ok"], false);
    let bad = &doc["chains"][0];
    assert_eq!(bad["first_bad_index"], 0);
    assert_eq!(bad["first_bad_key"], format!("prod/{id}"));
    assert!(bad["reason"].as_str().unwrap().contains("sha256"), "{bad}");
    assert!(v.stderr.contains(&id), "{}", v.stderr);
    // The failed re-hash is what `backup list` now says of that backup, not a stale "verified".
    let after = list(&config);
    let row = after.iter().find(|b| b["id"] == id.as_str()).unwrap();
    assert_eq!(row["verified"], false, "{row}");
    let t = checked(drctl(&config).args(["backup", "list"]).run().expect_code(0));
    assert!(t.stdout.contains("FAILED re-hash"), "{}", t.stdout);
    assert_store_has_no_secret(&store, Cluster::shared().password());
}

#[test]
fn an_edited_journal_entry_breaks_the_chain_at_that_entry() {
    let dir = TestDir::new();
    let db = seeded_db("journal_edit");
    let config = file_config(&dir, &db);
    checked(drctl(&config).args(["backup", "--env", "prod"]).run().expect_code(0));
    checked(drctl(&config).args(["verify-chain", "--journal"]).run().expect_code(0));

    let entry = dir.path().join("store/journal/00000000000000000002.json");
    let text = std::fs::read_to_string(&entry).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["details"]["tampered"] = Value::from(1);
    std::fs::write(&entry, serde_json::to_vec(&v).unwrap()).unwrap();

    let r = checked(drctl(&config).args(["verify-chain", "--journal", "-o", "json"]).run().expect_code(4));
    let doc = json(&r);
    assert_eq!(doc["chains"][0]["chain"], "journal");
    assert_eq!(doc["chains"][0]["first_bad_index"], 2);
    assert!(doc["chains"][0]["first_bad_key"].as_str().unwrap().contains("00000000000000000002"));
    assert!(r.stderr.contains("00000000000000000002"), "{}", r.stderr);
}

#[test]
fn backup_to_s3_on_moto() {
    let moto = Moto::shared();
    let bucket = Moto::unique_bucket("bkt");
    moto.create_bucket(&bucket);
    let dir = TestDir::new();
    let db = seeded_db("backup_s3");
    let pg = Cluster::shared();
    let config = dir.write_config(&format!(
        "[store]\nurl = \"s3://{bucket}/drctl\"\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [environments.prod]\ndatabase_url = \"postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/{db}?sslmode=disable\"\n",
        moto.endpoint(),
        pg.port
    ));
    let r = checked(drctl(&config).args(["backup", "-o", "json"]).run().expect_code(0));
    let id = json(&r)["id"].as_str().unwrap().to_string();
    checked(drctl(&config).args(["backup"]).run().expect_code(0));
    let backups = list(&config);
    assert_eq!(backups.len(), 2);
    assert_eq!(backups[1]["id"], id.as_str());
    assert!(backups.iter().all(|b| b["manifest_ok"] == true && b["sha256"].as_str().unwrap().len() == 64));
    checked(drctl(&config).args(["verify-chain", "--journal", "--backups", "--deep"]).run().expect_code(0));

    // Missing bucket: a preflight failure (exit 3), not a lock failure.
    let missing = dir.write_config(&format!(
        "[store]\nurl = \"s3://{bucket}-missing/drctl\"\n[aws]\nendpoint_url = \"{}\"\n\
         [environments.prod]\ndatabase_url = \"postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/{db}?sslmode=disable\"\n",
        moto.endpoint(),
        pg.port
    ));
    let r = checked(drctl(&missing).args(["backup", "-o", "json"]).run().expect_code(3));
    assert_eq!(json(&r)["status"], "preflight_failed");
    assert!(r.stderr.contains(&format!("{bucket}-missing")), "{}", r.stderr);
}

#[test]
fn prune_keeps_the_newest_and_journals_what_it_removed() {
    let dir = TestDir::new();
    let db = seeded_db("prune");
    let config = file_config(&dir, &db);
    for _ in 0..3 {
        checked(drctl(&config).args(["backup"]).run().expect_code(0));
    }
    let before = list(&config);
    let text = std::fs::read_to_string(&config).unwrap() + "\n[retention]\nkeep_last = 1\n";
    let config = dir.write_config(&text);
    let dry = checked(drctl(&config).args(["backup", "prune", "--dry-run", "-o", "json"]).run().expect_code(0));
    let plan = json(&dry);
    assert_eq!(plan["status"], "planned");
    assert_eq!(plan["would_prune"].as_array().unwrap().len(), 2);
    assert_eq!(list(&config).len(), 3, "a dry run changes nothing");

    checked(drctl(&config).args(["backup", "prune"]).run().expect_code(0));
    let after = list(&config);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["id"], before[0]["id"], "the newest stays");
    let pruned = before[2]["id"].as_str().unwrap();
    let left = walk(&dir.path().join("store/backups/prod").join(pruned));
    assert!(left.is_empty(), "objects of a pruned backup remain: {left:?}");
    let log = checked(drctl(&config).args(["log", "--runbook", "backup-prune", "-o", "json"]).run().expect_code(0));
    assert_eq!(json(&log)["entries"].as_array().unwrap().iter().filter(|e| e["event"] == "backup-pruned").count(), 2);
    // Idempotent: nothing left to do.
    let again = checked(drctl(&config).args(["backup", "prune", "-o", "json"]).run().expect_code(0));
    let again = json(&again);
    assert_eq!(again["status"], "ok");
    let expire = again["steps"].as_array().unwrap().iter().find(|s| s["step"] == "expire").unwrap();
    assert_eq!(expire["state"], "done", "nothing left to expire");
    checked(drctl(&config).args(["verify-chain", "--deep", "--backups", "--journal"]).run().expect_code(0));
}

/// A database big enough that a backup takes a while (~60 MB of dump).
fn big_db() -> &'static str {
    static DB: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DB.get_or_init(|| {
        let pg = Cluster::shared();
        let db = crate::harness::unique_name("big");
        pg.create_db(&db);
        pg.psql(
            &db,
            "CREATE TABLE events AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS payload \
             FROM generate_series(1, 600000) g;",
        );
        db
    })
}

/// Until the dump step runs (clean-partial, the step before it, is journaled done) and dump data
/// is being written.
fn wait_dump_started(store: &Path) {
    wait_for("the dump to start writing", Duration::from_secs(60), || {
        let started = std::fs::read_dir(store.join("journal"))
            .map(|d| {
                d.flatten().any(|e| {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    text.contains("\"step-done\"") && text.contains("\"clean-partial\"")
                })
            })
            .unwrap_or(false);
        // Journal entries are written through `.cas` temp files; anything else there is dump data.
        let data_tmp = started
            && std::fs::read_dir(store.join(".tmp")).is_ok_and(|d| {
                d.flatten().any(|e| {
                    !e.file_name().to_string_lossy().ends_with(".cas") && e.metadata().is_ok_and(|m| m.len() > 0)
                })
            });
        started && (data_tmp || std::fs::read_dir(store.join("backups/prod")).map(|d| d.count() > 0).unwrap_or(false))
    });
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_9_mid_backup_lists_nothing_and_the_rerun_takes_over() {
    let dir = TestDir::new();
    let config = file_config(&dir, big_db());
    let store = dir.path().join("store");
    let mut child = drctl(&config).args(["backup"]).spawn();
    // Wait until data objects are being written, then kill -9 mid-upload.
    wait_dump_started(&store);
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());

    // No pg_dump outlives drctl (parent-death signal).
    let pg = Cluster::shared();
    wait_for("pg_dump to exit", Duration::from_secs(10), || {
        pg.psql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'", big_db())) == "0"
    });
    assert!(list(&config).is_empty(), "a killed backup is never listed");

    // The dead run's lock is taken over at once (same host, pid gone); the rerun cleans up.
    let r = checked(drctl(&config).args(["backup", "-o", "json"]).run().expect_code(0));
    let doc = json(&r);
    let clean = doc["steps"].as_array().unwrap().iter().find(|s| s["step"] == "clean-partial").unwrap().clone();
    let backups = list(&config);
    assert_eq!(backups.len(), 1);
    let ids: Vec<String> = std::fs::read_dir(store.join("backups/prod"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ids, [backups[0]["id"].as_str().unwrap().to_string()], "partial objects removed ({clean})");
    let temps: Vec<PathBuf> =
        walk(&store.join(".tmp")).into_iter().filter(|p| !p.to_string_lossy().ends_with(".cas")).collect();
    assert!(temps.is_empty(), "the killed run's temp files were removed: {temps:?} ({clean})");
    checked(drctl(&config).args(["verify-chain", "--journal", "--backups", "--deep"]).run().expect_code(0));
}

#[test]
fn two_concurrent_backups_one_runs_the_other_exits_5_naming_the_holder() {
    let dir = TestDir::new();
    let config = file_config(&dir, big_db());
    let lock = dir.path().join("store/locks/env:prod.json");
    let mut first = drctl(&config).args(["backup"]).spawn();
    wait_for("the first backup's lock", Duration::from_secs(30), || lock.exists());
    let second = checked(drctl(&config).args(["backup", "-o", "json"]).run().expect_code(5));
    assert_eq!(json(&second)["status"], "locked");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(second.stderr.contains("backup --env prod") && second.stderr.contains(host.trim()), "{}", second.stderr);
    assert!(first.wait().unwrap().success());
    assert_eq!(list(&config).len(), 1);
}

#[test]
fn bad_input_exits_2_names_the_problem_and_writes_nothing() {
    let dir = TestDir::new();
    let pg = Cluster::shared();
    let pw = pg.password();
    let url = |db: &str| format!("postgres://postgres:{pw}@127.0.0.1:{}/{db}?sslmode=disable", pg.port);
    let store = format!("file://{}/store", dir.path().display());

    // No config anywhere.
    let r = Drctl::new().cwd(dir.path()).env("XDG_CONFIG_HOME", dir.path()).args(["backup"]).run().expect_code(2);
    assert!(r.stderr.contains("no config file found"), "{}", r.stderr);
    assert!(r.stdout.is_empty());

    let cases: Vec<(String, Vec<&str>, Vec<&str>)> = vec![
        (format!("[store]\nurl = \"{store}\"\nbukcet = \"x\"\n"), vec!["backup"], vec!["bukcet", "drctl.toml"]),
        (
            format!("[store]\nurl = \"{store}\"\n[environments.prod]\ndatabase_url = \"mysql://u:{pw}@h/d\"\n"),
            vec!["backup"],
            vec!["database_url", "mysql"],
        ),
        (
            format!("[store]\nurl = \"ftp://nowhere\"\n[environments.prod]\ndatabase_url = \"{}\"\n", url("x")),
            vec!["backup"],
            vec!["[store] url", "ftp://nowhere"],
        ),
        (
            format!("[store]\nurl = \"{store}\"\n[environments.prod]\ndatabase_url = \"{}\"\n", url("x")),
            vec!["backup", "--env", "stagin"],
            vec!["stagin", "prod"],
        ),
        (
            format!(
                "[store]\nurl = \"{store}\"\n[environments.prod]\ndatabase_url = \"postgres://u:${{DRCTL_TEST_UNSET_VAR}}@h/d\"\n"
            ),
            vec!["backup"],
            vec!["DRCTL_TEST_UNSET_VAR"],
        ),
    ];
    for (text, args, needles) in cases {
        let config = dir.write_config(&text);
        let r = Drctl::new().config(&config).args(args.clone()).arg("-o").arg("json").run().expect_code(2);
        r.assert_no_secret(pw);
        for n in needles {
            assert!(r.stderr.contains(n), "{args:?}: `{n}` not in {}", r.stderr);
        }
        assert!(r.stdout.is_empty(), "config errors print no JSON document: {}", r.stdout);
        assert!(!dir.path().join("store").exists(), "{args:?} wrote to the store");
    }

    // Unreachable database: exit 3 naming host:port, never the password.
    let port = crate::harness::free_port();
    let config = dir.write_config(&format!(
        "[store]\nurl = \"{store}\"\n[environments.prod]\ndatabase_url = \"postgres://postgres:{pw}@127.0.0.1:{port}/app?sslmode=disable&connect_timeout=3\"\n"
    ));
    let r = Drctl::new().config(&config).args(["backup", "-o", "json"]).run().expect_code(3);
    r.assert_no_secret(pw);
    assert!(r.stderr.contains(&format!("127.0.0.1:{port}")), "{}", r.stderr);
    assert_eq!(
        json(&r)["preflight"].as_array().unwrap().iter().find(|c| c["check"] == "db-reachable").unwrap()["ok"],
        false
    );
    let log = Drctl::new().config(&config).args(["log", "-o", "json"]).run().expect_code(0);
    log.assert_no_secret(pw);
    assert_eq!(json(&log)["entries"][0]["event"], "preflight-failed");
    assert_store_has_no_secret(&dir.path().join("store"), pw);
}

#[test]
fn metrics_file_gets_this_runs_series() {
    let dir = TestDir::new();
    let db = seeded_db("metrics");
    let config = file_config(&dir, &db);
    let prom = dir.path().join("drctl.prom");
    checked(drctl(&config).args(["backup", "--metrics-file"]).arg(prom.to_str().unwrap()).run().expect_code(0));
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.contains("drctl_last_run_success{runbook=\"backup\",env=\"prod\"} 1"), "{text}");
    assert!(text.contains("drctl_bytes{runbook=\"backup\",env=\"prod\"}"), "{text}");
}

#[test]
fn dry_run_plans_and_writes_nothing() {
    let dir = TestDir::new();
    let db = seeded_db("dry");
    let config = file_config(&dir, &db);
    let r = checked(drctl(&config).args(["backup", "--dry-run", "-o", "json"]).run().expect_code(0));
    let doc = json(&r);
    assert_eq!(doc["status"], "planned");
    assert!(doc["steps"].as_array().unwrap().iter().any(|s| s["state"] == "pending"));
    assert!(!dir.path().join("store").exists(), "a dry run writes nothing");
}

pub(crate) fn sh(cmd: &str) -> String {
    sh_env(cmd, &[])
}

pub(crate) fn sh_env(cmd: &str, env: &[(&str, &str)]) -> String {
    let out =
        Command::new("bash").arg("-o").arg("pipefail").arg("-c").arg(cmd).envs(env.iter().copied()).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {} {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256_file(p: &Path) -> String {
    sh(&format!("sha256sum {}", p.display())).split_whitespace().next().unwrap().to_string()
}

#[test]
fn sigterm_mid_backup_exits_143_journals_it_and_discards_the_partial_backup() {
    let dir = TestDir::new();
    let config = file_config(&dir, big_db());
    let store = dir.path().join("store");
    let child = drctl(&config).args(["backup", "-o", "json"]).spawn();
    wait_dump_started(&store);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"], "interrupted");
    // The interrupted step reports the time it ran, not 0 ms.
    let dump = doc["steps"].as_array().unwrap().iter().find(|s| s["step"] == "dump").unwrap();
    assert_eq!(dump["state"], "failed", "{dump}");
    assert!(dump["duration_ms"].as_u64().unwrap() > 0, "{dump}");
    // A backup never resumes, so the hint must not promise it.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("never resumes") && !stderr.contains("to resume"), "{stderr}");

    let pg = Cluster::shared();
    wait_for("pg_dump to exit", Duration::from_secs(10), || {
        pg.psql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'", big_db())) == "0"
    });
    assert!(list(&config).is_empty());
    let log = json(&checked(drctl(&config).args(["log", "-o", "json"]).run().expect_code(0)));
    assert_eq!(log["entries"][0]["event"], "interrupted");
    assert_eq!(log["entries"][0]["details"]["signal"], "SIGTERM");
    // The lock was released on the way out: the next run starts at once, without a takeover.
    let lock: Value = serde_json::from_slice(&std::fs::read(store.join("locks/env:prod.json")).unwrap()).unwrap();
    assert_eq!(lock["released"], true);
    checked(drctl(&config).args(["verify-chain", "--journal"]).run().expect_code(0));
}

#[test]
fn check_reaches_everything_and_names_what_fails() {
    let dir = TestDir::new();
    let db = seeded_db("check");
    let config = file_config(&dir, &db);
    let r = checked(drctl(&config).args(["check", "-o", "json"]).run().expect_code(0));
    let doc = json(&r);
    assert_eq!(doc["ok"], true);
    let ids: Vec<&str> = doc["checks"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
    for want in ["config-valid", "store-writable", "db-reachable", "can-dump", "declared-role", "pg-dump-version"] {
        assert!(ids.contains(&want), "{want} not in {ids:?}");
    }
    let config_valid = doc["checks"].as_array().unwrap().iter().find(|c| c["check"] == "config-valid").unwrap();
    assert!(config_valid["detail"].as_str().unwrap().contains("(1 env), store file://"), "{config_valid}");
    // The probe object is deleted again and nothing else is written.
    let leftovers: Vec<_> = walk(&dir.path().join("store"));
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A role that cannot read a table: can-dump fails, exit 3, naming the table.
    let pg = Cluster::shared();
    let role = crate::harness::unique_name("weak");
    pg.psql(&db, &format!("CREATE ROLE {role} LOGIN PASSWORD 'weakpw{role}'; GRANT SELECT ON customers TO {role};"));
    let weak = dir.write_config(&format!(
        "[store]\nurl = \"file://{}/store\"\n[environments.prod]\ndatabase_url = \"postgres://{role}:weakpw{role}@127.0.0.1:{}/{db}?sslmode=disable\"\n",
        dir.path().display(),
        pg.port
    ));
    let r = Drctl::new().config(&weak).args(["check"]).run().expect_code(3);
    r.assert_no_secret(&format!("weakpw{role}"));
    assert!(r.stdout.contains("can-dump") && r.stdout.contains("orders"), "{}", r.stdout);
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The configured password appears nowhere in the store: journal, manifests, locks.
pub fn assert_store_has_no_secret(store: &Path, secret: &str) {
    for f in walk(store) {
        if f.to_string_lossy().contains(".dump.zst") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(!text.contains(secret), "{} contains the password", f.display());
    }
}

#[test]
fn lock_wait_queues_behind_the_running_backup() {
    let dir = TestDir::new();
    let config = file_config(&dir, big_db());
    let lock = dir.path().join("store/locks/env:prod.json");
    let mut first = drctl(&config).args(["backup"]).spawn();
    wait_for("the first backup's lock", Duration::from_secs(30), || lock.exists());
    checked(drctl(&config).args(["--lock-wait", "5m", "backup"]).run().expect_code(0));
    assert!(first.wait().unwrap().success());
    assert_eq!(list(&config).len(), 2);
    // The second run took the lock after the first released it: fence 2, no takeover.
    let l: Value = serde_json::from_slice(&std::fs::read(&lock).unwrap()).unwrap();
    assert_eq!(l["fence"], 2);
}

#[test]
fn sigint_while_waiting_for_a_lock_exits_130_at_once() {
    let dir = TestDir::new();
    let config = file_config(&dir, big_db());
    let lock = dir.path().join("store/locks/env:prod.json");
    let mut first = drctl(&config).args(["backup"]).spawn();
    wait_for("the first backup's lock", Duration::from_secs(30), || lock.exists());
    let waiter = drctl(&config).args(["--lock-wait", "10m", "backup", "-o", "json"]).spawn();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(waiter.id() as i32, libc::SIGINT) };
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"], "interrupted");
    assert!(first.wait().unwrap().success());
}

/// `--accept` names a check the runbook has and that can be waived; anything else is exit 2
/// before anything is locked or written, and the hint names --accept only when it would help.
#[test]
fn accept_is_checked_against_the_runbooks_own_check_ids() {
    let dir = TestDir::new();
    let db = seeded_db("accept");
    let config = file_config(&dir, &db);
    let r = checked(drctl(&config).args(["backup", "--accept", "standby-fresh"]).run().expect_code(2));
    assert!(r.stderr.contains("backup has no check `standby-fresh`"), "{}", r.stderr);
    // Every check a backup has guards something it cannot run without: none is waivable.
    assert!(r.stderr.contains("backup has no check that can be waived"), "{}", r.stderr);
    let r = checked(drctl(&config).args(["backup", "--accept", "store-writable"]).run().expect_code(2));
    assert!(r.stderr.contains("`store-writable` cannot be waived"), "{}", r.stderr);
    assert!(!dir.path().join("store/journal").exists(), "nothing was written");
    // A preflight failure of a check that cannot be waived: the hint does not offer --accept.
    let bad = std::fs::read_to_string(&config).unwrap().replace(&format!(":{}/", Cluster::shared().port), ":1/");
    let bad = dir.write("bad.toml", &bad);
    let r = checked(drctl(&bad).args(["backup"]).run().expect_code(3));
    assert!(r.stderr.contains("db-reachable"), "{}", r.stderr);
    assert!(!r.stderr.contains("--accept"), "no check here can be waived: {}", r.stderr);
}

// --- what cron and a terminal see ------------------------------------------------------------------

#[test]
fn quiet_runs_print_nothing_on_success_and_the_report_and_error_on_failure() {
    let dir = TestDir::new();
    let db = seeded_db("backup_quiet");
    let config = file_config(&dir, &db);
    for args in [
        &["-q", "backup", "--env", "prod"][..],
        &["backup", "--env", "prod", "-q", "-o", "json"],
        &["-q", "backup", "list"],
        &["-q", "verify-chain", "--journal", "--backups"],
        &["-q", "status"],
        &["-q", "log"],
    ] {
        let r = checked(drctl(&config).args(args).run().expect_code(0));
        assert!(r.stdout.is_empty() && r.stderr.is_empty(), "drctl {args:?} printed\n{r:?}");
    }
    assert_eq!(list(&config).len(), 2, "the quiet backups ran");

    // A store where backups/ is a file: preflight passes (the probe goes elsewhere), the dump fails.
    let broken = TestDir::new();
    std::fs::create_dir_all(broken.path().join("store")).unwrap();
    std::fs::write(broken.path().join("store/backups"), "not a directory").unwrap();
    let config = file_config(&broken, &db);
    let r = checked(drctl(&config).args(["-q", "backup", "--env", "prod"]).run().expect_code(1));
    assert!(r.stdout.contains("FAILED") && r.stdout.contains("backup failed"), "the report is printed: {r:?}");
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    // A backup never resumes: the hint says what a rerun does, not "completed steps are skipped".
    assert!(r.stderr.contains("hint: ") && r.stderr.contains("never resumes"), "{}", r.stderr);
    assert!(!r.stderr.contains("skipped"), "{}", r.stderr);
    let r = checked(drctl(&config).args(["-q", "backup", "--env", "prod", "-o", "json"]).run().expect_code(1));
    assert_eq!(json(&r)["status"], "failed");
}

#[test]
fn log_off_a_tty_prints_one_unpadded_line_per_entry() {
    let dir = TestDir::new();
    let config = file_config(&dir, &seeded_db("backup_log"));
    checked(drctl(&config).args(["backup"]).run().expect_code(0));
    let entries = json(&checked(drctl(&config).args(["log", "-o", "json"]).run().expect_code(0)))["entries"]
        .as_array()
        .unwrap()
        .clone();
    assert!(entries.len() >= 5, "{entries:?}");
    // stdout is a pipe here, as under cron or `| grep`.
    let r = checked(drctl(&config).args(["log"]).run().expect_code(0));
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), entries.len(), "{}", r.stdout);
    for (line, e) in lines.iter().zip(&entries) {
        assert!(!line.contains("  ") && !line.contains('│') && line.trim_end() == *line, "padded: {line:?}");
        let fields: Vec<&str> = line.splitn(7, ' ').collect();
        assert_eq!(fields[0], e["seq"].to_string(), "{line}");
        let want = [&e["time"], &e["runbook"], &e["event"], &e["run_id"]].map(|v| v.as_str().unwrap().to_string());
        assert_eq!([fields[1], fields[2], fields[4], fields[5]], want.each_ref().map(String::as_str), "{line}");
        assert_eq!(serde_json::from_str::<Value>(fields[6]).unwrap(), e["details"], "{line}");
    }
}
