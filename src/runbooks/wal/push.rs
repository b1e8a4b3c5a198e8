//! wal-push PATH: PostgreSQL's archive_command. One file, checked against its name and the
//! env's cluster, compressed (and sealed with age), stored only if absent with its sha256, and
//! listed in its timeline's index. Exit 0 means both are stored: PostgreSQL may then recycle the
//! file.
//!
//! Order, and why a `kill -9` anywhere leaves nothing PostgreSQL's retry cannot finish:
//! 1. read the file's first page: its header must match its name;
//! 2. the cluster: the page header's system identifier (segments) or `global/pg_control`'s
//!    (history and .backup files), which must be the env's recorded one (the first push records
//!    it, create-if-absent);
//! 3. compress (and seal) it, reading it in chunks and hashing them, so only the output is
//!    held whole; then the object, create-if-absent with its sha256 in the same atomic write: it exists whole or
//!    not at all, and is never overwritten;
//! 4. its index line (compare-and-swap). A push killed after 3 left an object the index lacks:
//!    the retry finds the identical object (same sha256: not an error) and adds the line.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{failpoint, open, runtime, wal_error};
use crate::cli::{Global, WalPushArgs};
use crate::error::{Error, Result};
use crate::output::Output;
use crate::runbooks::backup::dump::Sealed;
use crate::store::{Metadata, Store};
use crate::wal::{
    Archived, Listed, SHA256_META, SystemId, WalFile, add_to_index, data_dir_system_id, find_archived, index_key,
    object_key, record_system, recorded_system, segment_header, system_key,
};

/// Level 1: WAL compresses well even there, and archive_command runs once a segment.
const ZSTD_LEVEL: i32 = 1;
/// Read size; below main.rs's 1 MiB mmap threshold, so the buffer comes from malloc's arenas.
const CHUNK: usize = 512 << 10;

const RETRY_HINT: &str = "PostgreSQL keeps the file in pg_wal and runs archive_command again until it exits 0: \
                          fix the cause (each attempt's error is in the server log)";

/// What was stored (or found already stored).
struct Pushed {
    key: String,
    bytes: u64,
    stored_bytes: u64,
    already: bool,
}

pub fn push_main(global: &Global, args: &WalPushArgs, out: &Output) -> u8 {
    let name = args.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match runtime().and_then(|rt| rt.block_on(push(global, args))) {
        Ok(p) => {
            let what = if p.already { "already archived as" } else { "archived as" };
            out.info(&format!("wal-push {name}: {what} {} ({} bytes, {} stored)", p.key, p.bytes, p.stored_bytes));
            0
        }
        Err(e) => {
            let e = wal_error("wal-push", &name, e, RETRY_HINT);
            out.error(&e);
            e.exit_code()
        }
    }
}

