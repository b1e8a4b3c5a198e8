//! The journal: an append-only, hash-chained sequence of entries in the store at
//! `journal/<seq as 20 zero-padded digits>.json` (contract "Journal").
//!
//! This module owns the entry format, its canonical bytes (RFC 8785, written here over
//! `serde_json::Value` so that neither serde_json's key order nor its number formatting can change a
//! hash), the sha256 chain, the conditional append that keeps two writers off the same seq, and the
//! verification walk that names the first break for an operator.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::Store;

pub mod fold;
pub mod index;

pub use index::Journal;

pub const GENESIS_PREV_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub(crate) const PREFIX: &str = "journal/";

/// Integers beyond ±(2^53 − 1) are not exact in an IEEE double, which is what RFC 8785 serialises,
/// so another implementation would hash them differently.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds and `Z`.
    pub time: String,
    pub run_id: String,
    pub runbook: String,
    pub env: Option<String>,
    pub event: String,
    /// This run's fence for each lock target it holds (`env:prod` → 4).
    pub fences: BTreeMap<String, u64>,
    pub details: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// What a writer supplies; seq, time, prev_hash and hash are filled in by `append`.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub run_id: String,
    pub runbook: String,
    pub env: Option<String>,
    pub event: String,
    pub fences: BTreeMap<String, u64>,
    pub details: Value,
}

/// One stored entry as read back: its key, and the parsed entry or why it could not be parsed.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: String,
    pub entry: std::result::Result<Entry, String>,
}

/// The first break found by `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// 0-based position in key order.
    pub index: usize,
    /// The entry's key (`journal/000…07.json`).
    pub key: String,
    pub reason: String,
}

pub fn entry_key(seq: u64) -> String {
    format!("journal/{seq:020}.json")
}

/// The seq a well-formed entry key names, or None for anything else under `journal/`.
pub(crate) fn key_seq(key: &str) -> Option<u64> {
    let digits = key.strip_prefix(PREFIX)?.strip_suffix(".json")?;
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) { digits.parse().ok() } else { None }
}

/// RFC 8785 canonical bytes of `entry` without its `hash` field.
pub fn canonical_bytes(entry: &Entry) -> Vec<u8> {
    let fences = entry.fences.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect();
    let fields: [(&str, Value); 9] = [
        ("seq", Value::from(entry.seq)),
        ("time", Value::from(entry.time.as_str())),
        ("run_id", Value::from(entry.run_id.as_str())),
        ("runbook", Value::from(entry.runbook.as_str())),
        ("env", entry.env.as_deref().map_or(Value::Null, Value::from)),
        ("event", Value::from(entry.event.as_str())),
        ("fences", Value::Object(fences)),
        ("details", entry.details.clone()),
        ("prev_hash", Value::from(entry.prev_hash.as_str())),
    ];
    let object = Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
    let mut out = Vec::with_capacity(256);
    write_canonical(&object, &mut out);
    out
}

/// Lowercase hex sha256 of the canonical bytes.
pub fn compute_hash(entry: &Entry) -> String {
    hex::encode(Sha256::digest(canonical_bytes(entry)))
}

pub(crate) fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        // Integers print as plain decimal, which is what ECMAScript's Number::toString gives for
        // every safe integer. `append` refuses anything else in details, so a float only reaches
        // here from an entry edited by hand, whose hash cannot match anyway.
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // RFC 8785 §3.2.3 sorts by UTF-16 code units, which differs from UTF-8 byte order once a
            // key holds characters outside the BMP.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(&map[key], out);
            }
            out.push(b'}');
        }
    }
}

