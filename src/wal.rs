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
//! metadata (`sha256`) and in the index, so wal-fetch checks what it hands PostgreSQL, and
//! verification needs no listing of every segment.

use serde::{Deserialize, Serialize};

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
