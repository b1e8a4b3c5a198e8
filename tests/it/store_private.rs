//! Backups hold every row of production (issue: private files and S3 encryption): a file store is
//! private to its user whatever the umask, `check` says when it is not (`store-private`), every
//! object drctl writes to S3 carries `[store] sse`, and `check` reports the bucket's public-access
//! block, default encryption and versioning. Real files, real PostgreSQL, the shared moto.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aws_sdk_s3::types::{
    BucketVersioningStatus, PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, VersioningConfiguration,
};
use serde_json::Value;

use crate::harness::TestDir;
use crate::harness::drctl::{Drctl, RunResult};
use crate::harness::moto::Moto;
use crate::harness::pg::Cluster;

fn drctl(config: &Path) -> Drctl {
    Drctl::new().config(config).env("TEST_PG_PASSWORD", Cluster::shared().password())
}

fn env_section(db: &str) -> String {
    format!(
        "[environments.prod]\ndatabase_url = \"postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/{db}?sslmode=disable\"\n",
        Cluster::shared().port
    )
}

/// A database with one small table.
fn small_db(prefix: &str) -> String {
    let pg = Cluster::shared();
    let db = crate::harness::unique_name(prefix);
    pg.create_db(&db);
    pg.psql(&db, "CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g;");
    db
}

/// A database whose dump does not compress below S3's 8 MiB part size: ~10.6 MB of random bytes
/// (pg_dump writes bytea as hex, which zstd brings back to about its binary size), so the backup's
/// data object goes up as a multipart upload.
fn incompressible_db(prefix: &str) -> String {
    let pg = Cluster::shared();
    let db = crate::harness::unique_name(prefix);
    pg.create_db(&db);
    pg.psql(
        &db,
        "CREATE TABLE blob (id int PRIMARY KEY, b bytea);
         INSERT INTO blob SELECT g, (SELECT string_agg(decode(md5(random()::text || g || h), 'hex'), ''::bytea)
                                     FROM generate_series(1, 256) h)
         FROM generate_series(1, 2600) g;",
    );
    db
}

/// The check `id` of target `store` in a `check -o json` document.
fn store_check(r: &RunResult, id: &str) -> Value {
    let doc = r.json();
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["target"] == "store" && c["check"] == id)
        .unwrap_or_else(|| panic!("no store {id} in {doc}"))
        .clone()
}

/// (path, permission bits, is a directory) of the root and everything under it, not following
/// symlinks (drctl makes none).
fn modes(root: &Path) -> Vec<(PathBuf, u32, bool)> {
    let meta = std::fs::symlink_metadata(root).unwrap();
    let mut out = vec![(root.to_path_buf(), meta.permissions().mode() & 0o7777, meta.is_dir())];
    if meta.is_dir() {
        for e in std::fs::read_dir(root).unwrap() {
            out.extend(modes(&e.unwrap().path()));
        }
    }
    out
}

/// Sets the process's umask for as long as it lives. Process-wide: only this file's one test
/// uses it, and 022 is what a shell usually has anyway, so a concurrent test is not disturbed.
struct Umask(libc::mode_t);

impl Umask {
    fn set(mask: libc::mode_t) -> Umask {
        // SAFETY: umask(2) cannot fail; it only swaps the process's file-creation mask.
        Umask(unsafe { libc::umask(mask) })
    }
}

impl Drop for Umask {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::umask(self.0) };
    }
}

