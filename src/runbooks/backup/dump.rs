//! The logical dump pipeline: `pg_dump -Fc -Z0` → zstd (multi-threaded) → sha256 + byte count →
//! the store, streamed end to end with no temp file.
//!
//! Why -Z0 and our own zstd: pg_dump's gzip runs on one core and is the bottleneck (about 2x slower
//! than `-Z0 | zstd -1 -T2`, and larger). The compressor runs on a blocking thread that reads
//! pg_dump's stdout through the runtime handle; compressed chunks go through a bounded channel to
//! the store's streaming upload, so memory stays flat (a few chunk buffers and the upload's parts)
//! whatever the database size. Objects are split every `SPLIT_BYTES` so that no single object
//! exceeds what S3 and the operator's tools comfortably handle: `cat NAME.* | zstd -dc` restores.
//!
//! With `[store] age_recipients`, zstd's output is encrypted with age on the same thread before it
//! reaches the sink: age's `StreamWriter` seals 64 KiB chunks (ChaCha20-Poly1305) as they come, so
//! the pipeline stays streaming with one more bounded buffer. The objects then split one age
//! stream (`cat NAME.age.* | age -d -i KEY | zstd -dc` restores), and their sizes and sha256 are of
//! the encrypted bytes, which is what the store holds and what `verify-chain --deep` re-hashes.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::catalog::ObjectRef;
use crate::error::{Error, Result};
use crate::output::progress::Progress;
use crate::store::Store;

/// At most 64 GiB per stored object (contract): `.000`, `.001`, …
pub const SPLIT_BYTES: u64 = 64 << 30;
const CHUNK: usize = 1 << 20;
/// zstd level 1: at these speeds level 1 compresses ~15% better than pg_dump's gzip at a fraction
/// of its CPU; higher levels would make compression, not the server, the bottleneck again.
const ZSTD_LEVEL: i32 = 1;
const ZSTD_WORKERS: u32 = 2;
const ZSTD_JOB_BYTES: u32 = 1 << 20;

pub struct Stored {
    pub objects: Vec<ObjectRef>,
    /// Compressed bytes, all objects.
    pub bytes: u64,
    /// sha256 over all objects in order.
    pub sha256: String,
    /// Uncompressed bytes read from the dump.
    pub dump_bytes: u64,
    /// The age recipients (public keys) the objects are encrypted to; empty: not encrypted.
    pub age_recipients: Vec<String>,
}

/// The expected size of the uncompressed dump stream, for the progress bar's total and ETA: the
/// heap and TOAST of every table the dump holds (`pg_table_size`; indexes excluded, since pg_dump
/// writes their definitions, not their pages). Tuple headers and free space make it somewhat high,
/// so the bar may end short of full. `None` when there is nothing to go by (no table holds a page).
pub async fn expected_bytes(
    tx: &tokio_postgres::Transaction<'_>,
    tables: &[(String, String)],
) -> std::result::Result<Option<u64>, tokio_postgres::Error> {
    let (schemas, names): (Vec<&str>, Vec<&str>) = tables.iter().map(|(s, t)| (s.as_str(), t.as_str())).unzip();
    let total: i64 = tx
        .query_one(
            "SELECT coalesce(sum(pg_table_size(format('%I.%I', s, t)::regclass)), 0)::bigint \
             FROM unnest($1::text[], $2::text[]) AS x(s, t)",
            &[&schemas, &names],
        )
        .await?
        .get(0);
    Ok(u64::try_from(total).ok().filter(|&n| n > 0))
}

/// Uploads in flight, aborted if the pipeline is dropped (SIGINT, a failed step): an aborted
/// multipart upload is removed by the next run's cleanup, never completed with partial data.
#[derive(Default)]
struct Uploads(Mutex<Vec<(String, JoinHandle<Result<u64>>)>>);

impl Drop for Uploads {
    fn drop(&mut self) {
        if let Ok(v) = self.0.lock() {
            for (_, h) in v.iter() {
                h.abort();
            }
        }
    }
}

