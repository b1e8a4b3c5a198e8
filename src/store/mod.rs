//! Where backups, the journal and locks live: one trait over keys, two backends.
//!
//! Keys are `/`-separated relative paths (`journal/00000000000000000007.json`). Small commit objects
//! (journal entries, locks, manifests) use the conditional primitives `put_if_absent` / `put_if_match`;
//! large data objects are streamed with `upload` under unique per-run keys and never buffered whole.

pub mod local;
pub mod s3;

use std::collections::BTreeMap;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// One object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// A small object read together with its version tag, for compare-and-swap.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub data: Bytes,
    /// S3: the ETag; local: the hex sha256 of the content.
    pub etag: String,
}

/// A few short name/value pairs stored with an object and written in the same atomic step:
/// S3 user metadata (`x-amz-meta-NAME`; S3 lowercases names), the local store's extended
/// attributes (`user.drctl.NAME` on the file). wal-push keeps each WAL file's sha256 there.
/// Names are lowercase ASCII letters, digits and `-`; values are ASCII.
pub type Metadata = BTreeMap<String, String>;

/// `[store] sse`: the server-side encryption drctl asks S3 for on every object it writes
/// (PutObject, CreateMultipartUpload; a CopyObject, should one be added, must carry it too).
/// Asking per request, instead of trusting the bucket's default, keeps the data encrypted in a
/// bucket whose default is changed or was never set. Validated at config load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// SSE-S3: `x-amz-server-side-encryption: AES256`.
    Aes256,
    /// SSE-KMS with `key_id` (id, ARN or alias), or the account's `aws/s3` key when `None`.
    Kms { key_id: Option<String> },
}

impl Sse {
    /// The values `[store] sse` accepts, as written in drctl.toml (and sent to S3).
    pub const VALUES: [&'static str; 2] = ["AES256", "aws:kms"];

    /// The config value: `AES256` or `aws:kms`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Sse::Aes256 => "AES256",
            Sse::Kms { .. } => "aws:kms",
        }
    }

    /// `AES256`, `aws:kms` or `aws:kms (key K)`, for reports.
    pub fn describe(&self) -> String {
        match self {
            Sse::Kms { key_id: Some(k) } => format!("aws:kms (key {k})"),
            other => other.as_str().to_string(),
        }
    }
}

/// What the store's own settings say about who can read it: one row of `check` (target `store`),
/// from `Store::audit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// A stable check id: `store-private`, `bucket-encryption`, `bucket-versioning`.
    pub check: &'static str,
    pub ok: bool,
    /// What was found and, when it fails, what to do about it.
    pub detail: String,
}

impl Finding {
    pub fn pass(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding { check, ok: true, detail: detail.into() }
    }
    pub fn fail(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding { check, ok: false, detail: detail.into() }
    }
}

/// The byte stream handed to `upload`: chunks in order, then the channel closes. An `Err` chunk
/// aborts the upload (the multipart upload is aborted, the temp file removed) and is returned.
pub type ByteRx = mpsc::Receiver<std::io::Result<Bytes>>;

#[async_trait]
pub trait Store: Send + Sync {
    /// The store's URL as the operator wrote it (never carries secrets).
    fn url(&self) -> &str;

    /// Read a small object whole. `Ok(None)` only when the store says it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Versioned>>;

    /// Write a small object whole, replacing any previous one.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;

    /// Create `key` only if it does not exist. `Ok(false)`: it existed, nothing was written.
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool>;

    /// Replace `key` only if its current version is `etag`. `Ok(false)`: it changed, nothing written.
    async fn put_if_match(&self, key: &str, data: Bytes, etag: &str) -> Result<bool>;

    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// The objects under `prefix` whose keys sort after `after`, in key order: how the journal
    /// finds the entries after a checkpoint without listing the whole prefix.
    async fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectInfo>> {
        let mut all = self.list(prefix).await?;
        all.retain(|o| o.key.as_str() > after);
        Ok(all)
    }

