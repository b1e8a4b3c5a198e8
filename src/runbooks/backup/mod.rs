//! backup --env ENV: a logical backup of ENV's database into the store.
//!
//! Replaces the nightly `pg_dump -Fc app > app.dump && aws s3 cp app.dump s3://…` cron job, whose
//! failures went unnoticed and whose half-written dumps looked like good ones. Here a backup exists
//! only once its commit entry is in the journal; everything before that is invisible and cleaned up.

pub mod base;
pub mod dump;
pub mod encryption;
pub mod list;
pub mod prune;
pub mod prune_wal;
pub mod readback;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::catalog::{self, Manifest, TableCount, backup_prefix, manifest_key, sha256_hex};
use crate::clients::{pg, pgtools::PgTools};
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::dburl::DbUrl;
use crate::engine::lock;
use crate::engine::run::Runbook;
use crate::engine::step::{Check, Step, StepLog};
use crate::error::{Error, Result};
use crate::journal::fold;
use crate::output::table::count;

pub fn backup(cx: &Ctx, env: &EnvConfig) -> Runbook {
    let state = Arc::new(Shared { env: env.clone(), id: cx.run_id.clone(), manifest: Mutex::new(None) });
    let rb = Runbook::new("backup", Some(&env.name), format!("--env {} --type logical", env.name))
        .lock(format!("env:{}", env.name));
    rb
        // Partial objects and unfinished uploads of backups whose run died: never listed, removed here.
        .step(CleanPartial { env: env.name.clone(), own_id: cx.run_id.clone() })
        // pg_dump → zstd (→ age with [store] age_recipients) → store, sha256 and row counts taken in
        // the dump's own snapshot.
        .step(DumpToStore { state: state.clone() })
        // The manifest names every object with its size and sha256: written only after them.
        .step(WriteManifest { state: state.clone() })
        // The journal entry is the commit: from here on `backup list` shows the backup.
        .step(Commit { state })
}

/// One backup in the making, shared by its steps (and by sync, whose dump is a backup of FROM).
pub struct Shared {
    pub env: EnvConfig,
    pub id: String,
    pub manifest: Mutex<Option<Manifest>>,
}

impl Shared {
    fn manifest(&self) -> Result<Manifest> {
        self.manifest
            .lock()
            .expect("manifest")
            .clone()
            .ok_or_else(|| Error::step("write-manifest", "no dump was taken"))
    }
}

// ---------------------------------------------------------------------------------------------

/// Remove what dead backup runs of this env left: objects under a backup id the journal never
/// committed, and unfinished multipart uploads. Runs that still hold a live lock are left alone.
///
/// Only a run the journal shows writing under `backups/<env>/` (a backup of env, a sync from it)
/// that neither finished nor was found dead by an earlier clean-partial can have left anything
/// (`State::unclean_runs`); with none, nothing is listed. The step journals the runs it found dead
/// and cleaned, so each is looked for once.
pub struct CleanPartial {
    pub env: String,
    pub own_id: String,
}

impl CleanPartial {
    /// Runs other than this one that may have left partial objects, by the journal as loaded.
    async fn suspects(&self, cx: &Ctx) -> Result<BTreeSet<String>> {
        let mut runs = cx.journal.state().await?.unclean_runs(&self.env);
        runs.remove(&self.own_id);
        Ok(runs)
    }

    /// Backup ids under `backups/<env>/` with no commit, no prune, not ours and not a live run's.
    async fn leftovers(&self, cx: &Ctx, live: &BTreeSet<String>) -> Result<Vec<String>> {
        // Read the journal after the locks: a run that committed and released its lock in between
        // is in the journal by now, so its objects are never taken for a dead run's.
        let state = cx.journal.refresh().await?;
        let mut known: BTreeSet<String> = state.committed(Some(&self.env)).into_iter().map(|c| c.id).collect();
        known.extend(state.pruned_ids(&self.env));
        known.insert(self.own_id.clone());
        known.extend(live.iter().cloned());
        let prefix = format!("backups/{}/", self.env);
        let mut ids = BTreeSet::new();
        for o in cx.store.list(&prefix).await? {
            if let Some(id) = o.key[prefix.len()..].split('/').next()
                && !known.contains(id)
            {
                ids.insert(id.to_string());
            }
        }
        Ok(ids.into_iter().collect())
    }
}

