//! backup --type base end to end: a real cluster archiving through `drctl wal-push` into moto S3.
//!
//! 1. The backup streams the cluster into `base.tar.zst.NNN` objects with its WAL range in the
//!    manifest and in `backup list`; the objects restore by hand with zstd and tar; verify-chain
//!    --backups --deep passes.
//! 2. Refusals before anything is stored: a server that does not archive, an RDS env.
//! 3. verify-chain finds a gap in the archive after a base backup (naming the first missing
//!    segment) and, deep, a damaged segment; backup prune keeps each type's newest and deletes
//!    the WAL only older base backups needed.

use std::process::Command;

use serde_json::Value;

use crate::harness::TestDir;
use crate::harness::archiving::Archiving;
use crate::harness::drctl::RunResult;
use crate::harness::moto::Moto;
use crate::harness::pg::Cluster;
use crate::harness::s3::{self, s3_keys, s3_put};

fn ok(r: RunResult, what: &str) -> RunResult {
    assert_eq!(r.code, 0, "{what} failed:\n{}\n{}", r.stdout, r.stderr);
    r
}

/// An object drctl stored, which must be there.
fn s3_get(bucket: &str, key: &str) -> Vec<u8> {
    s3::s3_get(bucket, key).unwrap_or_else(|| panic!("s3://{bucket}/{key} is missing")).0
}

fn base_backup(a: &Archiving) -> Value {
    ok(a.drctl().args(["backup", "--env", "prod", "--type", "base", "-o", "json"]).run(), "backup --type base").json()
}

fn wal_prefix(a: &Archiving) -> String {
    format!("pitr/wal/prod/{}/00000001/", a.sysid())
}

#[test]
fn a_base_backup_streams_the_cluster_with_its_wal_range_and_restores_by_hand() {
    let a = Archiving::start(|| Moto::shared().endpoint());
    a.insert("a", 1..=10);
    let j = base_backup(&a);
    let id = j["id"].as_str().unwrap().to_string();
    assert_eq!(j["type"], "base", "{j}");
    let (start, end) = (j["wal_start"].as_str().unwrap(), j["wal_end"].as_str().unwrap());
    assert!(start.len() == 24 && start <= end, "{j}");
    let objects: Vec<String> =
        j["objects"].as_array().unwrap().iter().map(|o| o.as_str().unwrap().to_string()).collect();
    assert_eq!(objects, vec![format!("backups/prod/{id}/base.tar.zst.000")], "{j}");

    // The manifest records where the backup sits in the cluster's history.
    let m: Value =
        serde_json::from_slice(&s3_get(&a.bucket, &format!("pitr/backups/prod/{id}/manifest.json"))).unwrap();
    assert_eq!(m["type"], "base");
    assert_eq!(m["base"]["system_identifier"], a.sysid(), "{m}");
    assert_eq!(m["base"]["timeline"], 1);
    assert_eq!(m["base"]["stop_lsn"], j["stop_lsn"]);
    assert_eq!((m["wal_start"].as_str(), m["wal_end"].as_str()), (Some(start), Some(end)));
    // Its last segment is in the archive before the backup is committed.
    assert!(s3_keys(&a.bucket, &wal_prefix(&a)).contains(&format!("{}{end}.zst", wal_prefix(&a))), "{end}");

    // backup list shows it with its WAL range.
    let l = ok(a.drctl().args(["backup", "list", "--env", "prod", "-o", "json"]).run(), "backup list").json();
    let listed = &l["backups"][0];
    assert_eq!((listed["id"].as_str(), listed["type"].as_str()), (Some(id.as_str()), Some("base")), "{l}");
    assert_eq!((listed["wal_start"].as_str(), listed["wal_end"].as_str()), (Some(start), Some(end)), "{l}");
    let text = ok(a.drctl().args(["backup", "list", "--env", "prod"]).run(), "backup list").stdout;
    assert!(text.contains(&format!("{start} .. {end}")), "{text}");

    // By hand, as README says: cat the objects, zstd -dc, tar -x: a data directory.
    let dir = TestDir::new();
    std::fs::write(dir.path().join("base.tar.zst.000"), s3_get(&a.bucket, &format!("pitr/{}", objects[0]))).unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let untar = Command::new("sh")
        .arg("-c")
        .arg("cat base.tar.zst.* | zstd -dc | tar -x -C data")
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(untar.success());
    for f in ["PG_VERSION", "global/pg_control", "backup_label", "backup_manifest"] {
        assert!(dir.path().join("data").join(f).exists(), "{f} is not in the backup");
    }
    let label = std::fs::read_to_string(dir.path().join("data/backup_label")).unwrap();
    assert!(label.contains(&format!("(file {start})")), "{label}");

    ok(a.drctl().args(["verify-chain", "--backups", "--deep"]).run(), "verify-chain --backups --deep");
}

