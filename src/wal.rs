//! The WAL archive's format in the store, shared by wal-push / wal-fetch (which write and read
//! it), `backup --type base` (which waits for its end segment), pitr-restore and drill (the
//! recoverable window), `backup prune` (WAL no kept base backup needs) and `verify-chain --backups`
//! (continuity from each base backup on). Like catalog.rs it is on-store format, not a command.
//!
//! Layout, under the store's root:
//!
//! ```text
//! wal/ENV/system.json                                   the env's recorded cluster ({"system_identifier": "7312…"})
//! wal/ENV/SYSID/TLI/NAME.zst[.age]                      one archived file: a segment, TLI.history,
//!                                                       NAME.partial, NAME.XXXXXXXX.backup
//! wal/ENV/SYSID/TLI/index/LOG.json                      the per-timeline index: one chunk per log id
//!                                                       (the segment name's middle 8 hex digits;
//!                                                       256 segments of 16 MiB), history in history.json
//! ```
//!
//! SYSID is the cluster's system identifier in decimal (as `pg_controldata` prints it), TLI the
//! timeline as 8 upper-case hex digits (as in segment names). The object holds the file
//! zstd-compressed (then age-encrypted with `[store] age_recipients`): by hand,
//! `zstd -dc NAME.zst > NAME`. The sha256 of the original (uncompressed) file is in the object's
//! metadata (`SHA256_META`: S3 user metadata `x-amz-meta-sha256`, a file store's extended
//! attribute `user.drctl.sha256`) and in the index, so wal-fetch checks what it hands PostgreSQL,
//! and verification needs no listing of every segment. An index chunk is `{"files": [...]}` with
//! one `Archived` a line, sorted by name (`IndexChunk::to_bytes`); readers take an object's key
//! from its line (`Archived::key`: with or without `.age`), not from `object_key`.
//!
//! Writing (wal-push): `record_system` (create-if-absent of system.json), then the object with
//! `Store::put_if_absent_with` (its metadata in the same atomic step), then `add_to_index`. A
//! push killed in between leaves an object the index does not list yet; PostgreSQL retries the
//! push, which finds the identical object and adds the line. So the index may lag the objects
//! by the file being pushed, never the other way round, and an indexed line always names an
//! object that was completely stored. Reading: `recorded_system`, `read_index` (a timeline's
//! files), `find_archived` (one file's line), `timelines`; `data_dir_system_id` reads a data
//! directory's `global/pg_control`.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Store;

/// The system identifier as stored (decimal text: JSON readers that parse numbers as doubles
/// would round a u64).
pub type SystemId = u64;

/// What a name PostgreSQL hands to archive_command / restore_command denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WalFile {
    /// `TTTTTTTTLLLLLLLLSSSSSSSS`: timeline, log id, segment within the log.
    Segment { tli: u32, log: u32, seg: u32 },
    /// `TTTTTTTTLLLLLLLLSSSSSSSS.partial`: the last, incomplete segment of a timeline a promotion ended.
    Partial { tli: u32, log: u32, seg: u32 },
    /// `TTTTTTTTLLLLLLLLSSSSSSSS.OOOOOOOO.backup`: a base backup's history file (offset in the segment).
    Backup { tli: u32, log: u32, seg: u32, offset: u32 },
    /// `TTTTTTTT.history`: a timeline's history.
    History { tli: u32 },
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u32::from_str_radix(s, 16).ok())?
}

impl WalFile {
    /// Parse a file name (no directory). `None` for anything PostgreSQL does not archive.
    pub fn parse(name: &str) -> Option<WalFile> {
        if let Some(t) = name.strip_suffix(".history") {
            return Some(WalFile::History { tli: hex8(t)? });
        }
        let (base, rest) = name.split_at_checked(24)?;
        let (tli, log, seg) = (hex8(&base[0..8])?, hex8(&base[8..16])?, hex8(&base[16..24])?);
        match rest {
            "" => Some(WalFile::Segment { tli, log, seg }),
            ".partial" => Some(WalFile::Partial { tli, log, seg }),
            _ => {
                let off = rest.strip_prefix('.')?.strip_suffix(".backup")?;
                Some(WalFile::Backup { tli, log, seg, offset: hex8(off)? })
            }
        }
    }