/// Run ids of locks that are held and unexpired by the store's clock.
pub async fn live_run_ids(cx: &Ctx) -> Result<BTreeSet<String>> {
    let now = cx.store.now().await?;
    let mut ids = BTreeSet::new();
    for o in cx.store.list("locks/").await? {
        let Some(target) = o.key.strip_prefix("locks/").and_then(|k| k.strip_suffix(".json")) else { continue };
        if let Some(l) = lock::read(&*cx.store, target).await? {
            let expires = humantime::parse_rfc3339(&l.expires).unwrap_or(SystemTime::UNIX_EPOCH);
            if !l.released && expires > now {
                ids.insert(l.run_id);
            }
        }
    }
    Ok(ids)
}

#[async_trait]
impl Step for CleanPartial {
    fn id(&self) -> &'static str {
        "clean-partial"
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        // Unfinished uploads (S3 multipart, local temp files) cannot be seen without removing
        // them, so this step always runs; it is cheap when there is nothing to remove.
        Ok(false)
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        log.set(fold::CLEANED_ENV, self.env.clone());
        let suspects = self.suspects(cx).await?;
        if suspects.is_empty() {
            log.set(fold::CLEANED_RUNS, Value::Array(Vec::new()));
            log.summary(format!("nothing to remove: every run that wrote backups of {} finished", self.env));
            return Ok(());
        }
        let live = live_run_ids(cx).await?;
        let ids = self.leftovers(cx, &live).await?;
        let mut removed = 0usize;
        for id in &ids {
            let prefix = backup_prefix(&self.env, id);
            for o in cx.store.list(&prefix).await? {
                cx.store.delete(&o.key).await?;
                removed += 1;
            }
        }
        let dead: BTreeSet<String> = suspects.difference(&live).cloned().collect();
        // Uploads of dead runs: all under this env when no other live run could be writing there.
        let live_now = live_run_ids(cx).await?;
        let uploads = if live_now.iter().all(|id| id == &self.own_id) {
            cx.store.remove_unfinished(&format!("backups/{}/", self.env)).await?
        } else {
            let mut n = 0;
            for id in ids.iter().chain(&dead).collect::<BTreeSet<_>>() {
                n += cx.store.remove_unfinished(&backup_prefix(&self.env, id)).await?;
            }
            n
        };
        log.set(fold::CLEANED_RUNS, Value::from(dead.into_iter().collect::<Vec<_>>()));
        log.set("removed_backup_ids", Value::from(ids.clone()));
        log.set("removed_objects", removed as u64);
        log.set("removed_unfinished_uploads", uploads as u64);
        log.summary(format!(
            "removed {} of {}, {}",
            count(removed as u64, "object"),
            count(ids.len() as u64, "dead backup run"),
            count(uploads as u64, "unfinished upload")
        ));
        Ok(())
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        if self.suspects(cx).await?.is_empty() {
            return Ok(());
        }
        let live = live_run_ids(cx).await?;
        match self.leftovers(cx, &live).await?.first() {
            None => Ok(()),
            Some(id) => Err(Error::step("clean-partial", format!("objects of dead backup {id} are still there"))),
        }
    }
}

// ---------------------------------------------------------------------------------------------

struct DumpToStore {
    state: Arc<Shared>,
}

impl DumpToStore {
    fn tools(&self) -> PgTools {
        PgTools::new(self.state.env.pg_bin.as_deref())
    }
}

