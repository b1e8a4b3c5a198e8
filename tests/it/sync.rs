//! sync --from prod --to staging and status, end to end: both envs are databases on the shared
//! PostgreSQL 15 cluster (different names), the store is a local directory, Route 53 is moto.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::harness::drctl::{Drctl, RunResult};
use crate::harness::moto::Moto;
use crate::harness::pg::Cluster;
use crate::harness::{TestDir, unique_name, wait_until};

/// Tables of every kind sync must carry: serial and bigserial sequences, an index, a foreign key,
/// an empty table, a quoted name in another schema, a materialized view and a larger table.
const SOURCE_SQL: &str = "
    CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
    CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id), total numeric, note text);
    CREATE INDEX orders_customer ON orders (customer_id);
    CREATE TABLE empty_one (id int);
    CREATE SCHEMA audit;
    CREATE TABLE audit.\"Events\" (id int, payload jsonb);
    CREATE TABLE marker (v text);
    INSERT INTO marker VALUES ('new');
    INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 300) g;
    INSERT INTO orders (customer_id, total, note) SELECT 1 + g % 300, g * 1.5, md5(g::text) FROM generate_series(1, 60000) g;
    INSERT INTO audit.\"Events\" SELECT g, jsonb_build_object('n', g) FROM generate_series(1, 77) g;
    CREATE MATERIALIZED VIEW order_totals AS SELECT customer_id, sum(total) AS total FROM orders GROUP BY 1;
    SELECT setval('customers_id_seq', 5000);";

/// The standby's data before the first sync: the same shape, other contents.
const TARGET_SQL: &str = "
    CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
    CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int, total numeric, note text);
    CREATE TABLE marker (v text);
    INSERT INTO marker VALUES ('old');
    INSERT INTO customers (name) SELECT 'old ' || g FROM generate_series(1, 10) g;
    INSERT INTO orders (customer_id, total) SELECT 1, g FROM generate_series(1, 123) g;";

const TABLES: &[&str] = &["customers", "orders", "empty_one", "audit.\"Events\"", "marker", "order_totals"];

pub(crate) struct Pair {
    pub(crate) dir: TestDir,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) config: PathBuf,
}

fn pg() -> &'static Cluster {
    Cluster::shared()
}

/// A source and a target database and a config naming them prod and staging.
pub(crate) fn pair(prefix: &str, staging_extra: &str, extra: &str) -> Pair {
    let (from, to) = (unique_name(&format!("{prefix}_src")), unique_name(&format!("{prefix}_dst")));
    pg().create_db(&from);
    pg().psql(&from, SOURCE_SQL);
    pg().create_db(&to);
    pg().psql(&to, TARGET_SQL);
    let dir = TestDir::new();
    let url =
        |db: &str| format!("postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/{db}?sslmode=disable", pg().port);
    let config = dir.write_config(&format!(
        "[store]\nurl = \"file://{}/store\"\n{extra}\n[environments.prod]\ndatabase_url = \"{}\"\n\n\
         [environments.staging]\ndatabase_url = \"{}\"\n{staging_extra}\n",
        dir.path().display(),
        url(&from),
        url(&to)
    ));
    Pair { dir, from, to, config }
}

pub(crate) fn drctl(config: &Path) -> Drctl {
    Drctl::new().config(config).env("TEST_PG_PASSWORD", pg().password())
}

pub(crate) fn checked(r: RunResult) -> RunResult {
    r.assert_no_secret(pg().password());
    r
}

pub(crate) fn sync(p: &Pair) -> Drctl {
    drctl(&p.config).args(["sync", "--from", "prod", "--to", "staging", "-o", "json"])
}

/// Per table: row count and an md5 over its rows in a stable order.
pub(crate) fn fingerprint(db: &str) -> Vec<String> {
    TABLES
        .iter()
        .map(|t| {
            match pg().try_psql(
                db,
                &format!(
                    "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x"
                ),
            ) {
                Ok(v) => format!("{t}={v}"),
                Err(_) => format!("{t}=missing"),
            }
        })
        .collect()
}

fn sequences(db: &str) -> String {
    pg().psql(db, "SELECT string_agg(sequencename || '=' || coalesce(last_value::text, 'null'), ',' ORDER BY 1) FROM pg_sequences")
}

pub(crate) fn databases_like(name: &str) -> String {
    pg().psql("postgres", &format!("SELECT string_agg(datname, ',' ORDER BY datname COLLATE \"C\") FROM pg_database WHERE datname LIKE '{name}%'"))
}

