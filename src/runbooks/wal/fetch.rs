//! wal-fetch NAME DEST: PostgreSQL's restore_command. Its exit status is the whole interface, and
//! PostgreSQL reads it bluntly: 0 is "restored", 1 to 125 "not archived: recovery is over" (the
//! server then promotes), above 125 "stop". So exit 1 is kept for the one case where the store
//! answered that NAME is not there, and everything else (a sha256 mismatch, a store that did not
//! answer, a 403, a config or command-line error, a panic) is 126: a failure must stop recovery,
//! never end it early with the WAL that follows silently left out.
//!
//! Order: the cluster (`global/pg_control` in the working directory, which is the data
//! directory; else the env's recorded one), GET of `NAME.zst[.age]` (the variant the config
//! suggests first), decrypt and decompress streaming into a temp file beside DEST while hashing,
//! compare with the sha256 stored with the object, fsync, rename onto DEST, fsync the directory.
//! A mismatch leaves DEST absent.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{failpoint, open, runtime, wal_error};
use crate::cli::{Global, WalFetchArgs};
use crate::error::{Error, Result};
use crate::output::Output;
use crate::runbooks::backup::encryption::{IDENTITY_ENV, load_identities};
use crate::wal::{SHA256_META, WalFile, data_dir_system_id, find_archived, object_key, recorded_system};

const STOP_HINT: &str = "PostgreSQL stops recovery here instead of ending it early without this file: fix the cause \
                         and start the server again, and recovery resumes with it";

enum Fetched {
    Restored { key: String, bytes: u64 },
    NotArchived,
}

pub fn fetch_main(global: &Global, args: &WalFetchArgs, out: &Output) -> u8 {
    let name = args.name.clone();
    // A panic anywhere below is a bug, and still a failure PostgreSQL must stop on: one error
    // line and 126, not Rust's panic message and 101.
    crate::output::panic_as_error(format!("wal-fetch {name}"), STOP_HINT);
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime().and_then(|rt| rt.block_on(fetch(global, args, out)))
    }));
    match run {
        Ok(Ok(Fetched::Restored { key, bytes })) => {
            out.info(&format!("wal-fetch {name}: restored {bytes} bytes from {key} to {}", args.dest.display()));
            0
        }
        // Quietly: PostgreSQL asks for files that do not exist as a matter of course (the
        // segment after the last, the history file of the next timeline).
        Ok(Ok(Fetched::NotArchived)) => 1,
        Ok(Err(e)) => {
            out.error(&wal_error("wal-fetch", &name, e, STOP_HINT));
            crate::error::exit::WAL_FETCH_FAILED
        }
        Err(_) => crate::error::exit::WAL_FETCH_FAILED,
    }
}

async fn fetch(global: &Global, args: &WalFetchArgs, out: &Output) -> Result<Fetched> {
    failpoint("wal-fetch");
    let f = WalFile::parse(&args.name).ok_or_else(|| {
        Error::usage(format!(
            "`{}` is not a WAL file name (a segment 000000010000000000000003, TLI.history, SEGMENT.partial or \
             SEGMENT.OFFSET.backup)",
            args.name
        ))
        .with_hint("pass %f and %p in restore_command: '… wal-fetch --env ENV %f %p'")
    })?;
    let (config, env, store) = open(global, args.env.env.as_deref()).await?;
    let sysid = match data_dir_system_id(Path::new(".")).map_err(|e| Error::io("global/pg_control", e))? {
        Some(id) => id,
        None => recorded_system(&*store, &env).await?.ok_or_else(|| {
            Error::usage(format!(
                "the working directory has no global/pg_control and env `{env}` has no recorded cluster \
                 (wal/{env}/system.json): nothing says whose WAL to restore"
            ))
            .with_hint("run wal-fetch from the data directory, as PostgreSQL runs restore_command, and check --env")
        })?,
    };
    let age_first = !config.age_recipients.is_empty()
        || config.age_identity_file.is_some()
        || std::env::var_os(IDENTITY_ENV).is_some_and(|v| !v.is_empty());
    for encrypted in [age_first, !age_first] {
        let key = object_key(&env, sysid, &f, encrypted);
        let Some((object, meta)) = store.get_with(&key).await? else {
            continue;
        };
        let expected = match meta.get(SHA256_META) {
            Some(s) => s.clone(),
            // Metadata lost (a file store copied without its extended attributes): the index
            // line holds the same sha256.
            None => expected_from_index(&*store, &env, sysid, &f, &key).await?,
        };
        let identities = match encrypted {
            true => Some(load_identities(&config, &format!("WAL file {}", f.name()), &[], out)?),
            false => None,
        };
        let (data, dest, source) = (object.data, args.dest.clone(), key.clone());
        let bytes = tokio::task::spawn_blocking(move || restore(&source, data, identities, &expected, &dest))
            .await
            .map_err(|e| Error::step("wal-fetch", format!("restore thread: {e}")))??;
        return Ok(Fetched::Restored { key, bytes });
    }
    Ok(Fetched::NotArchived)
}

