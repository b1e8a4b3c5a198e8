//! status --audit: the prerequisites of a recoverable setup, each an item with a stable id, a
//! target and a verdict. `status` asks "could an env take over now?"; the audit asks "would the
//! data survive the day it has to?": a store others can read or that keeps no old versions, an RDS
//! instance without automated backups or in one zone, a chain table anyone can rewrite, a backup
//! nobody re-read or restored. Read-only like `status`: no lock, no journal entry.
//!
//! An item appears only where it applies: `bucket-versioning` only for an S3 store (a file store
//! has no versions to keep, and an item that cannot fail would read as a pass), the RDS items only
//! for envs with `rds_instance`, `chain-append-only` only for configured chain tables, and the
//! backup items for each env with a committed backup. When no env has one, the backup items appear
//! once with target `-` and fail: a store without a backup has nothing to restore.
//!
//! Ids (stable; a script may rely on them): store-private, store-encrypted, bucket-versioning,
//! rds-backup-retention, rds-multi-az, chain-append-only, backup-deep-verified, backup-drilled.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::ProvideErrorMetadata;
use serde_json::{Value, json};

use crate::clients::rds::Rds;
use crate::clients::{aws_problem, pg};
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::error::Error;
use crate::journal::fold::{Committed, DeepCheck};

/// One audited prerequisite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: &'static str,
    /// The store URL, an env, `ENV/TABLE` for a chain table, or `-` for all envs.
    pub target: String,
    pub ok: bool,
    /// What was found, and for a failed item what to do about it.
    pub detail: String,
}

impl Item {
    fn new(id: &'static str, target: impl Into<String>, verdict: (bool, String)) -> Item {
        Item { id, target: target.into(), ok: verdict.0, detail: verdict.1 }
    }
}

/// The store as the audit sees it: a directory, or a bucket (its prefix does not matter: public
/// access, encryption and versioning are the bucket's).
enum StoreAt {
    Dir(PathBuf),
    Bucket(String),
}

impl StoreAt {
    fn of(url: &str) -> StoreAt {
        match url.strip_prefix("s3://") {
            Some(rest) => StoreAt::Bucket(rest.split('/').next().unwrap_or(rest).to_string()),
            // Config loading made a relative file:// path absolute; store::open accepts only these two.
            None => StoreAt::Dir(PathBuf::from(url.strip_prefix("file://").unwrap_or(url))),
        }
    }
}

pub async fn audit(cx: &Ctx) -> (Value, String, Option<Error>) {
    // A journal that cannot be read (or fails its integrity checks) is its own error, as for `status`.
    let state = match cx.journal.state().await {
        Ok(s) => s,
        Err(e) => return (Value::Null, String::new(), Some(e)),
    };
    let url = cx.store.url().to_string();
    let store = StoreAt::of(&url);
    let mut items = vec![Item::new("store-private", &url, store_private(cx, &store).await)];
    // The third argument is drctl's own encryption of what it writes, as [store] configures it:
    // age (client-side, every data object) or S3 server-side encryption on every write.
    let own = match (&cx.config.age_recipients[..], &cx.config.store_sse) {
        ([], None) => None,
        ([], Some(crate::store::Sse::Aes256)) => Some("[store] sse = \"AES256\" on every object drctl writes".into()),
        ([], Some(crate::store::Sse::Kms { .. })) => {
            Some("[store] sse = \"aws:kms\" on every object drctl writes".into())
        }
        (r, _) => Some(format!("[store] age_recipients: every data object age-encrypted to {} key(s)", r.len())),
    };
    items.push(Item::new("store-encrypted", &url, store_encrypted(cx, &store, own).await));
    if let StoreAt::Bucket(bucket) = &store {
        items.push(Item::new("bucket-versioning", &url, bucket_versioning(cx, bucket).await));
    }
    let now = SystemTime::now();
    let mut any_backup = false;
    for env in cx.config.environments.values() {
        if let Some(id) = &env.rds_instance {
            let (retention, multi_az) = rds(cx, id).await;
            items.push(Item::new("rds-backup-retention", &env.name, retention));
            items.push(Item::new("rds-multi-az", &env.name, multi_az));
        }
        for (table, verdict) in chains(env).await {
            items.push(Item::new("chain-append-only", format!("{}/{table}", env.name), verdict));
        }
        if let Some(newest) = state.committed(Some(&env.name)).last() {
            any_backup = true;
            items.push(Item::new(
                "backup-deep-verified",
                &env.name,
                deep_verified(newest, now, cx.config.policy.verify_max_age),
            ));
            items.push(Item::new("backup-drilled", &env.name, drilled(newest, now, cx.config.policy.drill_max_age)));
        }
    }
    if !any_backup {
        let none = "no committed backup of any env: nothing to verify or restore; run `drctl backup`".to_string();
        items.push(Item::new("backup-deep-verified", "-", (false, none.clone())));
        items.push(Item::new("backup-drilled", "-", (false, none)));
    }
    report(&items)
}

