//! The row-level rule of a hash-chained table (contract "Hash chains in application tables"),
//! applied to one ordered range of rows as they stream out of a binary COPY.
//!
//! Kept free of I/O so the rule can be unit-tested byte for byte: `CopyParser` turns COPY BINARY
//! chunks into rows, `RangeScan` checks each row against the one before it and remembers the
//! range's first and last rows so that ranges verified in parallel can be stitched together.

use sha2::{Digest, Sha256};

use crate::cli::{ByteaHash, Genesis};

/// PostgreSQL's COPY BINARY signature (11 bytes), then flags (4) and the header extension length (4).
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// How a hash column is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// text / varchar / char: lowercase hex as written by the application.
    Text,
    /// bytea: the 32 raw bytes.
    Bytea,
}

/// What the scan needs to know about the table.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The order column is sent as int8 (8 bytes, big-endian) rather than text.
    pub int_key: bool,
    pub prev: Kind,
    pub hash: Kind,
    pub bytea_hash: ByteaHash,
    pub dense: bool,
    pub all_errors: bool,
}

/// One row's order-column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Int(i64),
    Text(String),
    Null,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Text(s) => f.write_str(s),
            Key::Null => f.write_str("NULL"),
        }
    }
}

/// One bad row: its 0-based position within the scan, its key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub index: u64,
    pub key: Key,
    pub reason: String,
}

/// A row at the edge of a range: its key and its prev_hash (first row) or hash (last row), both
/// in canonical form (`canonical`), `None` for NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub key: Key,
    pub link: Option<Vec<u8>>,
}

/// The prev_hash the first row of the whole chain must hold, canonical.
pub fn genesis_link(g: Genesis) -> Option<Vec<u8>> {
    match g {
        Genesis::Zeros => Some(vec![b'0'; 64]),
        Genesis::Null => None,
        Genesis::Empty => Some(Vec::new()),
    }
}

/// Links are compared as text: a text column as stored, a bytea column as its lowercase hex, so a
/// text prev_hash can link to a bytea hash and the anchors hold one form.
fn canonical(kind: Kind, v: &[u8], out: &mut Vec<u8>) {
    out.clear();
    match kind {
        Kind::Text => out.extend_from_slice(v),
        Kind::Bytea => {
            out.resize(v.len() * 2, 0);
            hex::encode_to_slice(v, out).expect("twice the length");
        }
    }
}

/// A short form of a hash for messages.
pub fn short(v: Option<&[u8]>) -> String {
    match v {
        None => "NULL".into(),
        Some([]) => "''".into(),
        Some(v) => {
            let s = String::from_utf8_lossy(v);
            if s.len() > 16 { format!("{}…", &s[..16]) } else { s.into_owned() }
        }
    }
}

/// Why `next` may not follow `prev` (None: it may). Same order as within a range: duplicate key,
/// gap, prev link.
pub fn link_problem(dense: bool, prev: &Edge, next: &Edge) -> Option<String> {
    if next.key == prev.key && next.key != Key::Null {
        return Some(format!("duplicate_key: {} {} appears more than once", "order value", next.key));
    }
    if let (true, Key::Int(a), Key::Int(b)) = (dense, &prev.key, &next.key)
        && a.checked_add(1) != Some(*b)
    {
        return Some(format!("gap: {b} follows {a} (--dense expects consecutive values): rows were deleted"));
    }
    if next.link != prev.link {
        return Some(format!(
            "prev_mismatch: prev_hash {} is not the previous row's hash {}: a row before it was deleted, \
             inserted or reordered, or its prev_hash was edited",
            short(next.link.as_deref()),
            short(prev.link.as_deref())
        ));
    }
    None
}

/// Verifies consecutive rows of one range. The first row's link to what precedes the range is
/// left to the caller (`first`), which knows the previous range or the genesis value.
pub struct RangeScan {
    rule: Rule,
    pub count: u64,
    pub first: Option<Edge>,
    last_key: Key,
    last_hash: Option<Vec<u8>>,
    cur_prev: Vec<u8>,
    cur_hash: Vec<u8>,
    prefix: Vec<u8>,
    pub errors: Vec<Bad>,
    /// Stopped at the first error (without --all-errors): `count` is then not the range's size.
    pub stopped: bool,
}

