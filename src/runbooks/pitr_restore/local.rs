//! pitr-restore --data-dir DIR: a self-managed env's newest base backup that ends before the
//! target, unpacked into a new data directory, recovered with the WAL archive to the target and
//! promoted. The on-call procedure it replaces: find the right base backup, `tar -x` it, write
//! restore_command and the target into postgresql.auto.conf, touch recovery.signal, start the
//! server, watch its log until it says "recovery stopping before …" and "database system is
//! ready to accept connections", then check that it takes writes.
//!
//! Steps: `restore-base` (stream, verify, unpack), `write-recovery` (settings + recovery.signal),
//! `start-server` (pg_ctl start, its log in DIR/drctl-pitr-restore.log), `wait-recovery` (until
//! promoted; past policy.restore_timeout exit 6). With --no-start only the first two run.
//! A marker, DIR/drctl-pitr-restore.json, says which run unpacked what, so a rerun of the same
//! command resumes (and may wipe what it alone left half-unpacked) and never touches a directory
//! it did not create.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::catalog::{self, BaseInfo, Manifest};
use crate::cli::PitrRestoreArgs;
use crate::clients::pgtools::PgTools;
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::dburl::{DbUrl, SslMode};
use crate::engine::run::Runbook;
use crate::engine::step::{Check, Step, StepLog};
use crate::error::{Error, Result};
use crate::wal::{self, Archived, IndexChunk, WalFile};

/// What to recover to.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Time(SystemTime),
    Lsn(u64),
    Latest,
    /// The consistent end of this base backup (`recovery_target = 'immediate'`): drill's
    /// rehearsal of one backup, replaying only the WAL the backup itself needs.
    Backup(String),
}

impl Target {
    pub fn from_args(args: &PitrRestoreArgs) -> Result<Target> {
        if let Some(t) = &args.target_time {
            let at = humantime::parse_rfc3339_weak(t).map_err(|e| {
                Error::usage(format!("--target-time {t}: not an RFC 3339 time like 2026-12-01T13:59:00Z ({e})"))
            })?;
            // parse_rfc3339_weak takes no offset other than Z; say so rather than misread one.
            if !(t.ends_with('Z') || t.ends_with('z')) {
                return Err(Error::usage(format!("--target-time {t}: give the time in UTC, ending in Z")));
            }
            return Ok(Target::Time(at));
        }
        if let Some(l) = &args.target_lsn {
            return wal::parse_lsn(l)
                .map(Target::Lsn)
                .ok_or_else(|| Error::usage(format!("--target-lsn {l}: not a WAL location like 0/3000060")));
        }
        Ok(Target::Latest)
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Time(t) => format!("time {}", humantime::format_rfc3339_millis(*t)),
            Target::Lsn(l) => format!("LSN {}", wal::format_lsn(*l)),
            Target::Latest => "the end of the archived WAL".into(),
            Target::Backup(id) => format!("the consistent end of base backup {id}"),
        }
    }

    /// The postgresql.conf lines that set it (none for --latest: recovery runs to the end).
    fn settings(&self) -> Vec<(&'static str, String)> {
        match self {
            // PostgreSQL's own timestamptz form: it rejects RFC 3339's `T…Z` spelling here.
            Target::Time(t) => vec![("recovery_target_time", pg_timestamp(*t))],
            Target::Lsn(l) => vec![("recovery_target_lsn", wal::format_lsn(*l))],
            Target::Latest => Vec::new(),
            Target::Backup(_) => vec![("recovery_target", "immediate".into())],
        }
    }
}

/// `2026-12-01 13:59:00.000+00`: a time as recovery_target_time takes it.
fn pg_timestamp(t: SystemTime) -> String {
    let rfc = humantime::format_rfc3339_millis(t).to_string();
    format!("{}+00", rfc.trim_end_matches('Z').replacen('T', " ", 1))
}

/// A committed base backup of the env, with its manifest.
#[derive(Debug, Clone)]
pub struct BaseBackup {
    pub manifest: Manifest,
    pub base: BaseInfo,
    pub stop_time: SystemTime,
    pub stop_lsn: u64,
}

/// The span a restore can reach: from the end of the oldest base backup to the newest archived WAL.
#[derive(Debug, Clone)]
pub struct Window {
    pub bases: Vec<BaseBackup>,
    /// The newest archived segment (on the newest base backup's timeline or a later one).
    pub newest: Option<Archived>,
    pub newest_end_lsn: Option<u64>,
}

