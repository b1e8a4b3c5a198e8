//! verify-chain on application tables (a 1,000,000-row hash-chained `events` table on real
//! PostgreSQL 15, damaged one way per test) and on content-addressed artifacts (file store and moto).
//!
//! The million-row chain is generated once per process (a recursive CTE: the chain is sequential by
//! nature, one sha256 per row in the server) and each test works on its own copy
//! (`CREATE TABLE x AS TABLE base`), so a test's damage is its own.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::drctl::Drctl;
use crate::harness::moto::Moto;
use crate::harness::pg::Cluster;
use crate::harness::{TestDir, unique_name};

const ROWS: i64 = 1_000_000;

/// `make_chain(table, n, seed)`: a text-hex chain by the contract's default rule
/// (hash = sha256(prev_hash || payload::text), first prev_hash 64 zeros).
const MAKE_CHAIN: &str = r#"
CREATE FUNCTION make_chain(tbl text, n int, seed text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  EXECUTE format('CREATE TABLE %I (id bigint NOT NULL, prev_hash text, hash text, payload jsonb)', tbl);
  EXECUTE format($q$
    INSERT INTO %I
    WITH RECURSIVE c(id, prev_hash, hash, payload) AS (
        SELECT 1::bigint, repeat('0', 64), encode(sha256(convert_to(repeat('0', 64) || p::text, 'UTF8')), 'hex'), p
          FROM (SELECT jsonb_build_object('n', 1, 'seed', %L) AS p) s
      UNION ALL
        SELECT c.id + 1, c.hash, encode(sha256(convert_to(c.hash || s.p::text, 'UTF8')), 'hex'), s.p
          FROM c, LATERAL (SELECT jsonb_build_object('n', c.id + 1, 'seed', %L) AS p) s
         WHERE c.id < %s)
    SELECT * FROM c$q$, tbl, seed, seed, n);
  EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (id)', tbl);
END
$fn$;
"#;

/// The database holding the base chain `events_base`.
fn base_db() -> &'static str {
    static DB: OnceLock<String> = OnceLock::new();
    DB.get_or_init(|| {
        let pg = Cluster::shared();
        let db = unique_name("vchain");
        pg.create_db(&db);
        pg.psql(&db, MAKE_CHAIN);
        pg.psql(&db, &format!("SELECT make_chain('events_base', {ROWS}, 'base')"));
        db
    })
}

/// A private copy of the base chain, with its primary key.
fn events_copy() -> (String, String) {
    let db = base_db().to_string();
    let t = unique_name("events");
    Cluster::shared()
        .psql(&db, &format!("CREATE TABLE {t} AS TABLE events_base; ALTER TABLE {t} ADD PRIMARY KEY (id);"));
    (db, t)
}

fn config(dir: &TestDir, db: &str, extra: &str) -> PathBuf {
    dir.write_config(&format!(
        "[store]\nurl = \"file://{}/store\"\n\n[environments.prod]\ndatabase_url = \"postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/{db}?sslmode=disable\"\n{extra}",
        dir.path().display(),
        Cluster::shared().port
    ))
}

fn drctl(config: &Path) -> Drctl {
    Drctl::new().config(config).env("TEST_PG_PASSWORD", Cluster::shared().password())
}

fn verify(config: &Path, table: &str, more: &[&str], code: i32) -> Value {
    let r = drctl(config).args(["verify-chain", "--env", "prod", "--table", table, "-o", "json"]).args(more).run();
    r.assert_no_secret(Cluster::shared().password());
    let r = r.expect_code(code);
    r.json()
}

/// The one table chain of a verify-chain document.
fn chain<'a>(doc: &'a Value, table: &str) -> &'a Value {
    doc["chains"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["chain"] == table))
        .unwrap_or_else(|| panic!("no chain {table} in {doc}"))
}

fn assert_first_bad(doc: &Value, table: &str, index: u64, key: &str, reason: &str) {
    let c = chain(doc, table);
    assert_eq!(c["ok"], false, "{c}");
    assert_eq!(c["first_bad_index"], index, "{c}");
    assert_eq!(c["first_bad_key"], key, "{c}");
    let got = c["reason"].as_str().unwrap_or_default();
    assert!(got.starts_with(reason), "reason {got:?} is not {reason}: {c}");
    assert_eq!(doc["ok"], false);
}