impl RangeScan {
    pub fn new(rule: Rule) -> RangeScan {
        RangeScan {
            rule,
            count: 0,
            first: None,
            last_key: Key::Null,
            last_hash: None,
            cur_prev: Vec::with_capacity(64),
            cur_hash: Vec::with_capacity(64),
            prefix: Vec::with_capacity(64),
            errors: Vec::new(),
            stopped: false,
        }
    }

    /// The range's last row, once at least one row was seen.
    pub fn last(&self) -> Option<Edge> {
        (self.count > 0).then(|| Edge { key: self.last_key.clone(), link: self.last_hash.clone() })
    }

    fn key(&self, v: Option<&[u8]>) -> Key {
        match v {
            None => Key::Null,
            Some(b) if self.rule.int_key && b.len() == 8 => {
                Key::Int(i64::from_be_bytes(b.try_into().expect("8 bytes")))
            }
            Some(b) => Key::Text(String::from_utf8_lossy(b).into_owned()),
        }
    }

    /// One row: (order key, prev_hash, hash, content). `false` once the scan should stop.
    pub fn row(&mut self, f: [Option<&[u8]>; 4]) -> bool {
        let index = self.count;
        self.count += 1;
        let key = self.key(f[0]);
        let mut cur_prev = std::mem::take(&mut self.cur_prev);
        let prev: Option<&[u8]> = match f[1] {
            Some(v) => {
                canonical(self.rule.prev, v, &mut cur_prev);
                Some(&cur_prev[..])
            }
            None => None,
        };
        let mut reason = None;
        if key == Key::Null {
            reason = Some("null_key: the order column is NULL, so the row has no place in the chain".to_string());
        } else if index == 0 {
            self.first = Some(Edge { key: key.clone(), link: prev.map(<[u8]>::to_vec) });
        } else {
            // The cheap comparisons allocate nothing; the `Edge`s for the message are built only
            // when something is already off.
            let same_link = prev == self.last_hash.as_deref();
            let dense_ok = match (&self.last_key, &key) {
                (Key::Int(a), Key::Int(b)) => !self.rule.dense || a.checked_add(1) == Some(*b),
                _ => true,
            };
            if !same_link || !dense_ok || key == self.last_key {
                let before = Edge { key: self.last_key.clone(), link: self.last_hash.clone() };
                let this = Edge { key: key.clone(), link: prev.map(<[u8]>::to_vec) };
                reason = link_problem(self.rule.dense, &before, &this);
            }
        }
        if reason.is_none() {
            reason = self.hash_problem(f[1], f[2], f[3].unwrap_or_default());
        }
        self.cur_prev = cur_prev;
        // The next row links to this row's hash as stored, whatever was wrong here: one altered
        // payload is one bad entry, not a cascade.
        match f[2] {
            Some(h) => {
                canonical(self.rule.hash, h, &mut self.cur_hash);
                match &mut self.last_hash {
                    Some(l) => {
                        l.clear();
                        l.extend_from_slice(&self.cur_hash);
                    }
                    None => self.last_hash = Some(self.cur_hash.clone()),
                }
            }
            None => self.last_hash = None,
        }
        if let Some(reason) = reason {
            self.errors.push(Bad { index, key: key.clone(), reason });
            self.last_key = key;
            if !self.rule.all_errors {
                self.stopped = true;
                return false;
            }
            return true;
        }
        self.last_key = key;
        true
    }

