//! The data blocks of a custom-format archive, split out of the stream as it passes.
//!
//! After the TOC (see `toc`), a `pg_dump -Fc` archive written to a pipe holds one block per entry
//! with data, in TOC order (pg_backup_custom.c: `_StartData`, `_WriteData`, `_EndData`,
//! `_StartBlobs` …):
//!
//! ```text
//! TABLE DATA:  BLK_DATA(1)  dumpId  { len bytes[len] }*  0
//! BLOBS:       BLK_BLOBS(3) dumpId  { oid { len bytes[len] }* 0 }*  0
//! ```
//!
//! where every int is a sign byte and `int_size` bytes, little-endian. With `-Z0` the bytes of a
//! TABLE DATA block are the COPY text itself: pg_dump writes each row it gets from the server as
//! its own chunk, and ends the table with a `\.` line. This module only cuts the stream into
//! those pieces, whatever the input buffer boundaries; the loader decides what to do with them.

/// What the stream holds next.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A block begins: the TOC entry's dumpId; `blobs` for a large-object block (its content is
    /// skipped: only TABLE DATA is loaded by drctl itself).
    Start { dump_id: i64, blobs: bool },
    /// A piece of a TABLE DATA chunk; `last` when the chunk ends with it.
    Data { bytes: &'a [u8], last: bool },
    /// The block ended.
    End,
}

const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;

#[derive(Debug, Clone, Copy)]
enum State {
    BlockType,
    BlockId { blobs: bool },
    ChunkLen,
    Chunk { left: usize },
    BlobOid,
    BlobChunkLen,
    BlobChunk { left: usize },
}

pub struct Demux {
    int_size: usize,
    state: State,
    /// The bytes of an int read so far (it may span input buffers).
    int_buf: Vec<u8>,
    /// Bytes consumed, for error messages.
    offset: u64,
}

impl Demux {
    /// For the bytes after the TOC of an archive whose ints are `int_size` bytes.
    pub fn new(int_size: usize) -> Self {
        Demux { int_size, state: State::BlockType, int_buf: Vec::with_capacity(16), offset: 0 }
    }

    /// Between blocks: the stream may end here.
    pub fn at_block_boundary(&self) -> bool {
        matches!(self.state, State::BlockType)
    }

    /// Cut `data` (the next bytes of the stream) into events, in order.
    pub fn feed<'a>(&mut self, mut data: &'a [u8], out: &mut Vec<Event<'a>>) -> Result<(), String> {
        while !data.is_empty() {
            match self.state {
                State::BlockType => {
                    let t = data[0];
                    data = &data[1..];
                    self.offset += 1;
                    self.state = match t {
                        BLK_DATA => State::BlockId { blobs: false },
                        BLK_BLOBS => State::BlockId { blobs: true },
                        other => {
                            return Err(format!(
                                "unknown block type {other} at byte {} after the table of contents",
                                self.offset - 1
                            ));
                        }
                    };
                }
                State::BlockId { blobs } => {
                    if let Some(id) = self.int(&mut data) {
                        out.push(Event::Start { dump_id: id, blobs });
                        self.state = if blobs { State::BlobOid } else { State::ChunkLen };
                    }
                }
                State::ChunkLen => {
                    if let Some(len) = self.int(&mut data) {
                        self.state = match len {
                            0 => {
                                out.push(Event::End);
                                State::BlockType
                            }
                            n if n > 0 => State::Chunk { left: n as usize },
                            n => return Err(format!("negative chunk length {n} at byte {}", self.offset)),
                        };
                    }
                }
                State::Chunk { left } => {
                    let n = left.min(data.len());
                    out.push(Event::Data { bytes: &data[..n], last: n == left });
                    data = &data[n..];
                    self.offset += n as u64;
                    self.state = if n == left { State::ChunkLen } else { State::Chunk { left: left - n } };
                }
                State::BlobOid => {
                    if let Some(oid) = self.int(&mut data) {
                        if oid == 0 {
                            out.push(Event::End);
                            self.state = State::BlockType;
                        } else {
                            self.state = State::BlobChunkLen;
                        }
                    }
                }
                State::BlobChunkLen => {
                    if let Some(len) = self.int(&mut data) {
                        self.state = match len {
                            0 => State::BlobOid,
                            n if n > 0 => State::BlobChunk { left: n as usize },
                            n => return Err(format!("negative chunk length {n} at byte {}", self.offset)),
                        };
                    }
                }
                State::BlobChunk { left } => {
                    let n = left.min(data.len());
                    data = &data[n..];
                    self.offset += n as u64;
                    self.state = if n == left { State::BlobChunkLen } else { State::BlobChunk { left: left - n } };
                }
            }
        }
        Ok(())
    }

    /// ReadInt across buffer boundaries: `None` until all 1 + int_size bytes are in.
    fn int(&mut self, data: &mut &[u8]) -> Option<i64> {
        let need = 1 + self.int_size - self.int_buf.len();
        let n = need.min(data.len());
        self.int_buf.extend_from_slice(&data[..n]);
        *data = &data[n..];
        self.offset += n as u64;
        if self.int_buf.len() < 1 + self.int_size {
            return None;
        }
        let mut v: i64 = 0;
        for (i, b) in self.int_buf[1..].iter().enumerate() {
            v |= i64::from(*b) << (8 * i);
        }
        let v = if self.int_buf[0] != 0 { -v } else { v };
        self.int_buf.clear();
        Some(v)
    }
}

