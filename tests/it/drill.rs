//! drill of logical backups, end to end on the shared PostgreSQL 15 cluster: a drill restores into
//! a scratch database, verifies row counts and the configured chain, reports and journals RTO and
//! RPO, and leaves no scratch database behind; a tampered object or a manifest whose counts the
//! data does not match fails (exit 4), journaled as failed; a kill -9 mid-restore leaves the
//! scratch database, which the next drill drops; SIGINT drops it at once; an encrypted backup
//! needs the identity (exit 2 without, nothing created) and drills with it, on moto's S3.

use std::path::{Path, PathBuf};
use std::time::Duration;

use drctl::journal::{Entry, compute_hash};
use serde_json::Value;

use super::backup::{seeded_db, table_counts};
use super::sync::journal_events;
use crate::harness::drctl::{Drctl, RunResult};
use crate::harness::moto::Moto;
use crate::harness::pg::Cluster;
use crate::harness::{TestDir, unique_name, wait_until};

fn pg() -> &'static Cluster {
    Cluster::shared()
}

/// A hash-chained table `events` (the contract's default rule) of `n` rows.
fn make_chain(db: &str, n: u32) {
    pg().psql(
        db,
        &format!(
            "CREATE TABLE events (id bigint PRIMARY KEY, prev_hash text NOT NULL, hash text NOT NULL, payload jsonb NOT NULL);
             INSERT INTO events
             WITH RECURSIVE c(id, prev_hash, hash, payload) AS (
                 SELECT 1::bigint, repeat('0', 64),
                        encode(sha256(convert_to(repeat('0', 64) || '{{\"n\": 1}}'::jsonb::text, 'UTF8')), 'hex'),
                        '{{\"n\": 1}}'::jsonb
               UNION ALL
                 SELECT c.id + 1, c.hash,
                        encode(sha256(convert_to(c.hash || jsonb_build_object('n', c.id + 1)::text, 'UTF8')), 'hex'),
                        jsonb_build_object('n', c.id + 1)
                   FROM c WHERE c.id < {n})
             SELECT * FROM c;"
        ),
    );
}

/// One more link at the chain's head.
fn append_link(db: &str) {
    pg().psql(
        db,
        "INSERT INTO events SELECT id + 1, hash, \
         encode(sha256(convert_to(hash || jsonb_build_object('n', id + 1)::text, 'UTF8')), 'hex'), \
         jsonb_build_object('n', id + 1) FROM events ORDER BY id DESC LIMIT 1",
    );
}

fn pg_url(db: &str) -> String {
    format!("postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/{db}?sslmode=disable", pg().port)
}

/// A file store in `dir` and env prod on `db`, with `extra` appended to prod's table.
fn config(dir: &TestDir, db: &str, extra: &str) -> (PathBuf, String) {
    let url = format!("file://{}/store", dir.path().display());
    let path = dir.write_config(&format!(
        "[store]\nurl = \"{url}\"\n\n[environments.prod]\ndatabase_url = \"{}\"\n{extra}",
        pg_url(db)
    ));
    (path, url)
}

fn drctl(config: &Path) -> Drctl {
    Drctl::new().config(config).env("TEST_PG_PASSWORD", pg().password())
}

fn checked(r: RunResult) -> RunResult {
    r.assert_no_secret(pg().password());
    r
}

fn backup(config: &Path) -> String {
    let r = checked(drctl(config).args(["backup", "--env", "prod", "-o", "json"]).run().expect_code(0));
    r.json()["id"].as_str().expect("backup id").to_string()
}

fn drill(config: &Path) -> Drctl {
    drctl(config).args(["drill", "--env", "prod", "-o", "json"])
}

/// The databases on the cluster whose names start with `prefix`.
fn databases(prefix: &str) -> Vec<String> {
    let list = pg().psql(
        "postgres",
        &format!("SELECT datname FROM pg_database WHERE starts_with(datname::text, '{prefix}') ORDER BY 1"),
    );
    list.lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

/// This store's drill scratch databases.
fn scratch_of(store_url: &str) -> Vec<String> {
    databases(&drctl::runbooks::drill::logical::store_prefix(store_url))
}

fn step_states(doc: &Value) -> Vec<(String, String)> {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap().to_string(), s["state"].as_str().unwrap().to_string()))
        .collect()
}