fn anchors(store: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let dir = store.join("journal");
    let mut files: Vec<_> = std::fs::read_dir(&dir).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    files.sort();
    for f in files {
        let e: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        if e["event"] == "chain-anchor" {
            out.push(e);
        }
    }
    out
}

// --- a good chain, anchors and --since-anchor ---------------------------------------------------

#[test]
fn a_million_row_chain_verifies_and_is_anchored() {
    let (db, t) = events_copy();
    let dir = TestDir::new();
    let cfg = config(&dir, &db, "");
    let prom = dir.path().join("drctl.prom");
    let doc = verify(&cfg, &t, &["--dense", "--metrics-file", prom.to_str().unwrap()], 0);
    let c = chain(&doc, &t);
    let text = std::fs::read_to_string(&prom).unwrap();
    for (name, value) in [("drctl_chain_entries", ROWS.to_string()), ("drctl_chain_head", ROWS.to_string())] {
        assert!(text.contains(&format!("{name}{{env=\"prod\",chain=\"{t}\"}} {value}\n")), "{name}: {text}");
    }
    assert!(text.contains(&format!("drctl_chain_verified_timestamp_seconds{{env=\"prod\",chain=\"{t}\"}} ")), "{text}");
    assert!(text.contains("drctl_last_run_success{runbook=\"verify-chain\",env=\"prod\"} 1"), "{text}");
    assert_eq!((c["ok"].clone(), c["entries"].clone()), (Value::Bool(true), Value::from(ROWS)), "{c}");
    assert_eq!(c["first_bad_index"], Value::Null);
    assert!(c["entries_per_second"].as_u64().unwrap() > 0);
    let a = anchors(&dir.path().join("store"));
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!((a[0]["runbook"].as_str(), a[0]["env"].as_str()), (Some("verify-chain"), Some("prod")));
    let tail = Cluster::shared().psql(&db, &format!("SELECT hash FROM {t} WHERE id = {ROWS}"));
    assert_eq!(a[0]["details"]["key"], ROWS.to_string());
    assert_eq!(a[0]["details"]["hash"], tail);
    assert_eq!(a[0]["details"]["count"], ROWS);

    // Unchanged: no second anchor. Appended rows: --since-anchor reads only them.
    verify(&cfg, &t, &["--since-anchor"], 0);
    assert_eq!(anchors(&dir.path().join("store")).len(), 1);
    Cluster::shared().psql(
        &db,
        &format!(
            "INSERT INTO {t} SELECT {n}, hash, encode(sha256(convert_to(hash || '{{\"n\": {n}}}', 'UTF8')), 'hex'), '{{\"n\": {n}}}'::jsonb FROM {t} WHERE id = {ROWS}",
            n = ROWS + 1
        ),
    );
    let doc = verify(&cfg, &t, &["--since-anchor"], 0);
    assert_eq!(chain(&doc, &t)["entries"], 1, "{doc}");
    let a = anchors(&dir.path().join("store"));
    assert_eq!(a.len(), 2);
    assert_eq!(a[1]["details"]["count"], ROWS + 1);

    // The contract's default run (journal + backups) still works alongside.
    let r = drctl(&cfg).args(["verify-chain", "-o", "json"]).run().expect_code(0);
    assert_eq!(r.json()["chains"][0]["chain"], "journal");
}

// --- damage, one kind per test --------------------------------------------------------------------

#[test]
fn an_altered_payload_is_a_hash_mismatch() {
    let (db, t) = events_copy();
    Cluster::shared().psql(&db, &format!("UPDATE {t} SET payload = '{{\"n\": \"forged\"}}' WHERE id = 500000"));
    let dir = TestDir::new();
    let doc = verify(&config(&dir, &db, ""), &t, &[], 4);
    assert_first_bad(&doc, &t, 499_999, "500000", "hash_mismatch");
    assert!(anchors(&dir.path().join("store")).is_empty(), "a broken chain is never anchored");
}