/// ECMAScript `JSON.stringify` string escaping, as RFC 8785 §3.2.2.2 requires.
fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Refuse what the contract keeps out of details: non-integer numbers, and integers an IEEE double
/// cannot hold exactly. `path` names the offending key for the error.
pub(crate) fn check_details(value: &Value, path: &str) -> std::result::Result<(), String> {
    match value {
        Value::Number(n) => {
            let safe = match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u <= MAX_SAFE_INTEGER,
                (None, Some(i)) => i.unsigned_abs() <= MAX_SAFE_INTEGER,
                (None, None) => {
                    return Err(format!(
                        "{path} is {n}: journal details hold no floating-point numbers \
                         (write durations in ms and sizes in bytes)"
                    ));
                }
            };
            if safe {
                Ok(())
            } else {
                Err(format!("{path} is {n}: integers in journal details must lie within ±(2^53 − 1)"))
            }
        }
        Value::Array(items) => {
            items.iter().enumerate().try_for_each(|(i, v)| check_details(v, &format!("{path}[{i}]")))
        }
        Value::Object(map) => map.iter().try_for_each(|(k, v)| check_details(v, &format!("{path}.{k}"))),
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

pub(crate) fn parse_entry(data: &[u8]) -> std::result::Result<Entry, String> {
    serde_json::from_slice(data).map_err(|e| format!("not a journal entry: {e}"))
}

/// Fencing, where it can be enforced: a run whose lock was taken over carries a fence lower than the
/// lock object's (fences only grow, the object is never deleted) or than one already journaled.
async fn check_fences(store: &dyn Store, seen: &BTreeMap<String, u64>, new: &NewEntry) -> Result<()> {
    for (target, &fence) in &new.fences {
        if let Some(seen) = seen.get(target).filter(|&&seen| seen > fence) {
            return Err(Error::LockLost {
                target: target.clone(),
                why: format!("the journal already holds fence {seen}; this run's fence {fence} is stale"),
            });
        }
        let Some(obj) = store.get(&crate::engine::lock::lock_key(target)).await? else {
            continue;
        };
        let current = serde_json::from_slice::<Value>(&obj.data).ok();
        let current = current.as_ref().and_then(|v| Some((v.get("fence")?.as_u64()?, v.get("run_id")?.as_str()?)));
        if let Some((seen, run_id)) = current.filter(|(seen, _)| *seen > fence) {
            return Err(Error::LockLost {
                target: target.clone(),
                why: format!("run {run_id} now holds fence {seen}; this run's fence {fence} is stale"),
            });
        }
    }
    Ok(())
}

/// A short random pause so that writers which collided do not collide again in lockstep.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = 2 * u64::from(attempt.min(10) + 1);
    let jitter = getrandom::u64().unwrap_or(u64::from(attempt));
    Duration::from_millis(jitter % ceiling_ms)
}

/// Every entry in seq order (key order).
pub async fn read_all(store: &dyn Store) -> Result<Vec<Stored>> {
    let listed = store.list(PREFIX).await?;
    let mut out = Vec::with_capacity(listed.len());
    for obj in listed {
        let entry = match store.get(&obj.key).await? {
            Some(v) => parse_entry(&v.data),
            None => Err("listed but gone when read".to_owned()),
        };
        out.push(Stored { key: obj.key, entry });
    }
    Ok(out)
}

/// The entries that parsed, in order.
pub fn entries(stored: &[Stored]) -> impl Iterator<Item = &Entry> {
    stored.iter().filter_map(|s| s.entry.as_ref().ok())
}

/// Check seq continuity, prev_hash links and every hash; the first break, if any.
pub fn verify(entries: &[Stored]) -> std::result::Result<usize, Break> {
    let mut v = Verifier::default();
    entries.iter().try_for_each(|s| v.push(s))?;
    Ok(entries.len())
}

/// The chain checks of `verify`, one entry at a time, so a walk over the store needs no more
/// memory than the previous entry.
#[derive(Default)]
pub struct Verifier {
    prev: Option<Entry>,
    index: usize,
}

impl Verifier {
    /// Continue after `prev`, an entry already verified (a verified checkpoint's).
    pub fn after(prev: Entry) -> Verifier {
        Verifier { index: prev.seq as usize + 1, prev: Some(prev) }
    }