/// Stream `source` (a child's stdout) compressed, and encrypted to `recipients` unless there are
/// none, into objects `{base}.000`, `{base}.001`, …
pub async fn compress_to_store<R>(
    source: R,
    store: Arc<dyn Store>,
    base: &str,
    split_bytes: u64,
    recipients: &[age::x25519::Recipient],
    progress: Progress,
) -> Result<Stored>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let recipients = recipients.to_vec();
    let age_recipients: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
    let uploads = Arc::new(Uploads::default());
    let handle = tokio::runtime::Handle::current();
    let sink = Sink {
        base: base.to_string(),
        split_bytes,
        store,
        handle: handle.clone(),
        uploads: uploads.clone(),
        tx: None,
        buf: BytesMut::with_capacity(CHUNK),
        index: 0,
        object_bytes: 0,
        object_hash: Sha256::new(),
        total_hash: Sha256::new(),
        total_bytes: 0,
        objects: Vec::new(),
    };
    let compress = tokio::task::spawn_blocking(move || -> std::io::Result<(Sink, u64)> {
        let mut source = source;
        let sealed = Sealed::new(sink, &recipients)?;
        let mut enc = zstd::stream::write::Encoder::new(sealed, ZSTD_LEVEL)?;
        enc.multithread(ZSTD_WORKERS)?;
        // zstd's default job at level 1 is 2 MiB, and its workers hold several jobs' input and
        // output at once: 1 MiB jobs halve that memory (about 8 MiB) for a stored size within 1%.
        enc.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_BYTES))?;
        let mut buf = vec![0u8; CHUNK];
        let mut raw = 0u64;
        loop {
            let n = handle.block_on(source.read(&mut buf))?;
            if n == 0 {
                break;
            }
            raw += n as u64;
            progress.inc(n as u64);
            enc.write_all(&buf[..n])?;
        }
        let mut sink = enc.finish()?.finish()?;
        sink.finish_object()?;
        Ok((sink, raw))
    });
    let compressed = compress.await.map_err(|e| Error::step("dump", format!("compressor thread: {e}")));
    // Join every upload: an upload's own error explains a compressor "channel closed" error.
    let handles: Vec<(String, JoinHandle<Result<u64>>)> = std::mem::take(&mut *uploads.0.lock().expect("uploads"));
    let mut upload_err = None;
    for (key, h) in handles {
        match h.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => upload_err = upload_err.or(Some(e)),
            Err(e) => upload_err = upload_err.or(Some(Error::step("dump", format!("upload of {key}: {e}")))),
        }
    }
    if let Some(e) = upload_err {
        return Err(e);
    }
    let (sink, raw) = compressed?.map_err(|e| Error::step("dump", format!("compressing the dump: {e}")))?;
    Ok(Stored {
        objects: sink.objects,
        bytes: sink.total_bytes,
        sha256: hex::encode(sink.total_hash.finalize()),
        dump_bytes: raw,
        age_recipients,
    })
}

/// `bench-no-audit` builds only (Cargo.toml): read the stream to its end and store nothing, to
/// measure a sync without its audit copy. The result names no object.
#[cfg(feature = "bench-no-audit")]
pub async fn discard<R>(mut source: R, progress: Progress) -> Result<Stored>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let raw = tokio::io::copy(&mut source, &mut tokio::io::sink())
        .await
        .map_err(|e| Error::step("dump", format!("reading the dump: {e}")))?;
    progress.inc(raw);
    Ok(Stored {
        objects: Vec::new(),
        bytes: 0,
        sha256: hex::encode(Sha256::new().finalize()),
        dump_bytes: raw,
        age_recipients: Vec::new(),
    })
}

