//! The journal at scale: what a run costs in store requests does not grow with the journal's
//! length, and two processes appending at once never share a seq or break the chain.
//!
//! History is written here directly (valid chained entries of backup and prune runs, then a
//! checkpoint at the head and the index's pointer to it, as a long-lived store would have them),
//! not by running backups.

use std::path::{Path, PathBuf};

use drctl::journal::fold::State;
use drctl::journal::{Entry, GENESIS_PREV_HASH, compute_hash, entry_key, index};
use drctl::store::local::LocalStore;
use serde_json::{Value, json};

use crate::harness::TestDir;
use crate::harness::drctl::{Drctl, RunResult};
use crate::harness::pg::Cluster;

/// `n` entries of another env's history: each backup is committed, then pruned and removed, so
/// what is listed and folded is the same at any length but for the anchors a verify-chain cron
/// leaves behind.
fn generate(store: &Path, n: u64) {
    std::fs::create_dir_all(store.join("journal")).unwrap();
    let mut state = State::default();
    let mut prev = GENESIS_PREV_HASH.to_string();
    let mut at = 1_700_000_000u64;
    for seq in 0..n {
        let cycle = seq / 13;
        let id = format!("20231114T{cycle:06}Z-hist");
        let run = |r: &str| format!("{id}-{r}");
        let (run_id, runbook, event, details) = match seq % 13 {
            0 => (run("b"), "backup", "run-started", json!({"args": "--env hist", "accepted": []})),
            1..=3 => (run("b"), "backup", "step-done", json!({"step": "dump", "duration_ms": 10})),
            4 => (
                run("b"),
                "backup",
                "backup-done",
                json!({"id": id, "type": "logical", "manifest_sha256": "0".repeat(64), "bytes": 1, "sha256": "0".repeat(64), "duration_ms": 10}),
            ),
            5 => (run("b"), "backup", "step-done", json!({"step": "commit", "duration_ms": 1})),
            6 => (run("b"), "backup", "run-done", json!({"args": "--env hist"})),
            7 => (run("p"), "backup-prune", "run-started", json!({"args": "--env hist", "accepted": []})),
            8 => (run("p"), "backup-prune", "backup-pruned", json!({"id": id})),
            9 => (run("p"), "backup-prune", "backup-removed", json!({"ids": [id]})),
            10 => (run("p"), "backup-prune", "run-done", json!({"args": "--env hist"})),
            11 => (
                run("v"),
                "verify-chain",
                "chain-anchor",
                json!({"chain": "events", "key": cycle.to_string(), "hash": "ab".repeat(32), "count": cycle + 1}),
            ),
            _ => (run("s"), "sync", "sync-done", json!({"snapshot_time": "2023-11-14T00:00:00Z", "bytes": 1})),
        };
        at += 60;
        let mut e = Entry {
            seq,
            time: humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_secs(at))
                .to_string(),
            run_id,
            runbook: runbook.into(),
            env: Some("hist".into()),
            event: event.into(),
            fences: Default::default(),
            details,
            prev_hash: prev.clone(),
            hash: String::new(),
        };
        e.hash = compute_hash(&e);
        prev = e.hash.clone();
        state.fold(&e);
        let path = store.join(entry_key(seq));
        std::fs::write(path, serde_json::to_vec_pretty(&e).unwrap()).unwrap();
    }
    let url = format!("file://{}", store.display());
    let local = LocalStore::new(&url, &store.display().to_string());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(index::write_checkpoint(&local, &state, "generator", false)).unwrap();
    rt.block_on(index::publish(&local, &[(n - 1, false)])).unwrap();
}

fn config(dir: &TestDir, db: &str) -> PathBuf {
    let pg = Cluster::shared();
    dir.write_config(&format!(
        "[store]\nurl = \"file://{}/store\"\n\n[environments.prod]\ndatabase_url = \"postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/{db}?sslmode=disable\"\n\n[environments.other]\ndatabase_url = \"postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/{db}?sslmode=disable\"\n",
        dir.path().display(),
        pg.port,
        pg.port,
    ))
}

fn drctl(config: &Path) -> Drctl {
    Drctl::new().config(config).env("TEST_PG_PASSWORD", Cluster::shared().password())
}

/// The `store requests: N (…)` line `-v` prints at the end of a run.
fn request_line(r: &RunResult) -> &str {
    r.stderr.lines().find(|l| l.contains("store requests: ")).unwrap_or_else(|| {
        panic!("no `store requests:` line on stderr:\n{}", r.stderr);
    })
}

