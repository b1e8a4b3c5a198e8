//! status --audit against moto (S3 bucket settings, RDS instances) and the real cluster (chain
//! tables, backups): each item passes when the setup is right and fails, by its id, when it is not;
//! any failed item is exit 3 with a hint naming the failed ids; and the audit writes nothing.

use std::path::{Path, PathBuf};

use aws_sdk_s3::types::{
    BucketVersioningStatus, PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, VersioningConfiguration,
};
use serde_json::Value;

use crate::clients::sdk;
use crate::harness::drctl::{Drctl, RunResult};
use crate::harness::moto::Moto;
use crate::harness::pg::Cluster;
use crate::harness::{TestDir, unique_name};

/// The audit's items of one run, checked for the document's shape on the way.
fn items(r: &RunResult) -> Vec<Value> {
    let doc = r.json();
    let keys: Vec<&str> = doc.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["audit", "ok"], "{doc}");
    let items = doc["audit"].as_array().unwrap().clone();
    for i in &items {
        let mut keys: Vec<&str> = i.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["detail", "id", "ok", "target"], "{i}");
    }
    assert_eq!(doc["ok"], items.iter().all(|i| i["ok"] == true), "{doc}");
    items
}

/// The item `id` of `target`; panics naming both when the audit has no such item.
fn item(items: &[Value], id: &str, target: &str) -> Value {
    items
        .iter()
        .find(|i| i["id"] == id && i["target"] == target)
        .unwrap_or_else(|| panic!("no {id} {target} in {items:#?}"))
        .clone()
}

fn assert_item(items: &[Value], id: &str, target: &str, ok: bool, detail_has: &[&str]) -> Value {
    let i = item(items, id, target);
    assert_eq!(i["ok"], ok, "{i}");
    let detail = i["detail"].as_str().unwrap();
    for part in detail_has {
        assert!(detail.contains(part), "{id} {target}: {detail:?} lacks {part:?}");
    }
    i
}

fn audit(config: &Path, code: i32) -> (RunResult, Vec<Value>) {
    let r = Drctl::new()
        .config(config)
        .env("TEST_PG_PASSWORD", Cluster::shared().password())
        .args(["status", "--audit", "-o", "json"])
        .run();
    r.assert_no_secret(Cluster::shared().password());
    let r = r.expect_code(code);
    let items = items(&r);
    (r, items)
}

fn s3() -> aws_sdk_s3::Client {
    // moto serves buckets by path, as drctl's own client does against a custom endpoint.
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk()).force_path_style(true).build())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

// --- the S3 store -----------------------------------------------------------------------------