    pub fn push(&mut self, stored: &Stored) -> std::result::Result<(), Break> {
        let index = self.index;
        let prev = self.prev.as_ref();
        let broken = |reason: String| Break { index, key: stored.key.clone(), reason };
        let entry = match &stored.entry {
            Ok(e) => e,
            Err(why) => return Err(broken(format!("unparseable entry: {why}"))),
        };
        if entry_key(entry.seq) != stored.key {
            return Err(broken(format!("key does not match seq: the entry holds seq {}", entry.seq)));
        }
        let expected_seq = prev.map_or(0, |p| p.seq + 1);
        if entry.seq != expected_seq {
            let missing = if entry.seq == expected_seq + 1 {
                format!("entry {expected_seq} is missing")
            } else {
                format!("entries {expected_seq} to {} are missing", entry.seq - 1)
            };
            let reason = match prev {
                Some(p) => format!("seq {} follows seq {}: {missing}", entry.seq, p.seq),
                None => format!("the journal starts at seq {}: {missing}", entry.seq),
            };
            return Err(broken(reason));
        }
        match prev {
            None if entry.prev_hash != GENESIS_PREV_HASH => {
                return Err(broken(format!(
                    "the first entry's prev_hash is {}, not 64 zeros: entries before it were removed \
                     or it was edited",
                    entry.prev_hash
                )));
            }
            Some(p) if entry.prev_hash != p.hash => {
                return Err(broken(format!(
                    "prev_hash {} does not equal the previous entry's hash {}: the previous entry was \
                     replaced or this one was edited",
                    entry.prev_hash, p.hash
                )));
            }
            _ => {}
        }
        if compute_hash(entry) != entry.hash {
            return Err(broken(
                "hash does not match the entry's content: it was edited after it was written".to_owned(),
            ));
        }
        self.prev = Some(entry.clone());
        self.index += 1;
        Ok(())
    }
}