async fn push(global: &Global, args: &WalPushArgs) -> Result<Pushed> {
    let shown = args.path.display();
    let f = args.path.file_name().and_then(|n| n.to_str()).and_then(WalFile::parse).ok_or_else(|| {
        Error::usage(format!(
            "`{shown}` is not a file PostgreSQL archives (a segment 000000010000000000000003, \
             TLI.history, SEGMENT.partial or SEGMENT.OFFSET.backup)"
        ))
        .with_hint("pass %p in archive_command: '… wal-push --env ENV %p'")
    })?;
    let name = f.name();
    let (config, env, store) = open(global, args.env.env.as_deref()).await?;
    let (first, len) = first_page(&args.path).map_err(|e| Error::io(&shown, e))?;
    let header = match f.has_page_header() {
        true => Some(segment_header(&f, &first, len).map_err(|why| Error::integrity("wal", &name, why))?),
        false => None,
    };
    let sysid = cluster(&*store, &env, &name, header.map(|h| h.sysid)).await?;

    let recipients = config.age_recipients.clone();
    let encrypted = !recipients.is_empty();
    let path = args.path.clone();
    let (sealed, sha256, bytes) = tokio::task::spawn_blocking(move || compress(&path, &recipients))
        .await
        .map_err(|e| Error::step("wal-push", format!("compressor thread: {e}")))?
        .map_err(|e| Error::io(&shown, e))?;
    let stored_bytes = sealed.len() as u64;
    let key = object_key(&env, sysid, &f, encrypted);
    let meta = Metadata::from([(SHA256_META.to_string(), sha256.clone())]);
    let created = store.put_if_absent_with(&key, Bytes::from(sealed), &meta).await?;
    failpoint("wal-push-stored");
    if !created {
        same_as_stored(&*store, &env, sysid, &f, &key, &sha256).await?;
    }

    let pushed = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let line = Archived { name: name.clone(), key: key.clone(), bytes, sha256: sha256.clone(), stored_bytes, pushed };
    match add_to_index(&*store, &env, sysid, &f, line).await? {
        Listed::Added => Ok(Pushed { key, bytes, stored_bytes, already: !created }),
        Listed::Already(a) => Ok(Pushed { key: a.key, bytes, stored_bytes: a.stored_bytes, already: true }),
        Listed::Conflict(listed) => {
            // Only reachable through the other encryption variant of the key (or an object
            // deleted under a line that stayed): ours is then unlisted and contradicts the
            // index, so it goes; nothing that was there before is touched.
            if created {
                store.delete(&key).await?;
            }
            Err(Error::integrity(
                "wal",
                &name,
                format!(
                    "{} lists it with sha256 {} ({}), but this file's sha256 is {sha256}; nothing was overwritten",
                    index_key(&env, sysid, &f),
                    listed.sha256,
                    listed.key
                ),
            ))
        }
    }
}

/// The cluster `name` belongs to, which must be the one `env` archives (recorded by the first
/// push): the page header's system identifier for a segment, else the working directory's
/// `global/pg_control` (PostgreSQL runs archive_command in the data directory), else the
/// recorded one.
async fn cluster(store: &dyn Store, env: &str, name: &str, from_header: Option<SystemId>) -> Result<SystemId> {
    let (sysid, said_by) = match from_header {
        Some(id) => (id, "its page header"),
        None => match data_dir_system_id(Path::new(".")) {
            Ok(Some(id)) => (id, "global/pg_control in the working directory"),
            Ok(None) => {
                return recorded_system(store, env).await?.ok_or_else(|| {
                    Error::usage(format!(
                        "{name} carries no system identifier (only segments have a page header), the working \
                         directory has no global/pg_control, and env `{env}` has no recorded cluster yet"
                    ))
                    .with_hint("run wal-push from the data directory, as PostgreSQL runs archive_command")
                });
            }
            Err(e) => return Err(Error::io("global/pg_control", e)),
        },
    };
    let recorded = match recorded_system(store, env).await? {
        Some(r) => r,
        None => record_system(store, env, sysid).await?,
    };
    if recorded == sysid {
        return Ok(sysid);
    }
    let cause = Error::integrity(
        "wal",
        name,
        format!(
            "{said_by} says system identifier {sysid}, but env `{env}` archives the cluster with system \
             identifier {recorded} ({}): another cluster's WAL is not mixed into it",
            system_key(env)
        ),
    );
    Err(Error::Wal {
        command: "wal-push",
        name: name.to_string(),
        cause: Box::new(cause),
        hint: Some(format!(
            "if this server is not `{env}`'s, give archive_command its own --env; if `{env}`'s server was \
             replaced on purpose (a new initdb), record the new cluster by removing {} (the old cluster's WAL \
             stays under wal/{env}/{recorded}/). Until then PostgreSQL keeps the WAL in pg_wal and retries",
            system_key(env)
        )),
    })
}