#[test]
fn an_s3_store_passes_only_with_its_public_access_block_default_encryption_and_versioning() {
    let bucket = Moto::unique_bucket("audit");
    Moto::shared().create_bucket(&bucket);
    let dir = TestDir::new();
    let url = format!("s3://{bucket}/drctl");
    let cfg = dir.write_config(&format!(
        "[store]\nurl = \"{url}\"\n\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\n\
         [environments.prod]\ndatabase_url = \"postgres://app@127.0.0.1:1/app\"\n",
        Moto::shared().endpoint()
    ));

    // A bucket as `aws s3 mb` leaves it in moto: no block, no default encryption, no versioning.
    let (r, got) = audit(&cfg, 3);
    assert_item(&got, "store-private", &url, false, &["no public access block", "put-public-access-block"]);
    assert_item(&got, "store-encrypted", &url, false, &["no default encryption", "put-bucket-encryption"]);
    // moto roots its GetBucketVersioning answer where the SDK does not look for it: this also
    // shows drctl reading such an answer's Status (src/runbooks/audit.rs `status_in_body`).
    assert_item(&got, "bucket-versioning", &url, false, &["never enabled", "Status=Enabled"]);
    // The hint names every failed id once, in the audit's order.
    assert!(
        r.stderr.contains(
            "failed: store-private, store-encrypted, bucket-versioning, backup-deep-verified, backup-drilled"
        ),
        "{}",
        r.stderr
    );

    let c = s3();
    rt().block_on(async {
        // Three of the four block settings: the one left off is named.
        let partial = PublicAccessBlockConfiguration::builder()
            .block_public_acls(true)
            .ignore_public_acls(true)
            .block_public_policy(true)
            .restrict_public_buckets(false)
            .build();
        c.put_public_access_block().bucket(&bucket).public_access_block_configuration(partial).send().await.unwrap();
        let suspended = VersioningConfiguration::builder().status(BucketVersioningStatus::Suspended).build();
        c.put_bucket_versioning().bucket(&bucket).versioning_configuration(suspended).send().await.unwrap();
    });
    let (_, got) = audit(&cfg, 3);
    assert_item(&got, "store-private", &url, false, &["off for RestrictPublicBuckets:"]);
    assert_item(&got, "bucket-versioning", &url, false, &["versioning Suspended"]);

    rt().block_on(async {
        let all = PublicAccessBlockConfiguration::builder()
            .block_public_acls(true)
            .ignore_public_acls(true)
            .block_public_policy(true)
            .restrict_public_buckets(true)
            .build();
        c.put_public_access_block().bucket(&bucket).public_access_block_configuration(all).send().await.unwrap();
        let kms = ServerSideEncryptionByDefault::builder().sse_algorithm(ServerSideEncryption::AwsKms).build().unwrap();
        let rule = ServerSideEncryptionRule::builder().apply_server_side_encryption_by_default(kms).build();
        let sse = ServerSideEncryptionConfiguration::builder().rules(rule).build().unwrap();
        c.put_bucket_encryption().bucket(&bucket).server_side_encryption_configuration(sse).send().await.unwrap();
        let on = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
        c.put_bucket_versioning().bucket(&bucket).versioning_configuration(on).send().await.unwrap();
    });
    let (_, got) = audit(&cfg, 3);
    assert_item(&got, "store-private", &url, true, &["public access block on"]);
    assert_item(&got, "store-encrypted", &url, true, &["default encryption: aws:kms"]);
    assert_item(&got, "bucket-versioning", &url, true, &["versioning Enabled"]);
    // Still exit 3: the store holds no backup (the items for it say so, once, for all envs).
    assert_item(&got, "backup-deep-verified", "-", false, &["no committed backup of any env"]);
    assert_item(&got, "backup-drilled", "-", false, &["no committed backup"]);
    // The audit is read-only: it took no lock and journaled nothing.
    let listed = rt().block_on(async { c.list_objects_v2().bucket(&bucket).send().await.unwrap() });
    assert_eq!(listed.key_count(), Some(0), "{listed:?}");
}

// --- RDS --------------------------------------------------------------------------------------

/// A PostgreSQL instance in moto with this retention and Multi-AZ setting; its id.
async fn instance(client: &aws_sdk_rds::Client, prefix: &str, retention: i32, multi_az: bool) -> String {
    let id = unique_name(prefix).replace('_', "-");
    client
        .create_db_instance()
        .db_instance_identifier(&id)
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("app")
        .master_user_password("not-a-secret-1")
        .backup_retention_period(retention)
        .multi_az(multi_az)
        .send()
        .await
        .expect("CreateDBInstance");
    id
}

#[test]
fn rds_instances_pass_with_retained_backups_and_multi_az_and_fail_by_name_without() {
    let (good, bare) = rt().block_on(async {
        let client = aws_sdk_rds::Client::new(&sdk());
        (instance(&client, "aud-good", 7, true).await, instance(&client, "aud-bare", 0, false).await)
    });
    let dir = TestDir::new();
    // The databases need not answer: no chain is configured, so the audit never connects to them.
    let cfg = dir.write_config(&format!(
        "[store]\nurl = \"file://{}/store\"\n\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\n\
         [environments.prod]\ndatabase_url = \"postgres://app@127.0.0.1:1/app\"\nrds_instance = \"{good}\"\n\n\
         [environments.staging]\ndatabase_url = \"postgres://app@127.0.0.1:1/app\"\nrds_instance = \"{bare}\"\n\n\
         [environments.gone]\ndatabase_url = \"postgres://app@127.0.0.1:1/app\"\nrds_instance = \"aud-no-such-db\"\n",
        dir.path().display(),
        Moto::shared().endpoint()
    ));
    let (r, got) = audit(&cfg, 3);
    assert_item(&got, "rds-backup-retention", "prod", true, &[&good, "kept 7 days"]);
    assert_item(&got, "rds-multi-az", "prod", true, &[&good, "Multi-AZ"]);
    assert_item(
        &got,
        "rds-backup-retention",
        "staging",
        false,
        &[&bare, "BackupRetentionPeriod 0", "--backup-retention-period 7"],
    );
    assert_item(&got, "rds-multi-az", "staging", false, &[&bare, "single-AZ", "--multi-az"]);
    for id in ["rds-backup-retention", "rds-multi-az"] {
        assert_item(&got, id, "gone", false, &["aud-no-such-db", "DBInstanceNotFound"]);
    }
    // A file store is never an S3 bucket: the audit has no versioning item for it.
    assert!(got.iter().all(|i| i["id"] != "bucket-versioning"), "{got:#?}");
    assert!(r.stderr.contains("rds-backup-retention, rds-multi-az"), "{}", r.stderr);

    // The table has the same items, one a row.
    let t = Drctl::new().config(&cfg).args(["status", "--audit"]).run().expect_code(3);
    let row = t.stdout.lines().find(|l| l.contains("rds-multi-az") && l.contains("staging")).unwrap_or_else(|| {
        panic!("no rds-multi-az row for staging:\n{}", t.stdout);
    });
    assert!(row.contains("FAILED"), "{row}");
}