pub(crate) fn journal_events(store: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(store.join("journal")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|f| serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap()).collect()
}

#[test]
fn sync_makes_the_target_equal_the_source_and_status_sees_it_fresh() {
    let p = pair("sync_eq", "sync_from = \"prod\"", "");
    assert_ne!(fingerprint(&p.from), fingerprint(&p.to));

    // staging declares sync_from = "prod": no --yes needed, even off a TTY (cron).
    let r = checked(sync(&p).run().expect_code(0));
    let doc = r.json();
    assert_eq!(doc["status"], "ok", "{doc}");
    let steps: Vec<(&str, &str)> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("clean-partial", "applied"),
            ("drop-scratch", "done"),
            ("restore", "applied"),
            ("write-manifest", "applied"),
            ("commit", "applied"),
            ("swap", "applied")
        ]
    );
    assert_eq!(fingerprint(&p.to), fingerprint(&p.from));
    assert_eq!(sequences(&p.to), sequences(&p.from));
    // The sequence values were read from the dump's own TOC and checked (customers, orders).
    let restore = doc["steps"].as_array().unwrap().iter().find(|s| s["step"] == "restore").unwrap().clone();
    assert!(restore["detail"].as_str().unwrap().contains("2 sequences checked"), "{restore}");
    // The progress total (the source tables' size) is reported, near what the dump weighed.
    let (expected, dumped) =
        (doc["expected_bytes"].as_u64().expect("expected_bytes"), doc["dump_bytes"].as_u64().unwrap());
    assert!(expected > dumped / 4 && expected < dumped * 4, "expected {expected} bytes, dumped {dumped}");
    // Counts read as spoken: "the one role", not "the 1 roles".
    let roles = doc["preflight"].as_array().unwrap().iter().find(|c| c["check"] == "dump-roles").unwrap().clone();
    assert_eq!(roles["detail"], "the one role the dump names exists on staging", "{roles}");
    assert!(sequences(&p.to).contains("customers_id_seq=5000"), "{}", sequences(&p.to));
    // The old copy is kept as __drctl_prev; no scratch copy is left.
    assert_eq!(databases_like(&p.to), format!("{0},{0}__drctl_prev", p.to));
    // The old copy refuses connections: nothing should keep using stale data by its new name.
    let allow =
        |db: &str| pg().psql("postgres", &format!("SELECT datallowconn FROM pg_database WHERE datname = '{db}'"));
    let oid = |db: &str| pg().psql("postgres", &format!("SELECT oid FROM pg_database WHERE datname = '{db}'"));
    let prev = format!("{}__drctl_prev", p.to);
    assert_eq!((allow(&prev).as_str(), allow(&p.to).as_str()), ("f", "t"));

    // The dump is a listed backup of prod, and the journal records the sync with its data age.
    let list = checked(drctl(&p.config).args(["backup", "list", "-o", "json"]).run().expect_code(0)).json();
    let backups = list["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0]["env"], "prod");
    assert_eq!(backups[0]["id"], doc["backup_id"]);
    let events = journal_events(&p.dir.path().join("store"));
    let done = events.iter().find(|e| e["event"] == "sync-done").expect("sync-done");
    assert_eq!(done["env"], "staging");
    assert_eq!(done["details"]["from"], "prod");
    assert_eq!(done["details"]["rows"], 300 + 60000 + 77 + 1);
    assert!(done["details"]["snapshot_time"].as_str().unwrap().ends_with('Z'));
    checked(drctl(&p.config).args(["verify-chain", "--journal", "--backups", "--deep"]).run().expect_code(0));

    // status: staging synced just now, prod backed up just now: both within the 6h default RPO.
    let st = checked(drctl(&p.config).args(["status", "-o", "json"]).run().expect_code(0)).json();
    assert_eq!(st["ok"], true, "{st}");
    let envs = st["environments"].as_array().unwrap();
    let staging = envs.iter().find(|e| e["name"] == "staging").unwrap();
    assert_eq!(staging["reachable"], true);
    // A warm standby is a primary server, but not the primary: status shows its declared role.
    assert_eq!(staging["role"], "standby");
    assert_eq!(envs.iter().find(|e| e["name"] == "prod").unwrap()["role"], "primary");
    assert!(staging["live"].is_null() && staging["healthy"].is_null(), "{staging}");
    assert!(staging["last_sync_age_s"].as_u64().unwrap() < 3600, "{staging}");
    assert!(staging["last_backup_age_s"].is_null(), "{staging}");
    assert_eq!(staging["rpo_ok"], true);
    let prod = envs.iter().find(|e| e["name"] == "prod").unwrap();
    assert!(prod["last_sync_age_s"].is_null() && prod["last_backup_age_s"].as_u64().is_some(), "{prod}");

    // A second sync replaces the kept previous copy; the source changed meanwhile.
    pg().psql(&p.from, "INSERT INTO empty_one VALUES (1), (2); UPDATE marker SET v = 'newer'");
    let first_copy = oid(&p.to);
    checked(sync(&p).run().expect_code(0));
    assert_eq!(fingerprint(&p.to), fingerprint(&p.from));
    assert_eq!(oid(&prev), first_copy, "the first sync's copy is now the previous one");

    // With policy.rpo below the sync's age, status exits 3 naming staging.
    let strict = p.dir.write(
        "strict.toml",
        &std::fs::read_to_string(&p.config).unwrap().replacen(
            "[environments.prod]",
            "[policy]\nrpo = \"1s\"\n\n[environments.prod]",
            1,
        ),
    );
    std::thread::sleep(Duration::from_millis(2100));
    let r = checked(drctl(&strict).args(["status", "-o", "json"]).run().expect_code(3));
    let st = r.json();
    assert_eq!(st["ok"], false);
    let staging = st["environments"].as_array().unwrap().iter().find(|e| e["name"] == "staging").unwrap().clone();
    assert_eq!(staging["rpo_ok"], false, "{staging}");
    assert!(r.stderr.contains("staging"), "{}", r.stderr);
    assert!(r.stderr.contains("RPO breach") && !r.stderr.contains("preflight"), "{}", r.stderr);
    // The table form and the metrics file work for status too.
    let prom = p.dir.path().join("drctl.prom");
    let t = checked(drctl(&p.config).args(["status", "--metrics-file"]).arg(&prom).run().expect_code(0));
    let row = |env: &str| t.stdout.lines().find(|l| l.contains(&format!(" {env} "))).unwrap_or_default().to_string();
    assert!(row("staging").contains("standby") && row("prod").contains("primary"), "{}", t.stdout);
    assert!(std::fs::read_to_string(&prom).unwrap().contains("drctl_last_run_success{runbook=\"status\""));
}

