//! sync --from FROM --to TO: refresh a warm standby's database with a validated copy of FROM's.
//!
//! Replaces the 6-hourly cron job `pg_dump -Fc prod > f && aws s3 cp f s3://… && pg_restore -c
//! --if-exists -d staging f || true`, which swallowed errors, left staging half-restored while it
//! ran or when it failed, never checked the result, and after a failover would have overwritten the
//! now-live staging with stale production data. Here TO's database is replaced only by a complete,
//! validated copy, in one catalog transaction, and never when DNS points at TO, TO is a replica,
//! or TO is a source other data is copied from (the `--from staging --to prod` mix-up).

pub(crate) mod demux;
pub(crate) mod load;
pub(crate) mod pipeline;
pub mod target;
pub mod toc;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::json;

use self::target::{MAX_DB_NAME, NEW_SUFFIX, PREV_SUFFIX, maintenance_url};
use super::backup::{self, CleanPartial, Commit, Shared, WriteManifest, quote_ident};
use crate::catalog::{self, Manifest, manifest_key};
use crate::clients::{pg, pgtools::PgTools};
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::engine::run::{Confirm, Runbook};
use crate::engine::step::{Check, Step, StepLog};
use crate::error::{Error, Result};
use crate::output::table::count;

/// `--jobs` when not given: the cores drctl runs on, at least 2 (one table streams while another
/// is loaded) and at most 8 (beyond that the one dump stream, not the load, is the limit).
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8)
}

pub fn sync(cx: &Ctx, from: &EnvConfig, to: &EnvConfig, jobs: usize) -> Result<Runbook> {
    if from.name == to.name {
        return Err(Error::usage(format!("--from and --to are both {}", from.name))
            .with_hint("name the standby to refresh with --to"));
    }
    let backup = Arc::new(Shared { env: from.clone(), id: cx.run_id.clone(), manifest: Mutex::new(None) });
    let mut rb = Runbook::new("sync", Some(&to.name), format!("--from {} --to {}", from.name, to.name))
        // Only TO changes; FROM is only read (contract: sync locks env:TO only).
        .lock(format!("env:{}", to.name))
        .resumable();
    let state =
        Arc::new(State { from: from.clone(), to: to.clone(), backup: backup.clone(), done: Mutex::new(None), jobs });
    if to.sync_from.as_deref() != Some(from.name.as_str()) {
        // TO does not declare itself FROM's standby: its data may matter to someone.
        rb.confirm = Some(Confirm {
            env: to.name.clone(),
            question: format!(
                "replace database {} of {} with a copy of {}'s {}",
                to.database_url.dbname, to.name, from.name, from.database_url.dbname
            ),
        });
    }
    Ok(rb
        // Objects of FROM backups whose run died (this dump is stored as one): never listed, removed.
        .step(CleanPartial { env: from.name.clone(), own_id: cx.run_id.clone() })
        // Preflight lives here. A scratch database a killed run left behind is dropped first.
        .step(DropScratch { state: state.clone() })
        // One pg_dump stream, teed: zstd into the store, and loaded into the scratch database on
        // --jobs connections as it passes; then row counts, materialized views and sequences
        // checked against the dump.
        .step(RestoreScratch { state: state.clone() })
        // The dump is a logical backup of FROM: manifest, then `backup-done` (listed by backup list).
        // A resumed run that restored from the stored dump has nothing new to commit.
        .step(UnlessStored { inner: WriteManifest { state: backup.clone() }, state: state.clone() })
        .step(UnlessStored { inner: Commit { state: backup }, state: state.clone() })
        // Guards re-checked, locks confirmed, then both renames in one transaction.
        .step(Swap { state }))
}

struct State {
    from: EnvConfig,
    to: EnvConfig,
    backup: Arc<Shared>,
    /// What the restore produced, for the swap's journal entry.
    done: Mutex<Option<Restored>>,
    /// Connections loading the scratch database at once (`--jobs`).
    jobs: usize,
}