/// The document, the table and, when an item failed, the exit-3 error naming the failed ids.
fn report(items: &[Item]) -> (Value, String, Option<Error>) {
    let ok = items.iter().all(|i| i.ok);
    let doc = json!({
        "ok": ok,
        "audit": items.iter().map(|i| json!({"id": i.id, "target": i.target, "ok": i.ok, "detail": i.detail}))
            .collect::<Vec<_>>(),
    });
    let mut t = crate::output::table::new_table(&["id", "target", "ok", "detail"]);
    for i in items {
        t.add_row(vec![
            i.id.to_string(),
            i.target.clone(),
            if i.ok { "ok".into() } else { "FAILED".into() },
            i.detail.clone(),
        ]);
    }
    let failed: Vec<&Item> = items.iter().filter(|i| !i.ok).collect();
    let error = (!failed.is_empty()).then(|| {
        let mut ids: Vec<String> = Vec::new();
        for i in &failed {
            if !ids.iter().any(|id| id == i.id) {
                ids.push(i.id.to_string());
            }
        }
        // The details are in the report above the error; the error names what failed, not why.
        Error::Audit { failed: failed.iter().map(|i| format!("{} {}", i.id, i.target)).collect(), ids }
    });
    (doc, t.to_string(), error)
}

// --- the store --------------------------------------------------------------------------------

/// `store-private`: a directory and everything in it without group or other permission bits; a
/// bucket whose own public access block has all four settings on.
async fn store_private(cx: &Ctx, store: &StoreAt) -> (bool, String) {
    match store {
        StoreAt::Dir(dir) => {
            let d = dir.clone();
            match tokio::task::spawn_blocking(move || loose_modes(&d)).await {
                Ok(r) => dir_private(dir, r),
                Err(e) => (false, format!("{}: the walk stopped: {e}", dir.display())),
            }
        }
        StoreAt::Bucket(bucket) => {
            let s3 = cx.aws.s3().await;
            let fix = format!(
                "`aws s3api put-public-access-block --bucket {bucket} --public-access-block-configuration \
                 BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true`"
            );
            match s3.get_public_access_block().bucket(bucket).send().await {
                Ok(out) => {
                    let c = out.public_access_block_configuration();
                    let settings = [
                        ("BlockPublicAcls", c.and_then(|c| c.block_public_acls())),
                        ("IgnorePublicAcls", c.and_then(|c| c.ignore_public_acls())),
                        ("BlockPublicPolicy", c.and_then(|c| c.block_public_policy())),
                        ("RestrictPublicBuckets", c.and_then(|c| c.restrict_public_buckets())),
                    ];
                    let off: Vec<&str> = settings.iter().filter(|(_, v)| *v != Some(true)).map(|(k, _)| *k).collect();
                    if off.is_empty() {
                        (true, format!("bucket {bucket}: public access block on (all four settings)"))
                    } else {
                        (false, format!("bucket {bucket}: public access block off for {}: {fix}", off.join(", ")))
                    }
                }
                Err(e) if e.code() == Some("NoSuchPublicAccessBlockConfiguration") => (
                    false,
                    format!(
                        "bucket {bucket} has no public access block of its own (an account-level one is not \
                         read): {fix}"
                    ),
                ),
                Err(e) => (false, format!("bucket {bucket}: GetPublicAccessBlock: {}", aws_problem("S3", &e))),
            }
        }
    }
}