fn drills_journaled(store: &Path) -> Vec<Value> {
    journal_events(store).into_iter().filter(|e| e["event"] == "drill-done").collect()
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

// --- a drill that passes --------------------------------------------------------------------

#[test]
fn a_drill_restores_verifies_reports_and_journals_rto_and_rpo_and_leaves_nothing_behind() {
    let db = seeded_db("drill_ok");
    make_chain(&db, 500);
    let dir = TestDir::new();
    let (cfg, url) = config(&dir, &db, "\n[environments.prod.chains.events]\n");
    let store = dir.path().join("store");

    // Nothing to drill yet: exit 3, check backup-exists, nothing created.
    let r = checked(drill(&cfg).run().expect_code(3));
    assert_eq!(r.json()["status"], "preflight_failed");
    let c = r.check("backup-exists");
    assert_eq!(c["ok"], false);
    assert!(c["detail"].as_str().unwrap().contains("drctl backup --env prod"), "{c}");
    assert!(scratch_of(&url).is_empty());

    // An anchor journaled before the backup holds on the copy; one after it (a row the backup
    // cannot have) is left out, so the drill still passes.
    checked(drctl(&cfg).args(["verify-chain", "--env", "prod"]).run().expect_code(0));
    let id = backup(&cfg);
    append_link(&db);
    checked(drctl(&cfg).args(["verify-chain", "--env", "prod"]).run().expect_code(0));

    let r = checked(drill(&cfg).run().expect_code(0));
    let doc = r.json();
    assert_eq!(doc["status"], "ok", "{doc}");
    assert_eq!(doc["runbook"], "drill");
    assert_eq!(
        step_states(&doc),
        [pair("drop-leftovers", "done"), pair("restore", "applied"), pair("drop-scratch", "applied")],
        "{doc}"
    );
    assert_eq!(doc["backup_id"], id.as_str());
    assert_eq!(doc["ok"], true);
    let scratch = doc["scratch_database"].as_str().unwrap().to_string();
    assert!(scratch.starts_with(&drctl::runbooks::drill::logical::store_prefix(&url)), "{scratch}");
    assert!(doc["rto_ms"].as_u64().is_some_and(|ms| ms > 0), "{doc}");
    let rpo = doc["rpo_s"].as_u64().unwrap_or_else(|| panic!("no rpo_s in {doc}"));
    assert!(rpo < 3600, "the backup was taken moments ago: {rpo}");
    assert_eq!(doc["tables_verified"], 5, "customers, orders, empty_one, audit.Events, events: {doc}");
    assert_eq!(doc["rows_verified"], 300 + 20000 + 77 + 500);
    assert_eq!(doc["chains_verified"], 1);
    assert_eq!(doc["chains"][0]["chain"], "events");
    assert_eq!(doc["chains"][0]["entries"], 500, "the copy holds the chain as the backup took it");
    assert_eq!(doc["problems"], serde_json::json!([]));
    assert!(databases(&scratch).is_empty(), "the scratch database was dropped");
    assert!(scratch_of(&url).is_empty());
    assert_eq!(table_counts(&db), "300,20000,0,77", "the env's database was only read");

    // Journaled: drill-done with the figures, then the scratch database's removal, then run-done.
    let events = journal_events(&store);
    let done = events.iter().position(|e| e["event"] == "drill-done").expect("drill-done journaled");
    let d = &events[done]["details"];
    assert_eq!((d["backup_id"].as_str(), d["ok"].as_bool()), (Some(id.as_str()), Some(true)), "{d}");
    assert_eq!(d["rto_ms"], doc["rto_ms"]);
    assert_eq!(d["rpo_s"], doc["rpo_s"]);
    assert_eq!(d["tables"], 5);
    assert_eq!(events[done]["env"], "prod");
    let dropped = events.iter().position(|e| e["event"] == "step-done" && e["details"]["step"] == "drop-scratch");
    assert!(dropped.is_some_and(|i| i > done), "the drop is journaled after the result");
    assert_eq!(events.last().unwrap()["event"], "run-done");
    // `drctl log` shows it.
    let log = checked(drctl(&cfg).args(["log", "--runbook", "drill", "-o", "json"]).run().expect_code(0));
    let entries = log.json()["entries"].as_array().unwrap().clone();
    assert!(
        entries.iter().any(|e| e["event"] == "drill-done" && e["details"]["rto_ms"] == doc["rto_ms"]),
        "{entries:?}"
    );

    // status: the last drill's age and result.
    let s = checked(drctl(&cfg).args(["status", "-o", "json"]).run().expect_code(0));
    let row = s.json()["environments"][0].clone();
    assert_eq!(row["last_drill_ok"], true, "{row}");
    assert_eq!(row["last_drill_backup_id"], id.as_str());
    assert!(row["last_drill_age_s"].as_u64().is_some_and(|a| a < 3600), "{row}");
    assert_eq!(row["last_drill_rto_ms"], doc["rto_ms"]);
    let t = checked(drctl(&cfg).arg("status").run().expect_code(0));
    assert!(t.stdout.contains("last drill") && t.stdout.contains("ago, ok"), "{}", t.stdout);

    // The human report names the figures too.
    let t = checked(drctl(&cfg).args(["drill", "--env", "prod"]).run().expect_code(0));
    assert!(t.stdout.contains("RTO") && t.stdout.contains("RPO") && t.stdout.contains("rpo_s"), "{}", t.stdout);
    assert!(scratch_of(&url).is_empty());

    // A dry run plans and writes nothing; a backup that is not this env's is exit 2 naming it.
    let before = journal_events(&store).len();
    let plan = checked(drctl(&cfg).args(["drill", "--env", "prod", "--dry-run", "-o", "json"]).run().expect_code(0));
    assert_eq!(plan.json()["status"], "planned");
    let r = checked(drctl(&cfg).args(["drill", "--env", "prod", "--from-backup", "20200101T000000Z-nope"]).run());
    let r = r.expect_code(2);
    assert!(
        r.stderr.contains("--from-backup 20200101T000000Z-nope") && r.stderr.contains("backup list"),
        "{}",
        r.stderr
    );
    assert_eq!(journal_events(&store).len(), before, "neither wrote to the journal");
    assert!(scratch_of(&url).is_empty());
    // The named backup drills as the newest does.
    let r = checked(
        drctl(&cfg).args(["drill", "--env", "prod", "--from-backup", id.as_str(), "-o", "json"]).run().expect_code(0),
    );
    assert_eq!(r.json()["backup_id"], id.as_str());
}

// --- drills that fail -----------------------------------------------------------------------

/// The backup's data objects in the file store.
fn objects(store: &Path, id: &str) -> Vec<PathBuf> {
    let dir = store.join("backups/prod").join(id);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".dump.zst"))
        .collect();
    v.sort();
    v
}