#[derive(Debug, Clone)]
struct Restored {
    /// When the source snapshot was taken: the standby's data is as old as this.
    snapshot_time: SystemTime,
    rows: i64,
    tables: usize,
    sequences: usize,
    bytes: u64,
    dump_bytes: u64,
    duration_ms: u64,
    /// The backup of FROM the copy came from: this run's dump, or the stored one it resumed.
    backup_id: String,
    /// `dump` (pg_dump of FROM now) or `stored` (the committed dump of the run this one resumes).
    source: &'static str,
    /// The progress bar's total: the tables' size for a dump, the stored bytes for a stored one.
    expected_bytes: Option<u64>,
    /// How long each part of the load took (`pre_data_ms`, `data_ms`, `post_data_ms`,
    /// `analyze_ms`, `validate_ms`), for the step's log: where a slow sync spends its time.
    phases: Vec<(&'static str, u64)>,
    /// How the rows were loaded (`load::Loaded::mode`).
    load: &'static str,
}

impl State {
    fn db(&self) -> &str {
        &self.to.database_url.dbname
    }
    fn scratch(&self) -> String {
        format!("{}{NEW_SUFFIX}", self.db())
    }
    fn prev(&self) -> String {
        format!("{}{PREV_SUFFIX}", self.db())
    }
    async fn maint(&self) -> Result<tokio_postgres::Client> {
        pg::connect(&maintenance_url(&self.to)).await
    }
    fn maint_err(&self) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
        move |e| pg::db_error(&maintenance_url(&self.to), &e)
    }
    async fn exists(&self, maint: &tokio_postgres::Client, db: &str) -> Result<bool> {
        Ok(maint
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
            .await
            .map_err(self.maint_err())?
            .is_some())
    }
    /// Drop database `db` on TO's server if it exists, ending any session in it, through `maint`.
    async fn drop_db(&self, maint: &tokio_postgres::Client, db: &str) -> Result<()> {
        maint
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(db)))
            .await
            .map_err(self.maint_err())
    }
    /// Drop the copy the previous sync kept (`DB__drctl_prev`).
    async fn drop_prev(&self) -> Result<()> {
        self.drop_db(&self.maint().await?, &self.prev()).await
    }
    /// Drop the scratch database (pg_restore or COPYs of a killed run are ended).
    async fn drop_scratch(&self) -> Result<()> {
        self.drop_db(&self.maint().await?, &self.scratch()).await
    }
}

// ---------------------------------------------------------------------------------------------

struct DropScratch {
    state: Arc<State>,
}