impl Window {
    /// "2026-12-01T10:00:00.000Z (end of base backup ID) .. 2026-12-01T12:00:00.000Z (WAL …)".
    pub fn describe(&self) -> String {
        let start = match self.bases.first() {
            Some(b) => format!(
                "{} / LSN {} (end of base backup {})",
                humantime::format_rfc3339_millis(b.stop_time),
                b.base.stop_lsn,
                b.manifest.id
            ),
            None => "no base backup".into(),
        };
        let end = match (&self.newest, self.newest_end_lsn) {
            (Some(a), Some(lsn)) => format!("{} / LSN {} (archived WAL {})", a.pushed, wal::format_lsn(lsn), a.name),
            _ => "no archived WAL".into(),
        };
        format!("{start} .. {end}")
    }

    /// The newest base backup a recovery to `target` can start from, or why none can.
    pub fn choose(&self, target: &Target) -> std::result::Result<&BaseBackup, String> {
        let window = self.describe();
        if let Target::Backup(id) = target {
            let b = self
                .bases
                .iter()
                .find(|b| &b.manifest.id == id)
                .ok_or_else(|| format!("{id} is not a committed base backup of this env: {window}"))?;
            return match self.newest_end_lsn {
                Some(end) if end >= b.stop_lsn => Ok(b),
                _ => Err(format!(
                    "the WAL base backup {id} needs (to LSN {}) is not all archived: {window}",
                    b.base.stop_lsn
                )),
            };
        }
        let newest = self.bases.last().ok_or_else(|| "no committed base backup of this env".to_string())?;
        let fits = |b: &&BaseBackup| match target {
            Target::Time(t) => b.stop_time <= *t,
            Target::Lsn(l) => b.stop_lsn <= *l,
            Target::Latest | Target::Backup(_) => true,
        };
        let Some(base) = self.bases.iter().rev().find(fits) else {
            return Err(format!("{} is before the recoverable window: {window}", target.describe()));
        };
        let (Some(a), Some(end)) = (&self.newest, self.newest_end_lsn) else {
            return Err(format!("no WAL is archived for base backup {}: {window}", newest.manifest.id));
        };
        let past = match target {
            Target::Time(t) => humantime::parse_rfc3339_weak(&a.pushed).is_ok_and(|p| *t > p),
            Target::Lsn(l) => *l > end,
            Target::Latest | Target::Backup(_) => false,
        };
        if past {
            return Err(format!("{} is after the newest archived WAL: recoverable window {window}", target.describe()));
        }
        Ok(base)
    }
}

/// The env's committed base backups (oldest first) and its newest archived WAL.
pub async fn window(cx: &Ctx, env: &str) -> Result<Window> {
    let state = cx.journal.state().await?;
    let mut bases = Vec::new();
    for c in state.committed(Some(env)) {
        let Ok(m) = catalog::read_manifest(&*cx.store, &c).await? else { continue };
        let Some(base) = m.base.clone() else { continue };
        let stop_time = humantime::parse_rfc3339_weak(&base.stop_time).map_err(|e| {
            Error::step("pitr-restore", format!("backup {}: unreadable stop_time {}: {e}", m.id, base.stop_time))
        })?;
        let stop_lsn = wal::parse_lsn(&base.stop_lsn).ok_or_else(|| {
            Error::step("pitr-restore", format!("backup {}: unreadable stop_lsn {}", m.id, base.stop_lsn))
        })?;
        bases.push(BaseBackup { manifest: m, base, stop_time, stop_lsn });
    }
    bases.sort_by_key(|b| b.stop_lsn);
    let (mut newest, mut newest_end_lsn) = (None, None);
    if let Some(b) = bases.last() {
        let sysid: u64 = b.base.system_identifier.parse().map_err(|_| {
            Error::step(
                "pitr-restore",
                format!("backup {}: system_identifier {}", b.manifest.id, b.base.system_identifier),
            )
        })?;
        if let Some(a) = newest_archived(cx, env, sysid, b.base.timeline).await? {
            let seg_size = b.base.wal_segment_size;
            newest_end_lsn = match WalFile::parse(&a.name) {
                Some(WalFile::Segment { log, seg, .. }) => {
                    Some((u64::from(log) * wal::segments_per_log(seg_size) + u64::from(seg) + 1) * u64::from(seg_size))
                }
                _ => None,
            };
            newest = Some(a);
        }
    }
    Ok(Window { bases, newest, newest_end_lsn })
}

