//! backup --env ENV --type base: a physical base backup for point-in-time recovery.
//!
//! Replaces `pg_basebackup -D /backups/base -Ft -z` on the database host followed by an upload:
//! here `pg_basebackup -D - -Ft -X none` writes one tar stream to drctl, which compresses it with
//! zstd (and seals it with age when configured) into `backups/ENV/ID/base.tar.zst.000…` as it
//! arrives — no copy of the data directory on local disk. `-X none` because the WAL the backup
//! needs is in the archive `wal-push` keeps: the server's backup stop waits until the backup's
//! last segment is archived, and `await-wal` checks that it is in drctl's archive before the
//! manifest (with the WAL range: start/stop LSN, timeline, first and last segment) and the
//! `backup-done` commit are written, exactly as a logical backup is committed.
//!
//! The LSNs come from the stream itself: `backup_label` (the first tar member: START WAL
//! LOCATION, START TIMELINE) and `backup_manifest` (the last: its WAL-Ranges give the stop LSN),
//! read by a small tar watcher on the bytes as they pass. pg_basebackup prints neither when it
//! writes to stdout without WAL.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde_json::json;
use tokio::io::{AsyncRead, ReadBuf};

use super::{CleanPartial, Commit, Shared, WriteManifest, store_writable};
use crate::catalog::{self, BaseInfo, Manifest};
use crate::clients::{pg, pgtools::PgTools};
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::engine::run::Runbook;
use crate::engine::step::{Check, Step, StepLog};
use crate::error::{Error, Result};
use crate::output::table::{bytes, count};
use crate::wal::{self, WalFile};

/// How often await-wal looks for the backup's last segment in the archive.
const POLL_ARCHIVE: Duration = Duration::from_secs(1);

pub fn backup_base(cx: &Ctx, env: &EnvConfig) -> Result<Runbook> {
    if let Some(instance) = &env.rds_instance {
        return Err(Error::Usage {
            problem: format!(
                "env {} is the RDS instance {instance}: RDS keeps its own physical backups and WAL, \
                 pg_basebackup cannot reach them",
                env.name
            ),
            hint: Some(format!(
                "take a logical backup (backup --env {} --type logical); restore RDS to a point in time with \
                 pitr-restore --env {} --target-instance NEW_ID",
                env.name, env.name
            )),
        });
    }
    let state = Arc::new(Shared { env: env.clone(), id: cx.run_id.clone(), manifest: Mutex::new(None) });
    Ok(Runbook::new("backup", Some(&env.name), format!("--env {} --type base", env.name))
        .lock(format!("env:{}", env.name))
        // Objects of dead backup runs (logical or base) of this env: removed, as a logical backup does.
        .step(CleanPartial { env: env.name.clone(), own_id: cx.run_id.clone() })
        // pg_basebackup's tar stream → zstd (→ age) → store; the WAL range read from the stream.
        .step(BaseToStore { state: state.clone() })
        // The backup's last WAL segment is in drctl's archive: without it the backup restores nothing.
        .step(AwaitWal { state: state.clone() })
        .step(WriteManifest { state: state.clone() })
        .step(Commit { state }))
}

/// The objects of a base backup, before the `.000`, `.001`, … suffix.
pub fn objects_base(env: &str, id: &str, encrypted: bool) -> String {
    let age = if encrypted { ".age" } else { "" };
    format!("{}base.tar.zst{age}", catalog::backup_prefix(env, id))
}

// ---------------------------------------------------------------------------------------------

struct BaseToStore {
    state: Arc<Shared>,
}

/// What the server says about itself before the backup.
struct Server {
    major: u32,
    version: String,
    system_id: u64,
    segment_size: u32,
    /// Sum of the databases' sizes: the progress bar's total.
    size: Option<u64>,
}