    pub fn tli(&self) -> u32 {
        match *self {
            WalFile::Segment { tli, .. }
            | WalFile::Partial { tli, .. }
            | WalFile::Backup { tli, .. }
            | WalFile::History { tli } => tli,
        }
    }

    /// The name PostgreSQL uses for it.
    pub fn name(&self) -> String {
        match *self {
            WalFile::Segment { tli, log, seg } => format!("{tli:08X}{log:08X}{seg:08X}"),
            WalFile::Partial { tli, log, seg } => format!("{tli:08X}{log:08X}{seg:08X}.partial"),
            WalFile::Backup { tli, log, seg, offset } => format!("{tli:08X}{log:08X}{seg:08X}.{offset:08X}.backup"),
            WalFile::History { tli } => format!("{tli:08X}.history"),
        }
    }

    /// The index chunk this file is listed in: `LOG` (8 hex digits) or `history`.
    pub fn chunk(&self) -> String {
        match *self {
            WalFile::Segment { log, .. } | WalFile::Partial { log, .. } | WalFile::Backup { log, .. } => {
                format!("{log:08X}")
            }
            WalFile::History { .. } => "history".into(),
        }
    }

    /// Whether its content starts with a WAL page header (segments and partial segments do).
    pub fn has_page_header(&self) -> bool {
        matches!(self, WalFile::Segment { .. } | WalFile::Partial { .. })
    }
}

/// Segments per log id for a segment size (16 MiB: 256), as PostgreSQL's `XLogSegmentsPerXLogId`.
pub fn segments_per_log(seg_size: u32) -> u64 {
    0x1_0000_0000u64 / u64::from(seg_size)
}

/// The segment holding `lsn` on timeline `tli` (PostgreSQL's `XLogFileName` of `XLByteToSeg`).
pub fn segment_of(tli: u32, lsn: u64, seg_size: u32) -> WalFile {
    let segno = lsn / u64::from(seg_size);
    let per = segments_per_log(seg_size);
    WalFile::Segment { tli, log: (segno / per) as u32, seg: (segno % per) as u32 }
}

/// The segment after `f` on the same timeline (`None` for a non-segment).
pub fn next_segment(f: &WalFile, seg_size: u32) -> Option<WalFile> {
    let WalFile::Segment { tli, log, seg } = *f else { return None };
    let per = segments_per_log(seg_size);
    let segno = u64::from(log) * per + u64::from(seg) + 1;
    Some(WalFile::Segment { tli, log: (segno / per) as u32, seg: (segno % per) as u32 })
}

/// `0/3000060` → 0x3000060.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u64::from(u32::MAX) && lo <= u64::from(u32::MAX)).then_some((hi << 32) | lo)
}

/// 0x3000060 → `0/3000060`, as PostgreSQL prints an LSN.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The first page header of a WAL segment (`XLogLongPageHeaderData`): what wal-push checks a
/// segment against before storing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    pub magic: u16,
    pub tli: u32,
    pub pageaddr: u64,
    pub sysid: SystemId,
    pub seg_size: u32,
    pub block_size: u32,
}

/// `XLP_LONG_HEADER`: set on the first page of every segment.
const XLP_LONG_HEADER: u16 = 0x0002;