/// The newest archived segment on timeline `tli` or a later one (a promotion of a restored
/// cluster archives on the next timeline): the last line of the last index chunk.
async fn newest_archived(cx: &Ctx, env: &str, sysid: u64, tli: u32) -> Result<Option<Archived>> {
    let mut best = None;
    for t in tli..tli.saturating_add(32) {
        let prefix = format!("{}index/", wal::timeline_prefix(env, sysid, t));
        let chunks: Vec<_> =
            cx.store.list(&prefix).await?.into_iter().filter(|o| !o.key.ends_with("/history.json")).collect();
        let Some(last) = chunks.last() else {
            if t > tli {
                break;
            }
            continue;
        };
        let Some(v) = cx.store.get(&last.key).await? else { continue };
        let chunk = IndexChunk::parse(&last.key, &v.data)?;
        if let Some(a) = chunk
            .files
            .into_iter()
            .filter(|a| matches!(WalFile::parse(&a.name), Some(WalFile::Segment { .. })))
            .max_by(|a, b| a.name.cmp(&b.name))
        {
            best = Some(a);
        }
    }
    Ok(best)
}

// ---------------------------------------------------------------------------------------------

/// DIR/drctl-pitr-restore.json: what this command put in DIR, so a rerun resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    /// The command's arguments: a rerun with others must not take this directory over.
    args: String,
    backup_id: String,
    port: u16,
    /// `unpacking` → `unpacked` → `configured`.
    stage: String,
}

const MARKER: &str = "drctl-pitr-restore.json";
const SERVER_LOG: &str = "drctl-pitr-restore.log";

fn read_marker(dir: &Path) -> Option<Marker> {
    serde_json::from_slice(&std::fs::read(dir.join(MARKER)).ok()?).ok()
}

fn write_marker(dir: &Path, m: &Marker) -> Result<()> {
    let path = dir.join(MARKER);
    let tmp = dir.join(format!("{MARKER}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(m).expect("marker"))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(path.display(), e))
}

struct Plan {
    env: EnvConfig,
    dir: PathBuf,
    args: String,
    target: Target,
    port: u16,
    start: bool,
    chosen: Mutex<Option<BaseBackup>>,
}

impl Plan {
    fn chosen(&self) -> Result<BaseBackup> {
        self.chosen.lock().expect("chosen").clone().ok_or_else(|| Error::step("restore-base", "no base backup chosen"))
    }

    fn marker(&self) -> Option<Marker> {
        read_marker(&self.dir).filter(|m| m.args == self.args)
    }

    fn tools(&self) -> PgTools {
        PgTools::new(self.env.pg_bin.as_deref())
    }

    /// The restored server, as the env's role reaches it on this host. TLS is not asked for: it is
    /// a loopback connection to a server this run started.
    fn url(&self) -> DbUrl {
        loopback_url(&self.env, self.port)
    }
}

/// The env's database on a server this run started here on `port`, as the env's role reaches it:
/// TLS is not asked for (a loopback connection).
pub fn loopback_url(env: &EnvConfig, port: u16) -> DbUrl {
    let mut u = env.database_url.clone();
    u.host = "127.0.0.1".into();
    u.port = port;
    u.sslmode = SslMode::Prefer;
    u.sslrootcert = None;
    u
}

pub async fn pitr_restore_local(_cx: &Ctx, env: &EnvConfig, args: &PitrRestoreArgs, dir: &Path) -> Result<Runbook> {
    let target = Target::from_args(args)?;
    let dir = std::path::absolute(dir).map_err(|e| Error::io(dir.display(), e))?;
    let mut line = format!("--env {}", env.name);
    match (&args.target_time, &args.target_lsn) {
        (Some(t), _) => line.push_str(&format!(" --target-time {t}")),
        (_, Some(l)) => line.push_str(&format!(" --target-lsn {l}")),
        _ => line.push_str(" --latest"),
    }
    line.push_str(&format!(" --data-dir {}", dir.display()));
    if let Some(p) = args.port {
        line.push_str(&format!(" --port {p}"));
    }
    if args.no_start {
        line.push_str(" --no-start");
    }
    // The port: given, or the one an earlier attempt of this command chose, or a free one.
    let port = match args.port {
        Some(p) => p,
        None => match read_marker(&dir).filter(|m| m.args == line) {
            Some(m) => m.port,
            None => free_port()?,
        },
    };
    let plan = Arc::new(Plan {
        env: env.clone(),
        dir,
        args: line.clone(),
        target,
        port,
        start: !args.no_start,
        chosen: Mutex::new(None),
    });
    // One restore of an env at a time: two would race for the archive's attention and the
    // operator's, and the lock names who is restoring.
    let mut rb = Runbook::new("pitr-restore", Some(&env.name), line)
        .lock(format!("pitr:{}", env.name))
        .resumable()
        .step(RestoreBase { plan: plan.clone() })
        .step(WriteRecovery { plan: plan.clone() });
    if plan.start {
        rb = rb.step(StartServer { plan: plan.clone() }).step(WaitRecovery { plan });
    }
    Ok(rb)
}

/// Base backup `id` restored into `dir` (absent or empty) to its consistent end, started on
/// `port` and promoted: the steps of pitr-restore (restore-base, write-recovery, start-server,
/// wait-recovery), added to `rb`, for drill's rehearsal. The caller stops the server and removes
/// `dir` afterwards (`stop_and_remove`).
pub fn rehearse_into(rb: Runbook, env: &EnvConfig, id: &str, dir: &Path, port: u16) -> Runbook {
    let plan = Arc::new(Plan {
        env: env.clone(),
        dir: dir.to_path_buf(),
        args: format!("drill --env {} --from-backup {id}", env.name),
        target: Target::Backup(id.to_string()),
        port,
        start: true,
        chosen: Mutex::new(None),
    });
    rb.step(RestoreBase { plan: plan.clone() })
        .step(WriteRecovery { plan: plan.clone() })
        .step(StartServer { plan: plan.clone() })
        .step(WaitRecovery { plan })
}

/// Stop a server drctl started in `dir` (immediate: it is a scratch copy) and remove `dir`.
pub async fn stop_and_remove(env: &EnvConfig, dir: &Path) -> Result<()> {
    let tools = PgTools::new(env.pg_bin.as_deref());
    if dir.join("postmaster.pid").exists() {
        // Best effort: a server that is already gone leaves a stale pid file behind.
        let _ = tools.stop_server_immediate(dir).await;
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dir.display(), e)),
    }
}