async fn server(client: &tokio_postgres::Client) -> std::result::Result<Server, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int, \
             (SELECT system_identifier FROM pg_control_system())::text, \
             (SELECT setting::int FROM pg_settings WHERE name = 'wal_segment_size'), \
             (SELECT sum(pg_database_size(oid)) FROM pg_database)::bigint",
            &[],
        )
        .await?;
    let num: i32 = row.get(1);
    let sysid: String = row.get(2);
    let seg: i32 = row.get(3);
    let size: Option<i64> = row.get(4);
    Ok(Server {
        version: row.get(0),
        major: (num / 10000) as u32,
        system_id: sysid.parse().unwrap_or(0),
        segment_size: seg as u32,
        size: size.and_then(|n| u64::try_from(n).ok()).filter(|&n| n > 0),
    })
}

impl BaseToStore {
    fn tools(&self) -> PgTools {
        PgTools::new(self.state.env.pg_bin.as_deref())
    }

    /// `wal-archiving`: archive_mode on, archive_command runs drctl's wal-push, and the archiver
    /// is not failing. The command itself is never printed: it may carry credentials.
    async fn wal_archiving(client: &tokio_postgres::Client, env: &str) -> Check {
        let row = match client
            .query_one(
                "SELECT current_setting('archive_mode'), current_setting('archive_command'), \
                 coalesce(last_failed_wal, ''), \
                 coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false), \
                 coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                &[],
            )
            .await
        {
            Ok(r) => r,
            Err(e) => return Check::fail("wal-archiving", format!("could not read the archiver's state: {e}")),
        };
        let (mode, command, failed_wal, failing, last): (String, String, String, bool, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let set_it = format!("archive_command = '/usr/bin/drctl -c /etc/drctl/drctl.toml wal-push --env {env} %p'");
        if mode == "off" {
            return Check::fail(
                "wal-archiving",
                format!(
                    "archive_mode is off: a base backup needs the WAL written during and after it; \
                     set archive_mode = on and {set_it}, then restart the server"
                ),
            );
        }
        if !command.contains("wal-push") {
            return Check::fail(
                "wal-archiving",
                format!(
                    "archive_command does not run drctl wal-push: pitr-restore reads WAL only from drctl's \
                     archive; set {set_it}"
                ),
            );
        }
        if failing {
            return Check::fail(
                "wal-archiving",
                format!(
                    "archiving is failing: the last attempt, for {failed_wal}, failed (pg_stat_archiver); \
                     the server's log says why"
                ),
            );
        }
        let last = if last.is_empty() { "nothing archived yet".to_string() } else { format!("last archived {last}") };
        Check::pass("wal-archiving", format!("archive_mode {mode}, archive_command runs wal-push, {last}"))
    }
}

#[async_trait]
impl Step for BaseToStore {
    fn id(&self) -> &'static str {
        "base-backup"
    }
    fn check_ids(&self) -> &'static [&'static str] {
        &[
            "db-reachable",
            "wal-archiving",
            "replication-privilege",
            "tablespaces",
            "system-identifier",
            "pg-basebackup-version",
            "store-writable",
        ]
    }

    async fn preflight(&self, cx: &Ctx) -> Vec<Check> {
        let env = &self.state.env;
        let url = &env.database_url;
        let mut checks = Vec::new();
        let client = match pg::connect(url).await {
            Ok(c) => Some(c),
            Err(e) => {
                checks.push(Check::fail("db-reachable", e.to_string()));
                None
            }
        };
        let srv = match &client {
            Some(c) => match server(c).await {
                Ok(s) => {
                    checks.push(Check::pass(
                        "db-reachable",
                        format!("PostgreSQL {} at {}, system identifier {}", s.major, url.addr(), s.system_id),
                    ));
                    Some(s)
                }
                Err(e) => {
                    checks.push(Check::fail("db-reachable", pg::db_error(url, &e).to_string()));
                    None
                }
            },
            None => None,
        };
        if let (Some(c), Some(_)) = (&client, &srv) {
            checks.push(Self::wal_archiving(c, &env.name).await);
            checks.push(
                match c
                    .query_one("SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user", &[])
                    .await
                {
                    Ok(r) if r.get::<_, bool>(0) => {
                        Check::pass("replication-privilege", format!("{} may take base backups", url.user))
                    }
                    Ok(_) => Check::fail(
                        "replication-privilege",
                        format!(
                            "{} has neither SUPERUSER nor REPLICATION: ALTER ROLE {} REPLICATION, and allow it a \
                             `replication` line in pg_hba.conf",
                            url.user, url.user
                        ),
                    ),
                    Err(e) => Check::fail("replication-privilege", e.to_string()),
                },
            );
            checks.push(
                match c
                    .query(
                        "SELECT spcname::text FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')",
                        &[],
                    )
                    .await
                {
                    Ok(rows) if rows.is_empty() => Check::pass("tablespaces", "only the data directory"),
                    Ok(rows) => Check::fail(
                        "tablespaces",
                        format!(
                            "tablespaces {}: a base backup streamed to the store holds the data directory only \
                             (pg_basebackup writes one tablespace to a stream); take this cluster's physical \
                             backups with a tool that handles tablespaces, or move them into pg_default",
                            rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join(", ")
                        ),
                    ),
                    Err(e) => Check::fail("tablespaces", e.to_string()),
                },
            );
        }
        if let Some(s) = &srv {
            checks.push(match wal::recorded_system(&*cx.store, &env.name).await {
                Ok(Some(id)) if id == s.system_id => {
                    Check::pass("system-identifier", format!("the archive of {} holds this cluster ({id})", env.name))
                }
                Ok(Some(id)) => Check::fail(
                    "system-identifier",
                    format!(
                        "the archive of {} holds cluster {id}, this server is {}: a new cluster (initdb, a \
                         restore that became the primary) under the same env would mix two histories; \
                         give it its own env",
                        env.name, s.system_id
                    ),
                ),
                Ok(None) => Check::pass(
                    "system-identifier",
                    format!("no cluster recorded for {} yet: this backup records {}", env.name, s.system_id),
                ),
                Err(e) => Check::fail("system-identifier", e.to_string()),
            });
        }
        let tools = self.tools();
        let major = srv.as_ref().map(|s| s.major);
        checks.push(super::tool_at_least_server(&tools, "pg_basebackup", "pg-basebackup-version", major).await);
        checks.push(store_writable(cx).await);
        checks
    }

    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        // Like a logical backup, a base backup never resumes: every run takes its own.
        Ok(false)
    }

    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let env = &self.state.env;
        let url = &env.database_url;
        let tools = self.tools();
        let version = tools.major_version("pg_basebackup").await?;
        let client = pg::connect(url).await?;
        let srv = server(&client).await.map_err(|e| pg::db_error(url, &e))?;
        // The archive's cluster is recorded before the backup, so a backup is never committed
        // against another cluster's WAL.
        let recorded = wal::record_system(&*cx.store, &env.name, srv.system_id).await?;
        if recorded != srv.system_id {
            return Err(Error::step(
                "base-backup",
                format!("the archive of {} holds cluster {recorded}, this server is {}", env.name, srv.system_id),
            ));
        }

        let started = SystemTime::now();
        let t0 = Instant::now();
        let recipients = &cx.config.age_recipients;
        let base = objects_base(&env.name, &self.state.id, !recipients.is_empty());
        // -X none: the WAL is in the archive (the server waits until the last segment is archived);
        // -c fast: an immediate checkpoint, so the backup starts now rather than at the next one.
        let mut child = tools.spawn(
            "pg_basebackup",
            &["-D", "-", "-F", "t", "-X", "none", "-c", "fast", "--no-password"],
            Some(url),
            false,
        )?;
        let stdout = child.stdout.take().ok_or_else(|| Error::step("base-backup", "pg_basebackup has no stdout"))?;
        if let Some(n) = srv.size {
            cx.out.info(&format!("base backup: about {} expected (the databases' size)", bytes(n)));
            log.set("expected_bytes", n);
            cx.run.report("expected_bytes", n);
        }
        let watcher = Arc::new(Mutex::new(TarWatcher::default()));
        let source = Watched { inner: stdout, watcher: watcher.clone() };
        let progress = cx.out.progress("base backup", srv.size, true);
        let stored = super::dump::compress_to_store(
            source,
            cx.store.clone(),
            &base,
            super::dump::SPLIT_BYTES,
            recipients,
            progress.clone(),
        )
        .await;
        progress.finish();
        // pg_basebackup's verdict first: it explains a short stream better than the stream does.
        let warnings = child.wait().await?;
        let stored = stored?;
        let stop_time = SystemTime::now();
        for w in warnings.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("NOTICE:")) {
            cx.out.warn(&format!("pg_basebackup: {w}"));
        }
        let found = watcher.lock().expect("watcher").found()?;
        let seg = srv.segment_size;
        let wal_start = wal::segment_of(found.start_tli, found.start_lsn, seg).name();
        // The stop LSN is the end of the backup-end record: the segment holding its last byte.
        let wal_end = wal::segment_of(found.stop_tli, found.stop_lsn.saturating_sub(1), seg).name();
        let encrypted = !stored.age_recipients.is_empty();
        let manifest = Manifest {
            id: self.state.id.clone(),
            env: env.name.clone(),
            kind: "base".into(),
            format: if encrypted { "pg_basebackup -Ft, zstd, age" } else { "pg_basebackup -Ft, zstd" }.into(),
            encryption: encrypted.then(|| catalog::AGE.to_string()),
            age_recipients: stored.age_recipients.clone(),
            // The whole cluster: every database of the server.
            database: String::new(),
            server_version: srv.version.clone(),
            pg_dump_version: String::new(),
            run_id: cx.run_id.clone(),
            started: humantime::format_rfc3339_millis(started).to_string(),
            finished: humantime::format_rfc3339_millis(stop_time).to_string(),
            duration_ms: t0.elapsed().as_millis() as u64,
            bytes: stored.bytes,
            sha256: stored.sha256.clone(),
            dump_bytes: stored.dump_bytes,
            objects: stored.objects,
            tables: Vec::new(),
            wal_start: Some(wal_start.clone()),
            wal_end: Some(wal_end.clone()),
            base: Some(BaseInfo {
                system_identifier: srv.system_id.to_string(),
                timeline: found.stop_tli,
                start_lsn: wal::format_lsn(found.start_lsn),
                stop_lsn: wal::format_lsn(found.stop_lsn),
                start_time: humantime::format_rfc3339_millis(started).to_string(),
                // Taken after pg_basebackup exited, so never earlier than the point the backup is
                // consistent from: a recovery target at or after it is reachable from this backup.
                stop_time: humantime::format_rfc3339_millis(stop_time).to_string(),
                wal_segment_size: seg,
                pg_basebackup_version: version.to_string(),
            }),
        };
        log.set("id", manifest.id.clone());
        log.set("bytes", manifest.bytes);
        log.set("tar_bytes", manifest.dump_bytes);
        log.set("sha256", manifest.sha256.clone());
        log.set("objects", manifest.objects.len() as u64);
        log.set("wal_start", wal_start.clone());
        log.set("wal_end", wal_end.clone());
        log.set("stop_lsn", wal::format_lsn(found.stop_lsn));
        log.summary(format!(
            "{} -> {} in {}{}, WAL {wal_start} .. {wal_end}",
            bytes(manifest.dump_bytes),
            bytes(manifest.bytes),
            count(manifest.objects.len() as u64, "object"),
            if encrypted { " (age-encrypted)" } else { "" },
        ));
        cx.run.report("id", manifest.id.clone());
        cx.run.report("type", "base");
        cx.run.report("bytes", manifest.bytes);
        cx.run.report("tar_bytes", manifest.dump_bytes);
        cx.run.report("sha256", manifest.sha256.clone());
        cx.run.report("wal_start", wal_start);
        cx.run.report("wal_end", wal_end);
        cx.run.report("start_lsn", wal::format_lsn(found.start_lsn));
        cx.run.report("stop_lsn", wal::format_lsn(found.stop_lsn));
        cx.run.report("timeline", found.stop_tli);
        cx.run.report("objects", json!(manifest.objects.iter().map(|o| o.key.clone()).collect::<Vec<_>>()));
        if encrypted {
            cx.run.report("encryption", catalog::AGE);
        }
        *self.state.manifest.lock().expect("manifest") = Some(manifest);
        Ok(())
    }

    async fn verify(&self, cx: &Ctx) -> Result<()> {
        super::objects_stored(cx, "base-backup", &self.state.manifest()?).await
    }
}