#[test]
fn a_backup_under_umask_022_is_private_and_check_names_what_is_not() {
    let dir = TestDir::new();
    let db = small_db("priv_file");
    let store = dir.path().join("store");
    let config = dir.write_config(&format!("[store]\nurl = \"file://{}\"\n\n{}", store.display(), env_section(&db)));

    let umask = Umask::set(0o022);
    let r = drctl(&config).args(["backup", "-o", "json"]).run().expect_code(0);
    let id = r.json()["id"].as_str().unwrap().to_string();
    // Twice, so a journal-index checkpoint, a renewed and released lock and a second backup are there too.
    drctl(&config).args(["backup"]).run().expect_code(0);
    drop(umask);

    let all = modes(&store);
    let files = all.iter().filter(|(_, _, d)| !d).count();
    assert!(files >= 8, "too few files to mean much: {all:?}");
    for (path, mode, is_dir) in &all {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} is {mode:04o}, not {want:04o}", path.display());
    }
    for must in ["journal", "locks/env:prod.json", &format!("backups/prod/{id}/manifest.json")] {
        assert!(all.iter().any(|(p, _, _)| p == &store.join(must)), "{must} not in the store: {all:?}");
    }
    let r = drctl(&config).args(["check", "-o", "json"]).run().expect_code(0);
    let private = store_check(&r, "store-private");
    assert_eq!(private["ok"], true, "{private}");

    // One object made group-readable by hand: check fails (exit 3), naming it and its mode.
    let manifest = store.join(format!("backups/prod/{id}/manifest.json"));
    std::fs::set_permissions(&manifest, std::fs::Permissions::from_mode(0o640)).unwrap();
    let r = drctl(&config).args(["check", "-o", "json"]).run().expect_code(3);
    assert_eq!(r.json()["ok"], false);
    let private = store_check(&r, "store-private");
    assert_eq!(private["ok"], false, "{private}");
    let detail = private["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("backups/prod/{id}/manifest.json (0640)")), "{detail}");
    assert!(detail.contains("1 of "), "{detail}");
    let fix = format!("chmod -R go-rwx {}", store.display());
    assert!(detail.contains(&fix), "{detail}");
    // Every other check still passes: this one alone is why check failed.
    let doc = r.json();
    let failed: Vec<&Value> = doc["checks"].as_array().unwrap().iter().filter(|c| c["ok"] == false).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    // The table form says it too.
    let t = drctl(&config).args(["check"]).run().expect_code(3);
    assert!(t.stdout.contains("store-private") && t.stdout.contains("FAILED"), "{}", t.stdout);

    // The fix it names is the fix.
    let status = std::process::Command::new("sh").args(["-c", &fix]).status().unwrap();
    assert!(status.success());
    drctl(&config).args(["check"]).run().expect_code(0);
}

fn s3() -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(&crate::clients::sdk()).force_path_style(true).build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn s3_config(dir: &TestDir, bucket: &str, store_extra: &str, db: &str) -> PathBuf {
    dir.write_config(&format!(
        "[store]\nurl = \"s3://{bucket}/drctl\"\n{store_extra}\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\n{}",
        Moto::shared().endpoint(),
        env_section(db)
    ))
}

/// Every object under `prefix` in `bucket`: (key, ETag, encryption algorithm, KMS key id), as
/// HeadObject reports them.
async fn objects(c: &aws_sdk_s3::Client, bucket: &str) -> Vec<(String, String, Option<String>, Option<String>)> {
    let listed = c.list_objects_v2().bucket(bucket).send().await.expect("ListObjectsV2");
    let mut out = Vec::new();
    for o in listed.contents() {
        let key = o.key().unwrap().to_string();
        let h = c.head_object().bucket(bucket).key(&key).send().await.expect("HeadObject");
        out.push((
            key,
            h.e_tag().unwrap_or_default().trim_matches('"').to_string(),
            h.server_side_encryption().map(|a| a.as_str().to_string()),
            h.ssekms_key_id().map(str::to_string),
        ));
    }
    out
}

#[test]
fn every_object_drctl_writes_to_s3_carries_the_configured_encryption() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let moto = Moto::shared();
    let db = incompressible_db("priv_sse");
    let c = s3();
    for (name, extra, want) in [
        ("sse-aes", "sse = \"AES256\"\n", (Some("AES256"), None)),
        ("sse-kms", "sse = \"aws:kms\"\nkms_key_id = \"alias/drctl-it\"\n", (Some("aws:kms"), Some("alias/drctl-it"))),
    ] {
        let bucket = Moto::unique_bucket(name);
        moto.create_bucket(&bucket);
        let dir = TestDir::new();
        let config = s3_config(&dir, &bucket, extra, &db);
        let r = drctl(&config).args(["backup", "-o", "json"]).run().expect_code(0);
        let id = r.json()["id"].as_str().unwrap().to_string();

        let all = rt.block_on(objects(&c, &bucket));
        let want = (want.0.map(str::to_string), want.1.map(str::to_string));
        for (key, _, algorithm, key_id) in &all {
            assert_eq!((algorithm, key_id), (&want.0, &want.1), "{name}: s3://{bucket}/{key}");
        }
        let has = |k: &str| all.iter().find(|(key, ..)| key == k);
        let data = has(&format!("drctl/backups/prod/{id}/{db}.dump.zst.000"))
            .unwrap_or_else(|| panic!("{name}: no data object in {all:?}"));
        // A multipart ETag ends in its part count: the data object went up in parts.
        assert!(data.1.contains('-'), "{name}: the data object was not a multipart upload: {data:?}");
        assert!(has(&format!("drctl/backups/prod/{id}/manifest.json")).is_some(), "{name}: {all:?}");
        assert!(has("drctl/locks/env:prod.json").is_some(), "{name}: {all:?}");
        let journal = all.iter().filter(|(k, ..)| k.starts_with("drctl/journal/")).count();
        assert!(journal >= 3, "{name}: {journal} journal entries in {all:?}");
    }
}