#[test]
fn a_deleted_row_breaks_the_next_link_and_is_a_gap_with_dense() {
    let (db, t) = events_copy();
    Cluster::shared().psql(&db, &format!("DELETE FROM {t} WHERE id = 300000"));
    let dir = TestDir::new();
    let cfg = config(&dir, &db, "");
    assert_first_bad(&verify(&cfg, &t, &[], 4), &t, 299_999, "300001", "prev_mismatch");
    assert_first_bad(&verify(&cfg, &t, &["--dense"], 4), &t, 299_999, "300001", "gap");
}

#[test]
fn two_swapped_rows_break_the_link() {
    let (db, t) = events_copy();
    Cluster::shared().psql(
        &db,
        &format!(
            "UPDATE {t} SET id = -1 WHERE id = 700000; UPDATE {t} SET id = 700000 WHERE id = 700001; \
             UPDATE {t} SET id = 700001 WHERE id = -1;"
        ),
    );
    let dir = TestDir::new();
    let doc = verify(&config(&dir, &db, ""), &t, &["--all-errors"], 4);
    assert_first_bad(&doc, &t, 699_999, "700000", "prev_mismatch");
    // Each swapped row is out of place, and the row after them links to the wrong one.
    let errors = chain(&doc, &t)["errors"].as_array().unwrap().clone();
    let keys: Vec<&str> = errors.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["700000", "700001", "700002"], "{errors:?}");
}

#[test]
fn an_edited_prev_hash_is_a_prev_mismatch() {
    let (db, t) = events_copy();
    Cluster::shared().psql(&db, &format!("UPDATE {t} SET prev_hash = md5('x') || md5('y') WHERE id = 123456"));
    let dir = TestDir::new();
    let doc = verify(&config(&dir, &db, ""), &t, &[], 4);
    assert_first_bad(&doc, &t, 123_455, "123456", "prev_mismatch");
}

#[test]
fn a_truncated_tail_is_caught_by_the_anchor() {
    let (db, t) = events_copy();
    let dir = TestDir::new();
    let cfg = config(&dir, &db, "");
    verify(&cfg, &t, &[], 0);
    Cluster::shared().psql(&db, &format!("DELETE FROM {t} WHERE id > {}", ROWS - 10));
    // The shorter chain is self-consistent; only the anchor shows what is gone.
    let r = drctl(&cfg).args(["verify-chain", "--env", "prod", "--table", &t, "-o", "json"]).run().expect_code(4);
    let doc = r.json();
    assert_first_bad(&doc, &t, (ROWS - 1) as u64, &ROWS.to_string(), "anchor_missing");
    assert!(r.stderr.contains("anchor_missing") && r.stderr.contains("journal seq"), "{}", r.stderr);
    assert_eq!(anchors(&dir.path().join("store")).len(), 1, "no anchor over a truncated chain");
}

#[test]
fn a_consistently_rewritten_history_is_caught_by_the_anchor() {
    let (db, t) = events_copy();
    let dir = TestDir::new();
    let cfg = config(&dir, &db, "");
    verify(&cfg, &t, &[], 0);
    let pg = Cluster::shared();
    pg.psql(&db, &format!("DROP TABLE {t}"));
    pg.psql(&db, &format!("SELECT make_chain('{t}', {ROWS}, 'rewritten')"));
    let doc = verify(&cfg, &t, &[], 4);
    assert_first_bad(&doc, &t, (ROWS - 1) as u64, &ROWS.to_string(), "anchor_mismatch");
    assert_eq!(chain(&doc, &t)["entries"], ROWS, "the rewritten chain itself is consistent");
}

// --- column kinds, config and usage errors --------------------------------------------------------