/// What a walk of the store directory found: how many entries it looked at, and those granting
/// group or others any access (path, mode).
type Walk = std::io::Result<(u64, Vec<(PathBuf, u32)>)>;

/// Every entry under `root` (the root too, followed if it is a symlink) whose permission bits give
/// group or others anything. Symlinks inside are not followed, and their own bits (always 0777 on
/// Linux) mean nothing, so they are not judged.
fn loose_modes(root: &Path) -> Walk {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(root)?;
    let mut seen = 1u64;
    let mut loose = Vec::new();
    if meta.permissions().mode() & 0o077 != 0 {
        loose.push((root.to_path_buf(), meta.permissions().mode() & 0o7777));
    }
    let mut dirs = if meta.is_dir() { vec![root.to_path_buf()] } else { Vec::new() };
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let m = entry.metadata()?;
            if m.file_type().is_symlink() {
                continue;
            }
            seen += 1;
            let mode = m.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                loose.push((entry.path(), mode));
            }
            if m.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    loose.sort();
    Ok((seen, loose))
}

fn dir_private(dir: &Path, walk: Walk) -> (bool, String) {
    let shown = dir.display();
    match walk {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (false, format!("{shown} does not exist: nothing was written to the store yet, so nothing to judge"))
        }
        Err(e) => (false, format!("{shown}: {e}")),
        Ok((seen, loose)) if loose.is_empty() => {
            (true, format!("{shown}: {seen} entries, none readable or writable by group or others"))
        }
        Ok((seen, loose)) => {
            let examples: Vec<String> =
                loose.iter().take(3).map(|(p, mode)| format!("{} ({mode:04o})", p.display())).collect();
            (
                false,
                format!(
                    "{} of {seen} entries grant group or others access, e.g. {}: `chmod -R go= {shown}`, and run \
                     drctl with `umask 077` so new ones do not",
                    loose.len(),
                    examples.join(", ")
                ),
            )
        }
    }
}

/// `store-encrypted`. `configured` describes the encryption drctl itself applies to what it writes
/// (`None` when it applies none); the caller derives it from the `[store]` config. It is enough on
/// its own; without it, a bucket's default encryption is, and a file store fails: the encryption
/// of the disk under it is invisible from here.
async fn store_encrypted(cx: &Ctx, store: &StoreAt, configured: Option<String>) -> (bool, String) {
    let bucket = match store {
        StoreAt::Dir(dir) => {
            return match configured {
                Some(c) => (true, format!("drctl encrypts what it writes: {c}")),
                None => (
                    false,
                    format!(
                        "{}: drctl writes the objects unencrypted, and whether the disk under them is encrypted \
                         is not visible to it",
                        dir.display()
                    ),
                ),
            };
        }
        StoreAt::Bucket(b) => b,
    };
    let s3 = cx.aws.s3().await;
    let default = match s3.get_bucket_encryption().bucket(bucket).send().await {
        Ok(out) => {
            let rules = out.server_side_encryption_configuration().map(|c| c.rules()).unwrap_or_default();
            let algorithms: Vec<String> = rules
                .iter()
                .filter_map(|r| r.apply_server_side_encryption_by_default())
                .map(|d| match d.kms_master_key_id() {
                    Some(key) => format!("{} (key {key})", d.sse_algorithm().as_str()),
                    None => d.sse_algorithm().as_str().to_string(),
                })
                .collect();
            Ok((!algorithms.is_empty()).then(|| algorithms.join(", ")))
        }
        Err(e) if e.code() == Some("ServerSideEncryptionConfigurationNotFoundError") => Ok(None),
        Err(e) => Err(format!("GetBucketEncryption: {}", aws_problem("S3", &e))),
    };
    match (configured, default) {
        (Some(c), Ok(Some(d))) => (true, format!("drctl encrypts what it writes: {c}; bucket {bucket} default: {d}")),
        (Some(c), _) => (true, format!("drctl encrypts what it writes: {c}")),
        (None, Ok(Some(d))) => (true, format!("bucket {bucket} default encryption: {d}")),
        (None, Ok(None)) => (
            false,
            format!(
                "bucket {bucket} has no default encryption and drctl does not encrypt what it writes: `aws s3api \
                 put-bucket-encryption --bucket {bucket} --server-side-encryption-configuration \
                 '{{\"Rules\":[{{\"ApplyServerSideEncryptionByDefault\":{{\"SSEAlgorithm\":\"aws:kms\"}}}}]}}'`"
            ),
        ),
        (None, Err(problem)) => (false, format!("bucket {bucket}: {problem}")),
    }
}