impl PageHeader {
    /// Parse the segment's first bytes (at least 40). `None` when they are not a long page header.
    /// Layout (little-endian on every platform PostgreSQL on AWS runs): xlp_magic u16, xlp_info
    /// u16, xlp_tli u32, xlp_pageaddr u64, xlp_rem_len u32, 4 bytes padding, xlp_sysid u64,
    /// xlp_seg_size u32, xlp_xlog_blcksz u32.
    pub fn parse(b: &[u8]) -> Option<PageHeader> {
        if b.len() < 40 {
            return None;
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let info = u16_at(2);
        if info & XLP_LONG_HEADER == 0 {
            return None;
        }
        let h = PageHeader {
            magic: u16_at(0),
            tli: u32_at(4),
            pageaddr: u64_at(8),
            sysid: u64_at(24),
            seg_size: u32_at(32),
            block_size: u32_at(36),
        };
        (h.seg_size.is_power_of_two() && h.block_size.is_power_of_two()).then_some(h)
    }
}

/// `wal/ENV/system.json`: the cluster whose WAL this env archives. Written (create-if-absent) by
/// the first wal-push or base backup; a segment of another cluster is refused (exit 4) until the
/// operator records the new one (`backup --type base --accept system-identifier`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemRecord {
    /// Decimal, as `pg_controldata` prints it.
    pub system_identifier: String,
    pub recorded: String,
}

pub fn system_key(env: &str) -> String {
    format!("wal/{env}/system.json")
}

/// `wal/ENV/SYSID/`: everything archived for one cluster.
pub fn cluster_prefix(env: &str, sysid: SystemId) -> String {
    format!("wal/{env}/{sysid}/")
}

/// `wal/ENV/SYSID/TLI/`: one timeline's files and index.
pub fn timeline_prefix(env: &str, sysid: SystemId, tli: u32) -> String {
    format!("wal/{env}/{sysid}/{tli:08X}/")
}

/// Where an archived file is stored.
pub fn object_key(env: &str, sysid: SystemId, f: &WalFile, encrypted: bool) -> String {
    let age = if encrypted { ".age" } else { "" };
    format!("{}{}.zst{age}", timeline_prefix(env, sysid, f.tli()), f.name())
}

/// The index chunk listing `f`.
pub fn index_key(env: &str, sysid: SystemId, f: &WalFile) -> String {
    format!("{}index/{}.json", timeline_prefix(env, sysid, f.tli()), f.chunk())
}

/// One archived file, as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archived {
    /// PostgreSQL's name for it.
    pub name: String,
    /// The object's key in the store.
    pub key: String,
    /// The original file's size and sha256 (what wal-fetch must hand back).
    pub bytes: u64,
    pub sha256: String,
    /// The stored object's size (compressed, and encrypted if so).
    pub stored_bytes: u64,
    /// When it was pushed (RFC 3339, ms): no later than the last record it holds was written,
    /// so the newest one bounds the recoverable window.
    pub pushed: String,
}

/// `wal/ENV/SYSID/TLI/index/LOG.json`: the files of one log id (or the history files), sorted
/// by name. Rewritten with `put_if_match` (create with `put_if_absent`) after each push, so two
/// pushers never lose each other's line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexChunk {
    pub files: Vec<Archived>,
}

/// The object metadata name holding the original file's sha256 (S3: `x-amz-meta-sha256`; a file
/// store: the extended attribute `user.drctl.sha256`).
pub const SHA256_META: &str = "sha256";

/// The chain name WAL integrity errors carry (`integrity failure in wal at NAME: …`).
const CHAIN: &str = "wal";

impl SystemRecord {
    pub fn new(sysid: SystemId) -> SystemRecord {
        SystemRecord {
            system_identifier: sysid.to_string(),
            recorded: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        }
    }

    pub fn system_id(&self) -> Option<SystemId> {
        self.system_identifier.parse().ok()
    }
}

/// The cluster `env` archives (`wal/ENV/system.json`), or `None` before the first wal-push (or
/// base backup) recorded one.
pub async fn recorded_system(store: &dyn Store, env: &str) -> Result<Option<SystemId>> {
    let key = system_key(env);
    let Some(v) = store.get(&key).await? else {
        return Ok(None);
    };
    let rec: SystemRecord = serde_json::from_slice(&v.data)
        .map_err(|e| Error::integrity(CHAIN, &key, format!("not a system record ({e})")))?;
    rec.system_id().map(Some).ok_or_else(|| {
        Error::integrity(CHAIN, &key, format!("system_identifier `{}` is not a number", rec.system_identifier))
    })
}

