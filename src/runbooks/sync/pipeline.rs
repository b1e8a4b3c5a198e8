//! Dump once, use twice: one `pg_dump -Fc -Z0` stream, teed into the store (zstd, the backup
//! runbook's own pipeline) and into `pg_restore` of the scratch database, then validated.
//!
//! Why a tee of one stream rather than a directory-format dump restored with `pg_restore -j`: the
//! stored copy must be the same single custom-format object a backup is (`cat | zstd -dc |
//! pg_restore` restores it), a directory dump would need a local temp copy of the whole database,
//! and `-j` can only start once the dump is complete. The tee overlaps dump, upload and restore in
//! one pass, with flat memory (one 1 MiB chunk in flight plus a 1 MiB pipe to the compressor); a
//! slower consumer slows pg_dump down instead of growing a buffer. The restore's own index builds
//! are serial, which is the price; the benchmark (scripts/bench-sync) measures the whole.
//!
//! With `[store] age_recipients` only the stored copy is encrypted (after zstd, in the backup
//! pipeline): pg_restore reads the plaintext stream of the tee, so the normal path needs no key.
//! Only a resumed run restoring the stored dump decrypts, with `[store] age_identity_file`.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::toc::{self, Parsed, SeqValue};
use super::{Restored, State};
use crate::catalog::{LogicalDump, Manifest, TableCount, dump_base};
use crate::clients::{pg, pgtools::PgTools};
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::dburl::DbUrl;
use crate::error::{Error, Result};
use crate::runbooks::backup::readback::{FeedError, Received};
use crate::runbooks::backup::{DumpSnapshot, count_rows, dump, encryption, export_snapshot, leaf_tables};

const CHUNK: usize = 1 << 20;
/// A TOC larger than this is not read for sequence values (the run fails rather than guess).
const MAX_TOC: usize = 256 << 20;