#[async_trait]
impl Step for DumpToStore {
    fn id(&self) -> &'static str {
        "dump"
    }
    fn check_ids(&self) -> &'static [&'static str] {
        &["db-reachable", "pg-dump-version", "store-writable"]
    }

    async fn preflight(&self, cx: &Ctx) -> Vec<Check> {
        let url = &self.state.env.database_url;
        let mut checks = Vec::new();
        let server = match reach(url).await {
            Ok((_, major)) => {
                checks
                    .push(Check::pass("db-reachable", format!("PostgreSQL {major} at {}/{}", url.addr(), url.dbname)));
                Some(major)
            }
            Err(e) => {
                checks.push(Check::fail("db-reachable", e));
                None
            }
        };
        let tools = self.tools();
        checks.push(tool_at_least_server(&tools, "pg_dump", "pg-dump-version", server).await);
        checks.push(store_writable(cx).await);
        checks
    }

    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        // A backup never resumes: every run takes a new dump under its own id.
        Ok(false)
    }

    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let env = &self.state.env;
        let url = &env.database_url;
        let started = SystemTime::now();
        let t0 = Instant::now();
        let tools = self.tools();
        let dump_version = tools.major_version("pg_dump").await?;

        // One REPEATABLE READ transaction exports the snapshot pg_dump reads; its leaf tables' rows
        // are counted in the dump stream as it passes (`sync::load::snapshot_counts`), so the
        // counts describe exactly the dump and the database is read once.
        let mut client = pg::connect(url).await?;
        let db_err = |e: tokio_postgres::Error| pg::db_error(url, &e);
        let DumpSnapshot { tx, id: snapshot, server_version, tables } = export_snapshot(&mut client, url).await?;

        let recipients = &cx.config.age_recipients;
        let base = catalog::dump_base(&env.name, &self.state.id, &url.dbname, !recipients.is_empty());
        let mut child =
            tools.spawn("pg_dump", &["-Fc", "-Z0", "--no-password", "--snapshot", &snapshot], Some(url), false)?;
        let stdout = child.stdout.take().ok_or_else(|| Error::step("dump", "pg_dump has no stdout"))?;
        let (stdout, counter) = crate::runbooks::sync::load::Counting::new(stdout);
        let expected = dump::expected_bytes(&tx, &tables).await.map_err(db_err)?;
        if let Some(n) = expected {
            cx.out.info(&format!("dump: about {} expected (the tables' size)", crate::output::table::bytes(n)));
            log.set("expected_bytes", n);
            cx.run.report("expected_bytes", n);
        }
        let progress = cx.out.progress("dump", expected, true);
        let upload =
            dump::compress_to_store(stdout, cx.store.clone(), &base, dump::SPLIT_BYTES, recipients, progress.clone());
        let stored = upload.await;
        progress.finish();
        // pg_dump's verdict first: a dump that failed explains a short stream better than the stream.
        let warnings = child.wait().await?;
        let stored = stored?;
        let dumped = std::mem::take(&mut *counter.lock().expect("counter")).finish();
        let counts = dumped
            .and_then(|d| crate::runbooks::sync::load::snapshot_counts(&tables, &d))
            .map_err(|e| Error::step("dump", format!("counting the dump's rows: {e}")))?;
        tx.commit().await.map_err(db_err)?;
        if !warnings.trim().is_empty() {
            cx.out.warn(&format!("pg_dump: {}", warnings.trim()));
        }

        let manifest = Manifest::logical(catalog::LogicalDump {
            id: &self.state.id,
            env: &env.name,
            database: &url.dbname,
            server_version,
            pg_dump_version: dump_version,
            run_id: &cx.run_id,
            started,
            elapsed: t0.elapsed(),
            stored,
            tables: counts,
        });
        log.set("id", manifest.id.clone());
        log.set("bytes", manifest.bytes);
        log.set("dump_bytes", manifest.dump_bytes);
        log.set("sha256", manifest.sha256.clone());
        log.set("objects", manifest.objects.len() as u64);
        if let Some(e) = &manifest.encryption {
            log.set("encryption", e.clone());
            cx.run.report("encryption", e.clone());
        }
        log.summary(format!(
            "{} -> {} in {}{}, {}",
            crate::output::table::bytes(manifest.dump_bytes),
            crate::output::table::bytes(manifest.bytes),
            count(manifest.objects.len() as u64, "object"),
            if manifest.encryption.is_some() { " (age-encrypted)" } else { "" },
            count(manifest.tables.len() as u64, "table")
        ));
        cx.run.report("id", manifest.id.clone());
        cx.run.report("bytes", manifest.bytes);
        cx.run.report("dump_bytes", manifest.dump_bytes);
        cx.run.report("sha256", manifest.sha256.clone());
        cx.run.report("objects", json!(manifest.objects.iter().map(|o| o.key.clone()).collect::<Vec<_>>()));
        *self.state.manifest.lock().expect("manifest") = Some(manifest);
        Ok(())
    }

    async fn verify(&self, cx: &Ctx) -> Result<()> {
        objects_stored(cx, "dump", &self.state.manifest()?).await
    }
}