async fn expected_from_index(
    store: &dyn crate::store::Store,
    env: &str,
    sysid: crate::wal::SystemId,
    f: &WalFile,
    key: &str,
) -> Result<String> {
    match find_archived(store, env, sysid, f).await? {
        Some(a) if a.key == key => Ok(a.sha256),
        _ => Err(Error::integrity(
            "wal",
            f.name(),
            format!("{key} has no sha256 metadata and the WAL index does not list it: it cannot be verified"),
        )),
    }
}

/// The temp file beside `dest` (same directory, so the rename cannot cross a filesystem); one
/// fixed name per DEST, so a killed fetch's leftover is overwritten by the next, not piled up.
fn temp_beside(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "wal".into());
    name.push(".drctl-tmp");
    dest.with_file_name(name)
}

/// Removes the temp file unless it was renamed onto DEST.
struct Temp(Option<PathBuf>);

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Decrypts (with `identities`) and decompresses `data` into DEST through a temp file, hashing
/// what is written; DEST appears only when the sha256 is `expected`. Returns the bytes written.
fn restore(
    key: &str,
    data: Bytes,
    identities: Option<Vec<age::x25519::Identity>>,
    expected: &str,
    dest: &Path,
) -> Result<u64> {
    let damaged = |why: String| Error::integrity("wal", key, why);
    let plain: Box<dyn Read + '_> = match &identities {
        None => Box::new(&data[..]),
        Some(ids) => {
            let d = age::Decryptor::new_buffered(&data[..])
                .map_err(|e| damaged(format!("not a readable age file ({e})")))?;
            let r = d.decrypt(ids.iter().map(|i| i as &dyn age::Identity)).map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => Error::usage(format!(
                    "{key} is encrypted to none of the identities in the age identity file \
                     ([store] age_identity_file or ${IDENTITY_ENV})"
                ))
                .with_hint("point [store] age_identity_file at the secret key of one of [store] age_recipients"),
                other => damaged(format!("cannot be decrypted ({other})")),
            })?;
            Box::new(r)
        }
    };
    let mut zstd = zstd::stream::read::Decoder::new(plain).map_err(|e| damaged(format!("zstd: {e}")))?;
    let tmp_path = temp_beside(dest);
    let shown = tmp_path.display().to_string();
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp_path)
        .map_err(|e| Error::io(&shown, e))?;
    let mut tmp = Temp(Some(tmp_path.clone()));
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut written = 0u64;
    loop {
        let n = match zstd.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(damaged(format!("is not a readable zstd stream ({e})"))),
        };
        hash.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::io(&shown, e))?;
        written += n as u64;
    }
    let got = hex::encode(hash.finalize());
    if got != expected {
        return Err(damaged(format!(
            "restores to {written} bytes with sha256 {got}, but the file was archived with sha256 {expected}: \
             the stored object is damaged or was replaced; {} was not written",
            dest.display()
        )));
    }
    out.sync_all().map_err(|e| Error::io(&shown, e))?;
    drop(out);
    std::fs::rename(&tmp_path, dest).map_err(|e| Error::io(dest.display(), e))?;
    tmp.0 = None;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir.display(), e))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_writes_dest_only_when_the_sha256_matches() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        let data = b"a wal file".repeat(1000);
        let zst = Bytes::from(zstd::encode_all(&data[..], 1).unwrap());
        let sha = crate::catalog::sha256_hex(&data);
        let e = restore("k", zst.clone(), None, &"0".repeat(64), &dest).unwrap_err();
        assert!(e.to_string().contains("was not written"), "{e}");
        assert!(!dest.exists() && !temp_beside(&dest).exists());
        assert_eq!(restore("k", zst, None, &sha, &dest).unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert!(!temp_beside(&dest).exists());
        let e = restore("k", Bytes::from_static(b"garbage"), None, &sha, &dir.path().join("X")).unwrap_err();
        assert_eq!(e.exit_code(), 4, "{e}");
        assert!(!dir.path().join("X").exists());
    }
}