pub(super) async fn restore(cx: &Ctx, st: &State) -> Result<(Restored, Manifest)> {
    let (from, to) = (&st.from, &st.to);
    let started = SystemTime::now();
    let t0 = Instant::now();

    create_scratch(st).await?;

    // As in backup: a REPEATABLE READ transaction exports the snapshot pg_dump reads and counts
    // every leaf table in it while it stays open, so the counts describe exactly the dump.
    let src = &from.database_url;
    let src_err = |e: tokio_postgres::Error| pg::db_error(src, &e);
    let mut client = pg::connect(src).await?;
    let DumpSnapshot { tx, id: snapshot, server_version, tables } = export_snapshot(&mut client, src).await?;
    let snapshot_time = SystemTime::now();
    let matviews = matviews(&tx).await.map_err(src_err)?;

    let dump_tools = PgTools::new(from.pg_bin.as_deref());
    let dump_version = dump_tools.major_version("pg_dump").await?;
    let mut dumping =
        dump_tools.spawn("pg_dump", &["-Fc", "-Z0", "--no-password", "--snapshot", &snapshot], Some(src), false)?;
    let scratch_url = to.database_url.with_dbname(&st.scratch());
    let mut restoring = spawn_restore(st)?;
    let mut dump_out = dumping.stdout.take().ok_or_else(|| Error::step("restore", "pg_dump has no stdout"))?;
    let mut restore_in = restoring.stdin.take().ok_or_else(|| Error::step("restore", "pg_restore has no stdin"))?;

    let (mut to_store, from_tee) = tokio::io::duplex(CHUNK);
    let tee = async move {
        let mut buf = vec![0u8; CHUNK];
        let mut head: Vec<u8> = Vec::new();
        let mut parsed = Parsed::Incomplete;
        loop {
            let n =
                dump_out.read(&mut buf).await.map_err(|e| Error::step("restore", format!("reading pg_dump: {e}")))?;
            if n == 0 {
                break;
            }
            if parsed == Parsed::Incomplete {
                head.extend_from_slice(&buf[..n]);
                parsed = toc::parse(&head);
                if parsed != Parsed::Incomplete {
                    head = Vec::new();
                } else if head.len() > MAX_TOC {
                    parsed = Parsed::Unsupported(format!("the archive's TOC is larger than {} MiB", MAX_TOC >> 20));
                }
            }
            restore_in
                .write_all(&buf[..n])
                .await
                .map_err(|e| Error::step("restore", format!("pg_restore stopped reading: {e}")))?;
            to_store
                .write_all(&buf[..n])
                .await
                .map_err(|e| Error::step("restore", format!("the store upload stopped: {e}")))?;
        }
        // EOF for both readers.
        drop(restore_in);
        drop(to_store);
        Ok::<_, Error>(parsed)
    };
    // Only what is stored is encrypted: pg_restore reads the plaintext stream of the tee.
    let recipients = &cx.config.age_recipients;
    let base = dump_base(&from.name, &st.backup.id, &src.dbname, !recipients.is_empty());
    let expected = dump::expected_bytes(&tx, &tables).await.map_err(src_err)?;
    if let Some(n) = expected {
        cx.out.info(&format!("sync: about {} expected (the tables' size)", crate::output::table::bytes(n)));
    }
    let progress = cx.out.progress("sync", expected, true);
    let upload =
        dump::compress_to_store(from_tee, cx.store.clone(), &base, dump::SPLIT_BYTES, recipients, progress.clone());
    let counts = async { count_rows(&tx, &tables).await.map_err(src_err) };
    let (teed, stored, counts) = tokio::join!(tee, upload, counts);
    progress.finish();
    // The children's verdicts first: pg_restore's error explains a broken pipe better than the pipe.
    let restore_stderr = restoring.wait().await?;
    let dump_warnings = dumping.wait().await?;
    let parsed = teed?;
    let stored = stored?;
    let counts = counts?;
    tx.commit().await.map_err(src_err)?;
    // --exit-on-error makes any SQL error fatal; anything else pg_restore calls an error is too.
    if let Some(line) = restore_stderr.lines().find(|l| l.contains("error")) {
        return Err(Error::step("restore", format!("pg_restore reported: {line}")));
    }
    if !dump_warnings.trim().is_empty() {
        cx.out.warn(&format!("pg_dump: {}", dump_warnings.trim()));
    }
    let sequences = match parsed {
        Parsed::Done(s) => s,
        Parsed::Incomplete => return Err(Error::step("restore", "the dump ended inside its table of contents")),
        Parsed::Unsupported(why) => {
            return Err(Error::step("restore", format!("cannot read the dump's sequence values: {why}")));
        }
    };

    validate(&scratch_url, &counts, Some(&matviews), &sequences).await?;

    let manifest = Manifest::logical(LogicalDump {
        id: &st.backup.id,
        env: &from.name,
        database: &src.dbname,
        server_version,
        pg_dump_version: dump_version,
        run_id: &cx.run_id,
        started,
        elapsed: t0.elapsed(),
        stored,
        tables: counts.clone(),
    });
    let restored = Restored {
        snapshot_time,
        rows: counts.iter().map(|c| c.rows).sum(),
        tables: counts.len(),
        sequences: sequences.len(),
        bytes: manifest.bytes,
        dump_bytes: manifest.dump_bytes,
        duration_ms: t0.elapsed().as_millis() as u64,
        backup_id: st.backup.id.clone(),
        source: "dump",
        expected_bytes: expected,
    };
    Ok((restored, manifest))
}

/// The scratch database: TO's owner, encoding, locale, settings and grants.
async fn create_scratch(st: &State) -> Result<()> {
    create_like(&super::target::maintenance_url(&st.to), st.db(), &st.scratch(), &st.to.name).await
}