/// Look again at what the store holds, not at what the upload said: every object of `m` there at
/// the size written.
pub async fn objects_stored(cx: &Ctx, step: &str, m: &Manifest) -> Result<()> {
    for o in &m.objects {
        match cx.store.head(&o.key).await? {
            Some(h) if h.size == o.size => {}
            Some(h) => {
                return Err(Error::step(step, format!("{} holds {} bytes, {} were written", o.key, h.size, o.size)));
            }
            None => return Err(Error::step(step, format!("{} is missing after upload", o.key))),
        }
    }
    Ok(())
}

/// A connection to `url` and the server's major version, or what `db-reachable` says failed.
pub async fn reach(url: &DbUrl) -> std::result::Result<(tokio_postgres::Client, u32), String> {
    let client = pg::connect(url).await.map_err(|e| e.to_string())?;
    let major = pg::server_major(&client).await.map_err(|e| e.to_string())?;
    Ok((client, major))
}

/// `ID` (`pg-dump-version`, `pg-basebackup-version`): `tool` is at least the server's major
/// version (`server`: None when it was not reached), else what to set.
pub async fn tool_at_least_server(tools: &PgTools, tool: &str, id: &str, server: Option<u32>) -> Check {
    match (tools.major_version(tool).await, server) {
        (Ok(t), Some(s)) if t >= s => Check::pass(id, format!("{tool} {t} >= server {s}")),
        (Ok(t), Some(s)) => Check::fail(
            id,
            format!(
                "{tool} {t} at {} is older than the server ({s}): set pg_bin to a PostgreSQL {s}+ bin directory",
                tools.path(tool).display()
            ),
        ),
        (Ok(t), None) => Check::pass(id, format!("{tool} {t} (server not reached)")),
        (Err(e), _) => Check::fail(id, e.to_string()),
    }
}

/// `store-writable`: write and delete a probe object (read-only listing under --dry-run).
pub async fn store_writable(cx: &Ctx) -> Check {
    let url = cx.store.url().to_string();
    if cx.global.dry_run {
        return Check::from_result(
            "store-writable",
            cx.store
                .list("locks/")
                .await
                .map(|_| format!("{url} readable (not written in a dry run)"))
                .map_err(|e| e.to_string()),
        );
    }
    let key = format!("probes/{}", cx.run_id);
    let r = async {
        cx.store.put(&key, Bytes::from_static(b"drctl probe")).await?;
        cx.store.delete(&key).await
    }
    .await;
    Check::from_result("store-writable", r.map(|_| format!("{url} writable")).map_err(|e| e.to_string()))
}

/// Every leaf table (relkind `r`: plain tables and partitions, not partitioned parents) outside
/// the system schemas, except extension members, whose data pg_dump leaves to the extension.
/// The transaction a dump reads in: REPEATABLE READ, its snapshot exported for `pg_dump --snapshot`,
/// kept open (by the caller) until pg_dump has finished, so that row counts taken in it describe
/// exactly what the dump holds.
pub struct DumpSnapshot<'a> {
    pub tx: tokio_postgres::Transaction<'a>,
    pub id: String,
    pub server_version: String,
    pub tables: Vec<(String, String)>,
}

