//! verify-chain --backups, for base backups: the WAL archive must be continuous from the
//! backup's first segment to the newest archived one on its timeline — a restore replays every
//! segment in order, and one missing segment ends it there. With `--deep` each segment is also
//! re-read: decompressed and re-hashed against the sha256 wal-push recorded (age-encrypted
//! segments are checked by their stored size only: the index holds the original file's sha256,
//! which needs the key to reach).

use std::collections::{BTreeMap, HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::catalog::Manifest;
use crate::ctx::Ctx;
use crate::error::Result;
use crate::output::progress::Progress;
use crate::wal::{self, Archived, SystemId, WalFile};

/// What one verify-chain run has read of the WAL archive: each timeline's indexed segments (read
/// once, whatever the number of base backups on it) and the segments a deep run re-read.
#[derive(Default)]
pub struct Archive {
    segments: HashMap<(String, SystemId, u32), BTreeMap<String, Archived>>,
    rehashed: HashSet<String>,
}

impl Archive {
    /// Reads timeline `tli` of cluster `sysid` of `env` unless it was read already; its key.
    async fn load(&mut self, cx: &Ctx, env: &str, sysid: SystemId, tli: u32) -> Result<(String, SystemId, u32)> {
        let key = (env.to_string(), sysid, tli);
        if !self.segments.contains_key(&key) {
            let files = wal::read_index(&*cx.store, env, sysid, tli).await?;
            let segments = files
                .into_iter()
                .filter(|a| matches!(WalFile::parse(&a.name), Some(WalFile::Segment { .. })))
                .map(|a| (a.name.clone(), a))
                .collect();
            self.segments.insert(key.clone(), segments);
        }
        Ok(key)
    }

    /// `Some(reason)` when the archive cannot restore backup `m` (None for a logical backup).
    pub async fn check(&mut self, cx: &Ctx, m: &Manifest, deep: bool, progress: &Progress) -> Result<Option<String>> {
        let (Some(b), Some(start), Some(end)) = (&m.base, &m.wal_start, &m.wal_end) else { return Ok(None) };
        let (Ok(sysid), Some(mut f)) = (b.system_identifier.parse::<SystemId>(), WalFile::parse(start)) else {
            return Ok(Some(format!("the manifest's system identifier or wal_start ({start}) is unreadable")));
        };
        let key = self.load(cx, &m.env, sysid, b.timeline).await?;
        let (segments, rehashed) = (&self.segments[&key], &mut self.rehashed);
        let newest = match segments.keys().next_back() {
            Some(n) if n.as_str() >= end.as_str() => n.clone(),
            _ => return Ok(Some(format!("WAL segment {end}, the backup's last, is not archived"))),
        };
        loop {
            let name = f.name();
            let Some(a) = segments.get(&name) else {
                return Ok(Some(format!(
                    "the WAL archive has a gap: segment {name} is not archived (a restore of this backup replays \
                     every segment from {start} on and would stop there)"
                )));
            };
            if deep
                && rehashed.insert(name.clone())
                && let Some(why) = rehash(cx, a, progress).await?
            {
                return Ok(Some(why));
            }
            if name >= newest {
                return Ok(None);
            }
            let Some(next) = wal::next_segment(&f, b.wal_segment_size) else { return Ok(None) };
            f = next;
        }
    }
}

/// Re-read one archived segment: its stored size, and (unencrypted) its sha256 after zstd.
async fn rehash(cx: &Ctx, a: &Archived, progress: &Progress) -> Result<Option<String>> {
    let Some(v) = cx.store.get(&a.key).await? else {
        return Ok(Some(format!("WAL segment {} is indexed but its object {} is missing", a.name, a.key)));
    };
    progress.inc(v.data.len() as u64);
    if v.data.len() as u64 != a.stored_bytes {
        return Ok(Some(format!(
            "WAL object {} holds {} bytes, {} were archived",
            a.key,
            v.data.len(),
            a.stored_bytes
        )));
    }
    if a.key.ends_with(".age") {
        return Ok(None);
    }
    let data = v.data;
    let (name, expected, bytes) = (a.name.clone(), a.sha256.clone(), a.bytes);
    let verdict = tokio::task::spawn_blocking(move || match zstd::decode_all(&data[..]) {
        Err(e) => Some(format!("WAL segment {name} is not a readable zstd stream ({e})")),
        Ok(plain) => {
            let got = hex::encode(Sha256::digest(&plain));
            (got != expected || plain.len() as u64 != bytes).then(|| {
                format!(
                    "WAL segment {name} restores to {} bytes with sha256 {got}, it was archived as {bytes} bytes \
                     with sha256 {expected}",
                    plain.len()
                )
            })
        }
    })
    .await
    .unwrap_or_else(|e| Some(format!("re-hashing WAL: {e}")));
    Ok(verdict)
}