// ---------------------------------------------------------------------------------------------

/// Wait until the backup's last WAL segment is in the archive's index. The server's backup stop
/// already waited for its archiver to succeed, so this normally answers at once; it fails (after
/// policy.restore_timeout) when the archiver "succeeded" somewhere else than drctl's archive.
struct AwaitWal {
    state: Arc<Shared>,
}

impl AwaitWal {
    fn target(&self) -> Result<(u64, WalFile, String)> {
        let m = self.state.manifest()?;
        let base = m.base.ok_or_else(|| Error::step("await-wal", "no base backup was taken"))?;
        let end = m.wal_end.ok_or_else(|| Error::step("await-wal", "the backup has no WAL range"))?;
        let f = WalFile::parse(&end).ok_or_else(|| Error::step("await-wal", format!("{end}: not a segment name")))?;
        let sysid = base.system_identifier.parse().map_err(|_| Error::step("await-wal", "bad system identifier"))?;
        Ok((sysid, f, end))
    }

    async fn archived(&self, cx: &Ctx) -> Result<bool> {
        let (sysid, f, _) = self.target()?;
        Ok(wal::find_archived(&*cx.store, &self.state.env.name, sysid, &f).await?.is_some())
    }
}

#[async_trait]
impl Step for AwaitWal {
    fn id(&self) -> &'static str {
        "await-wal"
    }
    async fn is_done(&self, cx: &Ctx) -> Result<bool> {
        if self.state.manifest.lock().expect("manifest").is_none() {
            return Ok(false);
        }
        self.archived(cx).await
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let (_, _, end) = self.target()?;
        let timeout = cx.config.policy.restore_timeout;
        let t0 = Instant::now();
        loop {
            if self.archived(cx).await? {
                break;
            }
            if t0.elapsed() >= timeout {
                return Err(Error::step(
                    "await-wal",
                    format!(
                        "segment {end}, the backup's last, is not in drctl's archive after {}: the server's \
                         archive_command must be drctl wal-push for env {} (see pg_stat_archiver and the \
                         server's log); this backup is not committed",
                        humantime::format_duration(timeout),
                        self.state.env.name
                    ),
                ));
            }
            tokio::time::sleep(POLL_ARCHIVE).await;
        }
        log.set("wal_end", end.clone());
        log.summary(format!("{end} is archived"));
        Ok(())
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        if self.archived(cx).await? {
            Ok(())
        } else {
            Err(Error::step("await-wal", "the backup's last segment is not in the archive"))
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// The backup's WAL range as the stream states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub start_lsn: u64,
    pub start_tli: u32,
    pub stop_lsn: u64,
    pub stop_tli: u32,
}

/// Reads a ustar stream as it passes and keeps `backup_label` and the tail of `backup_manifest`.
/// Bounded memory: the label is a few hundred bytes, and of the manifest (a line per file) only
/// the last `MANIFEST_TAIL` bytes are kept, where its WAL-Ranges are.
#[derive(Default)]
pub struct TarWatcher {
    header: Vec<u8>,
    /// Data bytes left in the current member, then its padding to 512.
    data_left: u64,
    pad_left: u64,
    capture: Capture,
    label: Vec<u8>,
    manifest_tail: Vec<u8>,
    manifest_seen: bool,
    ended: bool,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Capture {
    #[default]
    None,
    Label,
    Manifest,
}

const MANIFEST_TAIL: usize = 64 << 10;
const LABEL_MAX: usize = 64 << 10;

impl TarWatcher {
    pub fn feed(&mut self, mut b: &[u8]) {
        while !b.is_empty() && !self.ended {
            if self.data_left > 0 {
                let n = (self.data_left as usize).min(b.len());
                match self.capture {
                    Capture::Label if self.label.len() < LABEL_MAX => self.label.extend_from_slice(&b[..n]),
                    Capture::Manifest => {
                        self.manifest_tail.extend_from_slice(&b[..n]);
                        if self.manifest_tail.len() > 2 * MANIFEST_TAIL {
                            let cut = self.manifest_tail.len() - MANIFEST_TAIL;
                            self.manifest_tail.drain(..cut);
                        }
                    }
                    _ => {}
                }
                self.data_left -= n as u64;
                b = &b[n..];
                continue;
            }
            if self.pad_left > 0 {
                let n = (self.pad_left as usize).min(b.len());
                self.pad_left -= n as u64;
                b = &b[n..];
                continue;
            }
            let n = (512 - self.header.len()).min(b.len());
            self.header.extend_from_slice(&b[..n]);
            b = &b[n..];
            if self.header.len() == 512 {
                let h = std::mem::take(&mut self.header);
                self.header_done(&h);
            }
        }
    }

    fn header_done(&mut self, h: &[u8]) {
        if h.iter().all(|&c| c == 0) {
            // An end-of-archive block: nothing after it matters.
            self.ended = true;
            return;
        }
        let size = tar_size(&h[124..136]);
        let name = tar_name(h);
        let regular = matches!(h[156], b'0' | 0);
        self.capture = match name.as_str() {
            "backup_label" if regular => Capture::Label,
            "backup_manifest" if regular => {
                self.manifest_seen = true;
                self.manifest_tail.clear();
                Capture::Manifest
            }
            _ => Capture::None,
        };
        self.data_left = size;
        self.pad_left = (512 - size % 512) % 512;
    }

    /// The WAL range, or why the stream did not state it.
    pub fn found(&self) -> Result<Found> {
        let label = String::from_utf8_lossy(&self.label);
        let not_base = |what: &str| {
            Error::step(
                "base-backup",
                format!("the stream had no {what}: not a PostgreSQL 13+ pg_basebackup tar stream"),
            )
        };
        if self.label.is_empty() {
            return Err(not_base("backup_label"));
        }
        let field = |key: &str| label.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
        let start_lsn = field("START WAL LOCATION:")
            .and_then(|v| v.split_whitespace().next())
            .and_then(wal::parse_lsn)
            .ok_or_else(|| not_base("START WAL LOCATION in backup_label"))?;
        let start_tli = field("START TIMELINE:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| not_base("START TIMELINE in backup_label"))?;
        if !self.manifest_seen {
            return Err(not_base("backup_manifest"));
        }
        let tail = String::from_utf8_lossy(&self.manifest_tail);
        let ranges = tail.rfind("\"WAL-Ranges\"").map(|i| &tail[i..]).ok_or_else(|| not_base("WAL-Ranges"))?;
        // The last range is the one the backup ended on.
        let last = ranges.rfind("\"Timeline\"").map(|i| &ranges[i..]).ok_or_else(|| not_base("WAL-Ranges"))?;
        let value = |key: &str| -> Option<&str> {
            let at = last.find(key)? + key.len();
            let rest = last[at..].trim_start().strip_prefix(':')?.trim_start();
            let rest = rest.strip_prefix('"').unwrap_or(rest);
            let end = rest.find(['"', ',', ' ', '}'])?;
            Some(&rest[..end])
        };
        let stop_tli = value("\"Timeline\"").and_then(|v| v.parse().ok()).ok_or_else(|| not_base("a WAL range"))?;
        let stop_lsn = value("\"End-LSN\"").and_then(wal::parse_lsn).ok_or_else(|| not_base("a WAL range"))?;
        Ok(Found { start_lsn, start_tli, stop_lsn, stop_tli })
    }
}

/// A ustar size field: octal digits, or base-256 (high bit set) for members over 8 GiB.
fn tar_size(f: &[u8]) -> u64 {
    if f[0] & 0x80 != 0 {
        return f[1..].iter().fold(u64::from(f[0] & 0x7f), |n, &b| (n << 8) | u64::from(b));
    }
    let s = String::from_utf8_lossy(f);
    u64::from_str_radix(s.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap_or(0)
}

/// A ustar member's name: prefix + "/" + name, trailing NULs dropped.
fn tar_name(h: &[u8]) -> String {
    let cstr = |b: &[u8]| String::from_utf8_lossy(&b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]).into_owned();
    let name = cstr(&h[0..100]);
    let prefix = if &h[257..262] == b"ustar" { cstr(&h[345..500]) } else { String::new() };
    if prefix.is_empty() { name } else { format!("{prefix}/{name}") }
}

/// pg_basebackup's stdout, every byte also shown to the watcher on its way to the compressor.
struct Watched<R> {
    inner: R,
    watcher: Arc<Mutex<TarWatcher>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Watched<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                self.watcher.lock().expect("watcher").feed(new);
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, data: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000600");
        let size = format!("{:011o}", data.len());
        h[124..135].copy_from_slice(size.as_bytes());
        h[156] = b'0';
        h[257..262].copy_from_slice(b"ustar");
        let mut out = h;
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    const LABEL: &str = "START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\n\
                         CHECKPOINT LOCATION: 0/3000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
                         START TIME: 2026-12-02 13:31:09 UTC\nLABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n";

    fn manifest(files: usize) -> String {
        let mut m = String::from("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n");
        for i in 0..files {
            m.push_str(&format!("{{ \"Path\": \"base/1/{i}\", \"Size\": 8192, \"Checksum\": \"536f950b\" }},\n"));
        }
        m.push_str(
            "],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/3000028\", \"End-LSN\": \"0/3000100\" }\n],\n\
             \"Manifest-Checksum\": \"336b\"}\n",
        );
        m
    }

    fn stream(manifest_files: usize) -> Vec<u8> {
        let mut s = member("backup_label", LABEL.as_bytes());
        s.extend(member("tablespace_map", b""));
        s.extend(member("base/1/1259", &vec![7u8; 20_000]));
        s.extend(member("backup_manifest", manifest(manifest_files).as_bytes()));
        s.extend(vec![0u8; 1024]);
        s
    }

    #[test]
    fn the_watcher_reads_the_wal_range_whatever_the_read_sizes() {
        let s = stream(10);
        for piece in [1, 7, 511, 512, 513, 4096, s.len()] {
            let mut w = TarWatcher::default();
            for c in s.chunks(piece) {
                w.feed(c);
            }
            assert_eq!(
                w.found().unwrap(),
                Found { start_lsn: 0x3000028, start_tli: 1, stop_lsn: 0x3000100, stop_tli: 1 },
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn a_big_manifest_keeps_only_its_tail_and_still_yields_the_range() {
        let s = stream(20_000);
        let mut w = TarWatcher::default();
        for c in s.chunks(65536) {
            w.feed(c);
        }
        assert!(w.manifest_tail.len() <= 2 * MANIFEST_TAIL);
        assert_eq!(w.found().unwrap().stop_lsn, 0x3000100);
    }

    #[test]
    fn a_stream_without_label_or_manifest_is_named() {
        let mut w = TarWatcher::default();
        w.feed(&member("base/1/1", b"x"));
        assert!(w.found().unwrap_err().to_string().contains("backup_label"));
        let mut w = TarWatcher::default();
        w.feed(&member("backup_label", LABEL.as_bytes()));
        assert!(w.found().unwrap_err().to_string().contains("backup_manifest"));
    }

    #[test]
    fn base_256_sizes_are_read() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[8..12].copy_from_slice(&[0x02, 0x00, 0x00, 0x00]);
        assert_eq!(tar_size(&f), 0x0200_0000);
        assert_eq!(tar_size(b"00000001750\0"), 1000);
    }
}
