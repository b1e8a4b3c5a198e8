//! The local-directory store: each key is a file under the root, written so that a crash never
//! leaves a half-written object under its final name.
//!
//! Every write goes to `<root>/.tmp/<pid>-<random>` first, is fsynced, and only then gets its final
//! name: `rename(2)` for plain writes, `link(2)` for create-if-absent (it fails when the name exists,
//! which is what makes the check and the write one atomic step). Compare-and-swap serialises the
//! processes of this host on an `flock` of a per-key sidecar file in `.tmp/`. The pid in a temp name
//! lets `remove_unfinished` tell a dead writer's leftovers from a live writer's work in progress.
//!
//! Backups hold every row of production, so everything drctl creates here is private to the user
//! running it: files 0600, directories 0700, whatever the umask (a umask of 022 would leave them
//! world-readable). Files get the mode in `open(2)` and then by `fchmod`, before the first byte is
//! written, so no name ever points at a more open file; a link(2) or rename(2) keeps the inode's
//! mode. Directories are made 0700 by `mkdir(2)` and then `chmod`ed to exactly that (mkdir's mode
//! is masked by the umask too). What the operator made (a root they created) is left as it is;
//! `check` reports it (`store-private`, from `audit`).
//!
//! Transient errors (EIO, EAGAIN, EINTR, EBUSY: an NFS or FUSE mount having a bad moment) are
//! retried a few times with a short backoff, the local counterpart of the SDK's retries for S3.
//! What is retried is the whole operation, from a fresh temp file, and only up to the moment the
//! object gets its final name: a failed directory fsync is never retried (see `sync_parent`).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{ByteRx, Finding, Metadata, ObjectInfo, Store, Versioned};
use crate::error::{Error, Result, Transience};

/// Temp files live here, inside the root, so that `rename` and `link` never cross a filesystem.
const TMP_DIR: &str = ".tmp";
/// Below main.rs's 1 MiB mmap threshold on purpose: chunks then come from (and return to) malloc's
/// arenas; at 1 MiB each chunk was a fresh mmap whose page faults and munmap cost more CPU than
/// sha256-ing it (`verify-chain --artifacts` on a cached file store).
const DOWNLOAD_CHUNK: usize = 256 << 10;
const DOWNLOAD_QUEUE: usize = 4;
/// Tries of one filesystem operation, the first included, and the pause before the first retry
/// (doubling: 10, 20, 40, 80 ms, so a failing disk costs a call at most 150 ms of waiting).
const FS_ATTEMPTS: u32 = 5;
const FS_FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The modes of everything drctl creates under the root: the owner's alone.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;
/// How many too-open paths `store-private` names (it counts all of them).
const OPEN_PATHS_SHOWN: usize = 5;

pub struct LocalStore {
    url: String,
    fs: Arc<Fs>,
}

impl LocalStore {
    /// `path` may be relative (`./.drctl`); it is created on the first write.
    pub fn new(url: &str, path: &str) -> Self {
        LocalStore { url: url.to_string(), fs: Arc::new(Fs { root: PathBuf::from(path) }) }
    }

    fn err(&self, op: &str, key: &str, e: io::Error) -> Error {
        let transience = if transient(&e) || e.kind() == io::ErrorKind::TimedOut {
            Transience::Temporary
        } else {
            Transience::Permanent
        };
        Error::Store { url: self.url.clone(), problem: format!("{op} {key}: {e}"), transience }
    }

    /// Runs blocking filesystem work off the async threads, retrying transient errors, and names
    /// the operation in any error. `f` must be safe to run again after a transient failure.
    async fn blocking<T, F>(&self, op: &str, key: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Fs) -> io::Result<T> + Send + 'static,
    {
        let fs = Arc::clone(&self.fs);
        let mut f = f;
        match tokio::task::spawn_blocking(move || retry_transient(FS_ATTEMPTS, FS_FIRST_BACKOFF, || f(&fs))).await {
            Ok(r) => r.map_err(|e| self.err(op, key, e)),
            Err(join) => Err(self.err(op, key, io::Error::other(join.to_string()))),
        }
    }

    fn check_key(&self, op: &str, key: &str) -> Result<()> {
        valid_key(key).map_err(|why| Error::Store {
            url: self.url.clone(),
            problem: format!("{op} {key:?}: invalid key: {why}"),
            transience: Transience::Permanent,
        })
    }
}

/// Errors a later try may not see: EIO (a network filesystem's server or a disk's controller
/// hiccup), EAGAIN/EWOULDBLOCK, EINTR, EBUSY.
fn transient(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO | libc::EAGAIN | libc::EINTR | libc::EBUSY))
        || matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock)
}

/// Runs `f` up to `attempts` times while it fails transiently, sleeping `first_backoff`, then
/// twice that, and so on between tries. Blocking: only ever called on a blocking thread.
fn retry_transient<T>(attempts: u32, first_backoff: Duration, mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut pause = first_backoff;
    let mut tried = 1;
    loop {
        match f() {
            Err(e) if transient(&e) && tried < attempts => {
                std::thread::sleep(pause);
                pause *= 2;
                tried += 1;
            }
            r => return r,
        }
    }
}

/// Keys become paths, so reject anything that could escape the root or land in `.tmp/`.
fn valid_key(key: &str) -> std::result::Result<(), &'static str> {
    if key.is_empty() {
        return Err("empty");
    }
    if key.contains('\0') {
        return Err("contains NUL");
    }
    for (i, part) in key.split('/').enumerate() {
        match part {
            "" => return Err("empty path component (leading, trailing or double `/`)"),
            "." | ".." => return Err("`.` or `..` component"),
            TMP_DIR if i == 0 => return Err("`.tmp/` is reserved for temp files"),
            _ => {}
        }
    }
    Ok(())
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The blocking half: plain `std::fs` over the root. Only ever called on a blocking thread.
struct Fs {
    root: PathBuf,
}