#[test]
fn bytea_hash_columns_work_in_hex_and_raw_mode_and_configured_chains_need_no_flags() {
    let pg = Cluster::shared();
    let db = base_db();
    let hex_t = unique_name("bytea_hex");
    let raw_t = unique_name("bytea_raw");
    pg.psql(
        db,
        &format!(
            "CREATE TABLE {hex_t} AS SELECT id AS seq, decode(prev_hash, 'hex') AS prev, decode(hash, 'hex') AS h, payload \
               FROM events_base WHERE id <= 5000;
             CREATE TABLE {raw_t} AS
             WITH RECURSIVE c(id, prev_hash, hash, body) AS (
                 SELECT 1, NULL::bytea, sha256(convert_to('body 1', 'UTF8')), 'body 1'
               UNION ALL
                 SELECT c.id + 1, c.hash, sha256(c.hash || convert_to('body ' || (c.id + 1), 'UTF8')), 'body ' || (c.id + 1)
                   FROM c WHERE c.id < 3000)
             SELECT * FROM c;"
        ),
    );
    let dir = TestDir::new();
    let cfg = config(
        &dir,
        db,
        &format!(
            "[environments.prod.chains.{hex_t}]\norder_by = \"seq\"\nhash_column = \"h\"\nprev_column = \"prev\"\n\n\
             [environments.prod.chains.{raw_t}]\ncontent = \"body\"\ngenesis = \"null\"\nbytea_hash = \"raw\"\n"
        ),
    );
    let r = drctl(&cfg).args(["verify-chain", "--env", "prod", "-o", "json"]).run().expect_code(0);
    let doc = r.json();
    assert_eq!(chain(&doc, &hex_t)["entries"], 5000, "{doc}");
    assert_eq!(chain(&doc, &raw_t)["entries"], 3000, "{doc}");
    assert_eq!(anchors(&dir.path().join("store")).len(), 2);

    pg.psql(db, &format!("UPDATE {raw_t} SET body = 'tampered' WHERE id = 1234"));
    let r = drctl(&cfg).args(["verify-chain", "--env", "prod", "-o", "json"]).run().expect_code(4);
    assert_first_bad(&r.json(), &raw_t, 1233, "1234", "hash_mismatch");
    assert_eq!(chain(&r.json(), &hex_t)["ok"], true);
}