/// `key` existed: success only when it holds this very file (same sha256 of the original
/// bytes), by its metadata or, for an object whose metadata was lost, by its index line.
async fn same_as_stored(
    store: &dyn Store,
    env: &str,
    sysid: SystemId,
    f: &WalFile,
    key: &str,
    sha256: &str,
) -> Result<()> {
    let name = f.name();
    let differs = |theirs: &str| {
        Error::integrity(
            "wal",
            &name,
            format!(
                "{key} is already archived with sha256 {theirs}, but this file's sha256 is {sha256}: a different \
                 file under the same name; nothing was overwritten"
            ),
        )
    };
    let Some((_, meta)) = store.head_with(key).await? else {
        // Deleted between our write and this read (a prune): PostgreSQL's retry stores it again.
        return Err(Error::Store {
            url: store.url().to_string(),
            problem: format!("{key} existed a moment ago and is gone"),
            transience: crate::error::Transience::Temporary,
        });
    };
    let theirs = match meta.get(SHA256_META) {
        Some(s) => s.clone(),
        None => match find_archived(store, env, sysid, f).await? {
            Some(a) if a.key == key => a.sha256,
            _ => {
                return Err(Error::integrity(
                    "wal",
                    &name,
                    format!(
                        "{key} exists without sha256 metadata and is not in the index, so it cannot be compared \
                         with this file; nothing was overwritten"
                    ),
                ));
            }
        },
    };
    if theirs == sha256 { Ok(()) } else { Err(differs(&theirs)) }
}

/// The file's first page (at most 8 KiB: the long page header is its first 40 bytes) and size.
fn first_page(path: &Path) -> std::io::Result<(Vec<u8>, u64)> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut first = Vec::with_capacity(8192);
    f.take(8192).read_to_end(&mut first)?;
    Ok((first, len))
}

/// The file as stored, its sha256 and size: read in 1 MiB chunks, hashed and compressed as they
/// come (so only the output is held whole), zstd with its content size and checksum (`zstd -l`
/// and `zstd -t` work on the object), then sealed with age when there are recipients.
fn compress(path: &Path, recipients: &[age::x25519::Recipient]) -> std::io::Result<(Vec<u8>, String, u64)> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    // Room for incompressible input: capacity that is never written is never resident.
    let room = len as usize + len as usize / 64 + (64 << 10);
    let mut enc = zstd::stream::write::Encoder::new(Sealed::new(Vec::with_capacity(room), recipients)?, ZSTD_LEVEL)?;
    enc.include_checksum(true)?;
    enc.set_pledged_src_size(Some(len))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut read = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hash.update(&buf[..n]);
        enc.write_all(&buf[..n])?;
        read += n as u64;
    }
    if read != len {
        return Err(std::io::Error::other(format!("changed size while being read ({len} bytes, then {read})")));
    }
    Ok((enc.finish()?.finish()?, hex::encode(hash.finalize()), read))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_bytes_are_zstd_or_age_over_zstd_and_read_back() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000000010000000000000001");
        let data: Vec<u8> = (0..1_000_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        std::fs::write(&path, &data).unwrap();
        let (plain, sha, len) = compress(&path, &[]).unwrap();
        assert_eq!((sha, len), (crate::catalog::sha256_hex(&data), data.len() as u64));
        assert!(plain.len() < data.len() / 4);
        assert_eq!(zstd::decode_all(&plain[..]).unwrap(), data);
        let id = age::x25519::Identity::generate();
        let (sealed, _, _) = compress(&path, &[id.to_public()]).unwrap();
        assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
        let mut zst = Vec::new();
        age::Decryptor::new_buffered(&sealed[..])
            .unwrap()
            .decrypt(std::iter::once(&id as &dyn age::Identity))
            .unwrap()
            .read_to_end(&mut zst)
            .unwrap();
        assert_eq!(zstd::decode_all(&zst[..]).unwrap(), data);
        assert_eq!(first_page(&path).unwrap(), (data[..8192].to_vec(), data.len() as u64));
    }
}