impl DropScratch {
    async fn checks(&self, cx: &Ctx) -> Vec<Check> {
        let (from, to) = (&self.state.from, &self.state.to);
        let mut checks = Vec::new();
        let db = self.state.db();
        checks.push(if db.len() <= MAX_DB_NAME {
            Check::pass("name-length", format!("{db} + {PREV_SUFFIX} fits PostgreSQL's 63 bytes"))
        } else {
            Check::fail(
                "name-length",
                format!(
                    "{db} is {} bytes: with {PREV_SUFFIX} it exceeds PostgreSQL's 63 (at most {MAX_DB_NAME})",
                    db.len()
                ),
            )
        });

        let source = match pg::connect(&from.database_url).await {
            Ok(c) => match pg::server_major(&c).await {
                Ok(m) => {
                    checks.push(Check::pass(
                        "source-reachable",
                        format!("{}: PostgreSQL {m}", from.database_url.redacted()),
                    ));
                    Some((c, m))
                }
                Err(e) => {
                    checks.push(Check::fail("source-reachable", e.to_string()));
                    None
                }
            },
            Err(e) => {
                checks.push(Check::fail("source-reachable", e.to_string()));
                None
            }
        };
        let target = match (pg::connect(&to.database_url).await, self.state.maint().await) {
            (Ok(t), Ok(m)) => match (pg::server_major(&t).await, target::db_props(&m, db).await) {
                (Ok(major), Ok(Some(props))) => {
                    checks.push(Check::pass(
                        "target-reachable",
                        format!("{} and {}: PostgreSQL {major}", to.database_url.redacted(), to.maintenance_db),
                    ));
                    Some((t, m, major, props))
                }
                (Err(e), _) => {
                    checks.push(Check::fail("target-reachable", e.to_string()));
                    None
                }
                (_, Err(e)) => {
                    checks.push(Check::fail("target-reachable", pg::describe(&e)));
                    None
                }
                (_, Ok(None)) => {
                    checks.push(Check::fail("target-reachable", format!("database {db} is not in pg_database")));
                    None
                }
            },
            (Err(e), _) | (_, Err(e)) => {
                checks.push(Check::fail("target-reachable", e.to_string()));
                None
            }
        };

        let dump_tools = PgTools::new(from.pg_bin.as_deref());
        let dump_major = dump_tools.major_version("pg_dump").await;
        checks.push(match (&dump_major, &source) {
            (Ok(d), Some((_, s))) if d >= s => Check::pass("pg-dump-version", format!("pg_dump {d} >= source {s}")),
            (Ok(d), Some((_, s))) => Check::fail(
                "pg-dump-version",
                format!(
                    "pg_dump {d} at {} is older than the source ({s}): set pg_bin of {}",
                    dump_tools.path("pg_dump").display(),
                    from.name
                ),
            ),
            (Ok(d), None) => Check::pass("pg-dump-version", format!("pg_dump {d} (source not reached)")),
            (Err(e), _) => Check::fail("pg-dump-version", e.to_string()),
        });
        let restore_tools = PgTools::new(to.pg_bin.as_deref());
        checks.push(match (restore_tools.major_version("pg_restore").await, &dump_major, &target) {
            // pg_restore reads archives of its own version and older, and must know the target server.
            (Ok(r), Ok(d), Some((_, _, t, _))) if r >= *d && r >= *t => {
                Check::pass("pg-restore-version", format!("pg_restore {r} >= pg_dump {d} and target {t}"))
            }
            (Ok(r), Ok(d), Some((_, _, t, _))) => Check::fail(
                "pg-restore-version",
                format!(
                    "pg_restore {r} at {} must be at least pg_dump's {d} and the target's {t}: set pg_bin of {}",
                    restore_tools.path("pg_restore").display(),
                    to.name
                ),
            ),
            (Ok(r), _, _) => Check::pass("pg-restore-version", format!("pg_restore {r} (versions not all known)")),
            (Err(e), _, _) => Check::fail("pg-restore-version", e.to_string()),
        });

        checks.push(target::check_not_live(cx, to).await);
        checks.push(target::check_not_source(cx, to, target.as_ref().map(|(t, _, _, _)| t)).await);
        if let Some((t, m, _, props)) = &target {
            checks.push(target::check_not_replica(to, t).await);
            checks.push(target::check_privileges(m, props).await);
        } else {
            checks.push(Check::fail("target-not-replica", "target not reached"));
        }
        if let (Some((s, _)), Some((t, _, _, _))) = (&source, &target) {
            let roles = async {
                let roles = target::dump_roles(s).await?;
                let missing = target::missing_roles(t, &roles).await?;
                Ok::<_, tokio_postgres::Error>((roles, missing))
            };
            checks.push(match roles.await {
                Ok((roles, missing)) if missing.is_empty() => Check::pass(
                    "dump-roles",
                    match roles.len() {
                        1 => format!("the one role the dump names exists on {}", to.name),
                        n => format!("the {n} roles the dump names exist on {}", to.name),
                    },
                ),
                Ok((_, missing)) => Check::fail(
                    "dump-roles",
                    format!(
                        "roles owning or granted objects in {} are missing on {}: {} (create them there first)",
                        from.name,
                        to.name,
                        missing.join(", ")
                    ),
                ),
                Err(e) => Check::fail("dump-roles", pg::describe(&e)),
            });
        }
        checks.push(backup::store_writable(cx).await);
        checks
    }
}