/// `bucket-versioning`: Enabled, so an object overwritten or deleted (by a bug, a person or
/// ransomware with the host's credentials) can be recovered.
async fn bucket_versioning(cx: &Ctx, bucket: &str) -> (bool, String) {
    match cx.aws.s3().await.get_bucket_versioning().bucket(bucket).send().await {
        Ok(out) => versioning(bucket, out.status().map(|s| s.as_str())),
        Err(e) => match status_in_body(&e) {
            Some(status) => versioning(bucket, status.as_deref()),
            None => (false, format!("bucket {bucket}: GetBucketVersioning: {}", aws_problem("S3", &e))),
        },
    }
}

/// The Status of a 200 GetBucketVersioning answer the SDK refused to parse (`Some(None)`: no
/// Status, never versioned). S3 roots the document at VersioningConfiguration; an S3-compatible
/// server may root it elsewhere (moto: GetBucketVersioningResponse) with the same elements, and
/// the Status element is all the verdict needs.
fn status_in_body<E>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Option<Option<String>> {
    let raw = e.raw_response()?;
    if raw.status().as_u16() != 200 {
        return None;
    }
    let body = std::str::from_utf8(raw.body().bytes()?).ok()?;
    if !body.contains("Versioning") {
        return None;
    }
    Some(
        body.split_once("<Status>")
            .and_then(|(_, rest)| rest.split_once("</Status>"))
            .map(|(s, _)| s.trim().to_string()),
    )
}

/// The verdict on a bucket's versioning Status; `None` for a bucket whose versioning was never set.
fn versioning(bucket: &str, status: Option<&str>) -> (bool, String) {
    let fix = format!("`aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled`");
    match status {
        Some("Enabled") => (true, format!("bucket {bucket}: versioning Enabled")),
        Some(other) => (false, format!("bucket {bucket}: versioning {other}: an overwritten object is gone: {fix}")),
        None => (false, format!("bucket {bucket}: versioning was never enabled: {fix}")),
    }
}

// --- RDS --------------------------------------------------------------------------------------

/// `rds-backup-retention` (automated backups kept at least 1 day) and `rds-multi-az`, from one
/// DescribeDBInstances.
async fn rds(cx: &Ctx, id: &str) -> ((bool, String), (bool, String)) {
    let info = match cx.rds_api().await.describe(id).await {
        Ok(Some(i)) => i,
        Ok(None) => {
            let gone = format!("{id}: DBInstanceNotFound: RDS has no such instance");
            return ((false, gone.clone()), (false, gone));
        }
        Err(e) => return ((false, e.to_string()), (false, e.to_string())),
    };
    let modify = format!("`aws rds modify-db-instance --db-instance-identifier {id}");
    let retention = match info.backup_retention_days {
        Some(d) if d >= 1 => {
            (true, format!("{id}: automated backups kept {d} days (point-in-time restore within them)"))
        }
        Some(d) => (
            false,
            format!(
                "{id}: BackupRetentionPeriod {d}: automated backups and point-in-time restore are off: {modify} \
                 --backup-retention-period 7 --apply-immediately`"
            ),
        ),
        None => (false, format!("{id}: RDS did not report BackupRetentionPeriod")),
    };
    let multi_az = match info.multi_az {
        Some(true) => (true, format!("{id}: Multi-AZ (a synchronous standby in another availability zone)")),
        Some(false) => (
            false,
            format!("{id}: single-AZ: losing its zone loses the instance: {modify} --multi-az --apply-immediately`"),
        ),
        None => (false, format!("{id}: RDS did not report MultiAZ")),
    };
    (retention, multi_az)
}