#[test]
fn a_missing_table_or_column_or_a_bad_setting_is_exit_2_naming_it() {
    let (db, t) = events_copy();
    let dir = TestDir::new();
    let cfg = config(&dir, &db, "");
    let r = drctl(&cfg).args(["verify-chain", "--env", "prod", "--table", "no_such_table"]).run().expect_code(2);
    assert!(r.stderr.contains("no_such_table") && r.stderr.contains("does not exist"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
    let r = drctl(&cfg)
        .args(["verify-chain", "--env", "prod", "--table", &t, "--hash-column", "digest"])
        .run()
        .expect_code(2);
    assert!(r.stderr.contains("no column `digest`") && r.stderr.contains("--hash-column"), "{}", r.stderr);
    let r = drctl(&cfg)
        .args(["verify-chain", "--env", "prod", "--table", &t, "--content", "body::text"])
        .run()
        .expect_code(2);
    assert!(r.stderr.contains("--content") && r.stderr.contains("body"), "{}", r.stderr);
    // An env with no configured chains and no --table.
    let r = drctl(&cfg).args(["verify-chain", "--env", "prod"]).run().expect_code(2);
    assert!(r.stderr.contains("no hash-chained tables"), "{}", r.stderr);

    let bad = config(&dir, &db, &format!("[environments.prod.chains.{t}]\ngenesis = \"ones\"\n"));
    let r = drctl(&bad).args(["verify-chain", "--env", "prod"]).run().expect_code(2);
    assert!(r.stderr.contains(&format!("[environments.prod.chains.{t}] genesis")), "{}", r.stderr);
}

// --- artifacts ------------------------------------------------------------------------------------

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn put_file(root: &Path, key: &str, data: &[u8]) {
    let p = root.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn artifacts(config: &Path, url: &str, code: i32) -> Value {
    let r =
        Drctl::new().config(config).args(["verify-chain", "--artifacts", url, "-o", "json"]).run().expect_code(code);
    r.json()["artifacts"].clone()
}

fn problems(a: &Value) -> Vec<(String, String)> {
    a["bad"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["key"].as_str().unwrap().into(), b["problem"].as_str().unwrap().into()))
        .collect()
}

#[test]
fn two_thousand_artifacts_verify_and_each_kind_of_damage_is_listed() {
    let dir = TestDir::new();
    let root = dir.path().join("artifacts");
    let mut keys = Vec::new();
    for i in 0..2000 {
        let data = format!("artifact {i} {}", "x".repeat(i % 300));
        let h = sha(data.as_bytes());
        let key = format!("{}/{h}", &h[..2]);
        put_file(&root, &key, data.as_bytes());
        keys.push(key);
    }
    let cfg = dir.write_config(&format!("[store]\nurl = \"file://{}/store\"\n", dir.path().display()));
    let url = format!("file://{}", root.display());
    let a = artifacts(&cfg, &url, 0);
    assert_eq!((a["checked"].as_u64(), problems(&a).len()), (Some(2000), 0), "{a}");

    put_file(&root, &keys[17], b"other bytes");
    let moved = sha(b"misplaced");
    let wrong = format!("{}/{moved}", if moved.starts_with("00") { "01" } else { "00" });
    put_file(&root, &wrong, b"misplaced");
    let empty = format!("{}/{}", &sha(b"not empty")[..2], sha(b"not empty"));
    put_file(&root, &empty, b"");
    let a = artifacts(&cfg, &url, 4);
    assert_eq!(a["checked"], 2002);
    let mut want = vec![
        (keys[17].clone(), "sha_mismatch".to_string()),
        (wrong, "wrong_shard".to_string()),
        (empty, "sha_mismatch".to_string()),
    ];
    want.sort();
    assert_eq!(problems(&a), want, "{a}");
}

/// PUT one object into moto as raw HTTP: moto wants an Authorization header but checks no signature.
fn moto_put(bucket: &str, key: &str, body: &[u8]) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", Moto::shared().port)).unwrap();
    write!(s, "PUT /{bucket}/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\
           Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n\
           Connection: close\r\n\r\n",
        body.len()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200"), "PUT {key}: {resp}");
}

#[test]
fn s3_artifacts_on_moto_are_checked_and_damage_is_listed() {
    let moto = Moto::shared();
    let bucket = Moto::unique_bucket("artifacts");
    moto.create_bucket(&bucket);
    for i in 0..40 {
        let data = format!("s3 artifact {i}");
        let h = sha(data.as_bytes());
        moto_put(&bucket, &format!("art/{}/{h}", &h[..2]), data.as_bytes());
    }
    let dir = TestDir::new();
    let cfg = dir.write_config(&format!(
        "[store]\nurl = \"file://{}/store\"\n[aws]\nendpoint_url = \"{}\"\n",
        dir.path().display(),
        moto.endpoint()
    ));
    let url = format!("s3://{bucket}/art");
    let a = artifacts(&cfg, &url, 0);
    assert_eq!(a["checked"], 40, "{a}");

    let h = sha(b"s3 artifact 3");
    moto_put(&bucket, &format!("art/{}/{h}", &h[..2]), b"overwritten");
    let z = sha(b"z");
    moto_put(&bucket, &format!("art/{}/{z}", &z[..2]), b"");
    let a = artifacts(&cfg, &url, 4);
    let mut want = vec![
        (format!("{}/{h}", &h[..2]), "sha_mismatch".to_string()),
        (format!("{}/{z}", &z[..2]), "sha_mismatch".into()),
    ];
    want.sort();
    assert_eq!(problems(&a), want, "{a}");
}

#[test]
fn a_200_mb_artifact_is_streamed_not_loaded() {
    let dir = TestDir::new();
    let root = dir.path().join("artifacts");
    std::fs::create_dir_all(&root).unwrap();
    let tmp = root.join("big.tmp");
    let mut h = Sha256::new();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).unwrap());
        let mut block = vec![0u8; 1 << 20];
        for i in 0..200u32 {
            block[..4].copy_from_slice(&i.to_be_bytes());
            f.write_all(&block).unwrap();
            h.update(&block);
        }
    }
    let key = hex::encode(h.finalize());
    std::fs::create_dir_all(root.join(&key[..2])).unwrap();
    std::fs::rename(&tmp, root.join(&key[..2]).join(&key)).unwrap();
    let cfg = dir.write_config(&format!("[store]\nurl = \"file://{}/store\"\n", dir.path().display()));

    // drctl's own peak RSS: VmHWM of its post-exec address space, polled until it exits. (wait4's
    // ru_maxrss would also count the pages a fork inherited from this large test process.)
    let mut child = Drctl::new()
        .config(&cfg)
        .args(["verify-chain", "--artifacts", &format!("file://{}", root.display()), "-o", "json"])
        .spawn();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let out = reader.join().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{status}\n{out}\n{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["artifacts"]["bytes"], 200u64 << 20, "{doc}");
    assert_eq!(doc["artifacts"]["bad"].as_array().map(Vec::len), Some(0));
    assert!(peak_kib > 0, "drctl's VmHWM was never read");
    let peak_mib = peak_kib / 1024;
    assert!(peak_mib < 100, "peak RSS {peak_mib} MiB for a 200 MiB artifact: it was loaded, not streamed");
}