// --- chain tables -----------------------------------------------------------------------------

fn pg_config(dir: &TestDir, db: &str, chains: &[&str]) -> PathBuf {
    let mut extra = String::new();
    for t in chains {
        extra.push_str(&format!("\n[environments.prod.chains.{t}]\n"));
    }
    dir.write_config(&format!(
        "[store]\nurl = \"file://{}/store\"\n\n[environments.prod]\n\
         database_url = \"postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/{db}?sslmode=disable\"\n{extra}",
        dir.path().display(),
        Cluster::shared().port
    ))
}

/// The SQL a failed chain-append-only item gives, between the last pair of backticks.
fn suggested_sql(detail: &str) -> String {
    let end = detail.rfind('`').unwrap();
    let start = detail[..end].rfind('`').unwrap();
    detail[start + 1..end].to_string()
}

#[test]
fn a_chain_table_passes_with_an_enabled_before_update_or_delete_trigger_and_the_failure_gives_the_sql() {
    let pg = Cluster::shared();
    let db = unique_name("audit_chain");
    pg.create_db(&db);
    pg.psql(
        &db,
        "CREATE TABLE events (id bigint PRIMARY KEY, prev_hash text, hash text, payload jsonb);
         CREATE TABLE ledger (id bigint PRIMARY KEY, prev_hash text, hash text, payload jsonb);
         CREATE FUNCTION audit_log() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
         CREATE TRIGGER after_change AFTER UPDATE OR DELETE ON ledger FOR EACH ROW EXECUTE FUNCTION audit_log();",
    );
    let dir = TestDir::new();
    let cfg = pg_config(&dir, &db, &["events", "ledger", "missing"]);

    let (_, got) = audit(&cfg, 3);
    let events = assert_item(
        &got,
        "chain-append-only",
        "prod/events",
        false,
        &[
            "events: no enabled trigger fires BEFORE UPDATE or DELETE",
            "CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON events",
        ],
    );
    // An AFTER trigger sees the row already changed: it guards nothing, and the detail says why.
    assert_item(&got, "chain-append-only", "prod/ledger", false, &["after_change fires AFTER"]);
    assert_item(&got, "chain-append-only", "prod/missing", false, &["table `missing` does not exist"]);

    // The SQL the detail gives, run as given, is what makes the item pass; it blocks TRUNCATE too.
    pg.psql(&db, &suggested_sql(events["detail"].as_str().unwrap()));
    let err = pg.try_psql(&db, "INSERT INTO events VALUES (1, '', '', '{}'); UPDATE events SET payload = '[]'");
    assert!(err.is_err_and(|e| e.contains("events is append-only")), "the trigger raises");
    // A row-level BEFORE trigger that is disabled does not count; enabled, it does.
    pg.psql(
        &db,
        "CREATE TRIGGER guard BEFORE UPDATE OR DELETE ON ledger FOR EACH ROW EXECUTE FUNCTION drctl_append_only();
         ALTER TABLE ledger DISABLE TRIGGER guard;",
    );
    let (_, got) = audit(&cfg, 3);
    assert_item(&got, "chain-append-only", "prod/events", true, &["append_only (drctl_append_only())", "TRUNCATE too"]);
    assert_item(&got, "chain-append-only", "prod/ledger", false, &["guard is disabled"]);

    pg.psql(&db, "ALTER TABLE ledger ENABLE TRIGGER guard");
    let (_, got) = audit(&cfg, 3);
    assert_item(
        &got,
        "chain-append-only",
        "prod/ledger",
        true,
        &["guard (drctl_append_only())", "TRUNCATE is not blocked"],
    );
}