/// What the compressor writes to: the sink itself, or an age stream into it. age's writer keeps
/// one 64 KiB plaintext chunk and writes each sealed chunk through at once. wal-push seals its
/// compressed WAL files with it too.
pub(crate) enum Sealed<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Sealed<W> {
    /// Writes the age header (the file key wrapped for each recipient) when there are recipients.
    pub(crate) fn new(w: W, recipients: &[age::x25519::Recipient]) -> std::io::Result<Self> {
        if recipients.is_empty() {
            return Ok(Sealed::Plain(w));
        }
        let enc = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| std::io::Error::other(format!("age: {e}")))?;
        Ok(Sealed::Age(enc.wrap_output(w)?))
    }

    /// The sink, after the last (possibly short) age chunk is sealed and written.
    pub(crate) fn finish(self) -> std::io::Result<W> {
        match self {
            Sealed::Plain(w) => Ok(w),
            Sealed::Age(s) => s.finish(),
        }
    }
}

impl<W: Write> Write for Sealed<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Sealed::Plain(w) => w.write(data),
            Sealed::Age(s) => s.write(data),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Sealed::Plain(w) => w.write_all(data),
            Sealed::Age(s) => s.write_all(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sealed::Plain(w) => w.flush(),
            Sealed::Age(s) => s.flush(),
        }
    }
}

/// The compressor's output: hashes and counts every byte, cuts objects at `split_bytes`, and hands
/// 1 MiB chunks to the current object's upload.
struct Sink {
    base: String,
    split_bytes: u64,
    store: Arc<dyn Store>,
    handle: tokio::runtime::Handle,
    uploads: Arc<Uploads>,
    tx: Option<mpsc::Sender<std::io::Result<Bytes>>>,
    buf: BytesMut,
    index: usize,
    object_bytes: u64,
    object_hash: Sha256,
    total_hash: Sha256,
    total_bytes: u64,
    objects: Vec<ObjectRef>,
}

