//! Reading a stored backup back: its objects streamed from the store in order, each checked
//! against the manifest's size and sha256 as it streams, decrypted (age) and decompressed (zstd)
//! on a blocking thread, and written to a child process's stdin (tar for a base backup).
//!
//! The child sees the end of its input only once every object was read whole and matched: a
//! short or tampered stream ends as an error on the child's side too, never as a clean EOF.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, Bytes};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::encryption;
use crate::catalog::Manifest;
use crate::ctx::Ctx;
use crate::error::{Error, Result};

const CHUNK: usize = 1 << 20;

/// What came out of the stream.
pub struct ReadBack {
    /// The stored bytes read (compressed, encrypted if so).
    pub stored_bytes: u64,
    /// The plain bytes written to the sink.
    pub plain_bytes: u64,
}

/// Stream `m`'s objects into `sink`. An integrity failure (missing object, wrong size or sha256)
/// is exit 4 naming the object; a wrong age key is a config error naming age_identity_file.
pub async fn stream_into(
    cx: &Ctx,
    m: &Manifest,
    sink: impl tokio::io::AsyncWrite + Unpin + Send + 'static,
    progress: &crate::output::progress::Progress,
) -> Result<ReadBack> {
    let chain = format!("backup {} of {}", m.id, m.env);
    let identities = encryption::identities_for(cx, m)?;
    // Bounded: a slow consumer slows the download down instead of growing memory.
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let whole = Arc::new(AtomicBool::new(false));
    let source = Received::new(rx, whole.clone(), "backup");
    let handle = tokio::runtime::Handle::current();
    let feeder = tokio::task::spawn_blocking(move || feed(source, identities, sink, handle));
    let mut to_feeder = Some(tx);
    let (mut all, mut stored_bytes) = (Sha256::new(), 0u64);
    for o in &m.objects {
        let mut rx = cx
            .store
            .download(&o.key)
            .await?
            .ok_or_else(|| Error::integrity(&chain, &o.key, "the object is missing from the store"))?;
        let (mut one, mut size) = (Sha256::new(), 0u64);
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk.map_err(|e| Error::step("restore", format!("reading {}: {e}", o.key)))?;
            one.update(&chunk);
            all.update(&chunk);
            size += chunk.len() as u64;
            progress.inc(chunk.len() as u64);
            if let Some(t) = &to_feeder
                && t.send(chunk).await.is_err()
            {
                // The consumer stopped; the rest is still read, for its sha256.
                to_feeder = None;
            }
        }
        if size != o.size {
            return Err(Error::integrity(
                &chain,
                &o.key,
                format!("the store holds {size} bytes, the manifest {} (truncated or replaced)", o.size),
            ));
        }
        let sha = hex::encode(one.finalize());
        if sha != o.sha256 {
            return Err(Error::integrity(&chain, &o.key, format!("sha256 {sha}, the manifest has {}", o.sha256)));
        }
        stored_bytes += size;
    }
    let sha = hex::encode(all.finalize());
    if sha != m.sha256 {
        return Err(Error::integrity(&chain, "all objects", format!("sha256 {sha}, the manifest has {}", m.sha256)));
    }
    whole.store(true, Ordering::Release);
    drop(to_feeder);
    let fed = feeder.await.map_err(|e| Error::step("restore", format!("feeder thread: {e}")))?;
    match fed {
        Ok(plain_bytes) => Ok(ReadBack { stored_bytes, plain_bytes }),
        Err(FeedError::Key(e)) => {
            Err(Error::config(cx.config.file.display(), format!("[store] age_identity_file: decrypting {chain}: {e}")))
        }
        Err(FeedError::Other(e)) => Err(Error::step("restore", e)),
    }
}

/// The stored bytes as a feeder thread reads them: the chunks the download loop sends, hashed
/// already. The channel closing is the end of the stream only once every object was read and
/// matched its sha256 (`whole`); before that (an integrity failure, a dropped run) it is an error,
/// so a short stream is never finished as if it were whole. Shared with sync's restore.
pub(crate) struct Received {
    rx: mpsc::Receiver<Bytes>,
    chunk: Bytes,
    whole: Arc<AtomicBool>,
    /// What is read, for the error: `dump`, `backup`.
    what: &'static str,
}

impl Received {
    pub(crate) fn new(rx: mpsc::Receiver<Bytes>, whole: Arc<AtomicBool>, what: &'static str) -> Received {
        Received { rx, chunk: Bytes::new(), whole, what }
    }
}

impl std::io::BufRead for Received {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(c) => self.chunk = c,
                None if self.whole.load(Ordering::Acquire) => break,
                None => return Err(std::io::Error::other(format!("the stored {} was not read whole", self.what))),
            }
        }
        Ok(&self.chunk)
    }

    fn consume(&mut self, n: usize) {
        self.chunk.advance(n);
    }
}

impl Read for Received {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead;
        let have = self.fill_buf()?;
        let n = have.len().min(buf.len());
        buf[..n].copy_from_slice(&have[..n]);
        self.consume(n);
        Ok(n)
    }
}

pub(crate) enum FeedError {
    /// The identities open none of the header's stanzas: the key is wrong, not the data.
    Key(String),
    Other(String),
}

/// On a blocking thread: stored bytes -> (age) -> zstd -> the sink. Returns the plain bytes
/// written, or the first error (dropping the receiver, so the download loop only hashes on).
fn feed(
    source: Received,
    identities: Option<Vec<age::x25519::Identity>>,
    mut sink: impl tokio::io::AsyncWrite + Unpin,
    handle: tokio::runtime::Handle,
) -> std::result::Result<u64, FeedError> {
    let compressed: Box<dyn std::io::BufRead + Send> = match identities {
        None => Box::new(source),
        Some(ids) => match age::Decryptor::new_buffered(source)
            .and_then(|d| d.decrypt(ids.iter().map(|i| i as &dyn age::Identity)))
        {
            Ok(plain) => Box::new(std::io::BufReader::with_capacity(CHUNK, plain)),
            Err(age::DecryptError::NoMatchingKeys) => {
                return Err(FeedError::Key("no identity in the file opens it".into()));
            }
            Err(e) => return Err(FeedError::Other(format!("decrypting the stored backup (age): {e}"))),
        },
    };
    let mut decoder = zstd::stream::read::Decoder::with_buffer(compressed)
        .map_err(|e| FeedError::Other(format!("decompressing the stored backup: {e}")))?;
    let mut buf = vec![0u8; CHUNK];
    let mut plain = 0u64;
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err(FeedError::Other(format!("reading the stored backup back: {e}"))),
        };
        plain += n as u64;
        handle
            .block_on(sink.write_all(&buf[..n]))
            .map_err(|e| FeedError::Other(format!("the restoring process stopped reading: {e}")))?;
    }
    handle
        .block_on(sink.shutdown())
        .map_err(|e| FeedError::Other(format!("closing the restoring process's input: {e}")))?;
    Ok(plain)
}