    fn hash_problem(&mut self, prev: Option<&[u8]>, hash: Option<&[u8]>, content: &[u8]) -> Option<String> {
        let Some(stored) = hash else {
            return Some("hash_mismatch: hash is NULL".into());
        };
        // The rule hashes prev_hash as text (bytea: its lowercase hex) unless --bytea-hash raw.
        let prefix: &[u8] = match (prev, self.rule.prev, self.rule.bytea_hash) {
            (None, _, _) => &[],
            (Some(p), Kind::Bytea, ByteaHash::Raw) | (Some(p), Kind::Text, _) => p,
            (Some(p), Kind::Bytea, ByteaHash::Hex) => {
                canonical(Kind::Bytea, p, &mut self.prefix);
                &self.prefix
            }
        };
        let mut h = Sha256::new();
        h.update(prefix);
        h.update(content);
        let digest: [u8; 32] = h.finalize().into();
        let ok = match self.rule.hash {
            Kind::Bytea => stored == digest,
            Kind::Text => {
                let mut hexed = [0u8; 64];
                hex::encode_to_slice(digest, &mut hexed).expect("64 bytes");
                stored == hexed
            }
        };
        (!ok).then(|| {
            format!(
                "hash_mismatch: hash {} is not sha256(prev_hash || content) {}: the content or the hash was altered",
                match self.rule.hash {
                    Kind::Text => short(Some(stored)),
                    Kind::Bytea => short(Some(hex::encode(stored).as_bytes())),
                },
                short(Some(hex::encode(digest).as_bytes()))
            )
        })
    }
}

/// Incremental COPY BINARY reader: feed chunks as they arrive; rows spanning chunks are buffered,
/// so memory is bounded by the largest row plus one chunk.
#[derive(Default)]
pub struct CopyParser {
    pending: Vec<u8>,
    header_done: bool,
    pub finished: bool,
}

/// Outcome of parsing a byte slice.
enum Parsed {
    /// Consumed this many bytes; the rest is an incomplete row.
    More(usize),
    Trailer,
    Stopped,
}

impl CopyParser {
    /// Parse every complete row of `chunk`; `Ok(false)` when `on_row` asked to stop.
    pub fn feed(&mut self, chunk: &[u8], on_row: &mut impl FnMut([Option<&[u8]>; 4]) -> bool) -> Result<bool, String> {
        if self.finished {
            return Ok(true);
        }
        let outcome = if self.pending.is_empty() {
            // The common case (PostgreSQL sends one CopyData message per row): no copy.
            let r = self.parse(chunk, on_row)?;
            if let Parsed::More(n) = r {
                self.pending.extend_from_slice(&chunk[n..]);
            }
            r
        } else {
            self.pending.extend_from_slice(chunk);
            let buf = std::mem::take(&mut self.pending);
            let r = self.parse(&buf, on_row)?;
            if let Parsed::More(n) = r {
                self.pending = buf;
                self.pending.drain(..n);
            }
            r
        };
        match outcome {
            Parsed::More(_) => Ok(true),
            Parsed::Trailer => {
                self.finished = true;
                Ok(true)
            }
            Parsed::Stopped => Ok(false),
        }
    }