/// Removes its temp file when dropped, unless disarmed after the rename or link: an error, a panic
/// or a cancelled upload future all leave nothing behind.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Fs {
    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    /// A fresh temp path named `<pid>-<16 hex>`, the pattern `remove_unfinished` parses.
    fn temp_path(&self) -> io::Result<TempFile> {
        let rnd = getrandom::u64().map_err(|e| io::Error::other(format!("random temp name: {e}")))?;
        let dir = self.tmp_dir();
        create_dirs(&dir)?;
        Ok(TempFile { path: dir.join(format!("{}-{rnd:016x}", std::process::id())), armed: true })
    }

    /// Writes and fsyncs a temp file holding `data`.
    fn write_temp(&self, data: &[u8]) -> io::Result<TempFile> {
        self.write_temp_with(data, &Metadata::new())
    }

    /// `write_temp`, with `meta` as extended attributes of the inode: set before it gets a name,
    /// so the object and its metadata appear together.
    fn write_temp_with(&self, data: &[u8], meta: &Metadata) -> io::Result<TempFile> {
        let tmp = self.temp_path()?;
        let mut f = OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(&tmp.path)?;
        make_private(&f)?;
        f.write_all(data)?;
        set_metadata(&f, meta)?;
        f.sync_all()?;
        Ok(tmp)
    }

    /// The final path of `key`, with its parent directories created (and made durable).
    fn prepare_final(&self, key: &str) -> io::Result<PathBuf> {
        let path = self.path(key);
        if let Some(parent) = path.parent() {
            create_dirs(parent)?;
        }
        Ok(path)
    }

    fn replace_with(&self, key: &str, tmp: TempFile) -> io::Result<()> {
        let path = self.rename_into(key, &tmp)?;
        tmp.disarm();
        sync_parent(&path)
    }

    /// Renames `tmp` to `key`'s path and returns it; `tmp` stays armed (the caller disarms it).
    fn rename_into(&self, key: &str, tmp: &TempFile) -> io::Result<PathBuf> {
        let path = self.prepare_final(key)?;
        fs::rename(&tmp.path, &path)?;
        Ok(path)
    }

    fn get(&self, key: &str) -> io::Result<Option<Versioned>> {
        match fs::read(self.path(key)) {
            Ok(data) => {
                let etag = sha256_hex(&data);
                Ok(Some(Versioned { data: Bytes::from(data), etag }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let tmp = self.write_temp(data)?;
        self.replace_with(key, tmp)
    }

    fn get_with(&self, key: &str) -> io::Result<Option<(Versioned, Metadata)>> {
        let mut f = match File::open(self.path(key)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut data = Vec::new();
        f.read_to_end(&mut data)?;
        // From the same descriptor: the metadata of the inode whose bytes were read.
        let meta = read_metadata(&f)?;
        let etag = sha256_hex(&data);
        Ok(Some((Versioned { data: Bytes::from(data), etag }, meta)))
    }

    fn head_with(&self, key: &str) -> io::Result<Option<(ObjectInfo, Metadata)>> {
        let f = match File::open(self.path(key)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let m = f.metadata()?;
        if !m.is_file() {
            return Ok(None);
        }
        Ok(Some((ObjectInfo { key: key.to_string(), size: m.len() }, read_metadata(&f)?)))
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> io::Result<bool> {
        self.put_if_absent_with(key, data, &Metadata::new())
    }

    fn put_if_absent_with(&self, key: &str, data: &[u8], meta: &Metadata) -> io::Result<bool> {
        let tmp = self.write_temp_with(data, meta)?;
        let path = self.prepare_final(key)?;
        // link(2) refuses an existing name, so "absent?" and "create" are one atomic step, and the
        // name only ever points at a complete, fsynced file.
        match fs::hard_link(&tmp.path, &path) {
            Ok(()) => {
                drop(tmp);
                sync_parent(&path)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn put_if_match(&self, key: &str, data: &[u8], etag: &str) -> io::Result<bool> {
        // Held for the whole read-compare-rename, so two processes on this host cannot both see the
        // same version and both replace it. Lock files are never deleted: unlinking one while
        // another process waits on it would let a third lock a new file of the same name.
        let _lock = self.lock_cas(key)?;
        match self.get(key)? {
            Some(current) if current.etag == etag => {}
            _ => return Ok(false),
        }
        let tmp = self.write_temp(data)?;
        self.replace_with(key, tmp)?;
        Ok(true)
    }

    fn lock_cas(&self, key: &str) -> io::Result<File> {
        let dir = self.tmp_dir();
        create_dirs(&dir)?;
        let path = dir.join(cas_lock_name(key));
        // Created private like every other file; one that exists is opened as it is (chmod of a
        // lock file another user made would fail, and `check` reports an open one anyway).
        let f = match OpenOptions::new().read(true).write(true).create_new(true).mode(FILE_MODE).open(&path) {
            Ok(f) => {
                make_private(&f)?;
                f
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                OpenOptions::new().read(true).write(true).open(&path)?
            }
            Err(e) => return Err(e),
        };
        loop {
            // SAFETY: flock on a descriptor we own; the lock is released when `f` is closed.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(f);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn list(&self, prefix: &str, after: Option<&str>) -> io::Result<Vec<ObjectInfo>> {
        // Start at the deepest directory the prefix names instead of walking the whole store.
        let base = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        let mut out = Vec::new();
        let start = if base.is_empty() { self.root.clone() } else { self.root.join(base) };
        walk(&start, base, after, &mut out)?;
        out.retain(|o| o.key.starts_with(prefix) && after.is_none_or(|a| o.key.as_str() > a));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        // Empty parent directories stay: removing one could race a concurrent put that has just
        // created it and is about to rename into it.
        match fs::remove_file(self.path(key)) {
            Ok(()) => sync_parent(&self.path(key)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn head(&self, key: &str) -> io::Result<Option<ObjectInfo>> {
        match fs::metadata(self.path(key)) {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo { key: key.to_string(), size: m.len() })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn remove_unfinished(&self) -> io::Result<usize> {
        let entries = match fs::read_dir(self.tmp_dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let Some(pid) = entry.file_name().to_str().and_then(temp_pid) else {
                continue;
            };
            if pid_alive(pid) {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                // Another cleaner got there first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if removed > 0 {
            File::open(self.tmp_dir())?.sync_all()?;
        }
        Ok(removed)
    }
}

/// What the `store-private` walk found.
#[derive(Debug, Default)]
struct OpenPaths {
    /// Paths looked at, the root included.
    checked: u64,
    /// Of those, the ones group or others may read, write or search.
    open: u64,
    /// The first `OPEN_PATHS_SHOWN` of them, in walk order: (path relative to the root, "" for
    /// the root itself; permission bits).
    first: Vec<(String, u32)>,
}

impl OpenPaths {
    fn note(&mut self, rel: &str, mode: u32) {
        self.checked += 1;
        if mode & 0o077 != 0 {
            self.open += 1;
            if self.first.len() < OPEN_PATHS_SHOWN {
                self.first.push((rel.to_string(), mode & 0o7777));
            }
        }
    }
}

impl Fs {
    /// Every path under the root, the root and `.tmp/` included (temp files hold the same data),
    /// with the modes of what symlinks point at (the data lives there). `None`: no root yet.
    fn open_paths(&self) -> io::Result<Option<OpenPaths>> {
        let meta = match fs::metadata(&self.root) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", self.root.display()))),
        };
        let mut found = OpenPaths::default();
        mode_walk(&self.root, "", &meta, &mut HashSet::new(), &mut found)?;
        Ok(Some(found))
    }
}

/// Notes `path`'s mode and walks into it when it is a directory, unless that directory was seen
/// before (through a symlink loop: it is counted and walked once). Entries go in name order, so the paths named are the same every run.
fn mode_walk(
    path: &Path,
    rel: &str,
    meta: &fs::Metadata,
    seen: &mut HashSet<(u64, u64)>,
    found: &mut OpenPaths,
) -> io::Result<()> {
    if meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
        return Ok(());
    }
    found.note(rel, meta.mode());
    if !meta.is_dir() {
        return Ok(());
    }
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut entries = match fs::read_dir(path) {
        Ok(rd) => rd.collect::<io::Result<Vec<_>>>().map_err(with_path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(with_path(e)),
    };
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let rel = if rel.is_empty() { name.into_owned() } else { format!("{rel}/{name}") };
        let meta = match fs::metadata(entry.path()) {
            Ok(m) => m,
            // Deleted since read_dir, or a dangling symlink: nothing there to read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", entry.path().display()))),
        };
        mode_walk(&entry.path(), &rel, &meta, seen, found)?;
    }
    Ok(())
}

/// `store-private` for a file store, from what `open_paths` found.
fn private_finding(root: &Path, found: io::Result<Option<OpenPaths>>) -> Finding {
    const ID: &str = "store-private";
    let shown = root.display();
    match found {
        Ok(None) => Finding::pass(
            ID,
            format!("{shown} does not exist yet; drctl creates it and its directories 0700, its files 0600"),
        ),
        Ok(Some(f)) if f.open == 0 => Finding::pass(
            ID,
            format!("{shown}: {} private to their owner (no group or other access)", count_paths(f.checked)),
        ),
        Ok(Some(f)) => {
            let mut named: Vec<String> = f
                .first
                .iter()
                .map(|(rel, mode)| {
                    if rel.is_empty() { format!("{shown} itself ({mode:04o})") } else { format!("{rel} ({mode:04o})") }
                })
                .collect();
            if f.open > f.first.len() as u64 {
                named.push(format!("and {} more", f.open - f.first.len() as u64));
            }
            Finding::fail(
                ID,
                format!(
                    "{shown}: {} of {} readable, writable or executable by group or others: {}; \
                     backups hold every row of the database: run chmod -R go-rwx {}",
                    f.open,
                    count_paths(f.checked),
                    named.join(", "),
                    shell_word(&shown.to_string())
                ),
            )
        }
        Err(e) => Finding::fail(ID, format!("cannot read the modes under {shown}: {e}")),
    }
}

fn count_paths(n: u64) -> String {
    if n == 1 { "1 path".to_string() } else { format!("{n} paths") }
}

/// `s` as one shell word: bare when that is safe, else single-quoted.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:@%=,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The pid recorded in a temp file name `<pid>-<16 hex>`; `None` for anything else (CAS lock files).
fn temp_pid(name: &str) -> Option<i32> {
    let (pid, rnd) = name.split_once('-')?;
    if rnd.len() != 16 || !rnd.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 0)
}

/// A recycled pid makes a dead writer look alive: its temp file is then kept, never a live one removed.
fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    // EPERM: it exists but belongs to another user.
    io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// One lock file per key; `%`-escaping keeps distinct keys on distinct files. Over-long names fall
/// back to a hash (sharing a lock between two keys would only serialise them).
fn cas_lock_name(key: &str) -> String {
    let escaped = key.replace('%', "%25").replace('/', "%2F");
    if escaped.len() <= 200 { format!("{escaped}.cas") } else { format!("{}.cas", sha256_hex(key.as_bytes())) }
}

/// Every file under `dir` as keys `rel…`; with `after`, names that cannot sort after it are skipped
/// before they are stat'ed, so the journal's tail costs a directory read, not a stat per entry.
fn walk(dir: &Path, rel: &str, after: Option<&str>, out: &mut Vec<ObjectInfo>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        // A name that is not UTF-8 cannot be a key: drctl never wrote it.
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if rel.is_empty() && name == TMP_DIR {
            continue;
        }
        let key = format!("{rel}{name}");
        if let Some(a) = after {
            let ft = entry.file_type()?;
            let dir_wanted = (ft.is_dir() || ft.is_symlink()) && {
                let d = format!("{key}/");
                d.as_str() > a || a.starts_with(&d)
            };
            let file_wanted = (ft.is_file() || ft.is_symlink()) && key.as_str() > a;
            if !dir_wanted && !file_wanted {
                continue;
            }
        }
        // Follows symlinks, so an operator may link a directory into the store.
        let meta = match fs::metadata(entry.path()) {
            Ok(m) => m,
            // Deleted between read_dir and stat.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            walk(&entry.path(), &format!("{key}/"), after, out)?;
        } else if meta.is_file() {
            out.push(ObjectInfo { key, size: meta.len() });
        }
    }
    Ok(())
}

/// `create_dir_all`, plus an fsync of the parent of every directory it made, so a new directory's
/// entry survives a crash together with the file later renamed into it.
fn create_dirs(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.as_os_str().is_empty() && !cur.is_dir() {
        missing.push(cur);
        match cur.parent() {
            Some(p) => cur = p,
            None => break,
        }
    }
    for d in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(DIR_MODE).create(d) {
            Ok(()) => {
                // mkdir's mode was masked by the umask; this makes it exactly 0700. Only
                // directories made here: an existing one is the operator's to choose.
                fs::set_permissions(d, Permissions::from_mode(DIR_MODE))?;
                sync_parent(d)?
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `fchmod` a file drctl has just created to exactly 0600: `open(2)`'s mode is masked by the
/// umask, which could also have taken the owner's own bits.
fn make_private(f: &File) -> io::Result<()> {
    f.set_permissions(Permissions::from_mode(FILE_MODE))
}

/// fsync the directory holding `path`, making a rename, link or unlink in it durable.
///
/// Its errors are never retried, so they come back as plain `Other` errors that `transient`
/// does not match: by then the name is in place, so a retried `put_if_absent` or `put_if_match`
/// would find its own object and report a lost race, and after a failed fsync Linux may already
/// have dropped the dirty state, so a second fsync can succeed without making anything durable
/// (PostgreSQL's "fsyncgate", 2018). The caller gets the error; a rerun writes again.
fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?
        .sync_all()
        .map_err(|e| io::Error::other(format!("fsync of directory {}: {e} (not retried)", parent.display())))
}

/// Where an object's metadata lives: extended attribute `user.drctl.NAME` of its file. They
/// belong to the inode, so they are set on the temp file before link(2) gives it its name, go
/// with it through rename, and are removed with it; `cp -a`, `rsync -X` and `tar --xattrs` keep
/// them (a plain `cp -r` does not: wal-fetch then checks against the WAL index instead).
const XATTR_PREFIX: &str = "user.drctl.";

fn xattr_name(name: &[u8]) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "metadata name holds NUL"))
}

fn set_metadata(f: &File, meta: &Metadata) -> io::Result<()> {
    for (name, value) in meta {
        let full = xattr_name(format!("{XATTR_PREFIX}{name}").as_bytes())?;
        // SAFETY: a descriptor we own, a NUL-terminated name, and a pointer and length of a live slice.
        let rc = unsafe { libc::fsetxattr(f.as_raw_fd(), full.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOTSUP) {
                return Err(io::Error::other(
                    "the store's filesystem does not support extended attributes (user.*), where drctl keeps \
                     a WAL file's sha256 with it: put the file store on ext4, xfs or btrfs, or use an s3:// store",
                ));
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Every `user.drctl.*` attribute of `f`; none on a filesystem without extended attributes.
fn read_metadata(f: &File) -> io::Result<Metadata> {
    let fd = f.as_raw_fd();
    let mut meta = Metadata::new();
    // SAFETY: a descriptor we own; a null buffer of length 0 asks for the size.
    let len = unsafe { libc::flistxattr(fd, std::ptr::null_mut(), 0) };
    if len < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOTSUP) { Ok(meta) } else { Err(e) };
    }
    let mut names = vec![0u8; len as usize];
    // SAFETY: the buffer is `names.len()` bytes long.
    let len = unsafe { libc::flistxattr(fd, names.as_mut_ptr().cast(), names.len()) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    names.truncate(len as usize);
    for name in names.split(|b| *b == 0) {
        let Some(short) = name.strip_prefix(XATTR_PREFIX.as_bytes()) else {
            continue;
        };
        let cname = xattr_name(name)?;
        // SAFETY: as above: a size query, then a read into a buffer of that size.
        let size = unsafe { libc::fgetxattr(fd, cname.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut value = vec![0u8; size as usize];
        let size = unsafe { libc::fgetxattr(fd, cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        value.truncate(size as usize);
        meta.insert(String::from_utf8_lossy(short).into_owned(), String::from_utf8_lossy(&value).into_owned());
    }
    Ok(meta)
}

/// Reads up to `buf.len()` bytes, short only at end of file.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[async_trait]
impl Store for LocalStore {
    fn url(&self) -> &str {
        &self.url
    }

    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        self.check_key("get", key)?;
        let k = key.to_string();
        self.blocking("get", key, move |fs| fs.get(&k)).await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.check_key("put", key)?;
        let k = key.to_string();
        self.blocking("put", key, move |fs| fs.put(&k, &data)).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        self.check_key("put_if_absent", key)?;
        let k = key.to_string();
        self.blocking("put_if_absent", key, move |fs| fs.put_if_absent(&k, &data)).await
    }

    async fn put_if_absent_with(&self, key: &str, data: Bytes, meta: &Metadata) -> Result<bool> {
        self.check_key("put_if_absent", key)?;
        let (k, meta) = (key.to_string(), meta.clone());
        self.blocking("put_if_absent", key, move |fs| fs.put_if_absent_with(&k, &data, &meta)).await
    }

    async fn get_with(&self, key: &str) -> Result<Option<(Versioned, Metadata)>> {
        self.check_key("get", key)?;
        let k = key.to_string();
        self.blocking("get", key, move |fs| fs.get_with(&k)).await
    }

    async fn head_with(&self, key: &str) -> Result<Option<(ObjectInfo, Metadata)>> {
        self.check_key("head", key)?;
        let k = key.to_string();
        self.blocking("head", key, move |fs| fs.head_with(&k)).await
    }

    async fn put_if_match(&self, key: &str, data: Bytes, etag: &str) -> Result<bool> {
        self.check_key("put_if_match", key)?;
        let (k, etag) = (key.to_string(), etag.to_string());
        self.blocking("put_if_match", key, move |fs| fs.put_if_match(&k, &data, &etag)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        // The directory part becomes a path, so it must be as safe as a key.
        if let Some(i) = prefix.rfind('/') {
            self.check_key("list", &prefix[..i])?;
        }
        let p = prefix.to_string();
        self.blocking("list", prefix, move |fs| fs.list(&p, None)).await
    }

    async fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectInfo>> {
        if let Some(i) = prefix.rfind('/') {
            self.check_key("list", &prefix[..i])?;
        }
        let (p, a) = (prefix.to_string(), after.to_string());
        self.blocking("list", prefix, move |fs| fs.list(&p, Some(&a))).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.check_key("delete", key)?;
        let k = key.to_string();
        self.blocking("delete", key, move |fs| fs.delete(&k)).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        self.check_key("head", key)?;
        let k = key.to_string();
        self.blocking("head", key, move |fs| fs.head(&k)).await
    }

    async fn upload(&self, key: &str, mut rx: ByteRx) -> Result<u64> {
        self.check_key("upload", key)?;
        // Armed until renamed: an Err chunk, an I/O error or this future being dropped all
        // remove the temp file.
        let tmp = self.blocking("upload", key, |fs| fs.temp_path()).await?;
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp.path)
            .await
            .map_err(|e| self.err("upload", key, e))?;
        // Before the first byte of the dump is in it (see `make_private`).
        file.set_permissions(Permissions::from_mode(FILE_MODE)).await.map_err(|e| self.err("upload", key, e))?;
        let mut written = 0u64;
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk.map_err(|e| self.err("upload", key, e))?;
            file.write_all(&chunk).await.map_err(|e| self.err("upload", key, e))?;
            written += chunk.len() as u64;
        }
        file.sync_all().await.map_err(|e| self.err("upload", key, e))?;
        drop(file);
        let k = key.to_string();
        // The stream is spent, so only the rename can be retried; the temp file stays armed until
        // it has its final name.
        let mut tmp = Some(tmp);
        self.blocking("upload", key, move |fs| {
            let t = tmp.as_ref().ok_or_else(|| io::Error::other("upload: temp file already renamed"))?;
            let path = fs.rename_into(&k, t)?;
            if let Some(t) = tmp.take() {
                t.disarm();
            }
            sync_parent(&path)
        })
        .await?;
        Ok(written)
    }

    async fn download(&self, key: &str) -> Result<Option<ByteRx>> {
        self.check_key("download", key)?;
        let path = self.fs.path(key);
        let file = self
            .blocking("download", key, move |_| match File::open(&path) {
                Ok(f) => Ok(Some(f)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            })
            .await?;
        let Some(mut file) = file else {
            return Ok(None);
        };
        let (tx, rx) = mpsc::channel(DOWNLOAD_QUEUE);
        let (url, key) = (self.url.clone(), key.to_string());
        tokio::task::spawn_blocking(move || {
            loop {
                let mut buf = BytesMut::zeroed(DOWNLOAD_CHUNK);
                let item = match read_full(&mut file, &mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(buf.freeze())
                    }
                    Err(e) => Err(io::Error::new(e.kind(), format!("store {url}: download {key}: {e}"))),
                };
                let failed = item.is_err();
                // A closed channel means the reader gave up: stop reading.
                if tx.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }

    async fn remove_unfinished(&self, prefix: &str) -> Result<usize> {
        // Temp names record the writer's pid, not the key, so `prefix` cannot narrow this down; a
        // temp file of a dead pid is garbage whatever key it was meant for.
        self.blocking("remove_unfinished", prefix, |fs| fs.remove_unfinished()).await
    }

    async fn now(&self) -> Result<SystemTime> {
        Ok(SystemTime::now())
    }

    async fn audit(&self) -> Vec<Finding> {
        let fs = Arc::clone(&self.fs);
        let found = tokio::task::spawn_blocking(move || fs.open_paths())
            .await
            .unwrap_or_else(|join| Err(io::Error::other(join.to_string())));
        vec![private_finding(&self.fs.root, found)]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn store(dir: &tempfile::TempDir) -> LocalStore {
        let root = dir.path().join("store");
        LocalStore::new(&format!("file://{}", root.display()), root.to_str().unwrap())
    }

    fn tmp_entries(dir: &tempfile::TempDir) -> Vec<String> {
        match fs::read_dir(dir.path().join("store").join(TMP_DIR)) {
            Ok(rd) => rd.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn chunks(parts: Vec<io::Result<Bytes>>) -> ByteRx {
        let (tx, rx) = mpsc::channel(parts.len().max(1));
        for p in parts {
            tx.try_send(p).unwrap();
        }
        rx
    }

    async fn collect(mut rx: ByteRx) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = rx.recv().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn put_get_returns_content_and_sha256_etag() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        assert!(s.get("a/b.json").await.unwrap().is_none());
        s.put("a/b.json", Bytes::from_static(b"hello")).await.unwrap();
        let v = s.get("a/b.json").await.unwrap().unwrap();
        assert_eq!(&v.data[..], b"hello");
        assert_eq!(v.etag, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        s.put("a/b.json", Bytes::from_static(b"bye")).await.unwrap();
        assert_eq!(&s.get("a/b.json").await.unwrap().unwrap().data[..], b"bye");
        assert_eq!(s.head("a/b.json").await.unwrap(), Some(ObjectInfo { key: "a/b.json".into(), size: 3 }));
        assert_eq!(s.head("a/none").await.unwrap(), None);
        assert!(tmp_entries(&dir).is_empty(), "temp files left: {:?}", tmp_entries(&dir));
    }

    #[tokio::test]
    async fn relative_root_is_created_on_first_write() {
        let dir = tempfile::tempdir().unwrap();
        // A genuinely relative path to the tempdir: up to `/` from the working directory, then down.
        let cwd = std::env::current_dir().unwrap();
        let mut root = PathBuf::from(".");
        for _ in cwd.components().skip(1) {
            root.push("..");
        }
        root.push(dir.path().strip_prefix("/").unwrap());
        root.push("rel-store");
        assert!(root.is_relative());
        let s = LocalStore::new("file://./rel", root.to_str().unwrap());
        assert!(s.list("").await.unwrap().is_empty());
        s.put("x", Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(fs::read(dir.path().join("rel-store/x")).unwrap(), b"1");
    }

    #[tokio::test]
    async fn put_if_absent_writes_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        assert!(s.put_if_absent("journal/0", Bytes::from_static(b"first")).await.unwrap());
        assert!(!s.put_if_absent("journal/0", Bytes::from_static(b"second")).await.unwrap());
        assert_eq!(&s.get("journal/0").await.unwrap().unwrap().data[..], b"first");
        assert!(tmp_entries(&dir).is_empty());
    }

    #[tokio::test]
    async fn metadata_is_the_file_s_xattrs_and_comes_with_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let meta: Metadata = [("sha256".to_string(), "ab12".to_string())].into();
        assert!(s.get_with("wal/x.zst").await.unwrap().is_none());
        assert!(s.head_with("wal/x.zst").await.unwrap().is_none());
        assert!(s.put_if_absent_with("wal/x.zst", Bytes::from_static(b"one"), &meta).await.unwrap());
        let other: Metadata = [("sha256".to_string(), "cd34".to_string())].into();
        assert!(!s.put_if_absent_with("wal/x.zst", Bytes::from_static(b"two"), &other).await.unwrap());
        let (v, got) = s.get_with("wal/x.zst").await.unwrap().unwrap();
        assert_eq!((&v.data[..], &got), (&b"one"[..], &meta));
        assert_eq!(
            s.head_with("wal/x.zst").await.unwrap().unwrap(),
            (ObjectInfo { key: "wal/x.zst".into(), size: 3 }, meta)
        );
        // What an operator sees: getfattr -n user.drctl.sha256 FILE.
        let raw = std::fs::File::open(dir.path().join("store/wal/x.zst")).unwrap();
        assert_eq!(read_metadata(&raw).unwrap().get("sha256").map(String::as_str), Some("ab12"));
        // A plain put has none, and a lost race left no temp file.
        s.put("plain", Bytes::from_static(b"p")).await.unwrap();
        assert!(s.get_with("plain").await.unwrap().unwrap().1.is_empty());
        assert!(tmp_entries(&dir).is_empty());
    }

    #[tokio::test]
    async fn put_if_match_replaces_only_the_expected_version() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        assert!(!s.put_if_match("locks/dns.json", Bytes::from_static(b"x"), "0").await.unwrap());
        assert!(s.get("locks/dns.json").await.unwrap().is_none());
        s.put("locks/dns.json", Bytes::from_static(b"v1")).await.unwrap();
        let v1 = s.get("locks/dns.json").await.unwrap().unwrap();
        assert!(s.put_if_match("locks/dns.json", Bytes::from_static(b"v2"), &v1.etag).await.unwrap());
        // v1's etag is now stale.
        assert!(!s.put_if_match("locks/dns.json", Bytes::from_static(b"v3"), &v1.etag).await.unwrap());
        assert_eq!(&s.get("locks/dns.json").await.unwrap().unwrap().data[..], b"v2");
    }

    #[tokio::test]
    async fn list_is_sorted_filtered_and_skips_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        assert!(s.list("").await.unwrap().is_empty(), "missing root lists empty");
        for k in ["b/2", "a", "b/10", "b/1/x", "c/d/e", "bz"] {
            s.put(k, Bytes::from(k.to_string())).await.unwrap();
        }
        fs::write(dir.path().join("store/.tmp/999999-0000000000000000"), b"junk").unwrap();
        let keys = |v: Vec<ObjectInfo>| v.into_iter().map(|o| o.key).collect::<Vec<_>>();
        assert_eq!(keys(s.list("").await.unwrap()), ["a", "b/1/x", "b/10", "b/2", "bz", "c/d/e"]);
        assert_eq!(keys(s.list("b").await.unwrap()), ["b/1/x", "b/10", "b/2", "bz"]);
        assert_eq!(keys(s.list("b/").await.unwrap()), ["b/1/x", "b/10", "b/2"]);
        assert_eq!(keys(s.list("b/1").await.unwrap()), ["b/1/x", "b/10"]);
        assert_eq!(keys(s.list("nope/").await.unwrap()), Vec::<String>::new());
        assert_eq!(s.list("c/").await.unwrap(), [ObjectInfo { key: "c/d/e".into(), size: 5 }]);
        assert_eq!(keys(s.list_after("b", "b/10").await.unwrap()), ["b/2", "bz"]);
        assert_eq!(keys(s.list_after("b/", "b/1").await.unwrap()), ["b/1/x", "b/10", "b/2"]);
        assert_eq!(keys(s.list_after("", "b/2").await.unwrap()), ["bz", "c/d/e"]);
        assert_eq!(keys(s.list_after("b/", "b/2").await.unwrap()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn delete_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        s.put("k/v", Bytes::from_static(b"1")).await.unwrap();
        s.delete("k/v").await.unwrap();
        assert!(s.get("k/v").await.unwrap().is_none());
        s.delete("k/v").await.unwrap();
        s.delete("never/was").await.unwrap();
    }

    #[tokio::test]
    async fn keys_that_escape_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        for bad in ["/etc/", "../", "a/../../"] {
            assert!(s.list(bad).await.is_err(), "list {bad:?}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/", ".tmp/x"] {
            let err = s.put(bad, Bytes::from_static(b"x")).await.unwrap_err();
            assert!(matches!(&err, Error::Store { transience: Transience::Permanent, .. }), "{bad:?}: {err}");
        }
    }

    #[tokio::test]
    async fn upload_then_download_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        // Chunk sizes that do not line up with the 1 MiB download chunks.
        let parts: Vec<Bytes> = (0..7u8).map(|i| Bytes::from(vec![i; 300_000 + usize::from(i) * 1000])).collect();
        let expected: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
        let n = s.upload("data/obj", chunks(parts.into_iter().map(Ok).collect())).await.unwrap();
        assert_eq!(n, expected.len() as u64);
        let got = collect(s.download("data/obj").await.unwrap().unwrap()).await;
        assert_eq!(sha256_hex(&got), sha256_hex(&expected));
        assert!(s.download("data/none").await.unwrap().is_none());
        assert!(tmp_entries(&dir).is_empty());
    }

    #[tokio::test]
    async fn upload_with_an_err_chunk_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let rx = chunks(vec![
            Ok(Bytes::from(vec![1u8; 1000])),
            Err(io::Error::other("pg_dump exited 1")),
            Ok(Bytes::from(vec![2u8; 1000])),
        ]);
        let err = s.upload("data/broken", rx).await.unwrap_err();
        assert!(err.to_string().contains("upload data/broken: pg_dump exited 1"), "{err}");
        assert!(s.head("data/broken").await.unwrap().is_none());
        assert!(tmp_entries(&dir).is_empty(), "temp files left: {:?}", tmp_entries(&dir));
    }

    #[tokio::test]
    async fn dropped_upload_removes_its_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let (tx, rx) = mpsc::channel(1);
        tx.send(Ok(Bytes::from_static(b"partial"))).await.unwrap();
        // The sender stays open, so the upload waits for more; the timeout drops the future.
        let r = tokio::time::timeout(std::time::Duration::from_millis(200), s.upload("data/x", rx)).await;
        assert!(r.is_err());
        assert!(tmp_entries(&dir).is_empty(), "temp files left: {:?}", tmp_entries(&dir));
        assert!(s.head("data/x").await.unwrap().is_none());
        drop(tx);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_put_if_absent_has_exactly_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        crate::store::conformance::put_if_absent_has_one_winner(Arc::new(store(&dir)), 32).await;
        assert!(tmp_entries(&dir).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_put_if_match_loses_no_increment() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(store(&dir));
        s.put("counter", Bytes::from_static(b"0")).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let s = Arc::clone(&s);
            tasks.push(tokio::spawn(async move {
                loop {
                    let cur = s.get("counter").await.unwrap().unwrap();
                    let n: u32 = std::str::from_utf8(&cur.data).unwrap().parse().unwrap();
                    let next = Bytes::from((n + 1).to_string());
                    if s.put_if_match("counter", next, &cur.etag).await.unwrap() {
                        return;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(&s.get("counter").await.unwrap().unwrap().data[..], b"16");
        // Only the CAS lock file remains in .tmp.
        assert_eq!(tmp_entries(&dir), ["counter.cas"]);
    }

    #[tokio::test]
    async fn remove_unfinished_removes_only_dead_writers_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        s.put("a/b", Bytes::from_static(b"x")).await.unwrap();
        assert!(!s.put_if_match("a/b", Bytes::from_static(b"y"), "stale").await.unwrap());
        // A child that has exited (and been reaped) gives a pid that is certainly not running.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let tmp = dir.path().join("store/.tmp");
        fs::write(tmp.join(format!("{dead}-00000000deadbeef")), b"dead").unwrap();
        let live = format!("{}-00000000000000aa", std::process::id());
        fs::write(tmp.join(&live), b"live").unwrap();
        assert_eq!(s.remove_unfinished("backups/").await.unwrap(), 1);
        let mut left = tmp_entries(&dir);
        left.sort();
        assert_eq!(left, [live, "a%2Fb.cas".to_string()]);
        assert_eq!(s.remove_unfinished("").await.unwrap(), 0);
    }

    #[test]
    fn transient_errors_are_retried_with_backoff_and_others_are_not() {
        let os = io::Error::from_raw_os_error;
        for errno in [libc::EIO, libc::EAGAIN, libc::EINTR, libc::EBUSY] {
            let mut calls = 0;
            let t0 = std::time::Instant::now();
            let r = retry_transient(5, Duration::from_millis(10), || {
                calls += 1;
                if calls < 3 { Err(os(errno)) } else { Ok(calls) }
            });
            assert_eq!(r.unwrap(), 3, "errno {errno}");
            // Two pauses: 10 ms, then 20 ms.
            assert!(t0.elapsed() >= Duration::from_millis(30), "errno {errno}: {:?}", t0.elapsed());
        }
        // Still failing after every try: the last error, unchanged.
        let mut calls = 0;
        let r: io::Result<()> = retry_transient(4, Duration::from_millis(1), || {
            calls += 1;
            Err(os(libc::EIO))
        });
        assert_eq!((calls, r.unwrap_err().raw_os_error()), (4, Some(libc::EIO)));
        // Permanent errors, and a failed directory fsync (an `Other` error), are tried once.
        let permanent: [fn() -> io::Error; 4] = [
            || io::Error::from_raw_os_error(libc::EACCES),
            || io::Error::from_raw_os_error(libc::ENOENT),
            || io::Error::from_raw_os_error(libc::ENOSPC),
            || io::Error::other("fsync of directory x: Input/output error (os error 5) (not retried)"),
        ];
        for e in permanent {
            let mut calls = 0;
            let r: io::Result<()> = retry_transient(5, Duration::from_millis(1), || {
                calls += 1;
                Err(e())
            });
            assert!(r.is_err());
            assert_eq!(calls, 1, "{}", e());
        }
    }

    #[tokio::test]
    async fn blocking_retries_a_flaky_call_and_reports_a_failing_one_as_temporary() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        s.put("k", Bytes::from_static(b"v")).await.unwrap();
        let calls = Arc::new(AtomicU32::new(0));
        let c = Arc::clone(&calls);
        let got = s
            .blocking("get", "k", move |fs| {
                if c.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(io::Error::from_raw_os_error(libc::EIO))
                } else {
                    fs.get("k")
                }
            })
            .await
            .unwrap();
        assert_eq!(&got.unwrap().data[..], b"v");
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = Arc::new(AtomicU32::new(0));
        let c = Arc::clone(&calls);
        let err = s
            .blocking("get", "k", move |_| -> io::Result<()> {
                c.fetch_add(1, Ordering::SeqCst);
                Err(io::Error::from_raw_os_error(libc::EBUSY))
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), FS_ATTEMPTS);
        let Error::Store { problem, transience, .. } = &err else { panic!("{err:?}") };
        assert_eq!(*transience, Transience::Temporary, "{err}");
        assert!(problem.starts_with("get k: "), "{problem}");
    }

    /// (path relative to `root`, permission bits) of everything under it, the root as "".
    fn modes(root: &Path) -> Vec<(String, u32)> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = vec![(String::new(), fs::metadata(root).unwrap().permissions().mode() & 0o7777)];
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let m = fs::symlink_metadata(&p).unwrap();
                out.push((p.strip_prefix(root).unwrap().display().to_string(), m.permissions().mode() & 0o7777));
                if m.is_dir() {
                    stack.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn everything_created_is_private_and_the_audit_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let root = dir.path().join("store");
        let f = s.audit().await;
        assert!(f[0].ok && f[0].detail.contains("does not exist yet"), "{f:?}");
        // Every kind of write: plain, create-if-absent (link), CAS (its lock file), streamed.
        s.put("journal-index/checkpoint-1.json", Bytes::from_static(b"{}")).await.unwrap();
        assert!(s.put_if_absent("journal/00000000000000000000.json", Bytes::from_static(b"{}")).await.unwrap());
        s.put("locks/env:prod.json", Bytes::from_static(b"v1")).await.unwrap();
        let v1 = s.get("locks/env:prod.json").await.unwrap().unwrap();
        assert!(s.put_if_match("locks/env:prod.json", Bytes::from_static(b"v2"), &v1.etag).await.unwrap());
        s.upload("backups/prod/r1/app.dump.zst.000", chunks(vec![Ok(Bytes::from(vec![1u8; 5000]))])).await.unwrap();
        let all = modes(&root);
        assert!(all.len() >= 12, "{all:?}");
        for (path, mode) in &all {
            let dir = path.is_empty() || root.join(path).is_dir();
            assert_eq!(*mode, if dir { 0o700 } else { 0o600 }, "{path:?} {mode:o} in {all:?}");
        }
        let f = s.audit().await;
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].check, "store-private");
        assert!(f[0].ok, "{f:?}");
        assert!(f[0].detail.contains(&format!("{} paths private", all.len())), "{f:?}");
    }

    #[tokio::test]
    async fn the_audit_names_open_paths_with_their_modes_and_counts_them_all() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let root = dir.path().join("store");
        for i in 0..8 {
            s.put(&format!("journal/{i}.json"), Bytes::from_static(b"{}")).await.unwrap();
        }
        fs::set_permissions(root.join("journal/3.json"), fs::Permissions::from_mode(0o640)).unwrap();
        let f = &s.audit().await[0];
        assert!(!f.ok, "{f:?}");
        assert!(f.detail.contains("1 of 11 paths readable, writable or executable by group or others"), "{f:?}");
        assert!(f.detail.contains("journal/3.json (0640)"), "{f:?}");
        assert!(f.detail.contains(&format!("chmod -R go-rwx {}", root.display())), "{f:?}");

        // Many: the first few by name, and how many in all; the root itself too.
        for i in 0..8 {
            fs::set_permissions(root.join(format!("journal/{i}.json")), fs::Permissions::from_mode(0o604)).unwrap();
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        // A symlink loop is walked once; a dangling link is skipped.
        std::os::unix::fs::symlink(&root, root.join("journal/loop")).unwrap();
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();
        let f = &s.audit().await[0];
        assert!(!f.ok, "{f:?}");
        let want = format!(
            "9 of 11 paths readable, writable or executable by group or others: {} itself (0755), \
             journal/0.json (0604), journal/1.json (0604), journal/2.json (0604), journal/3.json (0604), and 4 more",
            root.display()
        );
        assert!(f.detail.contains(&want), "{f:?}\nwanted {want}");
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("/var/lib/drctl"), "/var/lib/drctl");
        assert_eq!(shell_word("/srv/my store"), "'/srv/my store'");
        assert_eq!(shell_word("/srv/it's"), r"'/srv/it'\''s'");
    }

    #[test]
    fn temp_names_parse_strictly() {
        assert_eq!(temp_pid("1234-0123456789abcdef"), Some(1234));
        assert_eq!(temp_pid("a%2Fb.cas"), None);
        assert_eq!(temp_pid("1234-0123"), None);
        assert_eq!(temp_pid("-0123456789abcdef"), None);
        assert_eq!(temp_pid("0-0123456789abcdef"), None);
        let names: HashSet<_> = ["a/b", "a%2Fb", "a_b"].iter().map(|k| cas_lock_name(k)).collect();
        assert_eq!(names.len(), 3);
    }
}