/// Records `sysid` as `env`'s cluster unless one is recorded already (create-if-absent, so two
/// first pushers agree), and returns the one recorded: `sysid`, or the one that was there.
pub async fn record_system(store: &dyn Store, env: &str, sysid: SystemId) -> Result<SystemId> {
    let body = serde_json::to_vec(&SystemRecord::new(sysid)).expect("a system record serialises");
    if store.put_if_absent(&system_key(env), Bytes::from(body)).await? {
        return Ok(sysid);
    }
    recorded_system(store, env).await?.ok_or_else(|| {
        Error::integrity(CHAIN, system_key(env), "was there a moment ago and is gone (deleted meanwhile?)")
    })
}

/// The system identifier in a `global/pg_control`'s bytes: `ControlFileData` starts with it, a
/// u64 in the host's byte order (little-endian on every platform PostgreSQL on AWS runs).
pub fn pg_control_system_id(bytes: &[u8]) -> Option<SystemId> {
    let id = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    (id != 0).then_some(id)
}

/// The system identifier of the data directory `dir` (its `global/pg_control`); `Ok(None)` when
/// `dir` has no such file (not a data directory).
pub fn data_dir_system_id(dir: &Path) -> std::io::Result<Option<SystemId>> {
    let path = dir.join("global/pg_control");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    pg_control_system_id(&bytes).map(Some).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: not a pg_control file", path.display()))
    })
}

/// Checks a segment's (or partial segment's) first page against its name: a long page header,
/// the name's timeline, the segment's own start address, and (for a segment) the size the
/// header says segments have. `first` is the file's first bytes (at least its first page
/// header), `len` its size. Returns the header; `Err` says what is wrong.
pub fn segment_header(f: &WalFile, first: &[u8], len: u64) -> std::result::Result<PageHeader, String> {
    let (WalFile::Segment { tli, log, seg } | WalFile::Partial { tli, log, seg }) = *f else {
        return Err(format!("{} has no page header (only segments and .partial files do)", f.name()));
    };
    let h = PageHeader::parse(first)
        .ok_or_else(|| format!("does not start with a WAL long page header ({len} bytes): not a WAL segment"))?;
    if h.tli != tli {
        return Err(format!("its page header says timeline {:08X}, its name timeline {tli:08X}", h.tli));
    }
    let start = (u64::from(log) * segments_per_log(h.seg_size) + u64::from(seg)) * u64::from(h.seg_size);
    if h.pageaddr != start {
        return Err(format!(
            "its first page is at {}, but a segment of that name starts at {}",
            format_lsn(h.pageaddr),
            format_lsn(start)
        ));
    }
    if matches!(f, WalFile::Segment { .. }) && len != u64::from(h.seg_size) {
        return Err(format!("it is {len} bytes, but its page header says segments are {} bytes", h.seg_size));
    }
    Ok(h)
}

/// What listing a file in its index chunk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// The line was added.
    Added,
    /// The chunk already listed the name with the same sha256 (the line there is kept).
    Already(Archived),
    /// The chunk lists the name with another sha256: nothing was changed.
    Conflict(Archived),
}

impl IndexChunk {
    pub fn find(&self, name: &str) -> Option<&Archived> {
        self.files.binary_search_by(|a| a.name.as_str().cmp(name)).ok().map(|i| &self.files[i])
    }

