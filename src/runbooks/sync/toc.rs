//! The sequence values a `pg_dump -Fc` archive sets, read from its table of contents.
//!
//! Sequences ignore snapshots: pg_dump reads each one's `last_value` live, so the only honest
//! reference for "the scratch database's sequences stand at the dump's values" is the dump itself.
//! Written to a pipe, a custom-format archive starts with its whole TOC (data offsets unknown), and
//! each `SEQUENCE SET` entry's definition is the `SELECT pg_catalog.setval('…', N, true);` that
//! pg_restore runs. This parses just that header, from the first bytes of the stream the tee sees,
//! following pg_backup_archiver.c (ReadHead, ReadToc) and pg_backup_custom.c (_ReadExtraToc) for
//! archive versions 1.12 to 1.15 (pg_dump 9.5 to 16). A newer version is reported, not guessed at.

/// One `SEQUENCE SET` entry: the sequence as setval's regclass literal, the value and is_called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqValue {
    pub regclass: String,
    pub value: i64,
    pub is_called: bool,
}

/// The archive sections (pg_backup.h's teSection). An entry of `NONE` (ACLs, comments) belongs
/// to the section of the entry before it, as pg_restore's `--section` treats it.
pub const SECTION_NONE: i64 = 1;
pub const SECTION_PRE_DATA: i64 = 2;
pub const SECTION_DATA: i64 = 3;
pub const SECTION_POST_DATA: i64 = 4;

/// One TOC entry, as much of it as the loader needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub dump_id: i64,
    pub desc: String,
    /// The section it is restored in (`NONE` resolved to the preceding entry's).
    pub section: i64,
    pub namespace: Option<String>,
    pub tag: Option<String>,
    /// The SQL pg_restore runs for it (`SET client_encoding = 'UTF8';` for ENCODING, …).
    pub defn: Option<String>,
    /// `COPY schema.table (cols) FROM stdin;` for TABLE DATA.
    pub copy_stmt: Option<String>,
    /// It has a data block in the archive.
    pub has_data: bool,
}

/// The archive's header and table of contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toc {
    /// Bytes from the start of the archive to the end of the TOC: the data blocks follow.
    pub len: usize,
    pub int_size: usize,
    pub entries: Vec<Entry>,
    pub sequences: Vec<SeqValue>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    Done(Toc),
    /// Not an archive this parser knows: the reason.
    Unsupported(String),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    int_size: usize,
    off_size: usize,
}

/// `None` = ran out of bytes.
impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.buf.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(s)
    }
    /// ReadInt: a sign byte, then `int_size` bytes little-endian.
    fn int(&mut self) -> Option<i64> {
        let negative = self.byte()? != 0;
        let mut v: i64 = 0;
        for (i, b) in self.bytes(self.int_size)?.iter().enumerate() {
            v |= i64::from(*b) << (8 * i);
        }
        Some(if negative { -v } else { v })
    }
    /// ReadStr: a length (-1 = NULL), then the bytes.
    fn str(&mut self) -> Option<Option<String>> {
        let len = self.int()?;
        if len < 0 {
            return Some(None);
        }
        Some(Some(String::from_utf8_lossy(self.bytes(len as usize)?).into_owned()))
    }
}

pub fn parse(buf: &[u8]) -> Parsed {
    match parse_inner(buf) {
        None => Parsed::Incomplete,
        Some(Ok(v)) => Parsed::Done(v),
        Some(Err(e)) => Parsed::Unsupported(e),
    }
}