fn requests(r: &RunResult) -> u64 {
    let line = request_line(r);
    let n = line.split("store requests: ").nth(1).unwrap().split(' ').next().unwrap();
    n.parse().unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[test]
fn a_run_costs_the_same_store_requests_at_100_and_at_5000_entries() {
    let pg = Cluster::shared();
    let db = crate::harness::unique_name("jscale");
    pg.create_db(&db);
    pg.psql(&db, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);");
    let mut costs = Vec::new();
    for n in [100, 5000] {
        let dir = TestDir::new();
        let config = config(&dir, &db);
        generate(&dir.path().join("store"), n);
        let backup = drctl(&config).args(["-v", "backup", "--env", "prod"]).run().expect_code(0);
        let list = drctl(&config).args(["-v", "backup", "list", "--env", "prod", "-o", "json"]).run().expect_code(0);
        assert_eq!(
            list.json()["backups"].as_array().unwrap().len(),
            1,
            "the one backup of prod, none of history: {}",
            list.stdout
        );
        let status = drctl(&config).args(["-v", "status", "-o", "json"]).run();
        let log = drctl(&config).args(["-v", "log", "--limit", "20", "-o", "json"]).run().expect_code(0);
        assert_eq!(log.json()["entries"].as_array().unwrap().len(), 20);
        // A lone append: a prune with nothing to prune journals its start and its end.
        let prune = drctl(&config).args(["-v", "backup", "prune", "--env", "other"]).run().expect_code(0);
        costs.push([requests(&backup), requests(&list), requests(&status), requests(&log), requests(&prune)]);
        for (what, r) in [("backup", &backup), ("backup list", &list), ("status", &status), ("log", &log)] {
            // A listing's cost grows with the objects in the store (a local directory of every
            // entry; moto scans the bucket): a run that lists nothing stays flat anywhere.
            assert!(!request_line(r).contains(" list "), "{what} listed: {}", request_line(r));
        }
        // The history is whole and its checkpoint agrees with the chain.
        let v = drctl(&config).args(["verify-chain", "--journal", "-o", "json"]).run().expect_code(0);
        let chains = v.json()["chains"].clone();
        assert!(chains[0]["entries"].as_u64().unwrap() >= n + 9, "{chains}");
        assert_eq!(chains[1]["chain"], "journal-checkpoints");
        assert_eq!(chains[1]["ok"], true, "{chains}");
    }
    assert_eq!(costs[0], costs[1], "store requests [backup, list, status, log, append] at 100 vs 5000 entries");
    assert!(costs[0].iter().all(|&c| c < 80), "a run's requests stay small: {:?}", costs[0]);
}

#[test]
fn two_processes_appending_at_once_never_share_a_seq() {
    let pg = Cluster::shared();
    let db = crate::harness::unique_name("jrace");
    pg.create_db(&db);
    let dir = TestDir::new();
    let config = config(&dir, &db);
    // Enough history that a checkpoint is written while they race.
    generate(&dir.path().join("store"), 60);
    let workers: Vec<_> = ["prod", "other"]
        .into_iter()
        .map(|env| {
            let config = config.clone();
            std::thread::spawn(move || {
                for _ in 0..12 {
                    drctl(&config).args(["backup", "prune", "--env", env]).run().expect_code(0);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let v = drctl(&config).args(["verify-chain", "--journal", "-o", "json"]).run().expect_code(0);
    let doc = v.json();
    assert!(doc["chains"][0]["entries"].as_u64().unwrap() >= 60 + 2 * 12 * 2, "{doc}");
    assert!(doc["chains"][1]["entries"].as_u64().unwrap() >= 1, "a checkpoint was written and compared: {doc}");
    let store = dir.path().join("store/journal");
    let mut seqs: Vec<u64> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| {
            let v: Value = serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
            v["seq"].as_u64().unwrap()
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(seqs.len() as u64, doc["chains"][0]["entries"].as_u64().unwrap());
}

#[test]
fn damaged_index_objects_are_survived_and_reported() {
    let pg = Cluster::shared();
    let db = crate::harness::unique_name("jdamage");
    pg.create_db(&db);
    let dir = TestDir::new();
    let config = config(&dir, &db);
    let store = dir.path().join("store");
    generate(&store, 300);
    let cp = store.join(format!("journal-index/checkpoint-{:020}.json", 299));
    // Edited by hand: the run passes it over (reading the whole journal) and stays right.
    let mut v: Value = serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    v["state"]["syncs"] = json!({});
    std::fs::write(&cp, serde_json::to_vec(&v).unwrap()).unwrap();
    let r = drctl(&config).args(["-v", "log", "--limit", "1", "-o", "json"]).run().expect_code(0);
    assert!(r.stderr.contains("journal checkpoint skipped"), "{}", r.stderr);
    assert_eq!(r.json()["entries"][0]["seq"], 299);
    let v = drctl(&config).args(["verify-chain", "--journal", "-o", "json"]).run().expect_code(4);
    let doc = v.json();
    assert_eq!(doc["chains"][0]["ok"], true, "the chain itself is intact: {doc}");
    assert_eq!(doc["chains"][1]["first_bad_key"], "journal-index/checkpoint-00000000000000000299.json", "{doc}");
    assert!(v.stderr.contains("checkpoint-00000000000000000299"), "the error names it: {}", v.stderr);
    // Deleted: the next run is slower, not wrong, and verification is clean again.
    std::fs::remove_file(&cp).unwrap();
    drctl(&config).args(["backup", "prune", "--env", "prod"]).run().expect_code(0);
    let v = drctl(&config).args(["verify-chain", "--journal", "-o", "json"]).run().expect_code(0);
    assert!(v.json()["chains"][0]["entries"].as_u64().unwrap() >= 302);
    // The full walk left a verified checkpoint; an hourly --since-checkpoint walks what follows.
    drctl(&config).args(["backup", "prune", "--env", "prod"]).run().expect_code(0);
    let since =
        drctl(&config).args(["verify-chain", "--journal", "--since-checkpoint", "-o", "json"]).run().expect_code(0);
    let walked = since.json()["chains"][0]["entries"].as_u64().unwrap();
    assert!((2..=3).contains(&walked), "only the last prune's entries: {}", since.stdout);
}