// --- chain tables -----------------------------------------------------------------------------

/// pg_trigger.tgtype bits (PostgreSQL's catalog/pg_trigger.h).
const TRIGGER_BEFORE: i32 = 1 << 1;
const TRIGGER_DELETE: i32 = 1 << 3;
const TRIGGER_UPDATE: i32 = 1 << 4;
const TRIGGER_TRUNCATE: i32 = 1 << 5;

/// A user trigger on a chain table, as pg_trigger and pg_proc describe it.
#[derive(Debug, Clone)]
struct Trigger {
    name: String,
    tgtype: i32,
    /// pg_trigger.tgenabled: `O` (origin and local sessions) and `A` (always) fire in an ordinary
    /// session; `D` is disabled and `R` fires only under session_replication_role = replica.
    enabled: String,
    /// It has a WHEN condition, so it does not fire on every UPDATE or DELETE.
    conditional: bool,
    /// Its function, as regprocedure shows it.
    function: String,
}

/// `chain-append-only` for each configured chain table of `env`: (table, verdict).
async fn chains(env: &EnvConfig) -> Vec<(String, (bool, String))> {
    if env.chains.is_empty() {
        return Vec::new();
    }
    let tables: Vec<String> = env.chains.keys().cloned().collect();
    let client = match pg::connect(&env.database_url).await {
        Ok(c) => c,
        Err(e) => {
            let why = format!("cannot read its triggers: {e}");
            return tables.into_iter().map(|t| (t, (false, why.clone()))).collect();
        }
    };
    let mut out = Vec::new();
    for table in tables {
        let verdict = match triggers(&client, &table).await {
            Ok(Some((name, trigs))) => append_only(&name, &trigs),
            Ok(None) => (
                false,
                format!("table `{table}` does not exist in env {} (database {})", env.name, env.database_url.dbname),
            ),
            Err(e) => (false, format!("reading the triggers of {table}: {}", pg::describe(&e))),
        };
        out.push((table, verdict));
    }
    out
}

/// The table's name as the server quotes it and its user triggers; `None` when there is no such table.
async fn triggers(
    client: &tokio_postgres::Client,
    table: &str,
) -> Result<Option<(String, Vec<Trigger>)>, tokio_postgres::Error> {
    let row = client.query_one("SELECT to_regclass($1)::text", &[&table]).await?;
    let Some(name) = row.get::<_, Option<String>>(0) else { return Ok(None) };
    let rows = client
        .query(
            "SELECT t.tgname::text, t.tgtype::int4, t.tgenabled::text, t.tgqual IS NOT NULL, \
                    t.tgfoid::regprocedure::text \
             FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid \
             WHERE t.tgrelid = to_regclass($1) AND NOT t.tgisinternal ORDER BY t.tgname",
            &[&table],
        )
        .await?;
    let trigs = rows
        .iter()
        .map(|r| Trigger {
            name: r.get(0),
            tgtype: r.get(1),
            enabled: r.get(2),
            conditional: r.get(3),
            function: r.get(4),
        })
        .collect();
    Ok(Some((name, trigs)))
}