/// Create `scratch`, through `maint` (an env's maintenance_db), like the database `like` of env
/// `env`: its owner, encoding, locale, database-level settings and grants, from template0. Sync's
/// scratch copy of TO and drill's of the env's database.
pub(crate) async fn create_like(maint: &DbUrl, like: &str, scratch: &str, env: &str) -> Result<()> {
    let err = |e: tokio_postgres::Error| pg::db_error(maint, &e);
    let client = pg::connect(maint).await?;
    let props = super::target::db_props(&client, like)
        .await
        .map_err(err)?
        .ok_or_else(|| Error::step("restore", format!("database {like} is gone from {env}")))?;
    client.batch_execute(&super::target::create_sql(scratch, &props)).await.map_err(err)?;
    for sql in super::target::settings_and_grants_sql(&client, &props, scratch).await.map_err(err)? {
        client.batch_execute(&sql).await.map_err(err)?;
    }
    Ok(())
}

/// pg_restore into the scratch database, reading the archive on stdin.
fn spawn_restore(st: &State) -> Result<crate::clients::pgtools::Running> {
    spawn_restore_into(&st.to, &st.scratch())
}

/// pg_restore into database `db` on `env`'s server (with `env`'s pg_bin and credentials), reading
/// the archive on stdin.
pub(crate) fn spawn_restore_into(env: &EnvConfig, db: &str) -> Result<crate::clients::pgtools::Running> {
    let url = env.database_url.with_dbname(db);
    let conninfo = format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"));
    // Ownership and grants as the dump has them (the roles were checked in preflight), so the
    // standby matches its source; tablespaces and subscriptions are the source server's own: a
    // standby that subscribed to the source's publishers would compete with it for their changes.
    PgTools::new(env.pg_bin.as_deref()).spawn(
        "pg_restore",
        &["--exit-on-error", "--no-password", "--no-tablespaces", "--no-subscriptions", "-d", &conninfo],
        Some(&url),
        true,
    )
}