/// An in-memory `Store` for unit tests of the journal and the lock.
#[cfg(test)]
pub(crate) mod test_store {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime};

    use async_trait::async_trait;
    use bytes::Bytes;
    use sha2::{Digest, Sha256};
    use tokio::sync::mpsc;

    use crate::error::Result;
    use crate::store::{ByteRx, ObjectInfo, Store, Versioned};

    #[derive(Default)]
    pub(crate) struct MemStore {
        objects: Mutex<BTreeMap<String, (Bytes, String)>>,
        clock_offset: Mutex<Duration>,
        refused_creates: AtomicUsize,
        requests: AtomicUsize,
        lists: AtomicUsize,
    }

    impl MemStore {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        /// Move the store's clock ahead of this host's, as a lock test's way to let time pass.
        pub(crate) fn set_clock_offset(&self, offset: Duration) {
            *self.clock_offset.lock().unwrap() = offset;
        }

        /// How many `put_if_absent` calls found the key taken: proof a race test raced.
        pub(crate) fn refused_creates(&self) -> usize {
            self.refused_creates.load(Ordering::Relaxed)
        }

        /// Every call so far but `now`: what a run's reads of the journal cost.
        pub(crate) fn requests(&self) -> usize {
            self.requests.load(Ordering::Relaxed)
        }

        /// Listings so far (the default `list_after` is a listing too).
        pub(crate) fn lists(&self) -> usize {
            self.lists.load(Ordering::Relaxed)
        }

        fn count(&self) {
            self.requests.fetch_add(1, Ordering::Relaxed);
        }

        fn etag(data: &[u8]) -> String {
            hex::encode(Sha256::digest(data))
        }

        fn insert(&self, key: &str, data: Bytes) {
            let etag = Self::etag(&data);
            self.objects.lock().unwrap().insert(key.to_owned(), (data, etag));
        }
    }

    // Every method yields first so that concurrent tasks interleave between a read and the
    // conditional write that follows it, as they would over a network.
    #[async_trait]
    impl Store for MemStore {
        fn url(&self) -> &str {
            "mem://test"
        }

        async fn get(&self, key: &str) -> Result<Option<Versioned>> {
            self.count();
            tokio::task::yield_now().await;
            let objects = self.objects.lock().unwrap();
            Ok(objects.get(key).map(|(data, etag)| Versioned { data: data.clone(), etag: etag.clone() }))
        }

        async fn put(&self, key: &str, data: Bytes) -> Result<()> {
            self.count();
            tokio::task::yield_now().await;
            self.insert(key, data);
            Ok(())
        }

        async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
            self.count();
            tokio::task::yield_now().await;
            let mut objects = self.objects.lock().unwrap();
            if objects.contains_key(key) {
                self.refused_creates.fetch_add(1, Ordering::Relaxed);
                return Ok(false);
            }
            let etag = Self::etag(&data);
            objects.insert(key.to_owned(), (data, etag));
            Ok(true)
        }

        async fn put_if_match(&self, key: &str, data: Bytes, etag: &str) -> Result<bool> {
            self.count();
            tokio::task::yield_now().await;
            let mut objects = self.objects.lock().unwrap();
            match objects.get(key) {
                Some((_, current)) if current == etag => {
                    let etag = Self::etag(&data);
                    objects.insert(key.to_owned(), (data, etag));
                    Ok(true)
                }
                _ => Ok(false),
            }
        }

        async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
            self.count();
            self.lists.fetch_add(1, Ordering::Relaxed);
            tokio::task::yield_now().await;
            let objects = self.objects.lock().unwrap();
            Ok(objects
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, (data, _))| ObjectInfo { key: k.clone(), size: data.len() as u64 })
                .collect())
        }

        async fn delete(&self, key: &str) -> Result<()> {
            self.count();
            tokio::task::yield_now().await;
            self.objects.lock().unwrap().remove(key);
            Ok(())
        }

        async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
            self.count();
            tokio::task::yield_now().await;
            let objects = self.objects.lock().unwrap();
            Ok(objects.get(key).map(|(data, _)| ObjectInfo { key: key.to_owned(), size: data.len() as u64 }))
        }

        async fn upload(&self, key: &str, mut rx: ByteRx) -> Result<u64> {
            let mut buf = Vec::new();
            while let Some(chunk) = rx.recv().await {
                let chunk = chunk.map_err(|e| crate::error::Error::io(key, e))?;
                buf.extend_from_slice(&chunk);
            }
            let len = buf.len() as u64;
            self.insert(key, Bytes::from(buf));
            Ok(len)
        }

        async fn download(&self, key: &str) -> Result<Option<ByteRx>> {
            let Some(obj) = self.get(key).await? else {
                return Ok(None);
            };
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                for chunk in obj.data.chunks(64 * 1024) {
                    if tx.send(Ok(Bytes::copy_from_slice(chunk))).await.is_err() {
                        break;
                    }
                }
            });
            Ok(Some(rx))
        }

        async fn remove_unfinished(&self, _prefix: &str) -> Result<usize> {
            // Every write here is whole and immediate: nothing is ever left unfinished.
            Ok(0)
        }

        async fn now(&self) -> Result<SystemTime> {
            Ok(SystemTime::now() + *self.clock_offset.lock().unwrap())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use bytes::Bytes;
    use serde_json::{Value, json};

    use super::test_store::MemStore;
    use super::{Entry, GENESIS_PREV_HASH, Journal, NewEntry, canonical_bytes, compute_hash, entry_key};
    use super::{read_all, verify};
    use crate::error::{Error, Result};
    use crate::store::Store;

    /// An append as a separate process makes it: a fresh `Journal` that loads the store first.
    async fn append(store: &Arc<MemStore>, new: NewEntry) -> Result<Entry> {
        Journal::new(store.clone(), "test").append(new).await
    }

    fn new_entry(run_id: &str, event: &str, details: Value) -> NewEntry {
        NewEntry {
            run_id: run_id.to_owned(),
            runbook: "backup".to_owned(),
            env: Some("prod".to_owned()),
            event: event.to_owned(),
            fences: BTreeMap::new(),
            details,
        }
    }

    /// Replace the stored entry at `seq` by what `edit` makes of its JSON, keeping its `hash`.
    async fn tamper(store: &MemStore, seq: u64, edit: impl FnOnce(&mut Value)) {
        let key = entry_key(seq);
        let mut v: Value = serde_json::from_slice(&store.get(&key).await.unwrap().unwrap().data).unwrap();
        edit(&mut v);
        store.put(&key, Bytes::from(serde_json::to_vec(&v).unwrap())).await.unwrap();
    }

    #[test]
    fn pinned_canonical_bytes_and_hashes() {
        // Expected values were computed outside this crate with Python:
        // json.dumps(e, sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode() and
        // hashlib.sha256, which agree with RFC 8785 for this data (BMP keys, integers only).
        let e0 = Entry {
            seq: 0,
            time: "2024-05-01T12:00:00.000Z".to_owned(),
            run_id: "r-0001".to_owned(),
            runbook: "backup".to_owned(),
            env: Some("prod".to_owned()),
            event: "run-started".to_owned(),
            fences: BTreeMap::from([("env:prod".to_owned(), 1)]),
            details: json!({
                "zeta": {"b": 2, "a": [1, -3, {"y": null, "x": true}]},
                "args": "backup --env prod",
                "note": "say \"hi\"\nthen leave\tnow",
                "name": "café ☕ 🦀",
                "size_bytes": 9007199254740991_u64,
                "ctl": "\u{1}\u{1f}\u{7f}",
            }),
            prev_hash: GENESIS_PREV_HASH.to_owned(),
            hash: String::new(),
        };
        let mut e1 = Entry {
            seq: 1,
            time: "2024-05-01T12:00:01.250Z".to_owned(),
            run_id: "r-0001".to_owned(),
            runbook: "backup".to_owned(),
            env: None,
            event: "step-done".to_owned(),
            fences: BTreeMap::new(),
            details: json!({"step": "upload-base", "duration_ms": 1250, "back\\slash": "a\\b", "ff": "\u{8}\u{c}\r"}),
            prev_hash: E0_HASH.to_owned(),
            hash: String::new(),
        };
        let e2 = Entry {
            seq: 2,
            time: "2024-05-01T12:00:02.999Z".to_owned(),
            run_id: "r-0002".to_owned(),
            runbook: "dns-cutover".to_owned(),
            env: Some("dr".to_owned()),
            event: "sent".to_owned(),
            fences: BTreeMap::from([("dns".to_owned(), 3), ("env:dr".to_owned(), 12)]),
            details: json!([]),
            prev_hash: E1_HASH.to_owned(),
            hash: String::new(),
        };
        assert_eq!(String::from_utf8(canonical_bytes(&e0)).unwrap(), E0_BYTES);
        assert_eq!(compute_hash(&e0), E0_HASH);
        assert_eq!(String::from_utf8(canonical_bytes(&e1)).unwrap(), E1_BYTES);
        assert_eq!(compute_hash(&e1), E1_HASH);
        assert_eq!(String::from_utf8(canonical_bytes(&e2)).unwrap(), E2_BYTES);
        assert_eq!(compute_hash(&e2), E2_HASH);
        // `hash` itself is not part of what is hashed.
        e1.hash = "anything".to_owned();
        assert_eq!(compute_hash(&e1), E1_HASH);
    }

    const E0_BYTES: &str = "{\"details\":{\"args\":\"backup --env prod\",\"ctl\":\"\\u0001\\u001f\u{7f}\",\"name\":\"café ☕ 🦀\",\"note\":\"say \\\"hi\\\"\\nthen leave\\tnow\",\"size_bytes\":9007199254740991,\"zeta\":{\"a\":[1,-3,{\"x\":true,\"y\":null}],\"b\":2}},\"env\":\"prod\",\"event\":\"run-started\",\"fences\":{\"env:prod\":1},\"prev_hash\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"run_id\":\"r-0001\",\"runbook\":\"backup\",\"seq\":0,\"time\":\"2024-05-01T12:00:00.000Z\"}";
    const E0_HASH: &str = "d44bb821a9d1969db7d93cf842c8fc6c238fcbd0cdd43bb2331a66034a289acd";
    const E1_BYTES: &str = "{\"details\":{\"back\\\\slash\":\"a\\\\b\",\"duration_ms\":1250,\"ff\":\"\\b\\f\\r\",\"step\":\"upload-base\"},\"env\":null,\"event\":\"step-done\",\"fences\":{},\"prev_hash\":\"d44bb821a9d1969db7d93cf842c8fc6c238fcbd0cdd43bb2331a66034a289acd\",\"run_id\":\"r-0001\",\"runbook\":\"backup\",\"seq\":1,\"time\":\"2024-05-01T12:00:01.250Z\"}";
    const E1_HASH: &str = "22244761df4507448cea6bdcb7aa9215cef7c14b02992d0e6deb895106f1d06c";
    const E2_BYTES: &str = "{\"details\":[],\"env\":\"dr\",\"event\":\"sent\",\"fences\":{\"dns\":3,\"env:dr\":12},\"prev_hash\":\"22244761df4507448cea6bdcb7aa9215cef7c14b02992d0e6deb895106f1d06c\",\"run_id\":\"r-0002\",\"runbook\":\"dns-cutover\",\"seq\":2,\"time\":\"2024-05-01T12:00:02.999Z\"}";
    const E2_HASH: &str = "a8fb925677f1249f14ca159eb256dd266d6c5e29495bcee6dbf9eeab272ec1c5";

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // U+FF61 < U+1F600 by code point, but the emoji's UTF-16 lead surrogate 0xD83D sorts first.
        let e = Entry {
            seq: 0,
            time: "t".to_owned(),
            run_id: "r".to_owned(),
            runbook: "b".to_owned(),
            env: None,
            event: "e".to_owned(),
            fences: BTreeMap::new(),
            details: json!({"\u{ff61}": 1, "\u{1f600}": 2, "a": 3}),
            prev_hash: GENESIS_PREV_HASH.to_owned(),
            hash: String::new(),
        };
        let bytes = String::from_utf8(canonical_bytes(&e)).unwrap();
        assert!(bytes.contains("\"details\":{\"a\":3,\"\u{1f600}\":2,\"\u{ff61}\":1}"), "{bytes}");
    }

    #[tokio::test]
    async fn three_appends_chain_and_verify() {
        let store = Arc::new(MemStore::new());
        let mut written = Vec::new();
        for (i, event) in ["run-started", "step-done", "run-finished"].into_iter().enumerate() {
            let e = append(&store, new_entry("r1", event, json!({"i": i}))).await.unwrap();
            assert_eq!(e.seq, i as u64);
            assert_eq!(e.hash, compute_hash(&e));
            assert!(e.time.ends_with('Z') && e.time.len() == "2024-05-01T12:00:00.000Z".len(), "{}", e.time);
            written.push(e);
        }
        assert_eq!(written[0].prev_hash, GENESIS_PREV_HASH);
        assert_eq!(written[1].prev_hash, written[0].hash);
        assert_eq!(written[2].prev_hash, written[1].hash);
        let stored = read_all(&*store).await.unwrap();
        assert_eq!(stored.iter().map(|s| s.key.clone()).collect::<Vec<_>>(), [0, 1, 2].map(entry_key));
        assert_eq!(super::entries(&stored).cloned().collect::<Vec<_>>(), written);
        assert_eq!(verify(&stored), Ok(3));
        let head = Journal::new(store.clone(), "t").state().await.unwrap().head.clone().unwrap();
        assert_eq!((head.seq, head.hash), (2, written[2].hash.clone()));
    }

    #[tokio::test]
    async fn empty_journal_verifies_and_has_no_head() {
        let store = Arc::new(MemStore::new());
        assert_eq!(verify(&read_all(&*store).await.unwrap()), Ok(0));
        assert_eq!(Journal::new(store.clone(), "t").state().await.unwrap().head, None);
    }

    #[tokio::test]
    async fn a_float_in_details_is_refused_naming_the_key() {
        let store = Arc::new(MemStore::new());
        let err = append(&store, new_entry("r1", "x", json!({"upload": {"rate": 1.5}}))).await.unwrap_err();
        assert!(matches!(&err, Error::Step { .. }), "{err:?}");
        assert!(err.to_string().contains("details.upload.rate is 1.5"), "{err}");
        let err = append(&store, new_entry("r1", "x", json!({"n": [1, 2.0]}))).await.unwrap_err();
        assert!(err.to_string().contains("details.n[1]"), "{err}");
        let err = append(&store, new_entry("r1", "x", json!({"big": 9007199254740992_u64}))).await.unwrap_err();
        assert!(err.to_string().contains("details.big"), "{err}");
        assert!(store.list("journal/").await.unwrap().is_empty(), "nothing may be written");
    }

    #[tokio::test]
    async fn an_edited_entry_breaks_at_its_index_with_the_hash_reason() {
        let store = Arc::new(MemStore::new());
        for i in 0..4 {
            append(&store, new_entry("r1", "step-done", json!({"i": i}))).await.unwrap();
        }
        tamper(&store, 2, |v| v["details"]["i"] = json!(99)).await;
        let b = verify(&read_all(&*store).await.unwrap()).unwrap_err();
        assert_eq!((b.index, b.key.as_str()), (2, entry_key(2).as_str()));
        assert_eq!(b.reason, "hash does not match the entry's content: it was edited after it was written");
        // Appending onto a damaged head is refused too (exit 4), never chained onto.
        tamper(&store, 3, |v| v["event"] = json!("forged")).await;
        let err = append(&store, new_entry("r1", "x", json!({}))).await.unwrap_err();
        assert!(matches!(&err, Error::Integrity { at, .. } if *at == entry_key(3)), "{err:?}");
    }

    #[tokio::test]
    async fn a_rehashed_edit_breaks_the_next_link() {
        let store = Arc::new(MemStore::new());
        for i in 0..3 {
            append(&store, new_entry("r1", "step-done", json!({"i": i}))).await.unwrap();
        }
        tamper(&store, 1, |v| {
            v["details"]["i"] = json!(7);
            let mut e: Entry = serde_json::from_value(v.clone()).unwrap();
            e.hash = compute_hash(&e);
            *v = serde_json::to_value(e).unwrap();
        })
        .await;
        let b = verify(&read_all(&*store).await.unwrap()).unwrap_err();
        assert_eq!(b.index, 2);
        assert!(b.reason.starts_with("prev_hash "), "{}", b.reason);
        assert!(b.reason.contains("does not equal the previous entry's hash"), "{}", b.reason);
    }

    #[tokio::test]
    async fn a_deleted_middle_entry_is_a_gap() {
        let store = Arc::new(MemStore::new());
        for i in 0..6 {
            append(&store, new_entry("r1", "step-done", json!({"i": i}))).await.unwrap();
        }
        store.delete(&entry_key(4)).await.unwrap();
        let b = verify(&read_all(&*store).await.unwrap()).unwrap_err();
        assert_eq!(
            b,
            super::Break { index: 4, key: entry_key(5), reason: "seq 5 follows seq 3: entry 4 is missing".into() }
        );
        store.delete(&entry_key(3)).await.unwrap();
        store.delete(&entry_key(2)).await.unwrap();
        let b = verify(&read_all(&*store).await.unwrap()).unwrap_err();
        assert_eq!(b.reason, "seq 5 follows seq 1: entries 2 to 4 are missing");
        store.delete(&entry_key(0)).await.unwrap();
        let b = verify(&read_all(&*store).await.unwrap()).unwrap_err();
        assert_eq!((b.index, b.reason.as_str()), (0, "the journal starts at seq 1: entry 0 is missing"));
    }

    #[tokio::test]
    async fn garbage_misplaced_and_rebased_entries_are_named() {
        let store = Arc::new(MemStore::new());
        for i in 0..3 {
            append(&store, new_entry("r1", "step-done", json!({"i": i}))).await.unwrap();
        }
        store.put(&entry_key(1), Bytes::from_static(b"{\"seq\": 1, trunc")).await.unwrap();
        let stored = read_all(&*store).await.unwrap();
        assert!(stored[1].entry.is_err(), "a parse error is kept, not fatal");
        let b = verify(&stored).unwrap_err();
        assert_eq!(b.index, 1);
        assert!(b.reason.starts_with("unparseable entry: "), "{}", b.reason);
        let err = append(&store, new_entry("r1", "x", json!({}))).await;
        assert!(err.is_ok(), "the head (seq 2) is intact, so appending is allowed: {err:?}");

        let store = Arc::new(MemStore::new());
        append(&store, new_entry("r1", "a", json!({}))).await.unwrap();
        let data = store.get(&entry_key(0)).await.unwrap().unwrap().data;
        store.put(&entry_key(1), data).await.unwrap();
        let b = verify(&read_all(&*store).await.unwrap()).unwrap_err();
        assert_eq!((b.index, b.reason.as_str()), (1, "key does not match seq: the entry holds seq 0"));

        let store = Arc::new(MemStore::new());
        append(&store, new_entry("r1", "a", json!({}))).await.unwrap();
        tamper(&store, 0, |v| {
            v["prev_hash"] = json!("ab".repeat(32));
            let mut e: Entry = serde_json::from_value(v.clone()).unwrap();
            e.hash = compute_hash(&e);
            *v = serde_json::to_value(e).unwrap();
        })
        .await;
        let b = verify(&read_all(&*store).await.unwrap()).unwrap_err();
        assert_eq!(b.index, 0);
        assert!(b.reason.contains("not 64 zeros"), "{}", b.reason);
    }

    #[tokio::test]
    async fn a_stale_fence_is_refused() {
        let store = Arc::new(MemStore::new());
        let mut fenced = new_entry("r2", "step-done", json!({}));
        fenced.fences.insert("env:prod".to_owned(), 3);
        append(&store, fenced.clone()).await.unwrap();
        let mut stale = new_entry("r1", "step-done", json!({}));
        stale.fences.insert("env:prod".to_owned(), 2);
        let err = append(&store, stale.clone()).await.unwrap_err();
        assert!(matches!(&err, Error::LockLost { target, .. } if target == "env:prod"), "{err:?}");
        assert_eq!(err.exit_code(), 5);

        // The lock object is the authority even when the journal has not seen the new fence yet.
        let store = Arc::new(MemStore::new());
        let lock = json!({"holder": "sync", "host": "h", "boot_id": "b", "pid": 1, "pid_start": 1,
            "run_id": "r9", "since": "s", "expires": "e", "fence": 5, "released": false});
        store.put("locks/env:prod.json", Bytes::from(lock.to_string())).await.unwrap();
        let err = append(&store, stale).await.unwrap_err();
        assert!(err.to_string().contains("run r9 now holds fence 5"), "{err}");
        fenced.fences.insert("env:prod".to_owned(), 5);
        append(&store, fenced).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appenders_never_share_a_seq_or_fork() {
        let store = Arc::new(MemStore::new());
        let mut tasks = Vec::new();
        for w in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    append(&store, new_entry(&format!("w{w}"), "step-done", json!({"i": i}))).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(store.refused_creates() > 0, "the writers never collided: the test proves nothing");
        let stored = read_all(&*store).await.unwrap();
        assert_eq!(verify(&stored), Ok(80));
        // The checkpoint one of them wrote on the way agrees with the chain.
        let w = super::index::walk(&*store, false, None, |_| {}).await.unwrap();
        assert!(w.first_bad.is_none() && w.bad_checkpoint.is_none(), "{:?} {:?}", w.first_bad, w.bad_checkpoint);
        assert!(w.checkpoints_checked >= 1, "no checkpoint was written");
        let seqs: Vec<u64> = super::entries(&stored).map(|e| e.seq).collect();
        assert_eq!(seqs, (0..80).collect::<Vec<_>>());
        for w in 0..8 {
            let mine: Vec<i64> = super::entries(&stored)
                .filter(|e| e.run_id == format!("w{w}"))
                .map(|e| e.details["i"].as_i64().unwrap())
                .collect();
            assert_eq!(mine, (0..10).collect::<Vec<_>>(), "each writer's entries, once each, in order");
        }
    }
}