// --- backups ----------------------------------------------------------------------------------

#[test]
fn the_newest_backup_must_be_deep_verified_and_drilled_recently() {
    let pg = Cluster::shared();
    let db = unique_name("audit_backup");
    pg.create_db(&db);
    pg.psql(&db, "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100);");
    let dir = TestDir::new();
    let cfg = pg_config(&dir, &db, &[]);
    let store = dir.path().join("store");
    let drctl = || Drctl::new().config(&cfg).env("TEST_PG_PASSWORD", pg.password());
    drctl().arg("backup").run().expect_code(0);

    let (r, got) = audit(&cfg, 3);
    assert_item(&got, "backup-deep-verified", "prod", false, &["never deep-verified", "verify-chain --backups --deep"]);
    assert_item(&got, "backup-drilled", "prod", false, &["was never drilled", "drctl drill --env prod"]);
    // A file store: drctl writes it unencrypted, and a disk's encryption is invisible from here.
    assert_item(&got, "store-encrypted", &format!("file://{}", store.display()), false, &["unencrypted"]);
    assert!(r.stderr.contains("status --audit") && r.stderr.contains("backup-deep-verified"), "{}", r.stderr);
    assert!(r.stderr.contains("backup-drilled"), "the hint names the failed item: {}", r.stderr);

    drctl().args(["verify-chain", "--backups", "--deep"]).run().expect_code(0);
    drctl().args(["drill", "--env", "prod"]).run().expect_code(0);
    let journal = std::fs::read_dir(store.join("journal")).unwrap().count();
    let (_, got) = audit(&cfg, 3);
    assert_item(&got, "backup-deep-verified", "prod", true, &["deep-verified at", "matched"]);
    assert_item(&got, "backup-drilled", "prod", true, &["drilled at", "verified"]);
    assert_eq!(std::fs::read_dir(store.join("journal")).unwrap().count(), journal, "the audit journals nothing");

    // A newer backup, never drilled, is the one a recovery would take: the item fails again.
    drctl().arg("backup").run().expect_code(0);
    let (_, got) = audit(&cfg, 3);
    assert_item(&got, "backup-drilled", "prod", false, &["was never drilled"]);
    drctl().args(["verify-chain", "--backups", "--deep"]).run().expect_code(0);
    drctl().args(["drill", "--env", "prod"]).run().expect_code(0);

    // The same verification and drill, judged against max ages they have outlived.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let strict = dir.write(
        "strict.toml",
        &std::fs::read_to_string(&cfg).unwrap().replace(
            "[environments.prod]",
            "[policy]\nverify_max_age = \"1s\"\ndrill_max_age = \"1s\"\n\n[environments.prod]",
        ),
    );
    let (_, got) = audit(&strict, 3);
    assert_item(&got, "backup-deep-verified", "prod", false, &["longer ago than policy.verify_max_age (1s)"]);
    assert_item(&got, "backup-drilled", "prod", false, &["longer ago than policy.drill_max_age (1s)"]);
    // Within the default max ages, every backup item passes.
    let (_, got) = audit(&cfg, 3);
    assert_item(&got, "backup-deep-verified", "prod", true, &[]);
    assert_item(&got, "backup-drilled", "prod", true, &[]);
}

#[test]
fn a_file_store_is_private_when_nothing_in_it_grants_group_or_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new();
    let store = dir.path().join("store");
    let cfg = dir.write_config(&format!(
        "[store]\nurl = \"file://{}\"\n\n[environments.prod]\ndatabase_url = \"postgres://app@127.0.0.1:1/app\"\n",
        store.display()
    ));
    let url = format!("file://{}", store.display());
    let (_, got) = audit(&cfg, 3);
    assert_item(&got, "store-private", &url, false, &["does not exist"]);

    // What a store written under umask 022 looks like.
    let object = dir.write("store/backups/prod/x/app.dump.zst.000", "x");
    for p in [&store, &store.join("backups"), &store.join("backups/prod"), &store.join("backups/prod/x")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, got) = audit(&cfg, 3);
    assert_item(&got, "store-private", &url, false, &["1 of 5 entries", "app.dump.zst.000 (0644)", "chmod -R go="]);

    std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, got) = audit(&cfg, 3);
    assert_item(&got, "store-private", &url, true, &["5 entries, none readable or writable by group or others"]);
}