/// A resumed run: restore the scratch database from the dump the interrupted run stored and
/// committed, instead of dumping FROM again. The stored bytes are hashed as they stream (each
/// object against its manifest entry, all of them against the manifest's sha256) and any mismatch,
/// truncation or missing object is an integrity failure (exit 4) that wins over whatever the
/// decoder or pg_restore made of the bad bytes; the copy is then validated against the row counts
/// and sequence values the dump recorded.
///
/// The hashed bytes go on, through a bounded channel, to a feeder thread (`feed`) that decrypts
/// them when the manifest says age (with the identity file's identities, loaded and matched to the
/// backup's recipients before anything is created), decompresses and writes pg_restore's stdin.
pub(super) async fn restore_stored(cx: &Ctx, st: &State, m: &Manifest) -> Result<Restored> {
    let t0 = Instant::now();
    let chain = format!("backup {} of {}", m.id, m.env);
    let identities = encryption::identities_for(cx, m)?;
    create_scratch(st).await?;
    let mut restoring = spawn_restore(st)?;
    let restore_in = restoring.stdin.take().ok_or_else(|| Error::step("restore", "pg_restore has no stdin"))?;
    // Bounded: a slow pg_restore slows the download down instead of growing memory.
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let whole = Arc::new(AtomicBool::new(false));
    let source = Received::new(rx, whole.clone(), "dump");
    let handle = tokio::runtime::Handle::current();
    let feeder = tokio::task::spawn_blocking(move || feed(source, identities, restore_in, handle));
    // None once the feeder stopped (its error is reported only if the bytes are intact).
    let mut to_feeder = Some(tx);
    let mut all = Sha256::new();
    let progress = cx.out.progress("sync", Some(m.bytes), true);
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
                // The rest of the bytes are still read, for their sha256.
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
    }
    progress.finish();
    let sha = hex::encode(all.finalize());
    if sha != m.sha256 {
        return Err(Error::integrity(&chain, "all objects", format!("sha256 {sha}, the manifest has {}", m.sha256)));
    }
    // Every byte is in and intact: only now does the feeder see the end of the stream.
    whole.store(true, Ordering::Release);
    drop(to_feeder);
    let Fed { parsed, dump_bytes, error } =
        feeder.await.map_err(|e| Error::step("restore", format!("feeder thread: {e}")))?;
    let restore_stderr = restoring.wait().await?;
    // A wrong key explains pg_restore's empty input better than pg_restore does.
    if let Some(FeedError::Key(e)) = error {
        return Err(Error::config(
            cx.config.file.display(),
            format!("[store] age_identity_file: decrypting {chain}: {e}"),
        ));
    }
    if let Some(line) = restore_stderr.lines().find(|l| l.contains("error")) {
        return Err(Error::step("restore", format!("pg_restore reported: {line}")));
    }
    if let Some(FeedError::Other(e)) = error {
        return Err(Error::step("restore", e));
    }
    let sequences = match parsed {
        Parsed::Done(s) => s,
        Parsed::Incomplete => return Err(Error::step("restore", "the dump ended inside its table of contents")),
        Parsed::Unsupported(why) => {
            return Err(Error::step("restore", format!("cannot read the dump's sequence values: {why}")));
        }
    };
    let scratch_url = st.to.database_url.with_dbname(&st.scratch());
    // Materialized views are not in the manifest: their population is pg_restore's to report.
    validate(&scratch_url, &m.tables, None, &sequences).await?;
    let snapshot_time = humantime::parse_rfc3339_weak(&m.started)
        .map_err(|e| Error::step("restore", format!("manifest {} has an unreadable start time: {e}", m.id)))?;
    Ok(Restored {
        snapshot_time,
        rows: m.tables.iter().map(|c| c.rows).sum(),
        tables: m.tables.len(),
        sequences: sequences.len(),
        bytes: m.bytes,
        dump_bytes,
        duration_ms: t0.elapsed().as_millis() as u64,
        backup_id: m.id.clone(),
        source: "stored",
        expected_bytes: Some(m.bytes),
    })
}

/// What the feeder made of the stream.
struct Fed {
    parsed: Parsed,
    dump_bytes: u64,
    /// The first thing that went wrong feeding pg_restore; pg_restore then sees EOF.
    error: Option<FeedError>,
}

/// On a blocking thread: stored bytes -> (age) -> zstd -> pg_restore's stdin, the TOC parsed for
/// the sequence values on the way. Returns at the first error, which drops the receiver, so the
/// download loop stops sending and only hashes.
fn feed(
    source: Received,
    identities: Option<Vec<age::x25519::Identity>>,
    mut sink: tokio::process::ChildStdin,
    handle: tokio::runtime::Handle,
) -> Fed {
    let mut fed = Fed { parsed: Parsed::Incomplete, dump_bytes: 0, error: None };
    let compressed: Box<dyn std::io::BufRead + Send> = match identities {
        None => Box::new(source),
        Some(ids) => {
            let opened = age::Decryptor::new_buffered(source)
                .and_then(|d| d.decrypt(ids.iter().map(|i| i as &dyn age::Identity)));
            match opened {
                Ok(plain) => Box::new(std::io::BufReader::with_capacity(CHUNK, plain)),
                Err(age::DecryptError::NoMatchingKeys) => {
                    fed.error = Some(FeedError::Key("no identity in the file opens it".into()));
                    return fed;
                }
                Err(e) => {
                    fed.error = Some(FeedError::Other(format!("decrypting the stored dump (age): {e}")));
                    return fed;
                }
            }
        }
    };
    let mut decoder = match zstd::stream::read::Decoder::with_buffer(compressed) {
        Ok(d) => d,
        Err(e) => {
            fed.error = Some(FeedError::Other(format!("decompressing the stored dump: {e}")));
            return fed;
        }
    };
    let mut head: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                fed.error = Some(FeedError::Other(format!("reading the stored dump back: {e}")));
                return fed;
            }
        };
        fed.dump_bytes += n as u64;
        if fed.parsed == Parsed::Incomplete {
            head.extend_from_slice(&buf[..n]);
            fed.parsed = toc::parse(&head);
            if fed.parsed != Parsed::Incomplete {
                head = Vec::new();
            } else if head.len() > MAX_TOC {
                fed.parsed = Parsed::Unsupported(format!("the archive's TOC is larger than {} MiB", MAX_TOC >> 20));
            }
        }
        if let Err(e) = handle.block_on(sink.write_all(&buf[..n])) {
            fed.error = Some(FeedError::Other(format!("pg_restore stopped reading: {e}")));
            return fed;
        }
    }
    fed
}