#[async_trait]
impl Step for DropScratch {
    fn id(&self) -> &'static str {
        "drop-scratch"
    }
    fn check_ids(&self) -> &'static [&'static str] {
        &[
            "name-length",
            "source-reachable",
            "target-reachable",
            "pg-dump-version",
            "pg-restore-version",
            "target-not-replica",
            "target-not-live",
            "target-is-source",
            "dump-roles",
        ]
    }
    async fn preflight(&self, cx: &Ctx) -> Vec<Check> {
        self.checks(cx).await
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        let maint = self.state.maint().await?;
        Ok(!self.state.exists(&maint, &self.state.scratch()).await?)
    }
    async fn apply(&self, _cx: &Ctx, log: &mut StepLog) -> Result<()> {
        self.state.drop_scratch().await?;
        log.summary(format!("dropped {} left by an earlier run", self.state.scratch()));
        Ok(())
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        if self.is_done(cx).await? {
            Ok(())
        } else {
            Err(Error::step("drop-scratch", format!("{} still exists", self.state.scratch())))
        }
    }
}

// ---------------------------------------------------------------------------------------------

struct RestoreScratch {
    state: Arc<State>,
}

#[async_trait]
impl Step for RestoreScratch {
    fn id(&self) -> &'static str {
        "restore"
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        // Every run restores afresh: a copy restored by a run that died is not known to be whole.
        Ok(false)
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let stored = match cx.run.resumes() {
            Some(old) => match stored_dump(cx, &self.state, old).await? {
                Ok(m) => Some(m),
                Err(why) => {
                    cx.out.warn(&format!("sync resumes run {old}, but {why}: dumping {} afresh", self.state.from.name));
                    log.set("fresh_dump_because", why);
                    None
                }
            },
            None => None,
        };
        let r = match stored {
            Some(m) => pipeline::restore_stored(cx, &self.state, &m).await.map(|r| (r, None)),
            None => pipeline::restore(cx, &self.state).await.map(|(r, m)| (r, Some(m))),
        };
        if r.is_err() {
            // A failure before the swap leaves TO as it was: only the scratch copy goes.
            if let Err(e) = self.state.drop_scratch().await {
                cx.out.warn(&format!("could not drop {}: {e}", self.state.scratch()));
            }
        }
        let (restored, manifest) = r?;
        log.set("source", restored.source);
        log.set("rows", restored.rows);
        log.set("tables", restored.tables as u64);
        log.set("sequences", restored.sequences as u64);
        log.set("dump_bytes", restored.dump_bytes);
        log.set("bytes", restored.bytes);
        log.set("backup_id", restored.backup_id.clone());
        if let Some(n) = restored.expected_bytes {
            log.set("expected_bytes", n);
        }
        log.set("jobs", self.state.jobs as u64);
        log.set("load", restored.load);
        for (k, v) in &restored.phases {
            log.set(k, *v);
        }
        log.summary(match restored.source {
            "stored" => format!(
                "{} in {}, {} checked; restored from stored backup {} (sha256 verified)",
                count(restored.rows as u64, "row"),
                count(restored.tables as u64, "table"),
                count(restored.sequences as u64, "sequence"),
                restored.backup_id
            ),
            _ => format!(
                "{} in {}, {} checked; {} stored",
                count(restored.rows as u64, "row"),
                count(restored.tables as u64, "table"),
                count(restored.sequences as u64, "sequence"),
                crate::output::table::bytes(restored.bytes)
            ),
        });
        if let Some(m) = manifest {
            *self.state.backup.manifest.lock().expect("manifest") = Some(m);
        }
        *self.state.done.lock().expect("done") = Some(restored);
        Ok(())
    }
    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        let maint = self.state.maint().await?;
        if self.state.exists(&maint, &self.state.scratch()).await? {
            Ok(())
        } else {
            Err(Error::step("restore", format!("{} is missing after the restore", self.state.scratch())))
        }
    }
}