    /// `put_if_absent`, with `meta` stored on the object in the same atomic step (the object never
    /// exists without it). A backend that keeps no metadata refuses (the default).
    async fn put_if_absent_with(&self, key: &str, _data: Bytes, _meta: &Metadata) -> Result<bool> {
        Err(no_metadata(self.url(), "put_if_absent_with", key))
    }

    /// `get`, with the object's metadata (empty when it has none). `Ok(None)` only when the store
    /// says it does not exist.
    async fn get_with(&self, key: &str) -> Result<Option<(Versioned, Metadata)>> {
        Err(no_metadata(self.url(), "get_with", key))
    }

    /// `head`, with the object's metadata (empty when it has none).
    async fn head_with(&self, key: &str) -> Result<Option<(ObjectInfo, Metadata)>> {
        Err(no_metadata(self.url(), "head_with", key))
    }

    /// Remove `key`; removing a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Size of `key`, or `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>>;

    /// Stream `rx` into `key` (S3: multipart; local: temp file + fsync + rename). Returns the bytes
    /// written. Memory stays bounded by the part size whatever the object's size.
    async fn upload(&self, key: &str, rx: ByteRx) -> Result<u64>;

    /// Stream `key` out in chunks. `Ok(None)` when it does not exist.
    async fn download(&self, key: &str) -> Result<Option<ByteRx>>;

    /// Abort unfinished multipart uploads and remove leftover temp files under `prefix`.
    /// Returns how many were removed.
    async fn remove_unfinished(&self, prefix: &str) -> Result<usize>;

    /// The store's own clock (S3: the `Date` of a response; local: this host's clock), so lock
    /// expiry is judged by one clock for every host.
    async fn now(&self) -> Result<SystemTime>;

    /// Backups hold every row of production, so `check` asks the store who else could read them.
    /// Local: `store-private` (the modes of the root and of everything under it). S3:
    /// `store-private` (the bucket's public-access block), `bucket-encryption`,
    /// `bucket-versioning`. Read-only; problems reading a setting are failed findings, not errors.
    /// A store with nothing to say (a test double) says nothing.
    async fn audit(&self) -> Vec<Finding> {
        Vec::new()
    }
}

fn no_metadata(url: &str, op: &str, key: &str) -> Error {
    Error::Store {
        url: url.to_string(),
        problem: format!("{op} {key}: this store keeps no object metadata"),
        transience: crate::error::Transience::Permanent,
    }
}

/// Store requests this process made, by kind, for `-v` and `drctl_store_requests` (a run's cost in
/// requests is what the journal's index keeps flat; tests compare it at two journal lengths).
/// Process-wide because one process is one run.
pub mod requests {
    use std::sync::atomic::{AtomicU64, Ordering};

    pub const KINDS: [&str; 8] = ["get", "put", "list", "delete", "head", "upload", "download", "other"];
    static COUNTS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

    pub(super) fn count(kind: usize) {
        COUNTS[kind].fetch_add(1, Ordering::Relaxed);
    }

    /// (kind, count) for every kind with at least one request.
    pub fn snapshot() -> Vec<(&'static str, u64)> {
        KINDS.iter().zip(&COUNTS).map(|(k, c)| (*k, c.load(Ordering::Relaxed))).filter(|(_, n)| *n > 0).collect()
    }