    fn parse(&mut self, data: &[u8], on_row: &mut impl FnMut([Option<&[u8]>; 4]) -> bool) -> Result<Parsed, String> {
        let mut pos = 0usize;
        if !self.header_done {
            if data.len() < SIGNATURE.len() + 8 {
                return Ok(Parsed::More(0));
            }
            if &data[..SIGNATURE.len()] != SIGNATURE {
                return Err("the COPY stream does not start with the binary signature".into());
            }
            let ext = u32::from_be_bytes(data[15..19].try_into().expect("4 bytes")) as usize;
            if data.len() < 19 + ext {
                return Ok(Parsed::More(0));
            }
            pos = 19 + ext;
            self.header_done = true;
        }
        loop {
            let start = pos;
            let Some(n) = data.get(pos..pos + 2) else { return Ok(Parsed::More(start)) };
            let fields = i16::from_be_bytes([n[0], n[1]]);
            pos += 2;
            if fields == -1 {
                return Ok(Parsed::Trailer);
            }
            if fields != 4 {
                return Err(format!("a COPY row has {fields} fields, expected 4"));
            }
            let mut row: [Option<&[u8]>; 4] = [None; 4];
            for slot in &mut row {
                let Some(l) = data.get(pos..pos + 4) else { return Ok(Parsed::More(start)) };
                let len = i32::from_be_bytes(l.try_into().expect("4 bytes"));
                pos += 4;
                if len >= 0 {
                    let Some(v) = data.get(pos..pos + len as usize) else { return Ok(Parsed::More(start)) };
                    *slot = Some(v);
                    pos += len as usize;
                }
            }
            if !on_row(row) {
                return Ok(Parsed::Stopped);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Rule {
        Rule {
            int_key: true,
            prev: Kind::Text,
            hash: Kind::Text,
            bytea_hash: ByteaHash::Hex,
            dense: true,
            all_errors: true,
        }
    }

    /// A text-hex chain of `n` rows: (id, prev, hash, content).
    fn chain(n: i64) -> Vec<(i64, String, String, String)> {
        let mut prev = "0".repeat(64);
        (1..=n)
            .map(|id| {
                let content = format!("{{\"n\": {id}}}");
                let hash = hex::encode(Sha256::digest(format!("{prev}{content}")));
                let row = (id, prev.clone(), hash.clone(), content);
                prev = hash;
                row
            })
            .collect()
    }

    fn scan(rows: &[(i64, String, String, String)]) -> RangeScan {
        let mut s = RangeScan::new(rule());
        for (id, p, h, c) in rows {
            let k = id.to_be_bytes();
            s.row([Some(&k), Some(p.as_bytes()), Some(h.as_bytes()), Some(c.as_bytes())]);
        }
        s
    }

    #[test]
    fn a_good_chain_has_no_errors_and_starts_at_genesis() {
        let s = scan(&chain(50));
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(s.count, 50);
        assert_eq!(s.first.as_ref().unwrap().link, genesis_link(Genesis::Zeros));
        assert_eq!(s.last().unwrap().key, Key::Int(50));
    }

    #[test]
    fn each_kind_of_damage_is_one_named_entry() {
        let good = chain(20);
        let mut altered = good.clone();
        altered[7].3 = "{\"n\": 999}".into();
        let s = scan(&altered);
        assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
        assert_eq!((s.errors[0].index, &s.errors[0].key), (7, &Key::Int(8)));
        assert!(s.errors[0].reason.starts_with("hash_mismatch"));

        let mut deleted = good.clone();
        deleted.remove(9);
        let s = scan(&deleted);
        assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
        assert_eq!((s.errors[0].index, &s.errors[0].key), (9, &Key::Int(11)));
        assert!(s.errors[0].reason.starts_with("gap"), "{}", s.errors[0].reason);

        let mut dup = good.clone();
        dup.insert(5, good[4].clone());
        let s = scan(&dup);
        assert!(s.errors[0].reason.starts_with("duplicate_key"), "{:?}", s.errors);
        assert_eq!(s.errors[0].index, 5);

        let mut edited = good.clone();
        edited[3].1 = "f".repeat(64);
        let s = scan(&edited);
        assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
        assert!(s.errors[0].reason.starts_with("prev_mismatch"));
    }

    #[test]
    fn copy_binary_rows_split_anywhere_parse_the_same() {
        let rows = chain(30);
        let mut stream = SIGNATURE.to_vec();
        stream.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        for (id, p, h, c) in &rows {
            stream.extend_from_slice(&4i16.to_be_bytes());
            for f in [&id.to_be_bytes()[..], p.as_bytes(), h.as_bytes(), c.as_bytes()] {
                stream.extend_from_slice(&(f.len() as i32).to_be_bytes());
                stream.extend_from_slice(f);
            }
        }
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        for step in [1, 7, 64, stream.len()] {
            let mut parser = CopyParser::default();
            let mut s = RangeScan::new(rule());
            for chunk in stream.chunks(step) {
                parser.feed(chunk, &mut |r| s.row(r)).unwrap();
            }
            assert!(parser.finished);
            assert_eq!((s.count, s.errors.len()), (30, 0), "chunk size {step}");
        }
    }
}