/// The committed dump of FROM that the resumed run `old` (or the run it resumed in turn) took,
/// with its manifest checked against the sha256 the journal committed. `None` when that run died
/// before committing one (its objects are then removed by clean-partial and FROM is dumped afresh).
async fn stored_dump(cx: &Ctx, st: &State, old: &str) -> Result<std::result::Result<Manifest, String>> {
    let journal = cx.journal.state().await?;
    let committed = journal.committed(Some(&st.from.name));
    // A resumed run that was itself interrupted speaks for the runs it resumed: the dump may be
    // any of theirs, newest first.
    // This run's `run-started` names `old` first, then the runs `old` resumed.
    let mine = journal.runs.values().find(|r| r.run_id == cx.run_id).map(|r| r.resumed.clone());
    let ids = mine.filter(|r| r.first().is_some_and(|f| f == old)).unwrap_or_else(|| vec![old.to_string()]);
    for id in ids {
        if let Some(c) = committed.iter().find(|c| c.id == id) {
            let m = catalog::read_manifest(&*cx.store, c).await?.map_err(|why| {
                Error::integrity(format!("backup {} of {}", c.id, c.env), manifest_key(&c.env, &c.id), why)
            })?;
            if m.database != st.from.database_url.dbname {
                return Ok(Err(format!("the stored dump {} is of another database", m.id)));
            }
            // A dump already older than policy.rpo would leave the standby in breach the moment it
            // is swapped in: a fresh dump serves better than saving one.
            let taken = humantime::parse_rfc3339_weak(&m.started).unwrap_or(std::time::UNIX_EPOCH);
            let age = cx.store.now().await?.duration_since(taken).unwrap_or_default();
            if age > cx.config.policy.rpo {
                return Ok(Err(format!(
                    "the stored dump {} is {} old, beyond policy.rpo",
                    m.id,
                    humantime::format_duration(Duration::from_secs(age.as_secs()))
                )));
            }
            return Ok(Ok(m));
        }
    }
    Ok(Err(format!("run {old} committed no dump of {}", st.from.name)))
}

/// A backup step that a resumed run skips when it restored from the stored dump: that dump is
/// already committed as a backup of FROM.
struct UnlessStored<S> {
    inner: S,
    state: Arc<State>,
}

#[async_trait]
impl<S: Step> Step for UnlessStored<S> {
    fn id(&self) -> &'static str {
        self.inner.id()
    }
    fn check_ids(&self) -> &'static [&'static str] {
        self.inner.check_ids()
    }
    async fn preflight(&self, cx: &Ctx) -> Vec<Check> {
        self.inner.preflight(cx).await
    }
    async fn is_done(&self, cx: &Ctx) -> Result<bool> {
        if self.state.done.lock().expect("done").as_ref().is_some_and(|r| r.source == "stored") {
            return Ok(true);
        }
        self.inner.is_done(cx).await
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        self.inner.apply(cx, log).await
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        self.inner.verify(cx).await
    }
}

// ---------------------------------------------------------------------------------------------

struct Swap {
    state: Arc<State>,
}

/// How often the swap is tried when a session slipped into TO's database between the terminate
/// and the rename (RENAME itself waits up to 5 s for terminated sessions to go).
const SWAP_ATTEMPTS: u32 = 5;