    /// Inserts `a` in name order, unless its name is listed already (then nothing changes).
    pub fn merge(&mut self, a: Archived) -> Listed {
        match self.files.binary_search_by(|x| x.name.cmp(&a.name)) {
            Ok(i) if self.files[i].sha256 == a.sha256 => Listed::Already(self.files[i].clone()),
            Ok(i) => Listed::Conflict(self.files[i].clone()),
            Err(i) => {
                self.files.insert(i, a);
                Listed::Added
            }
        }
    }

    /// The stored form: JSON with one file a line, so `grep NAME` finds a file's line.
    pub fn to_bytes(&self) -> Bytes {
        let lines: Vec<String> =
            self.files.iter().map(|a| serde_json::to_string(a).expect("an index line serialises")).collect();
        Bytes::from(format!("{{\"files\": [\n{}\n]}}\n", lines.join(",\n")))
    }

    pub fn parse(key: &str, data: &[u8]) -> Result<IndexChunk> {
        let mut chunk: IndexChunk = serde_json::from_slice(data)
            .map_err(|e| Error::integrity(CHAIN, key, format!("not a WAL index chunk ({e})")))?;
        // Written sorted; sorted again so a hand-edited chunk cannot break `find`.
        chunk.files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(chunk)
    }
}

/// The index chunk listing `f` and its version tag, or `None` when there is none yet.
pub async fn read_chunk(
    store: &dyn Store,
    env: &str,
    sysid: SystemId,
    f: &WalFile,
) -> Result<Option<(IndexChunk, String)>> {
    let key = index_key(env, sysid, f);
    match store.get(&key).await? {
        None => Ok(None),
        Some(v) => Ok(Some((IndexChunk::parse(&key, &v.data)?, v.etag))),
    }
}

/// `f`'s line in the index, if it is listed.
pub async fn find_archived(store: &dyn Store, env: &str, sysid: SystemId, f: &WalFile) -> Result<Option<Archived>> {
    Ok(read_chunk(store, env, sysid, f).await?.and_then(|(c, _)| c.find(&f.name()).cloned()))
}

/// Tries of `add_to_index` against concurrent writers of the same chunk.
const INDEX_ATTEMPTS: u32 = 20;

/// Lists `a` (the archived `f`) in its timeline's index chunk: created with `put_if_absent`,
/// replaced with `put_if_match`, read again and retried when another pusher changed it meanwhile,
/// so no pusher loses another's line.
pub async fn add_to_index(store: &dyn Store, env: &str, sysid: SystemId, f: &WalFile, a: Archived) -> Result<Listed> {
    let key = index_key(env, sysid, f);
    for attempt in 0..INDEX_ATTEMPTS {
        if attempt > 0 {
            // Another writer is between its read and its write: let it finish.
            let jitter = getrandom::u32().unwrap_or(0) % 50;
            tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt.min(10)) + u64::from(jitter))).await;
        }
        let current = read_chunk(store, env, sysid, f).await?;
        let (mut chunk, etag) = match current {
            Some((c, etag)) => (c, Some(etag)),
            None => (IndexChunk::default(), None),
        };
        match chunk.merge(a.clone()) {
            Listed::Added => {}
            other => return Ok(other),
        }
        let written = match etag {
            None => store.put_if_absent(&key, chunk.to_bytes()).await?,
            Some(etag) => store.put_if_match(&key, chunk.to_bytes(), &etag).await?,
        };
        if written {
            return Ok(Listed::Added);
        }
    }
    Err(Error::Store {
        url: store.url().to_string(),
        problem: format!("{key}: changed by other writers {INDEX_ATTEMPTS} times in a row while adding {}", a.name),
        transience: crate::error::Transience::Temporary,
    })
}