fn assert_failed_drill_journaled(store: &Path, id: &str, problem_has: &str) {
    let drills = drills_journaled(store);
    let last = drills.last().expect("the failed drill is journaled");
    let d = &last["details"];
    assert_eq!((d["backup_id"].as_str(), d["ok"].as_bool()), (Some(id), Some(false)), "{d}");
    let problems = d["problems"].to_string();
    assert!(problems.contains(problem_has), "{problems} lacks {problem_has:?}");
}

#[test]
fn a_tampered_object_or_a_manifest_the_data_does_not_match_fails_the_drill_journaled_with_nothing_left() {
    let db = seeded_db("drill_bad");
    let dir = TestDir::new();
    let (cfg, url) = config(&dir, &db, "");
    let store = dir.path().join("store");
    let id = backup(&cfg);

    // One flipped byte in the stored object: exit 4 naming it, journaled as a failed drill.
    let object = objects(&store, &id)[0].clone();
    let original = std::fs::read(&object).unwrap();
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    std::fs::write(&object, &bad).unwrap();
    let r = checked(drill(&cfg).run().expect_code(4));
    let doc = r.json();
    assert_eq!(doc["status"], "integrity_failed", "{doc}");
    assert_eq!(doc["ok"], false);
    let name = object.file_name().unwrap().to_string_lossy().into_owned();
    assert!(r.stderr.contains(&name) && r.stderr.contains("sha256"), "{}", r.stderr);
    assert_eq!(step_states(&doc)[2], pair("drop-scratch", "applied"), "the scratch database it had made is dropped");
    assert_failed_drill_journaled(&store, &id, "sha256");
    assert!(scratch_of(&url).is_empty(), "no scratch database is left");

    // status shows the failure; the audit's backup-drilled fails by name.
    let s = checked(drctl(&cfg).args(["status", "-o", "json"]).run());
    let row = s.json()["environments"][0].clone();
    assert_eq!(row["last_drill_ok"], false, "{row}");
    assert!(row["notes"].to_string().contains("FAILED"), "{row}");
    let a = checked(drctl(&cfg).args(["status", "--audit", "-o", "json"]).run().expect_code(3));
    let item = a.json()["audit"].as_array().unwrap().iter().find(|i| i["id"] == "backup-drilled").unwrap().clone();
    assert_eq!(item["ok"], false);
    assert!(item["detail"].as_str().unwrap().contains("FAILED its last drill"), "{item}");
    std::fs::write(&object, &original).unwrap();

    // A manifest edited after the backup no longer has the sha256 the journal committed.
    let manifest_path = store.join("backups/prod").join(&id).join("manifest.json");
    let manifest_bytes = std::fs::read(&manifest_path).unwrap();
    let mut manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let orders = manifest["tables"].as_array_mut().unwrap().iter_mut().find(|t| t["table"] == "orders").unwrap();
    orders["rows"] = 19999.into();
    let edited = serde_json::to_vec_pretty(&manifest).unwrap();
    std::fs::write(&manifest_path, &edited).unwrap();
    let r = checked(drill(&cfg).run().expect_code(4));
    assert!(r.stderr.contains("manifest.json") && r.stderr.contains("changed after the backup"), "{}", r.stderr);
    assert_failed_drill_journaled(&store, &id, "changed after the backup");
    assert!(scratch_of(&url).is_empty());

    // A manifest whose counts the data does not match, committed as such: the journal is rewritten
    // so that it commits the edited manifest (its sha256, every later hash recomputed), as if the
    // backup had counted 19999 orders in a dump that holds 20000. The restored copy says otherwise.
    recommit(&store, &id, &edited);
    let r = checked(drill(&cfg).run().expect_code(4));
    let doc = r.json();
    assert_eq!(doc["status"], "integrity_failed", "{doc}");
    assert!(r.stderr.contains("public.orders has 20000 rows restored, 19999 in the dump's snapshot"), "{}", r.stderr);
    assert_eq!(doc["problems"].as_array().unwrap().len(), 1, "{doc}");
    assert_failed_drill_journaled(&store, &id, "public.orders has 20000 rows restored");
    assert!(scratch_of(&url).is_empty());
}