fn parse_inner(buf: &[u8]) -> Option<Result<Toc, String>> {
    let mut r = Reader { buf, pos: 0, int_size: 4, off_size: 8 };
    if r.bytes(5)? != b"PGDMP" {
        return Some(Err("the stream does not start with PGDMP: not a custom-format archive".into()));
    }
    let (vmaj, vmin) = (r.byte()?, r.byte()?);
    let _vrev = r.byte()?;
    if vmaj != 1 || !(12..=15).contains(&vmin) {
        return Some(Err(format!("archive version {vmaj}.{vmin} is not one this drctl reads (1.12 to 1.15)")));
    }
    r.int_size = r.byte()? as usize;
    r.off_size = r.byte()? as usize;
    if r.byte()? != 1 {
        return Some(Err("not a custom-format archive".into()));
    }
    if vmin >= 15 {
        r.byte()?; // compression algorithm
    } else {
        r.int()?; // compression level
    }
    for _ in 0..7 {
        r.int()?; // creation time: sec, min, hour, mday, mon, year, isdst
    }
    r.str()?; // database name
    r.str()?; // server version
    r.str()?; // pg_dump version
    let count = r.int()?;
    let mut sequences = Vec::new();
    let mut entries = Vec::new();
    let mut section = SECTION_PRE_DATA;
    for _ in 0..count {
        let dump_id = r.int()?;
        r.int()?; // hadDumper
        r.str()?; // tableoid
        r.str()?; // oid
        let tag = r.str()?;
        let desc = r.str()?;
        let own_section = r.int()?;
        let defn = r.str()?;
        r.str()?; // dropStmt
        let copy_stmt = r.str()?;
        let namespace = r.str()?;
        r.str()?; // tablespace
        if vmin >= 14 {
            r.str()?; // tableam
        }
        r.str()?; // owner
        r.str()?; // "false": the old WITH OIDS flag
        while r.str()?.is_some() {} // dependencies, NULL-terminated
        // K_OFFSET_NO_DATA (3): no data block; K_OFFSET_POS_NOT_SET / K_OFFSET_POS_SET: one.
        let has_data = r.byte()? != 3;
        r.bytes(r.off_size)?; // data offset
        let desc = desc.unwrap_or_default();
        if desc == "SEQUENCE SET" {
            match defn.as_deref().and_then(parse_setval) {
                Some(s) => sequences.push(s),
                None => return Some(Err(format!("unexpected SEQUENCE SET definition: {defn:?}"))),
            }
        }
        if own_section != SECTION_NONE {
            section = own_section;
        }
        entries.push(Entry { dump_id, desc, section, namespace, tag, defn, copy_stmt, has_data });
    }
    Some(Ok(Toc { len: r.pos, int_size: r.int_size, entries, sequences }))
}

/// `SELECT pg_catalog.setval('public.orders_id_seq', 20000, true);`
fn parse_setval(defn: &str) -> Option<SeqValue> {
    let rest = defn.trim().strip_prefix("SELECT pg_catalog.setval('")?;
    // The literal ends at the first `'` not doubled.
    let mut lit = String::new();
    let mut chars = rest.char_indices().peekable();
    let mut end = None;
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().map(|(_, c)| *c) == Some('\'') {
                chars.next();
                lit.push('\'');
            } else {
                end = Some(i + 1);
                break;
            }
        } else {
            lit.push(c);
        }
    }
    let tail = rest[end?..].trim().strip_prefix(',')?.trim().strip_suffix(");")?;
    let (value, called) = tail.split_once(',')?;
    Some(SeqValue { regclass: lit, value: value.trim().parse().ok()?, is_called: called.trim() == "true" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_setval_definitions() {
        assert_eq!(
            parse_setval("SELECT pg_catalog.setval('public.orders_id_seq', 20000, true);\n"),
            Some(SeqValue { regclass: "public.orders_id_seq".into(), value: 20000, is_called: true })
        );
        assert_eq!(
            parse_setval("SELECT pg_catalog.setval('audit.\"it''s_seq\"', 1, false);"),
            Some(SeqValue { regclass: "audit.\"it's_seq\"".into(), value: 1, is_called: false })
        );
        assert_eq!(parse_setval("SELECT 1;"), None);
    }

    #[test]
    fn a_truncated_or_foreign_stream_is_told_apart() {
        assert_eq!(parse(b"PGD"), Parsed::Incomplete);
        assert!(matches!(parse(b"PK\x03\x04 zip"), Parsed::Unsupported(_)));
        assert!(matches!(parse(b"PGDMP\x01\x10\x00\x04\x08\x01"), Parsed::Unsupported(_)));
    }
}