/// A free loopback port (the OS picks it; a race with another process is caught by port-free).
pub fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("127.0.0.1:0", e))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Single-quoted for postgresql.conf.
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

// ---------------------------------------------------------------------------------------------

struct RestoreBase {
    plan: Arc<Plan>,
}

impl RestoreBase {
    fn dir_state(&self) -> std::result::Result<String, String> {
        let dir = &self.plan.dir;
        match std::fs::read_dir(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(format!("{} does not exist: created", dir.display()))
            }
            Err(e) => Err(format!("{}: {e}", dir.display())),
            Ok(mut entries) => {
                if entries.next().is_none() {
                    return Ok(format!("{} is empty", dir.display()));
                }
                match read_marker(dir) {
                    Some(m) if m.args == self.plan.args => Ok(format!(
                        "{} holds this command's earlier restore (stage {}): resumed",
                        dir.display(),
                        m.stage
                    )),
                    Some(m) => Err(format!(
                        "{} holds another pitr-restore ({}); give a new, empty directory",
                        dir.display(),
                        m.args
                    )),
                    None => Err(format!(
                        "{} is not empty: pitr-restore only writes into an absent or empty directory; give a new one",
                        dir.display()
                    )),
                }
            }
        }
    }
}

#[async_trait]
impl Step for RestoreBase {
    fn id(&self) -> &'static str {
        "restore-base"
    }
    fn check_ids(&self) -> &'static [&'static str] {
        &["target-window", "data-dir-empty", "port-free", "postgres-version"]
    }

    async fn preflight(&self, cx: &Ctx) -> Vec<Check> {
        let plan = &self.plan;
        let mut checks = Vec::new();
        let resumed = plan.marker().is_some();
        match window(cx, &plan.env.name).await {
            Ok(w) => match w.choose(&plan.target) {
                Ok(b) => {
                    checks.push(Check::pass(
                        "target-window",
                        format!(
                            "{}: from base backup {} (ends {} / LSN {}); recoverable window {}",
                            plan.target.describe(),
                            b.manifest.id,
                            b.base.stop_time,
                            b.base.stop_lsn,
                            w.describe()
                        ),
                    ));
                    *plan.chosen.lock().expect("chosen") = Some(b.clone());
                }
                Err(why) => checks.push(Check::fail("target-window", why)),
            },
            Err(e) => checks.push(Check::fail("target-window", e.to_string())),
        }
        checks.push(Check::from_result("data-dir-empty", self.dir_state()));
        if plan.start {
            let taken = std::net::TcpListener::bind(("127.0.0.1", plan.port)).is_err();
            // A resumed run's own server may be the one listening.
            let ours = resumed && plan.dir.join("postmaster.pid").exists();
            checks.push(if taken && !ours {
                Check::fail("port-free", format!("127.0.0.1:{} is in use: give another --port", plan.port))
            } else {
                Check::pass("port-free", format!("the restored server will listen on port {}", plan.port))
            });
        }
        let want = plan.chosen.lock().expect("chosen").as_ref().map(|b| major_of(&b.manifest.server_version));
        let tools = plan.tools();
        checks.push(match (tools.major_version("postgres").await, want) {
            (Ok(have), Some(Some(want))) if have == want => {
                Check::pass("postgres-version", format!("postgres {have}, as the backed-up server"))
            }
            (Ok(have), Some(Some(want))) => Check::fail(
                "postgres-version",
                format!(
                    "{} is PostgreSQL {have}; the backup is of PostgreSQL {want}: set pg_bin to a PostgreSQL {want} bin directory",
                    tools.path("postgres").display()
                ),
            ),
            (Ok(have), _) => Check::pass("postgres-version", format!("postgres {have}")),
            (Err(e), _) => Check::fail("postgres-version", e.to_string()),
        });
        checks
    }

    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        let Ok(chosen) = self.plan.chosen() else { return Ok(false) };
        Ok(self.plan.marker().is_some_and(|m| m.stage != "unpacking" && m.backup_id == chosen.manifest.id))
    }

    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let plan = &self.plan;
        let b = plan.chosen()?;
        let dir = &plan.dir;
        let t0 = Instant::now();
        if plan.marker().is_some() {
            // This command's own half-unpacked attempt: start the unpacking over.
            empty_dir(dir)?;
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(dir.display(), e))?;
        let mut marker = Marker {
            args: plan.args.clone(),
            backup_id: b.manifest.id.clone(),
            port: plan.port,
            stage: "unpacking".into(),
        };
        write_marker(dir, &marker)?;

        let dir_s =
            dir.to_str().ok_or_else(|| Error::step("restore-base", "the data directory's path is not UTF-8"))?;
        let mut tar = PgTools::new(None).spawn("tar", &["-x", "-f", "-", "-C", dir_s], None, true)?;
        let stdin = tar.stdin.take().ok_or_else(|| Error::step("restore-base", "tar has no stdin"))?;
        let progress = cx.out.progress("restore", Some(b.manifest.bytes), true);
        let streamed = crate::runbooks::backup::readback::stream_into(cx, &b.manifest, stdin, &progress).await;
        progress.finish();
        let tar_result = tar.wait().await;
        let read = streamed?;
        tar_result?;
        if !dir.join("PG_VERSION").exists() || !dir.join("global/pg_control").exists() {
            return Err(Error::step(
                "restore-base",
                format!("backup {} unpacked without PG_VERSION or global/pg_control: not a base backup", b.manifest.id),
            ));
        }
        give_to_owner(dir)?;
        marker.stage = "unpacked".into();
        write_marker(dir, &marker)?;
        log.set("backup_id", b.manifest.id.clone());
        log.set("stored_bytes", read.stored_bytes);
        log.set("bytes", read.plain_bytes);
        log.set("duration_ms", t0.elapsed().as_millis() as u64);
        cx.run.report("backup_id", b.manifest.id.clone());
        cx.run.report("data_dir", dir.display().to_string());
        log.summary(format!(
            "base backup {} ({}) unpacked into {}",
            b.manifest.id,
            crate::output::table::bytes(read.plain_bytes),
            dir.display()
        ));
        Ok(())
    }

    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        match self.plan.marker() {
            Some(m) if m.stage != "unpacking" => Ok(()),
            _ => Err(Error::step("restore-base", "the data directory's marker does not say unpacked")),
        }
    }
}