/// Rewrite the journal so that backup `id`'s `backup-done` commits `manifest` (its sha256), each
/// later entry re-linked and re-hashed; the journal's index (a cache) is removed.
fn recommit(store: &Path, id: &str, manifest: &[u8]) {
    let sha = drctl::catalog::sha256_hex(manifest);
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(store.join("journal")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut prev: Option<String> = None;
    for f in files {
        let mut e: Entry = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let changed = e.event == "backup-done" && e.details["id"] == id;
        if changed {
            e.details["manifest_sha256"] = sha.clone().into();
        }
        if changed || prev.is_some() {
            if let Some(p) = prev {
                e.prev_hash = p;
            }
            e.hash = compute_hash(&e);
            std::fs::write(&f, serde_json::to_vec_pretty(&e).unwrap()).unwrap();
            prev = Some(e.hash.clone());
        }
    }
    let _ = std::fs::remove_dir_all(store.join("journal-index"));
}

#[test]
fn a_drill_past_the_restore_timeout_is_stopped_with_exit_6_journaled_failed_and_cleaned_up() {
    let db = seeded_db("drill_slow");
    let dir = TestDir::new();
    let (cfg, url) = config(&dir, &db, "");
    let store = dir.path().join("store");
    let id = backup(&cfg);
    let slow = dir.write(
        "slow.toml",
        &std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("[environments.prod]", "[policy]\nrestore_timeout = \"1ms\"\n\n[environments.prod]"),
    );
    let r = checked(drill(&slow).run().expect_code(6));
    assert_eq!(r.json()["status"], "outcome_unknown");
    assert!(r.stderr.contains("restore_timeout"), "the hint names the setting: {}", r.stderr);
    assert_failed_drill_journaled(&store, &id, "did not finish within policy.restore_timeout (1ms)");
    // Whatever the stopped restore left (it may have been creating the database) goes with the
    // next drill at the latest.
    checked(drill(&cfg).run().expect_code(0));
    assert!(scratch_of(&url).is_empty());
}

// --- killed and interrupted -----------------------------------------------------------------

/// A database whose restore takes a few seconds: 400,000 rows of 128 hex characters.
fn big_db(prefix: &str) -> String {
    let db = unique_name(prefix);
    pg().create_db(&db);
    pg().psql(
        &db,
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) || \
         md5((g * 17)::text) AS payload FROM generate_series(1, 400000) g;",
    );
    db
}