async fn set_up_right(c: &aws_sdk_s3::Client, bucket: &str) {
    let block = PublicAccessBlockConfiguration::builder()
        .block_public_acls(true)
        .ignore_public_acls(true)
        .block_public_policy(true)
        .restrict_public_buckets(true)
        .build();
    c.put_public_access_block().bucket(bucket).public_access_block_configuration(block).send().await.unwrap();
    let by_default = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::AwsKms)
        .kms_master_key_id("alias/b")
        .build();
    let rule = ServerSideEncryptionRule::builder().apply_server_side_encryption_by_default(by_default.unwrap()).build();
    let conf = ServerSideEncryptionConfiguration::builder().rules(rule).build().unwrap();
    c.put_bucket_encryption().bucket(bucket).server_side_encryption_configuration(conf).send().await.unwrap();
    let on = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    c.put_bucket_versioning().bucket(bucket).versioning_configuration(on).send().await.unwrap();
}

#[test]
fn check_passes_a_bucket_set_up_right_and_fails_a_bare_one_by_id() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let moto = Moto::shared();
    let db = small_db("priv_bucket");
    let ids = ["store-private", "bucket-encryption", "bucket-versioning"];

    let good = Moto::unique_bucket("good");
    moto.create_bucket(&good);
    rt.block_on(set_up_right(&s3(), &good));
    let dir = TestDir::new();
    let r = drctl(&s3_config(&dir, &good, "", &db)).args(["check", "-o", "json"]).run().expect_code(0);
    for id in ids {
        let c = store_check(&r, id);
        assert_eq!(c["ok"], true, "{c}");
    }
    let enc = store_check(&r, "bucket-encryption");
    assert!(enc["detail"].as_str().unwrap().contains("aws:kms (key alias/b)"), "{enc}");

    let bare = Moto::unique_bucket("bare");
    moto.create_bucket(&bare);
    let r = drctl(&s3_config(&dir, &bare, "", &db)).args(["check", "-o", "json"]).run().expect_code(3);
    let failed: Vec<String> = r.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| format!("{} {}", c["target"].as_str().unwrap(), c["check"].as_str().unwrap()))
        .collect();
    assert_eq!(failed, ids.map(|id| format!("store {id}")), "{}", r.stdout);
    for (id, says) in [
        ("store-private", "put-public-access-block"),
        ("bucket-encryption", "[store] sse"),
        ("bucket-versioning", "Status=Enabled"),
    ] {
        let c = store_check(&r, id);
        assert!(c["detail"].as_str().unwrap().contains(says), "{c}");
    }
    // drctl's own sse is enough for encryption; the rest still fail.
    let r =
        drctl(&s3_config(&dir, &bare, "sse = \"AES256\"\n", &db)).args(["check", "-o", "json"]).run().expect_code(3);
    let enc = store_check(&r, "bucket-encryption");
    assert_eq!(enc["ok"], true, "{enc}");
    assert_eq!(store_check(&r, "bucket-versioning")["ok"], false);
}

#[test]
fn bad_encryption_settings_are_exit_2_naming_the_key() {
    let dir = TestDir::new();
    let env = "[environments.prod]\ndatabase_url = \"postgres://app@127.0.0.1:1/app\"\n";
    for (store, key) in [
        ("url = \"s3://b-x/p\"\nsse = \"aes256\"\n", "[store] sse"),
        ("url = \"s3://b-x/p\"\nkms_key_id = \"alias/k\"\n", "[store] kms_key_id"),
        ("url = \"s3://b-x/p\"\nsse = \"AES256\"\nkms_key_id = \"alias/k\"\n", "[store] kms_key_id"),
        ("url = \"file:///tmp/x\"\nsse = \"AES256\"\n", "[store] sse"),
    ] {
        let config = dir.write_config(&format!("[store]\n{store}\n{env}"));
        let r = Drctl::new().config(&config).args(["check"]).run().expect_code(2);
        assert!(r.stderr.contains(key), "{store}: {}", r.stderr);
    }
}