/// "15.4 (Debian …)" → 15.
fn major_of(server_version: &str) -> Option<u32> {
    server_version.split(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty())?.parse().ok()
}

/// Remove everything in `dir` (this command's own half-unpacked attempt).
fn empty_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir.display(), e))? {
        let p = e.map_err(|e| Error::io(dir.display(), e))?.path();
        let r = if p.is_dir() && !p.is_symlink() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        r.map_err(|e| Error::io(p.display(), e))?;
    }
    Ok(())
}

/// As root, the data directory and everything drctl wrote in it belong to the user who owns its
/// files (tar kept the backed-up server's owner, normally `postgres`): the server refuses to run
/// as root and refuses a data directory it does not own.
fn give_to_owner(dir: &Path) -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    let meta = std::fs::metadata(dir.join("PG_VERSION")).map_err(|e| Error::io(dir.join("PG_VERSION").display(), e))?;
    let (uid, gid) = (meta.uid(), meta.gid());
    if uid == 0 {
        return Err(Error::step(
            "restore-base",
            format!("{}: the unpacked files belong to root; the server cannot run as root", dir.display()),
        ));
    }
    chown_tree(dir, uid, gid)
}

fn chown_tree(p: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| Error::io(p.display(), e))?;
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).map_err(|e| Error::io(p.display(), e))? {
            chown_tree(&e.map_err(|e| Error::io(p.display(), e))?.path(), uid, gid)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

struct WriteRecovery {
    plan: Arc<Plan>,
}

/// The settings pitr-restore appends to postgresql.auto.conf (the last occurrence of a setting
/// wins): how to fetch WAL, where to stop, and what must not happen on the restored server.
fn recovery_settings(plan: &Plan, drctl: &Path, config: &Path) -> Vec<(&'static str, String)> {
    let restore_command = format!(
        "{} -c {} wal-fetch --env {} %f %p",
        shell_quote(&drctl.display().to_string()),
        shell_quote(&config.display().to_string()),
        shell_quote(&plan.env.name)
    );
    let mut s = vec![("restore_command", restore_command)];
    s.extend(plan.target.settings());
    s.extend([
        ("recovery_target_action", "promote".to_string()),
        ("recovery_target_timeline", "latest".to_string()),
        ("port", plan.port.to_string()),
        // The restored copy must never push its WAL into the env's archive: its new timeline
        // would mix with the env's own.
        ("archive_mode", "off".to_string()),
        // The server log where the wait step reads how recovery went.
        ("logging_collector", "off".to_string()),
        // Not a replica of anything.
        ("primary_conninfo", String::new()),
    ]);
    s
}

/// For restore_command, which PostgreSQL runs with `sh -c`.
fn shell_quote(s: &str) -> String {
    if s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[async_trait]
impl Step for WriteRecovery {
    fn id(&self) -> &'static str {
        "write-recovery"
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        Ok(self.plan.marker().is_some_and(|m| m.stage == "configured"))
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let plan = &self.plan;
        let dir = &plan.dir;
        let drctl = std::env::current_exe().map_err(|e| Error::io("the drctl executable", e))?;
        let config = std::path::absolute(&cx.config.file).map_err(|e| Error::io(cx.config.file.display(), e))?;
        let settings = recovery_settings(plan, &drctl, &config);
        let mut text = format!("\n# pitr-restore (drctl run {}): {}\n", cx.run_id, plan.target.describe());
        for (k, v) in &settings {
            text.push_str(&format!("{k} = {}\n", conf_quote(v)));
        }
        let auto = dir.join("postgresql.auto.conf");
        let mut old = std::fs::read_to_string(&auto).unwrap_or_default();
        old.push_str(&text);
        std::fs::write(&auto, old).map_err(|e| Error::io(auto.display(), e))?;
        // A base backup taken from a standby carries standby.signal: this is a recovery, not a replica.
        let _ = std::fs::remove_file(dir.join("standby.signal"));
        std::fs::write(dir.join("recovery.signal"), b"")
            .map_err(|e| Error::io(dir.join("recovery.signal").display(), e))?;
        give_to_owner(dir)?;
        let mut marker = plan.marker().ok_or_else(|| Error::step("write-recovery", "the marker is gone"))?;
        marker.stage = "configured".into();
        write_marker(dir, &marker)?;
        for (k, v) in &settings {
            log.set(k, v.clone());
        }
        cx.run.report("port", plan.port);
        if plan.start {
            log.summary(format!("recovery to {} configured in postgresql.auto.conf", plan.target.describe()));
        } else {
            let start = format!(
                "{} start -D {} -l {}",
                plan.tools().path("pg_ctl").display(),
                dir.display(),
                dir.join(SERVER_LOG).display()
            );
            cx.run.report("start_with", start.clone());
            log.summary(format!("ready to start: {start}"));
        }
        Ok(())
    }
    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        if self.plan.dir.join("recovery.signal").exists() || self.plan.marker().is_some_and(|m| m.stage == "configured")
        {
            Ok(())
        } else {
            Err(Error::step("write-recovery", "recovery.signal is missing"))
        }
    }
}