/// Until a session (pg_restore's, once the database is created) is in this store's drill's scratch
/// database; its name.
fn wait_restoring(url: &str) -> String {
    let prefix = drctl::runbooks::drill::logical::store_prefix(url);
    let mut found = String::new();
    let restoring = wait_until(Duration::from_secs(60), || {
        found = pg()
            .try_psql(
                "postgres",
                &format!("SELECT datname FROM pg_stat_activity WHERE starts_with(datname::text, '{prefix}') LIMIT 1"),
            )
            .unwrap_or_default();
        !found.trim().is_empty()
    });
    assert!(restoring, "pg_restore never connected to a scratch database of {prefix}");
    found.trim().to_string()
}

#[test]
fn a_drill_killed_mid_restore_leaves_its_scratch_database_which_the_next_drill_drops() {
    let db = big_db("drill_kill");
    let dir = TestDir::new();
    let (cfg, url) = config(&dir, &db, "");
    let id = backup(&cfg);

    let mut child = drill(&cfg).spawn();
    let scratch = wait_restoring(&url);
    child.kill().unwrap();
    child.wait().unwrap();
    // No orphan pg_restore writes on once drctl is gone; the database itself is left.
    assert!(wait_until(Duration::from_secs(20), || {
        pg().psql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{scratch}'")) == "0"
    }));
    assert_eq!(databases(&scratch), std::slice::from_ref(&scratch), "kill -9 leaves the scratch database");

    let r = checked(drill(&cfg).run().expect_code(0));
    let doc = r.json();
    assert_eq!(doc["backup_id"], id.as_str());
    let leftovers = doc["steps"].as_array().unwrap().iter().find(|s| s["step"] == "drop-leftovers").unwrap().clone();
    assert_eq!(leftovers["state"], "applied", "{doc}");
    assert!(leftovers["detail"].as_str().unwrap().contains(&scratch), "{leftovers}");
    assert_eq!(doc["rows_verified"], 400000);
    assert!(scratch_of(&url).is_empty(), "both the dead run's and this run's scratch databases are gone");
    let events = journal_events(&dir.path().join("store"));
    let d = events.iter().find(|e| e["event"] == "step-done" && e["details"]["step"] == "drop-leftovers").unwrap();
    assert_eq!(d["details"]["dropped"], serde_json::json!([scratch]));
}

#[test]
fn sigint_mid_restore_exits_130_and_drops_the_scratch_database() {
    let db = big_db("drill_int");
    let dir = TestDir::new();
    let (cfg, url) = config(&dir, &db, "");
    backup(&cfg);

    let child = drill(&cfg).spawn();
    let scratch = wait_restoring(&url);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"], "interrupted");
    let states = step_states(&doc);
    assert_eq!(states[1], pair("restore", "failed"), "{doc}");
    assert_eq!(states[2], pair("drop-scratch", "applied"), "{doc}");
    assert!(databases(&scratch).is_empty(), "the scratch database is dropped on SIGINT");
    let events = journal_events(&dir.path().join("store"));
    let interrupted = events.iter().position(|e| e["event"] == "interrupted").expect("journaled");
    let dropped = events.iter().position(|e| e["event"] == "step-done" && e["details"]["step"] == "drop-scratch");
    assert!(dropped.is_some_and(|i| i > interrupted), "dropped after the interruption");
}

// --- encrypted backups ------------------------------------------------------------------------