    pub fn total() -> u64 {
        COUNTS.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// `12 (get 7, put 3, list 2)`.
    pub fn summary() -> String {
        let parts: Vec<String> = snapshot().iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!("{} ({})", total(), parts.join(", "))
    }
}

/// Every call into a backend, counted (`requests`).
struct Counted(Box<dyn Store>);

#[async_trait]
impl Store for Counted {
    fn url(&self) -> &str {
        self.0.url()
    }
    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        requests::count(0);
        self.0.get(key).await
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        requests::count(1);
        self.0.put(key, data).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        requests::count(1);
        self.0.put_if_absent(key, data).await
    }
    async fn put_if_match(&self, key: &str, data: Bytes, etag: &str) -> Result<bool> {
        requests::count(1);
        self.0.put_if_match(key, data, etag).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        requests::count(2);
        self.0.list(prefix).await
    }
    async fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectInfo>> {
        requests::count(2);
        self.0.list_after(prefix, after).await
    }
    async fn put_if_absent_with(&self, key: &str, data: Bytes, meta: &Metadata) -> Result<bool> {
        requests::count(1);
        self.0.put_if_absent_with(key, data, meta).await
    }
    async fn get_with(&self, key: &str) -> Result<Option<(Versioned, Metadata)>> {
        requests::count(0);
        self.0.get_with(key).await
    }
    async fn head_with(&self, key: &str) -> Result<Option<(ObjectInfo, Metadata)>> {
        requests::count(4);
        self.0.head_with(key).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        requests::count(3);
        self.0.delete(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        requests::count(4);
        self.0.head(key).await
    }
    async fn upload(&self, key: &str, rx: ByteRx) -> Result<u64> {
        requests::count(5);
        self.0.upload(key, rx).await
    }
    async fn download(&self, key: &str) -> Result<Option<ByteRx>> {
        requests::count(6);
        self.0.download(key).await
    }
    async fn remove_unfinished(&self, prefix: &str) -> Result<usize> {
        requests::count(7);
        self.0.remove_unfinished(prefix).await
    }
    async fn now(&self) -> Result<SystemTime> {
        requests::count(7);
        self.0.now().await
    }
    async fn audit(&self) -> Vec<Finding> {
        requests::count(7);
        self.0.audit().await
    }
}

/// Open the store a `[store] url` names: `s3://bucket/prefix` or `file:///path`. Config loading has
/// already made a relative `file://./rel` absolute against drctl.toml's directory; a relative path
/// reaching here (a test, `verify-chain --artifacts`) is taken relative to the working directory.
/// Written with no server-side encryption of drctl's own (the bucket's default applies): for
/// stores drctl only reads, like `verify-chain --artifacts`.
pub async fn open(url: &str, aws: &crate::clients::aws::Aws) -> Result<Box<dyn Store>> {
    open_with(url, aws, None).await
}

/// `open`, with `[store] sse` applied to every object written to an S3 store (config loading
/// refuses `sse` for a file store, whose objects are private files instead).
pub async fn open_with(url: &str, aws: &crate::clients::aws::Aws, sse: Option<Sse>) -> Result<Box<dyn Store>> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let s3 = s3::S3Store::new(url, aws.s3().await, bucket, prefix).with_sse(sse);
        Ok(Box::new(Counted(Box::new(s3))))
    } else if let Some(path) = url.strip_prefix("file://") {
        Ok(Box::new(Counted(Box::new(local::LocalStore::new(url, path)))))
    } else {
        Err(Error::config("[store] url", format!("`{url}` is neither s3://BUCKET/PREFIX nor file://PATH")))
    }
}

/// Behaviour both backends must show, run by each backend's own tests.
#[cfg(test)]
pub(crate) mod conformance {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::Store;

    /// `writers` tasks race `put_if_absent` on one key: exactly one wins, and its bytes are stored.
    pub async fn put_if_absent_has_one_winner(s: Arc<dyn Store>, writers: usize) {
        let mut tasks = Vec::new();
        for i in 0..writers {
            let s = Arc::clone(&s);
            tasks.push(tokio::spawn(async move {
                (i, s.put_if_absent("journal/7", Bytes::from(format!("writer {i}"))).await.unwrap())
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (i, won) = t.await.unwrap();
            if won {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "winners: {winners:?}");
        let stored = s.get("journal/7").await.unwrap().unwrap();
        assert_eq!(stored.data, Bytes::from(format!("writer {}", winners[0])));
    }
}