/// Passes when enabled, unconditional BEFORE triggers cover both UPDATE and DELETE (one trigger or
/// several). The functions' bodies are not judged, only named: what they do is the application's.
/// TRUNCATE (which skips row triggers) is reported, not required.
fn append_only(table: &str, trigs: &[Trigger]) -> (bool, String) {
    let firing: Vec<&Trigger> = trigs
        .iter()
        .filter(|t| t.tgtype & TRIGGER_BEFORE != 0 && (t.enabled == "O" || t.enabled == "A") && !t.conditional)
        .collect();
    let covers = |bit: i32| firing.iter().any(|t| t.tgtype & bit != 0);
    let guards: Vec<&Trigger> = firing
        .iter()
        .copied()
        .filter(|t| t.tgtype & (TRIGGER_UPDATE | TRIGGER_DELETE | TRIGGER_TRUNCATE) != 0)
        .collect();
    let named = guards.iter().map(|t| format!("{} ({})", t.name, t.function)).collect::<Vec<_>>().join(", ");
    if covers(TRIGGER_UPDATE) && covers(TRIGGER_DELETE) {
        let truncate = if covers(TRIGGER_TRUNCATE) {
            "TRUNCATE too".to_string()
        } else {
            format!(
                "TRUNCATE is not blocked (it fires no row trigger): also `CREATE TRIGGER append_only_truncate BEFORE \
                 TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION drctl_append_only();`"
            )
        };
        return (true, format!("{table}: BEFORE UPDATE and DELETE blocked by {named}; {truncate}"));
    }
    let mut found = Vec::new();
    let missing: Vec<&str> = [("UPDATE", TRIGGER_UPDATE), ("DELETE", TRIGGER_DELETE)]
        .iter()
        .filter(|(_, bit)| !covers(*bit))
        .map(|(op, _)| *op)
        .collect();
    for t in trigs.iter().filter(|t| t.tgtype & (TRIGGER_UPDATE | TRIGGER_DELETE) != 0) {
        if t.tgtype & TRIGGER_BEFORE == 0 {
            found.push(format!("{} fires AFTER, when the row is already changed", t.name));
        } else if t.enabled == "D" {
            found.push(format!("{} is disabled", t.name));
        } else if t.enabled == "R" {
            found.push(format!("{} fires only for replica sessions (ENABLE REPLICA)", t.name));
        } else if t.conditional {
            found.push(format!("{} has a WHEN condition, so it does not fire on every change", t.name));
        }
    }
    let found = if found.is_empty() { String::new() } else { format!(" ({})", found.join("; ")) };
    (
        false,
        format!(
            "{table}: no enabled trigger fires BEFORE {}{found}, so a row can be rewritten or removed and the chain \
             re-hashed over it; add one: `CREATE OR REPLACE FUNCTION drctl_append_only() RETURNS trigger LANGUAGE \
             plpgsql AS $$BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END$$; CREATE TRIGGER \
             append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION \
             drctl_append_only();`",
            missing.join(" or ")
        ),
    )
}

// --- backups ----------------------------------------------------------------------------------

/// `backup-deep-verified`: the newest backup's objects re-hashed by `verify-chain --backups
/// --deep`, matched, and that no longer than `max_age` ago. An older backup's check says nothing
/// about the newest one, which is the one a restore would take.
fn deep_verified(newest: &Committed, now: SystemTime, max_age: Duration) -> (bool, String) {
    let id = &newest.id;
    let rerun = "run `drctl verify-chain --backups --deep`".to_string();
    let failed = |time: &str| {
        format!(
            "newest backup {id} FAILED deep verification at {time}: its objects do not match their sha256; \
             see `drctl backup list` and take a new backup"
        )
    };
    recent(
        newest,
        newest.deep.as_ref(),
        now,
        max_age,
        Words {
            did: "deep-verified",
            key: "policy.verify_max_age",
            passed: "its objects matched",
            rerun,
            failed: &failed,
        },
    )
}

/// `backup-drilled`: the newest backup restored by `drill` into a scratch copy that verified (row
/// counts, chains), and that no longer than `max_age` ago. A drill of an older backup says nothing
/// about the newest one, which is the one a recovery would take; a failed last drill fails.
fn drilled(newest: &Committed, now: SystemTime, max_age: Duration) -> (bool, String) {
    let id = &newest.id;
    let rerun = format!("run `drctl drill --env {}`", newest.env);
    let failed = |time: &str| {
        format!(
            "newest backup {id} FAILED its last drill at {time}: `drctl log --runbook drill` says why; fix it, then \
             run `drctl drill --env {}`",
            newest.env
        )
    };
    recent(
        newest,
        newest.drilled.as_ref(),
        now,
        max_age,
        Words {
            did: "drilled",
            key: "policy.drill_max_age",
            passed: "restored into a scratch copy that verified",
            rerun,
            failed: &failed,
        },
    )
}

