//! The backups' format in the store: where a backup's objects and `manifest.json` live
//! (`backups/<env>/<id>/`), what a manifest holds, and reading a committed manifest back with the
//! sha256 the journal pinned it to. Which backups exist is the journal's to say: its `backup-done`
//! entries (the commit) without a later `backup-pruned`, folded into `journal::fold::State`.
//!
//! It sits beside journal.rs, not in the backup runbook, because it is on-store format shared by
//! the runbooks (backup and sync write it; backup list and prune, verify-chain, status and sync read
//! it), and with the journal it defines what a committed backup is. The commands stay apart from
//! the format they store, as pgBackRest keeps `src/info/` apart from `src/command/`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::store::Store;

/// One stored object of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    pub schema: String,
    pub table: String,
    pub rows: i64,
}

/// `backups/<env>/<id>/manifest.json`: written after the objects, before the commit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
    pub env: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// How to read the objects back: `pg_dump -Fc, zstd` = `cat OBJECTS | zstd -dc | pg_restore`;
    /// `pg_dump -Fc, zstd, age` = `cat OBJECTS | age -d -i KEY | zstd -dc | pg_restore`.
    pub format: String,
    /// `age` when the objects are the zstd stream encrypted with age (absent: not encrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// The age recipients (public keys, `age1...`) the objects are encrypted to; never a secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub age_recipients: Vec<String>,
    pub database: String,
    pub server_version: String,
    pub pg_dump_version: String,
    pub run_id: String,
    pub started: String,
    pub finished: String,
    pub duration_ms: u64,
    /// Stored (compressed, and encrypted if so) bytes, all objects.
    pub bytes: u64,
    /// sha256 of all objects concatenated in order (`cat OBJECTS | sha256sum`): of the stored
    /// bytes, so `verify-chain --backups --deep` checks an encrypted backup without its key.
    pub sha256: String,
    /// The uncompressed pg_dump stream's size.
    pub dump_bytes: u64,
    pub objects: Vec<ObjectRef>,
    /// Exact row counts in the dump's snapshot.
    pub tables: Vec<TableCount>,
    /// Base backups: the first and last WAL segment a restore needs (names as in pg_wal).
    pub wal_start: Option<String>,
    pub wal_end: Option<String>,
    /// Base backups only: where in the cluster's history the backup sits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseInfo>,
}

/// What a physical base backup's manifest records beyond a logical one's: enough for pitr-restore
/// to pick the newest base backup ending before a target, and for verify-chain and prune to know
/// which archived WAL it needs (`wal_start` .. `wal_end`, then everything after on its timeline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseInfo {
    /// Decimal, as `pg_controldata` prints it (the archive's `wal/ENV/SYSID/`).
    pub system_identifier: String,
    pub timeline: u32,
    /// As PostgreSQL prints an LSN (`0/3000028`).
    pub start_lsn: String,
    pub stop_lsn: String,
    /// RFC 3339, ms: the backup is consistent from `stop_time` on (a recovery target before it
    /// cannot be reached from this backup).
    pub start_time: String,
    pub stop_time: String,
    pub wal_segment_size: u32,
    pub pg_basebackup_version: String,
}

/// What a logical dump run knows when its objects are stored.
pub struct LogicalDump<'a> {
    pub id: &'a str,
    pub env: &'a str,
    pub database: &'a str,
    pub server_version: String,
    pub pg_dump_version: u32,
    pub run_id: &'a str,
    pub started: std::time::SystemTime,
    pub elapsed: std::time::Duration,
    pub stored: crate::runbooks::backup::dump::Stored,
    pub tables: Vec<TableCount>,
}

impl Manifest {
    /// The manifest of a `pg_dump -Fc -Z0 | zstd` backup (backup, and the audit copy sync keeps).
    pub fn logical(d: LogicalDump) -> Manifest {
        let encrypted = !d.stored.age_recipients.is_empty();
        Manifest {
            id: d.id.to_string(),
            env: d.env.to_string(),
            kind: "logical".into(),
            format: if encrypted { "pg_dump -Fc, zstd, age" } else { "pg_dump -Fc, zstd" }.into(),
            encryption: encrypted.then(|| AGE.to_string()),
            age_recipients: d.stored.age_recipients.clone(),
            database: d.database.to_string(),
            server_version: d.server_version,
            pg_dump_version: d.pg_dump_version.to_string(),
            run_id: d.run_id.to_string(),
            started: humantime::format_rfc3339_millis(d.started).to_string(),
            finished: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            duration_ms: d.elapsed.as_millis() as u64,
            bytes: d.stored.bytes,
            sha256: d.stored.sha256,
            dump_bytes: d.stored.dump_bytes,
            objects: d.stored.objects,
            tables: d.tables,
            wal_start: None,
            wal_end: None,
            base: None,
        }
    }
}

/// `Manifest::encryption` of age-encrypted objects.
pub const AGE: &str = "age";

/// A logical dump's objects, before the `.000`, `.001`, ... suffix: `backups/ENV/ID/DB.dump.zst`,
/// or `DB.dump.zst.age` when encrypted (`cat DB.dump.zst.age.* | age -d -i KEY | zstd -dc`).
pub fn dump_base(env: &str, id: &str, database: &str, encrypted: bool) -> String {
    let age = if encrypted { ".age" } else { "" };
    format!("{}{database}.dump.zst{age}", backup_prefix(env, id))
}

pub fn backup_prefix(env: &str, id: &str) -> String {
    format!("backups/{env}/{id}/")
}

pub fn manifest_key(env: &str, id: &str) -> String {
    format!("backups/{env}/{id}/manifest.json")
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A committed backup as the journal records it (folded by `journal::fold`).
pub use crate::journal::fold::Committed;

/// Read a committed backup's manifest: `Ok(Err(reason))` when it is missing, unparseable, or its
/// sha256 differs from the one the journal committed.
pub async fn read_manifest(store: &dyn Store, c: &Committed) -> Result<std::result::Result<Manifest, String>> {
    let key = manifest_key(&c.env, &c.id);
    let Some(v) = store.get(&key).await? else {
        return Ok(Err(format!("manifest {key} is missing")));
    };
    let sha = sha256_hex(&v.data);
    if sha != c.manifest_sha256 {
        return Ok(Err(format!(
            "manifest {key} has sha256 {sha}, the journal committed {}: it was changed after the backup",
            c.manifest_sha256
        )));
    }
    Ok(serde_json::from_slice(&v.data).map_err(|e| format!("manifest {key} is not valid: {e}")))
}