// --- nothing to verify ------------------------------------------------------------------------------

#[test]
fn an_empty_artifact_prefix_is_exit_3_not_a_pass() {
    let moto = Moto::shared();
    let bucket = Moto::unique_bucket("typo");
    moto.create_bucket(&bucket);
    let h = sha(b"the one artifact");
    moto_put(&bucket, &format!("artifacts/{}/{h}", &h[..2]), b"the one artifact");
    let dir = TestDir::new();
    let cfg = dir.write_config(&format!(
        "[store]\nurl = \"file://{}/store\"\n[aws]\nendpoint_url = \"{}\"\n",
        dir.path().display(),
        moto.endpoint()
    ));
    assert_eq!(artifacts(&cfg, &format!("s3://{bucket}/artifacts"), 0)["checked"], 1);
    // The issue's typo: `artifact` for `artifacts` lists nothing.
    for url in [format!("s3://{bucket}/artifact"), format!("file://{}/no-such-dir", dir.path().display())] {
        let r =
            Drctl::new().config(&cfg).args(["verify-chain", "--artifacts", &url, "-o", "json"]).run().expect_code(3);
        let doc = r.json();
        assert_eq!((&doc["ok"], &doc["artifacts"]["checked"]), (&Value::from(false), &Value::from(0)), "{doc}");
        assert!(r.stderr.contains(&format!("no objects under {url}")) && r.stderr.contains("hint: "), "{}", r.stderr);
    }
}

#[test]
fn an_empty_chain_table_is_exit_3_unless_it_may_be_empty() {
    let pg = Cluster::shared();
    let db = base_db();
    let t = unique_name("events_empty");
    pg.psql(db, &format!("CREATE TABLE {t} (id bigint PRIMARY KEY, prev_hash text, hash text, payload jsonb)"));
    let dir = TestDir::new();
    let cfg = config(&dir, db, "");
    let r = drctl(&cfg).args(["verify-chain", "--env", "prod", "--table", &t]).run().expect_code(3);
    assert!(r.stderr.contains(&format!("table {t} on prod has no rows")), "{}", r.stderr);
    assert!(r.stderr.contains("--allow-empty"), "{}", r.stderr);
    let doc = verify(&cfg, &t, &[], 3);
    assert_eq!(doc["ok"], false, "{doc}");
    let doc = verify(&cfg, &t, &["--allow-empty"], 0);
    assert_eq!((&doc["ok"], &chain(&doc, &t)["entries"]), (&Value::from(true), &Value::from(0)), "{doc}");
    // Per table in drctl.toml, so cron needs no flag.
    let allowed = config(&dir, db, &format!("[environments.prod.chains.{t}]\nallow_empty = true\n"));
    drctl(&allowed).args(["verify-chain", "--env", "prod"]).run().expect_code(0);
    assert!(anchors(&dir.path().join("store")).is_empty(), "an empty chain has no head to anchor");
}