pub async fn export_snapshot<'a>(client: &'a mut tokio_postgres::Client, url: &DbUrl) -> Result<DumpSnapshot<'a>> {
    let db_err = |e: tokio_postgres::Error| pg::db_error(url, &e);
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_err)?;
    let id: String = tx.query_one("SELECT pg_export_snapshot()", &[]).await.map_err(db_err)?.get(0);
    let server_version: String = tx.query_one("SHOW server_version", &[]).await.map_err(db_err)?.get(0);
    let tables = leaf_tables(&tx).await.map_err(db_err)?;
    Ok(DumpSnapshot { tx, id, server_version, tables })
}

pub async fn leaf_tables(tx: &tokio_postgres::Transaction<'_>) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    Ok(tx
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' \
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                             AND d.objid = c.oid AND d.deptype = 'e') ORDER BY 1, 2",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Exact `count(*)` of each table, in the caller's transaction (and so in its snapshot).
pub async fn count_rows(
    tx: &tokio_postgres::Transaction<'_>,
    tables: &[(String, String)],
) -> Result<Vec<TableCount>, tokio_postgres::Error> {
    let mut out = Vec::with_capacity(tables.len());
    for (schema, table) in tables {
        let q = format!("SELECT count(*) FROM {}.{}", quote_ident(schema), quote_ident(table));
        let rows: i64 = tx.query_one(&q, &[]).await?.get(0);
        out.push(TableCount { schema: schema.clone(), table: table.clone(), rows });
    }
    Ok(out)
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

// ---------------------------------------------------------------------------------------------

pub struct WriteManifest {
    pub state: Arc<Shared>,
}

#[async_trait]
impl Step for WriteManifest {
    fn id(&self) -> &'static str {
        "write-manifest"
    }
    async fn is_done(&self, cx: &Ctx) -> Result<bool> {
        Ok(cx.store.head(&manifest_key(&self.state.env.name, &self.state.id)).await?.is_some())
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let m = self.state.manifest()?;
        let bytes = serde_json::to_vec_pretty(&m).map_err(|e| Error::step("write-manifest", e))?;
        let key = manifest_key(&m.env, &m.id);
        if !cx.store.put_if_absent(&key, Bytes::from(bytes.clone())).await? {
            return Err(Error::step("write-manifest", format!("{key} already exists")));
        }
        log.set("manifest_sha256", sha256_hex(&bytes));
        log.summary(key);
        Ok(())
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        let m = self.state.manifest()?;
        let key = manifest_key(&m.env, &m.id);
        let stored =
            cx.store.get(&key).await?.ok_or_else(|| Error::step("write-manifest", format!("{key} is missing")))?;
        let expected = serde_json::to_vec_pretty(&m).map_err(|e| Error::step("write-manifest", e))?;
        if stored.data.as_ref() != expected.as_slice() {
            return Err(Error::step("write-manifest", format!("{key} does not hold what was written")));
        }
        Ok(())
    }
}

pub struct Commit {
    pub state: Arc<Shared>,
}

#[async_trait]
impl Step for Commit {
    fn id(&self) -> &'static str {
        "commit"
    }
    async fn is_done(&self, cx: &Ctx) -> Result<bool> {
        let state = cx.journal.state().await?;
        Ok(state.committed(Some(&self.state.env.name)).iter().any(|c| c.id == self.state.id))
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let m = self.state.manifest()?;
        let key = manifest_key(&m.env, &m.id);
        let stored = cx.store.get(&key).await?.ok_or_else(|| Error::step("commit", format!("{key} is missing")))?;
        let manifest_sha256 = sha256_hex(&stored.data);
        // The entry names the backed-up env, which is not the run's own env when sync commits it.
        log.journal
            .for_env(&m.env)
            .append(
                "backup-done",
                json!({
                    "id": m.id, "type": m.kind, "manifest_sha256": manifest_sha256,
                    "bytes": m.bytes, "sha256": m.sha256, "duration_ms": m.duration_ms,
                }),
            )
            .await?;
        log.summary(format!("backup {} committed", m.id));
        Ok(())
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        // Read the journal again rather than trust the append.
        let state = cx.journal.refresh().await?;
        if state.committed(Some(&self.state.env.name)).iter().any(|c| c.id == self.state.id) {
            Ok(())
        } else {
            Err(Error::step("commit", "the backup-done entry is not in the journal"))
        }
    }
}