impl Sink {
    fn key(&self) -> String {
        format!("{}.{:03}", self.base, self.index)
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.tx.is_none() {
            // Bounded: at most 4 chunks wait for the upload, so a slow store slows pg_dump down
            // instead of growing memory.
            let (tx, rx) = mpsc::channel(4);
            let (store, key) = (self.store.clone(), self.key());
            let h = self.handle.spawn(async move { store.upload(&key, rx).await });
            self.uploads.0.lock().expect("uploads").push((self.key(), h));
            self.tx = Some(tx);
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .as_ref()
            .expect("tx")
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    fn finish_object(&mut self) -> std::io::Result<()> {
        self.send()?;
        if self.tx.take().is_some() || self.objects.is_empty() {
            let hash = std::mem::replace(&mut self.object_hash, Sha256::new());
            if self.object_bytes == 0 && self.objects.is_empty() {
                // An empty stream still gets its one (empty) object, so a restore finds `.000`.
                let (tx, rx) = mpsc::channel(1);
                drop(tx);
                let (store, key) = (self.store.clone(), self.key());
                let h = self.handle.spawn(async move { store.upload(&key, rx).await });
                self.uploads.0.lock().expect("uploads").push((self.key(), h));
            }
            self.objects.push(ObjectRef {
                key: self.key(),
                size: self.object_bytes,
                sha256: hex::encode(hash.finalize()),
            });
            self.index += 1;
            self.object_bytes = 0;
        }
        Ok(())
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        // Never cross an object boundary in one write.
        let room = (self.split_bytes - self.object_bytes) as usize;
        let n = data.len().min(room);
        let part = &data[..n];
        self.object_hash.update(part);
        self.total_hash.update(part);
        self.object_bytes += n as u64;
        self.total_bytes += n as u64;
        self.buf.extend_from_slice(part);
        if self.object_bytes == self.split_bytes {
            self.finish_object()?;
        } else if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    async fn roundtrip(len: usize, split: u64) -> (Vec<u8>, Stored, tempfile::TempDir) {
        roundtrip_to(len, split, &[]).await
    }

    async fn roundtrip_to(
        len: usize,
        split: u64,
        recipients: &[age::x25519::Recipient],
    ) -> (Vec<u8>, Stored, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(&format!("file://{root}"), &root));
        // Compressible but not trivially: a counter pattern with some noise.
        let data: Vec<u8> = (0..len).map(|i| ((i / 7) as u8) ^ ((i * 31 % 251) as u8)).collect();
        let stored = compress_to_store(
            std::io::Cursor::new(data.clone()),
            store,
            "b/x.dump.zst",
            split,
            recipients,
            Progress::new(false, "", None, false),
        )
        .await
        .unwrap();
        (data, stored, dir)
    }

    fn read_back(dir: &std::path::Path, s: &Stored) -> Vec<u8> {
        zstd::decode_all(&stored_bytes(dir, s)[..]).unwrap()
    }

    /// The objects concatenated, each checked against its size and sha256.
    fn stored_bytes(dir: &std::path::Path, s: &Stored) -> Vec<u8> {
        let mut all = Vec::new();
        for o in &s.objects {
            let bytes = std::fs::read(dir.join(&o.key)).unwrap();
            assert_eq!(bytes.len() as u64, o.size, "{}", o.key);
            assert_eq!(hex::encode(Sha256::digest(&bytes)), o.sha256);
            all.extend(bytes);
        }
        assert_eq!(all.len() as u64, s.bytes);
        assert_eq!(hex::encode(Sha256::digest(&all)), s.sha256);
        all
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compressed_objects_concatenate_back_to_the_stream() {
        let (data, stored, dir) = roundtrip(5 << 20, SPLIT_BYTES).await;
        assert_eq!(stored.objects.len(), 1);
        assert_eq!(stored.dump_bytes, data.len() as u64);
        assert!(stored.bytes < data.len() as u64);
        assert_eq!(read_back(dir.path(), &stored), data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn objects_split_at_the_limit_and_cat_restores() {
        let (data, stored, dir) = roundtrip(3 << 20, 100_000).await;
        assert!(stored.objects.len() > 2, "{}", stored.objects.len());
        assert!(stored.objects.iter().all(|o| o.size <= 100_000));
        assert!(stored.objects[0].key.ends_with(".000") && stored.objects[1].key.ends_with(".001"));
        assert_eq!(read_back(dir.path(), &stored), data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_recipients_the_split_objects_are_one_age_stream_of_the_zstd_stream() {
        use std::io::Read;
        let (a, b) = (age::x25519::Identity::generate(), age::x25519::Identity::generate());
        let recipients = [a.to_public(), b.to_public()];
        let (data, stored, dir) = roundtrip_to(3 << 20, 100_000, &recipients).await;
        assert!(stored.objects.len() > 2, "{}", stored.objects.len());
        assert_eq!(stored.age_recipients, recipients.iter().map(|r| r.to_string()).collect::<Vec<_>>());
        let all = stored_bytes(dir.path(), &stored);
        assert!(all.starts_with(b"age-encryption.org/v1\n"));
        assert!(zstd::decode_all(&all[..]).is_err(), "the stored bytes are not readable as zstd");
        // Either recipient's identity opens it; the plaintext is the zstd stream of the input.
        for id in [&a, &b] {
            let mut zst = Vec::new();
            age::Decryptor::new_buffered(&all[..])
                .unwrap()
                .decrypt(std::iter::once(id as &dyn age::Identity))
                .unwrap()
                .read_to_end(&mut zst)
                .unwrap();
            assert_eq!(zstd::decode_all(&zst[..]).unwrap(), data);
        }
        let other = age::x25519::Identity::generate();
        let no = age::Decryptor::new_buffered(&all[..]).unwrap().decrypt(std::iter::once(&other as &dyn age::Identity));
        assert!(matches!(no, Err(age::DecryptError::NoMatchingKeys)));
        // Not encrypted: no recipients recorded.
        let (_, plain, _dir) = roundtrip(1000, SPLIT_BYTES).await;
        assert!(plain.age_recipients.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_empty_stream_still_stores_one_object() {
        let (data, stored, dir) = roundtrip(0, SPLIT_BYTES).await;
        assert_eq!(stored.objects.len(), 1);
        assert_eq!(read_back(dir.path(), &stored), data);
    }
}