/// Drops the lines named `names` from the index chunk at `key` (backup prune), with the same
/// conditional rewrite as `add_to_index`, so a push adding a line meanwhile is never lost. A chunk
/// left empty is deleted: its log id lies wholly before the oldest kept base backup, and
/// PostgreSQL archives in order, so no push can still be aiming at it. Returns the lines dropped.
pub async fn remove_from_index(store: &dyn Store, key: &str, names: &[String]) -> Result<usize> {
    for attempt in 0..INDEX_ATTEMPTS {
        if attempt > 0 {
            let jitter = getrandom::u32().unwrap_or(0) % 50;
            tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt.min(10)) + u64::from(jitter))).await;
        }
        let Some(v) = store.get(key).await? else { return Ok(0) };
        let mut chunk = IndexChunk::parse(key, &v.data)?;
        let before = chunk.files.len();
        chunk.files.retain(|a| !names.contains(&a.name));
        let dropped = before - chunk.files.len();
        if dropped == 0 {
            return Ok(0);
        }
        if chunk.files.is_empty() {
            store.delete(key).await?;
            return Ok(dropped);
        }
        if store.put_if_match(key, chunk.to_bytes(), &v.etag).await? {
            return Ok(dropped);
        }
    }
    Err(Error::Store {
        url: store.url().to_string(),
        problem: format!("{key}: changed by other writers {INDEX_ATTEMPTS} times in a row while pruning it"),
        transience: crate::error::Transience::Temporary,
    })
}