/// (schema, name, populated) of every materialized view.
async fn matviews(c: &tokio_postgres::Transaction<'_>) -> Result<Vec<(String, String, bool)>, tokio_postgres::Error> {
    Ok(c.query("SELECT schemaname::text, matviewname::text, ispopulated FROM pg_matviews ORDER BY 1, 2", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// The scratch copy against the dump: the same leaf tables with exactly the rows counted in the
/// dump's snapshot, the same materialized views (populated alike), every sequence at the value
/// the dump set. Any difference fails the run before the swap.
async fn validate(
    scratch: &crate::dburl::DbUrl,
    counts: &[TableCount],
    matviews_src: Option<&[(String, String, bool)]>,
    sequences: &[SeqValue],
) -> Result<()> {
    match differences(scratch, counts, matviews_src, sequences).await?.into_iter().next() {
        Some(what) => Err(Error::step("validate", what)),
        None => Ok(()),
    }
}

/// Every way the copy at `scratch` differs from what the dump recorded (see `validate`), each
/// named; empty when it matches. Sync stops at the first; drill journals them all.
pub(crate) async fn differences(
    scratch: &crate::dburl::DbUrl,
    counts: &[TableCount],
    matviews_src: Option<&[(String, String, bool)]>,
    sequences: &[SeqValue],
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut client = pg::connect(scratch).await?;
    let err = |e: tokio_postgres::Error| pg::db_error(scratch, &e);
    let tx = client.build_transaction().read_only(true).start().await.map_err(err)?;
    let tables = leaf_tables(&tx).await.map_err(err)?;
    let got = count_rows(&tx, &tables).await.map_err(err)?;
    for want in counts {
        match got.iter().find(|g| g.schema == want.schema && g.table == want.table) {
            None => found.push(format!("table {}.{} is missing from the restored copy", want.schema, want.table)),
            Some(g) if g.rows != want.rows => found.push(format!(
                "{}.{} has {} restored, {} in the dump's snapshot",
                want.schema,
                want.table,
                crate::output::table::count(g.rows as u64, "row"),
                want.rows
            )),
            Some(_) => {}
        }
    }
    for extra in got.iter().filter(|g| !counts.iter().any(|w| w.schema == g.schema && w.table == g.table)) {
        found.push(format!("the restored copy has a table {}.{} the source did not", extra.schema, extra.table));
    }
    if let Some(matviews_src) = matviews_src {
        let mv = matviews(&tx).await.map_err(err)?;
        if mv != matviews_src {
            found.push(format!("materialized views differ: source {matviews_src:?}, restored {mv:?}"));
        }
    }
    for s in sequences {
        let v: Option<i64> = tx
            .query_one("SELECT pg_sequence_last_value($1::text::regclass)", &[&s.regclass])
            .await
            .map_err(err)?
            .get(0);
        // pg_sequence_last_value is NULL until the sequence is called.
        let want = s.is_called.then_some(s.value);
        if v != want {
            found.push(format!("sequence {} is at {v:?}, the dump set {want:?}", s.regclass));
        }
    }
    tx.commit().await.map_err(err)?;
    Ok(found)
}