#[test]
fn a_target_not_declared_sync_from_needs_yes() {
    let p = pair("sync_yes", "", "");
    let before = fingerprint(&p.to);
    let r = checked(sync(&p).run().expect_code(2));
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    assert_eq!(r.json()["status"], "refused");
    assert_eq!(fingerprint(&p.to), before);
    checked(sync(&p).arg("--yes").run().expect_code(0));
    assert_eq!(fingerprint(&p.to), fingerprint(&p.from));
    // The same env on both sides is a usage error.
    checked(drctl(&p.config).args(["sync", "--from", "prod", "--to", "prod"]).run().expect_code(2));
}

#[test]
fn readers_see_the_old_data_or_the_new_never_a_mix() {
    let p = pair("sync_readers", "sync_from = \"prod\"", "");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, db) = (stop.clone(), p.to.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // A new connection each time, as a reconnecting client; one statement = one snapshot.
                match pg().try_psql(&db, "SELECT (SELECT v FROM marker) || ':' || (SELECT count(*) FROM orders) || ':' || (SELECT count(*) FROM customers)") {
                    Ok(v) => seen.push(v),
                    Err(e) => seen.push(format!("error: {e}")),
                }
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    checked(sync(&p).run().expect_code(0));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = reader.join().unwrap();
    let (mut old, mut new) = (0, 0);
    for s in &seen {
        match s.as_str() {
            "old:123:10" => old += 1,
            "new:60000:300" => new += 1,
            // Connection errors during the swap itself are expected and brief; a missing table or
            // any other answer is not.
            e if e.starts_with("error:") && !e.contains("relation") => {}
            other => panic!("a reader saw {other:?}; everything seen: {seen:?}"),
        }
    }
    assert!(old > 0 && new > 0, "old {old}, new {new}: {seen:?}");
}