#[test]
fn an_encrypted_backup_needs_the_identity_exit_2_naming_it_and_drills_with_it_on_s3() {
    use ::age::secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;
    let db = seeded_db("drill_age");
    let dir = TestDir::new();
    let bucket = Moto::unique_bucket("drill");
    Moto::shared().create_bucket(&bucket);
    let id = ::age::x25519::Identity::generate();
    let secret = id.to_string().expose_secret().to_string();
    let key = dir.write("age.key", &format!("{secret}\n"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let url = format!("s3://{bucket}/drctl");
    let toml = |identity: &str| {
        format!(
            "[store]\nurl = \"{url}\"\nage_recipients = [\"{}\"]\n{identity}\n[aws]\nregion = \"us-east-1\"\n\
             endpoint_url = \"{}\"\n\n[environments.prod]\ndatabase_url = \"{}\"\n",
            id.to_public(),
            Moto::shared().endpoint(),
            pg_url(&db)
        )
    };
    let cfg = dir.write_config(&toml(""));
    let backup_id = backup(&cfg);

    let r = checked(drctl(&cfg).args(["drill", "--env", "prod"]).run().expect_code(2));
    assert!(r.stderr.contains("age_identity_file"), "{}", r.stderr);
    assert!(scratch_of(&url).is_empty(), "nothing was created");
    let log = checked(drctl(&cfg).args(["log", "--runbook", "drill", "-o", "json"]).run().expect_code(0));
    assert_eq!(log.json()["entries"], serde_json::json!([]), "nothing was journaled");

    let with_key = dir.write("with-key.toml", &toml(&format!("age_identity_file = \"{}\"\n", key.display())));
    let r = checked(drill(&with_key).run().expect_code(0));
    r.assert_no_secret(&secret);
    let doc = r.json();
    assert_eq!((doc["backup_id"].as_str(), doc["ok"].as_bool()), (Some(backup_id.as_str()), Some(true)), "{doc}");
    assert_eq!(doc["rows_verified"], 300 + 20000 + 77);
    assert!(scratch_of(&url).is_empty());
}

/// The scratch data directories of drills under `tmp` (the drills' TMPDIR).
fn drill_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("drctl-drill-")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_base_backup_drill_recovers_a_scratch_cluster_and_a_killed_one_is_cleaned_up_by_the_next() {
    use crate::harness::archiving::Archiving;
    use std::os::unix::fs::PermissionsExt;
    let a = Archiving::start(|| Moto::shared().endpoint());
    a.insert("a", 1..=10);
    a.base_backup();
    let tmp = a.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    let drill = || a.drctl().env("TMPDIR", &tmp).args(["drill", "--env", "prod", "-o", "json"]);

    let r = drill().run();
    assert_eq!(r.code, 0, "a base backup's drill failed:\n{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!((j["backup_type"].as_str(), j["ok"].as_bool()), (Some("base"), Some(true)), "{j}");
    assert!(j["rto_ms"].as_u64().is_some_and(|n| n > 0) && j["rpo_s"].as_u64().is_some(), "{j}");
    // The copy holds the table the backup held: counted on the restored server.
    assert!(j["rows_counted"].as_u64().is_some_and(|n| n >= 10), "{j}");
    assert!(drill_dirs(&tmp).is_empty(), "left behind: {:?}", drill_dirs(&tmp));
    let status = a.drctl().args(["status", "-o", "json"]).run();
    let env = &status.json()["environments"][0];
    assert_eq!(env["last_drill_ok"], true, "{}", status.stdout);

    // Killed once its scratch server runs: the directory (and the server) stay; the next drill
    // stops and removes them, then drills.
    let mut child = drill().spawn();
    let running = wait_until(Duration::from_secs(60), || {
        drill_dirs(&tmp).iter().any(|d| d.join("postmaster.pid").exists()) || child.try_wait().unwrap().is_some()
    });
    assert!(running, "the drill's scratch server never started");
    // SAFETY: kill(2) on the child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let left = drill_dirs(&tmp);
    assert_eq!(left.len(), 1, "the killed drill's directory: {left:?}");
    let r = drill().run();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("removed 1 scratch data directory"), "{}", r.stdout);
    assert!(drill_dirs(&tmp).is_empty(), "left behind: {:?}", drill_dirs(&tmp));
}