#[test]
fn a_server_that_does_not_archive_and_an_rds_env_are_refused_before_anything_is_stored() {
    let cluster = Cluster::start_new();
    cluster.create_db("app");
    let dir = TestDir::new();
    let store = dir.path().join("store");
    let cfg = dir.write_config(&format!(
        "[store]\nurl = \"file://{}\"\n\n[environments.prod]\ndatabase_url = \"{}\"\npg_bin = \"{}\"\n\n\
         [environments.cloud]\ndatabase_url = \"{}\"\nrds_instance = \"cloud-db\"\n",
        store.display(),
        cluster.superuser_url("app"),
        cluster.bin_dir().display(),
        cluster.superuser_url("app"),
    ));
    let drctl = || crate::harness::drctl::Drctl::new().config(&cfg).cwd(dir.path());
    let r = drctl().args(["backup", "--env", "prod", "--type", "base", "-o", "json"]).run();
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    let check = r.check("wal-archiving");
    assert_eq!(check["ok"], false, "{check}");
    assert!(check["detail"].as_str().unwrap().contains("archive_mode is off"), "{check}");
    assert!(!store.join("backups").exists(), "a refused backup stored something");

    let r = drctl().args(["backup", "--env", "cloud", "--type", "base"]).run();
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("RDS") && r.stderr.contains("cloud-db"), "{}", r.stderr);
}

#[test]
fn verify_chain_names_a_gap_and_a_damaged_segment_and_prune_keeps_what_restores() {
    let a = Archiving::start_with(|| Moto::shared().endpoint(), "\n[retention]\nkeep_last = 1\n");
    a.insert("a", 1..=10);
    let first = base_backup(&a);
    a.insert("b", 11..=20);
    a.switch_and_archive();
    let second = base_backup(&a);
    ok(a.drctl().args(["backup", "--env", "prod"]).run(), "a logical backup");
    a.insert("c", 21..=30);
    let gap = a.switch_and_archive();
    a.insert("d", 31..=40);
    let damaged = a.switch_and_archive();
    ok(a.drctl().args(["verify-chain", "--backups", "--deep"]).run(), "verify-chain on an intact archive");

    // Prune: each type keeps its newest; the older base backup goes, and the WAL only it needed.
    let p = ok(a.drctl().args(["backup", "prune", "--env", "prod", "-o", "json"]).run(), "backup prune").json();
    assert_eq!(p["pruned"], serde_json::json!([first["id"]]), "{p}");
    let keys = s3_keys(&a.bucket, &wal_prefix(&a));
    let key = |name: &str| format!("{}{name}.zst", wal_prefix(&a));
    assert!(!keys.contains(&key(first["wal_start"].as_str().unwrap())), "{keys:?}");
    assert!(keys.contains(&key(second["wal_start"].as_str().unwrap())), "{keys:?}");
    assert!(keys.contains(&key(&gap)) && keys.contains(&key(&damaged)), "{keys:?}");
    let l = ok(a.drctl().args(["backup", "list", "--env", "prod", "-o", "json"]).run(), "backup list").json();
    let types: Vec<&str> = l["backups"].as_array().unwrap().iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["logical", "base"], "{l}");
    ok(a.drctl().args(["verify-chain", "--backups"]).run(), "verify-chain after prune");

    // A segment missing from the archive: named as the gap.
    let chunk_key = format!("{}index/00000000.json", wal_prefix(&a));
    let original = s3_get(&a.bucket, &chunk_key);
    let mut chunk: Value = serde_json::from_slice(&original).unwrap();
    chunk["files"].as_array_mut().unwrap().retain(|l| l["name"] != gap.as_str());
    s3_put(&a.bucket, &chunk_key, serde_json::to_vec(&chunk).unwrap(), &[]);
    let r = a.drctl().args(["verify-chain", "--backups", "-o", "json"]).run();
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    let reason = r.json()["chains"][0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("gap") && reason.contains(&gap), "{reason}");
    s3_put(&a.bucket, &chunk_key, original, &[]);

    // A damaged segment: same size, other bytes; only --deep re-reads it.
    let good = s3_get(&a.bucket, &format!("{}{damaged}.zst", wal_prefix(&a)));
    let bad: Vec<u8> = zstd::encode_all(&vec![7u8; 16 << 20][..], 1).unwrap();
    let mut bad_same_size = bad.clone();
    bad_same_size.resize(good.len().max(bad.len()), 0);
    bad_same_size.truncate(good.len());
    s3_put(&a.bucket, &format!("{}{damaged}.zst", wal_prefix(&a)), bad_same_size, &[]);
    ok(a.drctl().args(["verify-chain", "--backups"]).run(), "verify-chain (not deep) of a damaged segment");
    let r = a.drctl().args(["verify-chain", "--backups", "--deep", "-o", "json"]).run();
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    let reason = r.json()["chains"][0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains(&damaged), "{reason}");
}