/// How `recent` words one kind of check of a backup.
struct Words<'a> {
    /// `deep-verified`, `drilled`.
    did: &'static str,
    /// The policy key holding the age limit.
    key: &'static str,
    /// After "…ago): " when it passed.
    passed: &'static str,
    /// What to run.
    rerun: String,
    /// The whole verdict when the last check failed, given its time.
    failed: &'a dyn Fn(&str) -> String,
}

/// The verdict on the newest backup's last check of one kind: never done, failed, at an
/// unreadable time, longer ago than `max_age` (judged to the millisecond, shown to the second), or
/// passed.
fn recent(
    newest: &Committed,
    last: Option<&DeepCheck>,
    now: SystemTime,
    max_age: Duration,
    w: Words,
) -> (bool, String) {
    let (id, did, rerun) = (&newest.id, w.did, &w.rerun);
    let Some(d) = last else {
        return (false, format!("newest backup {id} was never {did}: {rerun}"));
    };
    if !d.ok {
        return (false, (w.failed)(&d.time));
    }
    let Ok(at) = humantime::parse_rfc3339(&d.time) else {
        return (false, format!("newest backup {id}: {did} at an unreadable time `{}`: {rerun}", d.time));
    };
    let age = now.duration_since(at).unwrap_or_default();
    let shown = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string();
    if age > max_age {
        return (
            false,
            format!(
                "newest backup {id} was last {did} at {} ({} ago), longer ago than {} ({}): {rerun}",
                d.time,
                shown(age),
                w.key,
                shown(max_age)
            ),
        );
    }
    (true, format!("newest backup {id} {did} at {} ({} ago): {}", d.time, shown(age), w.passed))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::journal::fold::DeepCheck;

    fn trig(name: &str, tgtype: i32, enabled: &str) -> Trigger {
        Trigger {
            name: name.into(),
            tgtype,
            enabled: enabled.into(),
            conditional: false,
            function: "drctl_append_only()".into(),
        }
    }

    const ROW: i32 = 1;

    #[test]
    fn append_only_needs_enabled_unconditional_before_triggers_for_update_and_delete() {
        let both = TRIGGER_BEFORE | TRIGGER_UPDATE | TRIGGER_DELETE;
        let (ok, d) = append_only("events", &[trig("guard", both | ROW, "O")]);
        assert!(ok && d.contains("guard (drctl_append_only())") && d.contains("TRUNCATE is not blocked"), "{d}");
        let (ok, d) = append_only("events", &[trig("guard", both | TRIGGER_TRUNCATE, "A")]);
        assert!(ok && d.ends_with("TRUNCATE too"), "{d}");
        // Two triggers, one per operation, cover it together.
        let split =
            [trig("u", TRIGGER_BEFORE | TRIGGER_UPDATE | ROW, "O"), trig("d", TRIGGER_BEFORE | TRIGGER_DELETE, "O")];
        assert!(append_only("events", &split).0);

        for (t, why) in [
            (trig("late", TRIGGER_UPDATE | TRIGGER_DELETE | ROW, "O"), "late fires AFTER"),
            (trig("off", both, "D"), "off is disabled"),
            (trig("rep", both, "R"), "rep fires only for replica sessions"),
            (Trigger { conditional: true, ..trig("when", both, "O") }, "when has a WHEN condition"),
        ] {
            let (ok, d) = append_only("events", &[t]);
            assert!(!ok && d.contains(why) && d.contains("BEFORE UPDATE or DELETE"), "{d}");
            assert!(d.contains("CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON events"), "{d}");
        }
        let (ok, d) = append_only("events", &[trig("u", TRIGGER_BEFORE | TRIGGER_UPDATE | ROW, "O")]);
        assert!(!ok && d.contains("no enabled trigger fires BEFORE DELETE"), "{d}");
        let (ok, d) = append_only("events", &[trig("ins", TRIGGER_BEFORE | 4 | ROW, "O")]);
        assert!(!ok && d.contains("BEFORE UPDATE or DELETE"), "an INSERT trigger guards nothing: {d}");
    }

    fn backup(deep: Option<(&str, bool)>) -> Committed {
        Committed {
            id: "20260101T000000Z-abc".into(),
            env: "prod".into(),
            manifest_sha256: String::new(),
            kind: "logical".into(),
            seq: 1,
            time: "2026-01-01T00:00:00Z".into(),
            deep: deep.map(|(t, ok)| DeepCheck { time: t.into(), ok }),
            drilled: None,
        }
    }

    #[test]
    fn deep_verified_wants_the_newest_backup_matched_within_the_max_age() {
        let now = humantime::parse_rfc3339("2026-01-10T00:00:00Z").unwrap();
        let week = Duration::from_secs(7 * 86400);
        let (ok, d) = deep_verified(&backup(None), now, week);
        assert!(!ok && d.contains("never deep-verified") && d.contains("verify-chain --backups --deep"), "{d}");
        let (ok, d) = deep_verified(&backup(Some(("2026-01-09T00:00:00Z", false))), now, week);
        assert!(!ok && d.contains("FAILED deep verification"), "{d}");
        let (ok, d) = deep_verified(&backup(Some(("2026-01-02T00:00:00Z", true))), now, week);
        assert!(!ok && d.contains("8days ago") && d.contains("policy.verify_max_age (7days)"), "{d}");
        let (ok, d) = deep_verified(&backup(Some(("2026-01-09T12:00:00Z", true))), now, week);
        assert!(ok && d.contains("12h ago"), "{d}");
    }

    #[test]
    fn drilled_wants_the_newest_backup_drilled_successfully_within_the_max_age() {
        let now = humantime::parse_rfc3339("2026-01-10T00:00:00Z").unwrap();
        let week = Duration::from_secs(7 * 86400);
        let with = |drill: Option<(&str, bool)>| Committed {
            drilled: drill.map(|(t, ok)| DeepCheck { time: t.into(), ok }),
            ..backup(None)
        };
        let (ok, d) = drilled(&with(None), now, week);
        assert!(!ok && d.contains("never drilled") && d.contains("drctl drill --env prod"), "{d}");
        let (ok, d) = drilled(&with(Some(("2026-01-09T00:00:00Z", false))), now, week);
        assert!(!ok && d.contains("FAILED its last drill"), "{d}");
        let (ok, d) = drilled(&with(Some(("2026-01-02T00:00:00Z", true))), now, week);
        assert!(!ok && d.contains("8days ago") && d.contains("policy.drill_max_age (7days)"), "{d}");
        let (ok, d) = drilled(&with(Some(("2026-01-09T12:00:00Z", true))), now, week);
        assert!(ok && d.contains("12h ago"), "{d}");
    }

    #[test]
    fn only_enabled_versioning_passes() {
        let (ok, d) = versioning("b", None);
        assert!(
            !ok && d.contains("never enabled") && d.contains("--bucket b --versioning-configuration Status=Enabled")
        );
        assert!(!versioning("b", Some("Suspended")).0);
        assert!(versioning("b", Some("Enabled")).0);
    }

    #[test]
    fn a_store_directory_is_private_only_when_nothing_in_it_grants_group_or_others() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let (ok, d) = dir_private(&root, loose_modes(&root));
        assert!(!ok && d.contains("does not exist"), "{d}");
        std::fs::create_dir_all(root.join("backups/prod")).unwrap();
        let file = root.join("backups/prod/x.dump.zst.000");
        std::fs::write(&file, b"x").unwrap();
        let set = |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        for p in [&root, &root.join("backups"), &root.join("backups/prod")] {
            set(p, 0o700);
        }
        set(&file, 0o600);
        // A symlink's own bits are 0777 and mean nothing: it is neither followed nor judged.
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let (ok, d) = dir_private(&root, loose_modes(&root));
        assert!(ok && d.contains("4 entries"), "{d}");
        set(&file, 0o640);
        let (ok, d) = dir_private(&root, loose_modes(&root));
        assert!(!ok && d.contains("1 of 4 entries") && d.contains("x.dump.zst.000 (0640)"), "{d}");
        assert!(d.contains(&format!("chmod -R go= {}", root.display())), "{d}");
    }
}