#[async_trait]
impl Step for Swap {
    fn id(&self) -> &'static str {
        "swap"
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        Ok(false)
    }
    /// The irreversible step: the engine re-checks these just before it acts (contract "Global"),
    /// since DNS may have moved to TO, or TO become a replica, while the copy was restored.
    async fn guard(&self, cx: &Ctx) -> Vec<Check> {
        let st = &self.state;
        let not_replica = match pg::connect(&st.to.database_url).await {
            Ok(c) => target::check_not_replica(&st.to, &c).await,
            Err(e) => Check::fail("target-not-replica", format!("{} could not be asked: {e}", st.to.name)),
        };
        vec![target::check_not_live(cx, &st.to).await, not_replica]
    }
    async fn refused(&self, _cx: &Ctx) -> Result<()> {
        // TO stays as it was; the scratch copy of FROM's data must not linger on TO's server.
        self.state.drop_scratch().await
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let st = &self.state;
        let restored =
            st.done.lock().expect("done").clone().ok_or_else(|| Error::step("swap", "no restored copy to swap in"))?;
        // A run whose lock was taken over must not swap (exit 5).
        log.journal.confirm_locks().await?;

        let maint = st.maint().await?;
        let (db, scratch, prev) = (quote_ident(st.db()), quote_ident(&st.scratch()), quote_ident(&st.prev()));
        // The copy the last sync kept went when the load began (drop_prev); IF EXISTS keeps the
        // rename safe should one have appeared since.
        st.drop_db(&maint, &st.prev()).await?;
        let terminate = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()",
            target::quote_literal(st.db())
        );
        // Everything in one transaction, so a crash at any moment leaves TO old or new and accepting
        // connections: disallowing connections inside it only takes effect on the old copy (now
        // `prev`, which nobody should use), RENAME takes an exclusive lock on the database that
        // makes newly connecting clients wait for the commit, and fails (object_in_use) if a
        // session slipped in after the terminate; then the whole transaction is retried.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let _ = maint.batch_execute(&terminate).await;
            let r = maint
                .batch_execute(&format!(
                    "BEGIN; ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false; {terminate}; \
                     ALTER DATABASE {db} RENAME TO {prev}; ALTER DATABASE {scratch} RENAME TO {db}; COMMIT"
                ))
                .await;
            match r {
                Ok(()) => break,
                Err(e) => {
                    let _ = maint.batch_execute("ROLLBACK").await;
                    let in_use = e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE);
                    if !in_use || attempt >= SWAP_ATTEMPTS {
                        return Err(Error::step(
                            "swap",
                            format!("renaming {} (attempt {attempt}): {}; TO is unchanged", st.db(), pg::describe(&e)),
                        ));
                    }
                    cx.out.info(&format!("sync: a session slipped into {} during the swap; retrying", st.db()));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let snapshot = humantime::format_rfc3339_millis(restored.snapshot_time).to_string();
        log.journal
            .append(
                "sync-done",
                json!({
                    "from": st.from.name, "to": st.to.name, "database": st.db(),
                    "snapshot_time": snapshot, "rows": restored.rows, "tables": restored.tables as u64,
                    "bytes": restored.bytes, "dump_bytes": restored.dump_bytes,
                    "duration_ms": restored.duration_ms, "backup_id": restored.backup_id,
                    "source": restored.source, "swap_attempts": attempt,
                }),
            )
            .await?;
        log.set("swap_attempts", attempt);
        log.summary(format!(
            "{} now holds {}'s data as of {snapshot}; the old copy is {}",
            st.db(),
            st.from.name,
            st.prev()
        ));
        let r = &cx.run;
        r.report("from", st.from.name.clone());
        r.report("to", st.to.name.clone());
        r.report("snapshot_time", snapshot);
        r.report("rows", restored.rows);
        r.report("bytes", restored.bytes);
        r.report("dump_bytes", restored.dump_bytes);
        r.report("backup_id", restored.backup_id.clone());
        r.report("source", restored.source);
        if let Some(n) = restored.expected_bytes {
            r.report("expected_bytes", n);
        }
        Ok(())
    }
    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        let st = &self.state;
        let maint = st.maint().await?;
        let (db_ok, scratch_gone) = (st.exists(&maint, st.db()).await?, !st.exists(&maint, &st.scratch()).await?);
        if db_ok && scratch_gone {
            Ok(())
        } else {
            Err(Error::step(
                "swap",
                format!("after the renames: {} exists {db_ok}, {} gone {scratch_gone}", st.db(), st.scratch()),
            ))
        }
    }
}