/// Every file archived on timeline `tli` of cluster `sysid`, as the index lists them, by name:
/// segments, `.partial` and `.backup` files, and the timeline's history file.
pub async fn read_index(store: &dyn Store, env: &str, sysid: SystemId, tli: u32) -> Result<Vec<Archived>> {
    let prefix = format!("{}index/", timeline_prefix(env, sysid, tli));
    let mut files = Vec::new();
    for o in store.list(&prefix).await? {
        if !o.key.ends_with(".json") {
            continue;
        }
        let Some(v) = store.get(&o.key).await? else {
            continue;
        };
        files.extend(IndexChunk::parse(&o.key, &v.data)?.files);
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// The timelines cluster `sysid` of `env` has anything archived on, ascending. Lists every key
/// under `wal/ENV/SYSID/` (the store has no directory listing): once per run, not per file.
pub async fn timelines(store: &dyn Store, env: &str, sysid: SystemId) -> Result<Vec<u32>> {
    let prefix = cluster_prefix(env, sysid);
    let mut out: Vec<u32> = store
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|o| o.key.strip_prefix(&prefix)?.split('/').next().and_then(hex8))
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in [
            "000000010000000000000003",
            "0000000A00000001000000FF.partial",
            "000000010000000000000002.00000028.backup",
            "00000002.history",
        ] {
            assert_eq!(WalFile::parse(n).expect(n).name(), n);
        }
        for bad in ["00000001000000000000000", "0000000100000000000000XY", "x.history", "000000010000000000000003.tmp"]
        {
            assert_eq!(WalFile::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn segments_follow_postgres_arithmetic() {
        let seg = 16 * 1024 * 1024;
        assert_eq!(segment_of(1, 0x3000060, seg).name(), "000000010000000000000003");
        assert_eq!(segment_of(2, 0x1_FF00_0000, seg).name(), "0000000200000001000000FF");
        let last = WalFile::parse("0000000100000000000000FF").unwrap();
        assert_eq!(next_segment(&last, seg).unwrap().name(), "000000010000000100000000");
        assert_eq!(parse_lsn("1/FF000000"), Some(0x1_FF00_0000));
        assert_eq!(format_lsn(0x3000060), "0/3000060");
        assert_eq!(parse_lsn("nope"), None);
    }

    #[test]
    fn keys() {
        let f = WalFile::parse("000000010000000000000003").unwrap();
        assert_eq!(object_key("prod", 7, &f, false), "wal/prod/7/00000001/000000010000000000000003.zst");
        assert_eq!(index_key("prod", 7, &f), "wal/prod/7/00000001/index/00000000.json");
        let h = WalFile::parse("00000002.history").unwrap();
        assert_eq!(object_key("prod", 7, &h, true), "wal/prod/7/00000002/00000002.history.zst.age");
        assert_eq!(index_key("prod", 7, &h), "wal/prod/7/00000002/index/history.json");
    }

    fn line(name: &str, sha: &str) -> Archived {
        Archived {
            name: name.into(),
            key: format!("wal/prod/7/00000001/{name}.zst"),
            bytes: 16 << 20,
            sha256: sha.into(),
            stored_bytes: 100,
            pushed: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn index_merge_keeps_name_order_and_never_replaces_a_line() {
        let mut c = IndexChunk::default();
        assert_eq!(c.merge(line("000000010000000000000003", "aa")), Listed::Added);
        assert_eq!(c.merge(line("000000010000000000000001", "bb")), Listed::Added);
        assert_eq!(c.merge(line("000000010000000000000002.00000028.backup", "cc")), Listed::Added);
        assert_eq!(c.merge(line("000000010000000000000002", "dd")), Listed::Added);
        let names: Vec<&str> = c.files.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup",
                "000000010000000000000003"
            ]
        );
        let mut again = line("000000010000000000000003", "aa");
        again.pushed = "2027-01-01T00:00:00.000Z".into();
        assert_eq!(c.merge(again), Listed::Already(line("000000010000000000000003", "aa")));
        assert_eq!(
            c.merge(line("000000010000000000000003", "ff")),
            Listed::Conflict(line("000000010000000000000003", "aa"))
        );
        assert_eq!(c.files.len(), 4);
        assert_eq!(c.find("000000010000000000000002").map(|a| a.sha256.as_str()), Some("dd"));
        assert_eq!(c.find("000000010000000000000004"), None);
    }

    #[test]
    fn index_chunks_are_json_a_line_per_file_and_parse_back_sorted() {
        let mut c = IndexChunk::default();
        c.merge(line("000000010000000000000002", "bb"));
        c.merge(line("000000010000000000000001", "aa"));
        let bytes = c.to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.lines().nth(1).unwrap().contains("000000010000000000000001"), "{text}");
        assert_eq!(IndexChunk::parse("k", &bytes).unwrap(), c);
        // Hand-edited out of order: still found.
        let mut shuffled = c.clone();
        shuffled.files.reverse();
        let back = IndexChunk::parse("k", &serde_json::to_vec(&shuffled).unwrap()).unwrap();
        assert_eq!(back.find("000000010000000000000001").unwrap().sha256, "aa");
        let e = IndexChunk::parse("wal/x/index/00000000.json", b"{not json").unwrap_err();
        assert_eq!(e.exit_code(), 4, "{e}");
        let empty = IndexChunk::default().to_bytes();
        assert_eq!(IndexChunk::parse("k", &empty).unwrap(), IndexChunk::default());
    }

    #[test]
    fn pg_control_starts_with_the_system_identifier() {
        let mut b = vec![0u8; 8192];
        b[..8].copy_from_slice(&7312345678901234567u64.to_le_bytes());
        b[8..12].copy_from_slice(&1300u32.to_le_bytes());
        assert_eq!(pg_control_system_id(&b), Some(7312345678901234567));
        assert_eq!(pg_control_system_id(&b[..7]), None);
        assert_eq!(pg_control_system_id(&[0u8; 8192]), None);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(data_dir_system_id(dir.path()).unwrap(), None);
        std::fs::create_dir(dir.path().join("global")).unwrap();
        std::fs::write(dir.path().join("global/pg_control"), &b).unwrap();
        assert_eq!(data_dir_system_id(dir.path()).unwrap(), Some(7312345678901234567));
        std::fs::write(dir.path().join("global/pg_control"), b"").unwrap();
        assert!(data_dir_system_id(dir.path()).unwrap_err().to_string().contains("not a pg_control file"));
    }

    #[test]
    fn system_records_keep_the_id_as_decimal_text() {
        let r = SystemRecord::new(7312345678901234567);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["system_identifier"], "7312345678901234567");
        assert_eq!(r.system_id(), Some(7312345678901234567));
    }

    /// A 16 MiB segment's first bytes: a long page header for `name` of cluster `sysid`.
    fn segment(name: &str, sysid: SystemId) -> Vec<u8> {
        let WalFile::Segment { tli, log, seg } = WalFile::parse(name).unwrap() else { panic!() };
        let seg_size = 16u32 << 20;
        let mut b = vec![0u8; seg_size as usize];
        b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        b[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        b[4..8].copy_from_slice(&tli.to_le_bytes());
        let start = (u64::from(log) * 256 + u64::from(seg)) * u64::from(seg_size);
        b[8..16].copy_from_slice(&start.to_le_bytes());
        b[24..32].copy_from_slice(&sysid.to_le_bytes());
        b[32..36].copy_from_slice(&seg_size.to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        b
    }

    #[test]
    fn a_segment_s_header_must_match_its_name() {
        let name = "000000020000000100000003";
        let f = WalFile::parse(name).unwrap();
        let b = segment(name, 99);
        assert_eq!(segment_header(&f, &b, b.len() as u64).unwrap().sysid, 99);
        let other_tli = WalFile::parse("000000030000000100000003").unwrap();
        assert!(segment_header(&other_tli, &b, b.len() as u64).unwrap_err().contains("timeline 00000002"), "tli");
        let renamed = WalFile::parse("000000020000000100000004").unwrap();
        assert!(segment_header(&renamed, &b, b.len() as u64).unwrap_err().contains("starts at 1/4000000"));
        assert!(segment_header(&f, &b, 1 << 20).unwrap_err().contains("1048576 bytes"));
        let partial = WalFile::parse("000000020000000100000003.partial").unwrap();
        assert!(segment_header(&partial, &b, b.len() as u64).is_ok());
        assert!(segment_header(&f, &[0u8; 100], 100).unwrap_err().contains("not a WAL segment"));
        let history = WalFile::parse("00000002.history").unwrap();
        assert!(segment_header(&history, &b, b.len() as u64).is_err());
    }

    #[tokio::test]
    async fn pushers_racing_on_one_chunk_lose_no_line() {
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let store: Arc<dyn Store> = Arc::new(crate::store::local::LocalStore::new(&format!("file://{root}"), &root));
        let mut tasks = Vec::new();
        for i in 0..8u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let f = WalFile::Segment { tli: 1, log: 0, seg: i };
                add_to_index(&*store, "prod", 7, &f, line(&f.name(), "aa")).await.unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Listed::Added);
        }
        let h = WalFile::History { tli: 1 };
        add_to_index(&*store, "prod", 7, &h, line(&h.name(), "hh")).await.unwrap();
        let all = read_index(&*store, "prod", 7, 1).await.unwrap();
        assert_eq!(all.len(), 9);
        assert_eq!(all[0].name, "00000001.history");
        assert_eq!(all[8].name, "000000010000000000000007");
        assert_eq!(timelines(&*store, "prod", 7).await.unwrap(), [1]);
        assert_eq!(recorded_system(&*store, "prod").await.unwrap(), None);
        assert_eq!(record_system(&*store, "prod", 7).await.unwrap(), 7);
        assert_eq!(record_system(&*store, "prod", 8).await.unwrap(), 7, "the first record stays");
        assert_eq!(recorded_system(&*store, "prod").await.unwrap(), Some(7));
    }

    #[test]
    fn page_header() {
        let mut b = vec![0u8; 40];
        b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        b[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..16].copy_from_slice(&0x3000000u64.to_le_bytes());
        b[24..32].copy_from_slice(&7312345678901234567u64.to_le_bytes());
        b[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        let h = PageHeader::parse(&b).unwrap();
        assert_eq!((h.tli, h.pageaddr, h.sysid, h.seg_size), (1, 0x3000000, 7312345678901234567, 16 << 20));
        b[2] = 0;
        assert_eq!(PageHeader::parse(&b), None);
    }
}