/// pg_dump's end-of-data line for a table, `\.`, which it writes as the table's last chunk
/// (followed by blank lines). It is not a row: the loader ends the COPY itself.
pub fn is_terminator(chunk: &[u8]) -> bool {
    chunk.strip_prefix(b"\\.\n").is_some_and(|rest| rest.iter().all(|&b| b == b'\n'))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An integer as pg_dump's archives write it (4-byte ints): a sign byte, then the magnitude
    /// little-endian. The loader's tests build streams with it too.
    pub(in crate::runbooks::sync) fn int(v: i64) -> Vec<u8> {
        let mut b = vec![u8::from(v < 0)];
        b.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        b
    }

    /// Two TABLE DATA blocks around a BLOBS block, as pg_dump writes them.
    fn stream() -> Vec<u8> {
        let mut s = vec![BLK_DATA];
        s.extend(int(7));
        for row in [&b"1\ta\n"[..], b"2\tb\n", b"\\.\n\n\n"] {
            s.extend(int(row.len() as i64));
            s.extend_from_slice(row);
        }
        s.extend(int(0));
        s.push(BLK_BLOBS);
        s.extend(int(9));
        s.extend(int(16_385)); // oid
        s.extend(int(3));
        s.extend_from_slice(b"xyz");
        s.extend(int(0));
        s.extend(int(0));
        s.push(BLK_DATA);
        s.extend(int(8));
        s.extend(int(0));
        s
    }

    /// (dump_id, blobs, whole chunks) per block, reassembled from the events.
    fn blocks(events: &[Event<'_>]) -> Vec<(i64, bool, Vec<Vec<u8>>)> {
        let mut out: Vec<(i64, bool, Vec<Vec<u8>>)> = Vec::new();
        let mut chunk = Vec::new();
        for e in events {
            match e {
                Event::Start { dump_id, blobs } => out.push((*dump_id, *blobs, Vec::new())),
                Event::Data { bytes, last } => {
                    chunk.extend_from_slice(bytes);
                    if *last {
                        out.last_mut().unwrap().2.push(std::mem::take(&mut chunk));
                    }
                }
                Event::End => {}
            }
        }
        out
    }

    #[test]
    fn blocks_are_cut_the_same_at_any_buffer_boundary() {
        let s = stream();
        let mut whole = Vec::new();
        Demux::new(4).feed(&s, &mut whole).unwrap();
        let want = vec![
            (7, false, vec![b"1\ta\n".to_vec(), b"2\tb\n".to_vec(), b"\\.\n\n\n".to_vec()]),
            (9, true, vec![]),
            (8, false, vec![]),
        ];
        assert_eq!(blocks(&whole), want);
        assert_eq!(whole.iter().filter(|e| **e == Event::End).count(), 3);
        for size in 1..8 {
            let mut d = Demux::new(4);
            let mut events = Vec::new();
            for piece in s.chunks(size) {
                d.feed(piece, &mut events).unwrap();
            }
            assert!(d.at_block_boundary());
            assert_eq!(blocks(&events), want, "pieces of {size} bytes");
        }
    }

    #[test]
    fn a_stream_cut_inside_a_block_is_not_at_a_boundary_and_junk_is_an_error() {
        let s = stream();
        let mut d = Demux::new(4);
        d.feed(&s[..12], &mut Vec::new()).unwrap();
        assert!(!d.at_block_boundary());
        let e = Demux::new(4).feed(b"\x07", &mut Vec::new()).unwrap_err();
        assert!(e.contains("unknown block type 7"), "{e}");
    }

    #[test]
    fn the_end_of_data_line_is_told_from_rows() {
        assert!(is_terminator(b"\\.\n\n\n"));
        assert!(is_terminator(b"\\.\n"));
        assert!(!is_terminator(b"\\\\.\n"));
        assert!(!is_terminator(b".\n"));
        assert!(!is_terminator(b"\\.\nx\n"));
    }
}
