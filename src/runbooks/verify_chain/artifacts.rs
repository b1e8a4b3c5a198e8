//! `verify-chain --artifacts URL`: re-read a content-addressed store and hold every object to its key.
//!
//! The application stores each artifact as `PREFIX/ab/abcdef…`: the lowercase hex sha256 of its
//! content, sharded by the first two hex digits. Every object under PREFIX is streamed through
//! sha256 (never held whole: a multi-GB artifact costs one chunk of memory), eight at a time, and
//! is reported when its content does not hash to its name (`sha_mismatch`), it sits in another
//! shard's directory (`wrong_shard`), or it cannot be read (`unreadable`).

use std::time::Instant;

use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::store::{ObjectInfo, Store};

/// Concurrent downloads: enough to hide per-request latency on S3, few enough for a small host.
const PARALLEL: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadArtifact {
    pub key: String,
    pub problem: &'static str,
    pub detail: String,
}

#[derive(Debug)]
pub struct ArtifactsResult {
    pub url: String,
    pub checked: u64,
    pub bytes: u64,
    pub bad: Vec<BadArtifact>,
    pub elapsed_s: f64,
}

impl ArtifactsResult {
    pub fn json(&self) -> Value {
        json!({
            "url": self.url,
            "checked": self.checked,
            "bytes": self.bytes,
            "bad": self.bad.iter().map(|b| json!({"key": b.key, "problem": b.problem, "detail": b.detail})).collect::<Vec<_>>(),
            "elapsed_ms": (self.elapsed_s * 1000.0) as u64,
        })
    }
}

/// `Some(problem)` when `key` (relative to the prefix) is not `ab/<64 hex starting with ab>`.
/// Only names that are a sha256 can be in the wrong shard; any other name is a sha_mismatch.
fn shard_problem(key: &str) -> Option<String> {
    let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
    if !is_sha256_hex(name) {
        return None;
    }
    (dir != &name[..2]).then(|| {
        format!("belongs under {}/, not {}", &name[..2], if dir.is_empty() { "the prefix itself" } else { dir })
    })
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One object's sha256 and size, or why it could not be read.
type Hashed = std::result::Result<(String, u64), String>;

/// The sha256 and size of one object, streamed.
async fn hash_object(store: &dyn Store, key: &str, progress: &crate::output::progress::Progress) -> Hashed {
    let mut rx = match store.download(key).await {
        Ok(Some(rx)) => rx,
        Ok(None) => return Err("listed but gone when read".into()),
        Err(e) => return Err(e.to_string()),
    };
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk.map_err(|e| format!("reading: {e}"))?;
        h.update(&chunk);
        n += chunk.len() as u64;
        progress.inc(chunk.len() as u64);
    }
    Ok((hex::encode(h.finalize()), n))
}

pub async fn verify(cx: &Ctx, url: &str) -> Result<ArtifactsResult> {
    let t0 = Instant::now();
    let store = crate::store::open(url, &cx.aws)
        .await
        .map_err(|_| Error::usage(format!("--artifacts `{url}` is neither s3://BUCKET/PREFIX nor file:///PATH")))?;
    let objects: Vec<ObjectInfo> = store.list("").await?;
    let total: u64 = objects.iter().map(|o| o.size).sum();
    let progress = cx.out.progress("re-reading artifacts", Some(total), true);
    let store_ref: &dyn Store = &*store;
    let results: Vec<(ObjectInfo, Hashed)> = futures_util::stream::iter(objects)
        .map(|o| {
            let progress = progress.clone();
            async move {
                let r = hash_object(store_ref, &o.key, &progress).await;
                (o, r)
            }
        })
        .buffer_unordered(PARALLEL)
        .take_until(cx.cancel.cancelled())
        .collect()
        .await;
    progress.finish();
    if let Some(signal) = cx.interrupted_by() {
        return Err(Error::Interrupted { signal });
    }
    let mut bad = Vec::new();
    let mut bytes = 0u64;
    for (o, r) in &results {
        if let Some(detail) = shard_problem(&o.key) {
            bad.push(BadArtifact { key: o.key.clone(), problem: "wrong_shard", detail });
        }
        match r {
            Err(why) => bad.push(BadArtifact { key: o.key.clone(), problem: "unreadable", detail: why.clone() }),
            Ok((sha, n)) => {
                bytes += n;
                let name = o.key.rsplit('/').next().unwrap_or(&o.key);
                if name != sha {
                    bad.push(BadArtifact {
                        key: o.key.clone(),
                        problem: "sha_mismatch",
                        detail: format!("content ({}) has sha256 {sha}", crate::output::table::count(*n, "byte")),
                    });
                }
            }
        }
    }
    bad.sort_by(|a, b| (&a.key, a.problem).cmp(&(&b.key, b.problem)));
    Ok(ArtifactsResult {
        url: url.to_string(),
        checked: results.len() as u64,
        bytes,
        bad,
        elapsed_s: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_the_first_two_hex_digits() {
        let h = "ab".to_string() + &"0".repeat(62);
        assert_eq!(shard_problem(&format!("ab/{h}")), None);
        assert!(shard_problem(&format!("cd/{h}")).unwrap().contains("belongs under ab/"));
        assert!(shard_problem(&h).is_some());
        assert!(shard_problem(&format!("x/ab/{h}")).is_some());
        assert_eq!(shard_problem("ab/not-a-hash"), None, "not a sha256 name: a sha_mismatch instead");
    }
}