#[test]
fn kill_9_during_the_restore_leaves_the_target_unchanged_and_the_next_sync_succeeds() {
    let p = pair("sync_kill", "sync_from = \"prod\"", "");
    // Enough rows that the restore is still running when it is caught.
    pg().psql(&p.from, "INSERT INTO orders (customer_id, total, note) SELECT 1 + g % 300, g, repeat(md5(g::text), 8) FROM generate_series(1, 600000) g; REFRESH MATERIALIZED VIEW order_totals");
    let before = fingerprint(&p.to);
    let mut child = sync(&p).spawn();
    let scratch = format!("{}__drctl_new", p.to);
    let restoring = wait_until(Duration::from_secs(60), || {
        pg().try_psql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{scratch}'"))
            .is_ok_and(|n| n.trim() != "0")
    });
    assert!(restoring, "pg_restore never connected to {scratch}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(fingerprint(&p.to), before);
    // No orphan pg_restore keeps writing once drctl is gone.
    assert!(wait_until(Duration::from_secs(20), || {
        pg().psql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{scratch}'")).trim()
            == "0"
    }));
    let r = checked(sync(&p).run().expect_code(0));
    let doc = r.json();
    let drop_step = doc["steps"].as_array().unwrap().iter().find(|s| s["step"] == "drop-scratch").unwrap().clone();
    assert_eq!(drop_step["state"], "applied", "the killed run's scratch copy is dropped first: {doc}");
    assert_eq!(fingerprint(&p.to), fingerprint(&p.from));
}

#[test]
fn an_interrupted_restore_reports_how_long_it_ran() {
    let p = pair("sync_int", "sync_from = \"prod\"", "");
    pg().psql(&p.from, "INSERT INTO orders (customer_id, total, note) SELECT 1 + g % 300, g, repeat(md5(g::text), 8) FROM generate_series(1, 600000) g; REFRESH MATERIALIZED VIEW order_totals");
    let child = sync(&p).spawn();
    let scratch = format!("{}__drctl_new", p.to);
    assert!(wait_until(Duration::from_secs(60), || {
        pg().try_psql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{scratch}'"))
            .is_ok_and(|n| n.trim() != "0")
    }));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let restore = doc["steps"].as_array().unwrap().iter().find(|s| s["step"] == "restore").unwrap().clone();
    assert_eq!(restore["state"], "failed", "{doc}");
    assert!(restore["duration_ms"].as_u64().unwrap() > 0, "the restore ran before the signal: {restore}");
}

#[test]
fn a_pg_restore_error_fails_the_run_with_the_target_untouched() {
    let p = pair("sync_err", "sync_from = \"prod\"", "");
    // A CHECK that calls a function reading another table by an unqualified name: pg_restore runs
    // with an empty search_path, so loading a_items fails. A real restore error, not a staged one.
    pg().psql(
        &p.from,
        "CREATE TABLE z_ref (id int PRIMARY KEY); INSERT INTO z_ref VALUES (1);
         CREATE FUNCTION ref_ok(int) RETURNS bool LANGUAGE sql AS 'SELECT EXISTS (SELECT 1 FROM z_ref WHERE id = $1)';
         CREATE TABLE a_items (x int CHECK (ref_ok(x))); INSERT INTO a_items VALUES (1);",
    );
    let before = fingerprint(&p.to);
    let r = checked(sync(&p).run().expect_code(1));
    assert_eq!(r.json()["status"], "failed");
    assert!(r.stderr.contains("pg_restore") && r.stderr.contains("z_ref"), "{}", r.stderr);
    assert_eq!(fingerprint(&p.to), before);
    assert_eq!(databases_like(&p.to), p.to, "the scratch copy is dropped after a failure");
    // Nothing was committed as a backup either.
    let list = checked(drctl(&p.config).args(["backup", "list", "-o", "json"]).run().expect_code(0)).json();
    assert_eq!(list["backups"].as_array().unwrap().len(), 0);
}

/// One HTTP request with a body to moto (Route 53 takes XML and checks no signature).
fn moto_post(path: &str, body: &str) -> String {
    let port = Moto::shared().endpoint().rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/xml\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/route53/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_live_target_is_refused_and_left_unchanged() {
    let zone_name = format!("{}.example.com", unique_name("zone").replace('_', "-"));
    let created = moto_post(
        "/2013-04-01/hostedzone",
        &format!(
            "<?xml version=\"1.0\"?><CreateHostedZoneRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
             <Name>{zone_name}</Name><CallerReference>{zone_name}</CallerReference></CreateHostedZoneRequest>"
        ),
    );
    let id = created
        .split("<Id>/hostedzone/")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or_else(|| panic!("{created}"));
    let record = format!("app.{zone_name}");
    let change = moto_post(
        &format!("/2013-04-01/hostedzone/{id}/rrset"),
        &format!(
            "<?xml version=\"1.0\"?><ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
             <ChangeBatch><Changes><Change><Action>CREATE</Action><ResourceRecordSet><Name>{record}</Name><Type>CNAME</Type>\
             <TTL>60</TTL><ResourceRecords><ResourceRecord><Value>Dualstack.STG-alb.example.net.</Value></ResourceRecord>\
             </ResourceRecords></ResourceRecordSet></Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"
        ),
    );
    assert!(change.contains(" 200 "), "{change}");
    let aws = format!(
        "[aws]\nendpoint_url = \"{}\"\n\n[dns]\nzone_id = \"{id}\"\nrecord = \"{record}\"\ntype = \"CNAME\"\n",
        Moto::shared().endpoint()
    );
    let p = pair("sync_live", "sync_from = \"prod\"\ndns_target = \"stg-alb.example.net\"", &aws);
    let before = fingerprint(&p.to);
    let r = checked(sync(&p).run().expect_code(3));
    let doc = r.json();
    let live = doc["preflight"].as_array().unwrap().iter().find(|c| c["check"] == "target-not-live").unwrap().clone();
    assert_eq!(live["ok"], false, "{doc}");
    assert!(live["detail"].as_str().unwrap().contains("staging is live"), "{live}");
    assert_eq!(fingerprint(&p.to), before);
    assert_eq!(databases_like(&p.to), p.to);
    // status shows staging as the live env.
    let st = checked(drctl(&p.config).args(["status", "-o", "json"]).run()).json();
    let staging = st["environments"].as_array().unwrap().iter().find(|e| e["name"] == "staging").unwrap().clone();
    assert_eq!(staging["live"], true, "{st}");
    let prod = st["environments"].as_array().unwrap().iter().find(|e| e["name"] == "prod").unwrap().clone();
    assert_eq!(prod["live"], false, "{st}");
}

/// Start a sync and kill -9 it once its dump is committed as a backup of prod and its swap is under
/// way: a session holding an uncommitted update of the target's pg_database row makes the swap's
/// ALTER DATABASE wait, so the kill lands at that exact point. Returns the killed run's id.
pub(crate) fn kill_9_after_the_commit(p: &Pair) -> String {
    let mut blocker = std::process::Command::new(pg().bin_dir().join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
        .args(["-p", &pg().port.to_string()])
        .env("PGPASSWORD", pg().password())
        .env("PGSSLMODE", "disable")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut blocker_in = blocker.stdin.take().unwrap();
    writeln!(blocker_in, "BEGIN; ALTER DATABASE \"{}\" CONNECTION LIMIT 1000;", p.to).unwrap();
    blocker_in.flush().unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        pg().psql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%CONNECTION LIMIT 1000%' AND state = 'idle in transaction'") == "1"
    }));
    let mut child = sync(p).spawn();
    let waiting_swap = format!(
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%ALLOW_CONNECTIONS false%{}%'",
        p.to
    );
    assert!(
        wait_until(Duration::from_secs(120), || !pg().psql("postgres", &waiting_swap).is_empty()),
        "the swap never started"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The server would finish the swap's statements once the blocker goes: end that session first.
    pg().psql("postgres", &format!("SELECT pg_terminate_backend(pid) FROM ({waiting_swap}) w"));
    assert!(wait_until(Duration::from_secs(20), || pg().psql("postgres", &waiting_swap).is_empty()));
    writeln!(blocker_in, "ROLLBACK;").unwrap();
    drop(blocker_in);
    blocker.wait().unwrap();
    let events = journal_events(&p.dir.path().join("store"));
    let done =
        events.iter().find(|e| e["event"] == "backup-done" && e["env"] == "prod").expect("the dump was committed");
    assert!(!events.iter().any(|e| e["event"] == "run-done"), "the killed run did not finish");
    done["run_id"].as_str().unwrap().to_string()
}

pub(crate) fn step_states(doc: &Value) -> Vec<(String, String)> {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap().to_string(), s["state"].as_str().unwrap().to_string()))
        .collect()
}