// ---------------------------------------------------------------------------------------------

struct StartServer {
    plan: Arc<Plan>,
}

#[async_trait]
impl Step for StartServer {
    fn id(&self) -> &'static str {
        "start-server"
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        Ok(self.plan.tools().server_running(&self.plan.dir).await)
    }
    async fn apply(&self, _cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let plan = &self.plan;
        let server_log = plan.dir.join(SERVER_LOG);
        // No wait here: a recovery takes as long as the WAL it replays; wait-recovery watches it.
        plan.tools().start_server_detached(&plan.dir, &server_log).await?;
        log.set("port", plan.port);
        log.set("log", server_log.display().to_string());
        log.summary(format!("postgres started on port {}, log {}", plan.port, server_log.display()));
        Ok(())
    }
    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        // `pg_ctl start -W` returns before the postmaster has written postmaster.pid: wait for
        // it (or for the log to say the server already stopped: wait-recovery reads why), so that
        // wait-recovery never takes a server still starting for one that is gone.
        let plan = &self.plan;
        let server_log = plan.dir.join(SERVER_LOG);
        let t0 = Instant::now();
        loop {
            if plan.tools().server_running(&plan.dir).await {
                return Ok(());
            }
            let text = std::fs::read_to_string(&server_log).unwrap_or_default();
            if text.contains("database system is shut down") || text.contains("FATAL:") {
                return Ok(());
            }
            if t0.elapsed() > SERVER_START {
                return Err(Error::step(
                    "start-server",
                    format!(
                        "no postmaster runs in {} {}s after pg_ctl start; {} ends: {}",
                        plan.dir.display(),
                        SERVER_START.as_secs(),
                        server_log.display(),
                        last_lines(&text, 5)
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How long the postmaster may take to appear after `pg_ctl start` (pg_ctl's own default wait).
const SERVER_START: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------

struct WaitRecovery {
    plan: Arc<Plan>,
}

/// What the server's log says about the recovery.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Running,
    /// restore_command failed above 125 (wal-fetch's 126): recovery aborted on this file.
    Aborted {
        segment: String,
        line: String,
    },
    /// The archive ended before the target.
    TargetNotReached {
        line: String,
    },
    /// Any other FATAL or PANIC of the startup process.
    Failed {
        line: String,
    },
}

fn read_verdict(log: &str) -> Verdict {
    for line in log.lines() {
        // Logged as FATAL only when restore_command died by a signal or exited above 125;
        // lower codes mean "not archived" and are not logged at all.
        if line.contains("FATAL:")
            && line.contains("could not restore file")
            && let Some(seg) = line.split('"').nth(1)
        {
            return Verdict::Aborted { segment: seg.to_string(), line: line.trim().to_string() };
        }
        if line.contains("recovery ended before configured recovery target was reached") {
            return Verdict::TargetNotReached { line: line.trim().to_string() };
        }
    }
    for line in log.lines() {
        if (line.contains("FATAL:") || line.contains("PANIC:")) && !line.contains("the database system is") {
            return Verdict::Failed { line: line.trim().to_string() };
        }
    }
    Verdict::Running
}

impl WaitRecovery {
    /// Promoted and answering: (last replayed transaction time, replay LSN, current LSN).
    async fn probe(&self) -> Option<(Option<SystemTime>, String, String)> {
        let client = crate::clients::pg::connect(&self.plan.url()).await.ok()?;
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(), pg_last_xact_replay_timestamp(), \
                 pg_last_wal_replay_lsn()::text, pg_current_wal_lsn()::text",
                &[],
            )
            .await
            .ok()?;
        let in_recovery: bool = row.get(0);
        if in_recovery {
            return None;
        }
        let at: Option<SystemTime> = row.get(1);
        let replayed: Option<String> = row.get(2);
        Some((at, replayed.unwrap_or_default(), row.get(3)))
    }
}

#[async_trait]
impl Step for WaitRecovery {
    fn id(&self) -> &'static str {
        "wait-recovery"
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        Ok(!self.plan.dir.join("recovery.signal").exists() && self.probe().await.is_some())
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let plan = &self.plan;
        let server_log = plan.dir.join(SERVER_LOG);
        let timeout = cx.config.policy.restore_timeout;
        let t0 = Instant::now();
        let progress = cx.out.progress("recovery", None, false);
        let reached = loop {
            if cx.cancel.is_cancelled() {
                return Err(Error::Interrupted { signal: cx.signal.load(std::sync::atomic::Ordering::SeqCst) });
            }
            if let Some(r) = self.probe().await {
                break r;
            }
            let text = std::fs::read_to_string(&server_log).unwrap_or_default();
            let running = plan.tools().server_running(&plan.dir).await;
            match read_verdict(&text) {
                Verdict::Aborted { segment, line } => {
                    return Err(Error::integrity(
                        format!("WAL archive of {}", plan.env.name),
                        segment,
                        format!(
                            "recovery aborted: {line} (wal-fetch exited 126: see its message above in {})",
                            server_log.display()
                        ),
                    ));
                }
                Verdict::TargetNotReached { line } if !running => {
                    return Err(Error::step(
                        "wait-recovery",
                        format!("{line}: the archived WAL ends before {}", plan.target.describe()),
                    ));
                }
                Verdict::Failed { line } if !running => {
                    return Err(Error::step(
                        "wait-recovery",
                        format!("the server stopped: {line} ({})", server_log.display()),
                    ));
                }
                _ if !running => {
                    return Err(Error::step(
                        "wait-recovery",
                        format!(
                            "the server is not running; its log {} ends: {}",
                            server_log.display(),
                            last_lines(&text, 5)
                        ),
                    ));
                }
                _ => {}
            }
            if t0.elapsed() >= timeout {
                return Err(Error::OutcomeUnknown {
                    sent: format!("recovery of {} (server on port {})", plan.dir.display(), plan.port),
                    waited: humantime::format_duration(Duration::from_secs(t0.elapsed().as_secs())).to_string(),
                });
            }
            progress.inc(1);
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        progress.finish();
        let (at, replayed, current) = reached;
        let at = at.map(|t| humantime::format_rfc3339_millis(t).to_string());
        // Promoted means writable; prove it with a write that leaves nothing behind.
        let client = crate::clients::pg::connect(&plan.url()).await?;
        let writable =
            client.batch_execute("BEGIN; CREATE TEMP TABLE drctl_pitr_probe (x int); ROLLBACK").await.is_ok();
        log.set("reached_time", at.clone());
        log.set("reached_lsn", replayed.clone());
        log.set("current_lsn", current);
        log.set("writable", writable);
        log.set("duration_ms", t0.elapsed().as_millis() as u64);
        cx.run.report("reached_time", at.clone());
        cx.run.report("reached_lsn", replayed.clone());
        cx.run.report("port", plan.port);
        cx.run.report("writable", writable);
        if !writable {
            return Err(Error::step("wait-recovery", "the restored server was promoted but refuses a write"));
        }
        log.summary(format!(
            "promoted on port {}: last replayed transaction {} at LSN {replayed}",
            plan.port,
            at.as_deref().unwrap_or("(none replayed)")
        ));
        Ok(())
    }
    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        match self.probe().await {
            Some(_) => Ok(()),
            None => Err(Error::step("wait-recovery", "the restored server is not answering as a primary")),
        }
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_says_how_recovery_ended() {
        let aborted = "2026-12-01 LOG:  restored log file \"000000010000000000000003\" from archive\n\
            2026-12-01 FATAL:  could not restore file \"000000010000000000000004\" from archive: child process exited with exit code 126\n";
        assert_eq!(
            read_verdict(aborted),
            Verdict::Aborted {
                segment: "000000010000000000000004".into(),
                line: "2026-12-01 FATAL:  could not restore file \"000000010000000000000004\" from archive: child process exited with exit code 126".into()
            }
        );
        let short = "FATAL:  recovery ended before configured recovery target was reached\n";
        assert!(matches!(read_verdict(short), Verdict::TargetNotReached { .. }));
        assert_eq!(
            read_verdict("LOG:  redo starts at 0/2000028\nFATAL:  the database system is starting up\n"),
            Verdict::Running
        );
    }

    #[test]
    fn restore_command_is_quoted_for_sh() {
        assert_eq!(shell_quote("/usr/bin/drctl"), "/usr/bin/drctl");
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
        assert_eq!(conf_quote("x 'y'"), "'x ''y'''");
        assert_eq!(major_of("15.8 (Debian 15.8-1)"), Some(15));
    }
}