/// The stored dump's data object(s) of backup `id` of prod.
pub(crate) fn dump_objects(p: &Pair, id: &str) -> Vec<PathBuf> {
    let dir = p.dir.path().join("store/backups/prod").join(id);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.file_name().unwrap().to_string_lossy().contains(".dump.zst"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no dump objects in {}", dir.display());
    v
}

#[test]
fn kill_9_after_the_dump_is_committed_the_rerun_resumes_from_the_stored_dump() {
    let p = pair("sync_resume", "sync_from = \"prod\"", "");
    let before = fingerprint(&p.to);
    let dumped = fingerprint(&p.from);
    let old = kill_9_after_the_commit(&p);
    assert_eq!(fingerprint(&p.to), before, "the killed swap changed nothing");
    // prod changes after the dump: a rerun that restores the stored dump does not see this.
    pg().psql(&p.from, "UPDATE marker SET v = 'after the dump'; INSERT INTO empty_one VALUES (7)");

    let r = checked(sync(&p).run().expect_code(0));
    let doc = r.json();
    let want: Vec<(String, String)> = [
        ("clean-partial", "applied"),
        ("drop-scratch", "applied"),
        ("restore", "applied"),
        ("write-manifest", "done"),
        ("commit", "done"),
        ("swap", "applied"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(step_states(&doc), want, "{doc}");
    assert_eq!(doc["source"], "stored");
    assert_eq!(doc["backup_id"], old.as_str());
    let unfinished = doc["preflight"].as_array().unwrap().iter().find(|c| c["check"] == "unfinished-run").unwrap();
    assert!(unfinished["detail"].as_str().unwrap().contains(&old), "{unfinished}");
    // The target holds the dump's data (prod as it was), not prod as it is now.
    assert_eq!(fingerprint(&p.to), dumped);
    assert_ne!(fingerprint(&p.to), fingerprint(&p.from));
    assert_eq!(sequences(&p.to), sequences(&p.from));

    let events = journal_events(&p.dir.path().join("store"));
    let new_id = doc["run_id"].as_str().unwrap();
    let started = events.iter().find(|e| e["event"] == "run-started" && e["run_id"] == new_id).unwrap();
    assert_eq!(started["details"]["resumes"], old.as_str());
    let restore = events
        .iter()
        .find(|e| e["event"] == "step-done" && e["run_id"] == new_id && e["details"]["step"] == "restore")
        .unwrap();
    assert_eq!(restore["details"]["source"], "stored", "pg_dump was not run again: {restore}");
    let done = events.iter().find(|e| e["event"] == "sync-done").unwrap();
    assert_eq!(
        (done["details"]["source"].as_str(), done["details"]["backup_id"].as_str()),
        (Some("stored"), Some(old.as_str()))
    );
    // Still exactly one backup of prod: the resumed run committed nothing new.
    let list = checked(drctl(&p.config).args(["backup", "list", "-o", "json"]).run().expect_code(0)).json();
    assert_eq!(list["backups"].as_array().unwrap().len(), 1);

    // Finished now: the next sync resumes nothing and dumps prod afresh.
    let doc = checked(sync(&p).run().expect_code(0)).json();
    assert_eq!(doc["source"], "dump");
    assert_eq!(fingerprint(&p.to), fingerprint(&p.from));
}

#[test]
fn a_corrupted_or_truncated_stored_dump_fails_the_resume_with_exit_4_and_the_target_untouched() {
    let other_db = unique_name("sync_corrupt_other");
    pg().create_db(&other_db);
    pg().psql(&other_db, SOURCE_SQL);
    let url = format!("postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/{other_db}?sslmode=disable", pg().port);
    // A third env, so that a sync with other arguments can be tried against the unfinished one.
    let p =
        pair("sync_corrupt", &format!("sync_from = \"prod\"\n\n[environments.other]\ndatabase_url = \"{url}\""), "");
    let before = fingerprint(&p.to);
    let old = kill_9_after_the_commit(&p);
    let objects = dump_objects(&p, &old);
    let original = std::fs::read(&objects[0]).unwrap();

    // One flipped byte in the middle of the stored object.
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    std::fs::write(&objects[0], &bad).unwrap();
    let r = checked(sync(&p).run().expect_code(4));
    assert_eq!(r.json()["status"], "integrity_failed");
    let name = objects[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(r.stderr.contains(&name) && r.stderr.contains("sha256"), "{}", r.stderr);
    assert_eq!(fingerprint(&p.to), before);
    assert_eq!(databases_like(&p.to), p.to, "the scratch copy is dropped");

    // Truncated: the next rerun resumes the failed resume, follows it back to the stored dump.
    std::fs::write(&objects[0], &original[..original.len() * 2 / 3]).unwrap();
    let r = checked(sync(&p).run().expect_code(4));
    assert!(r.stderr.contains(&name) && r.stderr.contains("truncated"), "{}", r.stderr);
    assert_eq!(fingerprint(&p.to), before);
    assert_eq!(databases_like(&p.to), p.to);

    // Other arguments while that run is unfinished: exit 3 naming it, until it is abandoned.
    let other = || drctl(&p.config).args(["sync", "--from", "other", "--to", "staging", "-o", "json", "--yes"]);
    let r = checked(other().run().expect_code(3));
    let failed =
        r.json()["preflight"].as_array().unwrap().iter().find(|c| c["check"] == "unfinished-run").unwrap().clone();
    assert_eq!(failed["ok"], false);
    assert!(failed["detail"].as_str().unwrap().contains("--from prod --to staging"), "{failed}");
    assert_eq!(fingerprint(&p.to), before);
    checked(other().args(["--accept", "unfinished-run"]).run().expect_code(0));
    let events = journal_events(&p.dir.path().join("store"));
    assert!(events.iter().any(|e| e["event"] == "run-abandoned"), "the abandonment is journaled");
    // With the original dump back, prod's sync no longer resumes anything: it dumps afresh.
    std::fs::write(&objects[0], &original).unwrap();
    let doc = checked(sync(&p).run().expect_code(0)).json();
    assert_eq!(doc["source"], "dump");
    assert_eq!(fingerprint(&p.to), fingerprint(&p.from));
}

#[test]
fn a_resumed_sync_whose_stored_dump_is_older_than_the_rpo_dumps_afresh() {
    let p = pair("sync_stale", "sync_from = \"prod\"", "[policy]\nrpo = \"1s\"\n");
    let old = kill_9_after_the_commit(&p);
    pg().psql(&p.from, "UPDATE marker SET v = 'after the dump'");
    std::thread::sleep(Duration::from_millis(2100));
    let r = checked(sync(&p).run().expect_code(0));
    let doc = r.json();
    assert_eq!(doc["source"], "dump", "{doc}");
    assert_ne!(doc["backup_id"], old.as_str());
    assert!(r.stderr.contains("beyond policy.rpo"), "{}", r.stderr);
    let events = journal_events(&p.dir.path().join("store"));
    let started = events.iter().find(|e| e["event"] == "run-started" && e["run_id"] == doc["run_id"]).unwrap();
    assert_eq!(started["details"]["resumes"], old.as_str());
    let restore = events
        .iter()
        .find(|e| e["event"] == "step-done" && e["run_id"] == doc["run_id"] && e["details"]["step"] == "restore")
        .unwrap();
    assert!(restore["details"]["fresh_dump_because"].as_str().unwrap().contains("beyond policy.rpo"), "{restore}");
    assert_eq!(fingerprint(&p.to), fingerprint(&p.from));
}

/// On a TTY the operator sees every check and the plan before being asked to type the env name.
#[test]
fn on_a_tty_the_checks_and_the_plan_come_before_the_prompt() {
    let p = pair("sync_tty", "", "");
    let before = fingerprint(&p.to);
    // A pseudo-terminal made from a pipe has no size: give it an operator's.
    let cmd = format!(
        "stty cols 160 rows 50; {} -c {} sync --from prod --to staging --no-progress",
        env!("CARGO_BIN_EXE_drctl"),
        p.config.display()
    );
    // Answered only once the prompt is there; a wrong name refuses (exit 2) and changes nothing.
    let (status, screen) = crate::harness::on_tty(
        &cmd,
        &[("TEST_PG_PASSWORD", pg().password())],
        Duration::from_secs(8),
        b"not-staging\n",
        || {},
    );
    assert_eq!(status, Some(2), "{screen}");
    let prompt = screen.find("Type the env name").unwrap_or_else(|| panic!("no prompt:\n{screen}"));
    let checks = screen.find("target-reachable").unwrap_or_else(|| panic!("no checks:\n{screen}"));
    let plan = screen.find("pending").unwrap_or_else(|| panic!("no plan:\n{screen}"));
    assert!(checks < prompt && plan < prompt, "the checks and the plan must come first:\n{screen}");
    assert!(screen.contains("did not match"), "{screen}");
    assert!(!screen.contains(pg().password()), "the password appears on the terminal");
    assert_eq!(fingerprint(&p.to), before);
}

// --- pointed the wrong way: target-is-source ------------------------------------------------------

fn preflight_check(doc: &Value, id: &str) -> Value {
    doc["preflight"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["check"] == id))
        .unwrap_or_else(|| panic!("no check {id} in {doc}"))
        .clone()
}

#[test]
fn a_target_another_env_copies_from_is_refused_unless_accepted_by_name() {
    // staging is prod's standby; `--from staging --to prod --yes` is the reversed command.
    let p = pair("sync_rev", "sync_from = \"prod\"", "");
    let before = fingerprint(&p.from);
    let reversed = || drctl(&p.config).args(["sync", "--from", "staging", "--to", "prod", "--yes", "-o", "json"]);
    let r = checked(reversed().run().expect_code(3));
    let doc = r.json();
    assert_eq!(doc["status"], "preflight_failed");
    let c = preflight_check(&doc, "target-is-source");
    assert_eq!(c["ok"], false, "{c}");
    assert!(c["detail"].as_str().unwrap().contains("staging declares sync_from = \"prod\""), "{c}");
    assert_eq!(fingerprint(&p.from), before, "prod is untouched");
    // The right way round passes the check.
    let ok = checked(sync(&p).run().expect_code(0)).json();
    assert_eq!(preflight_check(&ok, "target-is-source")["ok"], true, "{ok}");
    // A replica_of declaration counts too; only the check's own name waives it.
    let cfg = p.dir.write(
        "with-replica.toml",
        &format!(
            "{}\n[environments.reader]\ndatabase_url = \"postgres://postgres@127.0.0.1:1/none\"\nreplica_of = \"prod\"\n",
            std::fs::read_to_string(&p.config).unwrap().replace("sync_from = \"prod\"", "")
        ),
    );
    let r = checked(
        drctl(&cfg).args(["sync", "--from", "staging", "--to", "prod", "--yes", "-o", "json"]).run().expect_code(3),
    );
    let c = preflight_check(&r.json(), "target-is-source");
    assert!(c["detail"].as_str().unwrap().contains("reader declares replica_of = \"prod\""), "{c}");
    pg().psql(&p.to, "UPDATE marker SET v = 'from staging'");
    let r = checked(
        drctl(&cfg)
            .args(["sync", "--from", "staging", "--to", "prod", "--yes", "--accept", "target-is-source", "-o", "json"])
            .run()
            .expect_code(0),
    );
    assert_eq!(preflight_check(&r.json(), "target-is-source")["accepted"], true);
    assert_eq!(pg().psql(&p.from, "SELECT v FROM marker"), "from staging", "accepted: prod holds staging's data");
}

#[test]
fn a_target_with_streaming_replicas_is_refused() {
    // Its own primary: a replica of the shared cluster would make every other test's target a source.
    let primary = Cluster::start_new();
    let to = unique_name("sync_src_repl");
    primary.create_db(&to);
    primary.psql(&to, TARGET_SQL);
    let from = unique_name("sync_src_from");
    pg().create_db(&from);
    pg().psql(&from, SOURCE_SQL);
    let dir = TestDir::new();
    let config = dir.write_config(&format!(
        "[store]\nurl = \"file://{}/store\"\n[environments.prod]\ndatabase_url = \"postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/{from}?sslmode=disable\"\n\n\
         [environments.staging]\ndatabase_url = \"postgres://postgres:${{OTHER_PG_PASSWORD}}@127.0.0.1:{}/{to}?sslmode=disable\"\nsync_from = \"prod\"\n",
        dir.path().display(),
        pg().port,
        primary.port
    ));
    let replica = Cluster::start_replica(&primary);
    assert!(wait_until(Duration::from_secs(30), || primary
        .psql("postgres", "SELECT count(*) FROM pg_stat_replication")
        == "1"));
    let run = |more: &[&str]| {
        drctl(&config)
            .env("OTHER_PG_PASSWORD", primary.password())
            .args(["sync", "--from", "prod", "--to", "staging", "-o", "json"])
            .args(more)
            .run()
    };
    let r = run(&[]);
    r.assert_no_secret(primary.password());
    let r = checked(r.expect_code(3));
    let c = preflight_check(&r.json(), "target-is-source");
    assert_eq!(c["ok"], false, "{c}");
    assert!(c["detail"].as_str().unwrap().contains("1 replica is streaming from it (drctl_it_replica)"), "{c}");
    let r = checked(run(&["--accept", "target-is-source"]).expect_code(0));
    assert_eq!(preflight_check(&r.json(), "target-is-source")["accepted"], true);
    drop(replica);
}
