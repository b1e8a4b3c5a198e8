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

use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::load;
use super::toc::SeqValue;
use super::{Restored, State};
use crate::catalog::{LogicalDump, Manifest, TableCount, dump_base};
use crate::clients::{pg, pgtools::PgTools};
use crate::ctx::Ctx;
use crate::dburl::DbUrl;
use crate::error::{Error, Result};
use crate::runbooks::backup::readback;
use crate::runbooks::backup::{DumpSnapshot, count_rows, dump, encryption, export_snapshot, leaf_tables, quote_ident};

const CHUNK: usize = 1 << 20;

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
    let mut dump_out = dumping.stdout.take().ok_or_else(|| Error::step("restore", "pg_dump has no stdout"))?;

    // Each chunk read from pg_dump goes to both consumers as one shared buffer (no copy per
    // reader); the channels are bounded, so the slower consumer slows pg_dump down.
    let (to_store, from_tee) = mpsc::channel::<Bytes>(1);
    let (to_load, load_in) = mpsc::channel::<Bytes>(1);
    let tee = async move {
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(CHUNK);
            let n = dump_out
                .read_buf(&mut buf)
                .await
                .map_err(|e| Error::step("restore", format!("reading pg_dump: {e}")))?;
            if n == 0 {
                break;
            }
            let chunk = buf.split().freeze();
            to_load.send(chunk.clone()).await.map_err(|_| Error::step("restore", "the load stopped reading"))?;
            to_store.send(chunk).await.map_err(|_| Error::step("restore", "the store upload stopped"))?;
        }
        // EOF for both readers.
        drop(to_load);
        drop(to_store);
        Ok::<_, Error>(())
    };
    let (from_tee, load_in) = (reader(from_tee), reader(load_in));
    // Only what is stored is encrypted: the load reads the plaintext stream of the tee.
    let recipients = &cx.config.age_recipients;
    let base = dump_base(&from.name, &st.backup.id, &src.dbname, !recipients.is_empty());
    let expected = dump::expected_bytes(&tx, &tables).await.map_err(src_err)?;
    if let Some(n) = expected {
        cx.out.info(&format!("sync: about {} expected (the tables' size)", crate::output::table::bytes(n)));
    }
    let progress = cx.out.progress("sync", expected, true);
    #[cfg(not(feature = "bench-no-audit"))]
    let upload =
        dump::compress_to_store(from_tee, cx.store.clone(), &base, dump::SPLIT_BYTES, recipients, progress.clone());
    #[cfg(feature = "bench-no-audit")]
    let upload = {
        let _ = (&base, recipients);
        dump::discard(from_tee, progress.clone())
    };
    let scratch = st.scratch();
    let loading = load::load(load_in, to, &scratch, st.jobs);
    // The copy the last sync kept goes while this one loads, not in the swap: dropping a
    // database checkpoints, which right after the load would write all of the new copy at once.
    let (teed, stored, loaded, dropped) = tokio::join!(tee, upload, loading, st.drop_prev());
    progress.finish();
    // The load's verdict first: a COPY or pg_restore error explains a broken pipe better than the pipe.
    let dump_warnings = dumping.wait().await;
    let loaded = loaded?;
    dropped?;
    let dump_warnings = dump_warnings?;
    teed?;
    let stored = stored?;
    tx.commit().await.map_err(src_err)?;
    if !dump_warnings.trim().is_empty() {
        cx.out.warn(&format!("pg_dump: {}", dump_warnings.trim()));
    }
    let counts = load::snapshot_counts(&tables, &loaded.rows).map_err(|e| Error::step("restore", e))?;
    let phases = check_copy(cx, st, &loaded, &counts, Some(&matviews)).await?;

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
        sequences: loaded.toc.sequences.len(),
        bytes: manifest.bytes,
        dump_bytes: manifest.dump_bytes,
        duration_ms: t0.elapsed().as_millis() as u64,
        backup_id: st.backup.id.clone(),
        source: "dump",
        expected_bytes: expected,
        phases,
        load: loaded.mode,
    };
    Ok((restored, manifest))
}

/// The receiving end of a tee channel, as the byte stream it carries.
fn reader(rx: mpsc::Receiver<Bytes>) -> impl tokio::io::AsyncRead + Unpin + Send + 'static {
    let chunks =
        futures_util::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx)) });
    tokio_util::io::StreamReader::new(Box::pin(chunks))
}

/// The copy just loaded into the scratch database, made ready and checked: every table
/// ANALYZEd, then validated against `counts`, the source's materialized views when known, and the
/// archive's sequence values. Returns the load's timings with these two, for the step's log.
async fn check_copy(
    cx: &Ctx,
    st: &State,
    loaded: &load::Loaded,
    counts: &[TableCount],
    matviews_src: Option<&[(String, String, bool)]>,
) -> Result<Vec<(&'static str, u64)>> {
    if let Some(why) = &loaded.serial_because {
        cx.out.info(&format!("sync: restored by one pg_restore, since {why}"));
    }
    let scratch_url = st.to.database_url.with_dbname(&st.scratch());
    let ta = Instant::now();
    analyze(&scratch_url, counts, st.jobs).await?;
    let analyze_ms = ta.elapsed().as_millis() as u64;
    let tv = Instant::now();
    validate(&scratch_url, counts, matviews_src, &loaded.toc.sequences, st.jobs).await?;
    let validate_ms = tv.elapsed().as_millis() as u64;
    let mut phases: Vec<(&'static str, u64)> = match loaded.phases_ms {
        Some([pre, data, post]) => vec![("pre_data_ms", pre), ("data_ms", data), ("post_data_ms", post)],
        None => Vec::new(),
    };
    phases.extend([("analyze_ms", analyze_ms), ("validate_ms", validate_ms)]);
    Ok(phases)
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

/// A resumed run: restore the scratch database from the dump the interrupted run stored and
/// committed, instead of dumping FROM again. The stored bytes are hashed as they stream (each
/// object against its manifest entry, all of them against the manifest's sha256) and any mismatch,
/// truncation or missing object is an integrity failure (exit 4) that wins over whatever the
/// decoder or the load made of the bad bytes; the copy is then validated against the row counts
/// and sequence values the dump recorded. Decrypted (age, with the identity file's identities,
/// loaded and matched to the backup's recipients before anything is created) and decompressed by
/// the backup read-back, then loaded like a fresh dump.
pub(super) async fn restore_stored(cx: &Ctx, st: &State, m: &Manifest) -> Result<Restored> {
    let t0 = Instant::now();
    encryption::identities_for(cx, m)?;
    create_scratch(st).await?;
    st.drop_prev().await?;
    let (to_load, load_in) = tokio::io::duplex(CHUNK);
    let progress = cx.out.progress("sync", Some(m.bytes), true);
    let streamed = readback::stream_into(cx, m, to_load, &progress);
    let scratch = st.scratch();
    let loading = load::load(load_in, &st.to, &scratch, st.jobs);
    let (streamed, loaded) = tokio::join!(streamed, loading);
    progress.finish();
    let (read, loaded) = match (streamed, loaded) {
        // Bad stored bytes or a key that does not open them explain the load's failure best.
        (Err(e @ (Error::Integrity { .. } | Error::Config { .. })), _) => return Err(e),
        (_, Err(e)) | (Err(e), Ok(_)) => return Err(e),
        (Ok(read), Ok(loaded)) => (read, loaded),
    };
    // Materialized views are not in the manifest: their population is pg_restore's to report.
    let phases = check_copy(cx, st, &loaded, &m.tables, None).await?;
    let snapshot_time = humantime::parse_rfc3339_weak(&m.started)
        .map_err(|e| Error::step("restore", format!("manifest {} has an unreadable start time: {e}", m.id)))?;
    Ok(Restored {
        snapshot_time,
        rows: m.tables.iter().map(|c| c.rows).sum(),
        tables: m.tables.len(),
        sequences: loaded.toc.sequences.len(),
        bytes: m.bytes,
        dump_bytes: read.plain_bytes,
        duration_ms: t0.elapsed().as_millis() as u64,
        backup_id: m.id.clone(),
        source: "stored",
        expected_bytes: Some(m.bytes),
        phases,
        load: loaded.mode,
    })
}

/// `tables` in `jobs` groups of about equal rows (by `expected`), the largest first, each to the
/// group with the fewest so far.
fn share(tables: &[(String, String)], expected: &[TableCount], jobs: usize) -> Vec<Vec<(String, String)>> {
    let weight = |(s, t): &(String, String)| {
        expected.iter().find(|c| &c.schema == s && &c.table == t).map_or(0, |c| c.rows).max(1)
    };
    let mut order: Vec<(i64, &(String, String))> = tables.iter().map(|t| (weight(t), t)).collect();
    order.sort_by_key(|o| std::cmp::Reverse(o.0));
    let mut groups: Vec<(i64, Vec<(String, String)>)> = vec![(0, Vec::new()); jobs.clamp(1, tables.len().max(1))];
    for (w, t) in order {
        let g = groups.iter_mut().min_by_key(|g| g.0).expect("at least one group");
        g.0 += w;
        g.1.push(t.clone());
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// Exact `count(*)` of each of `tables` in database `url`, on up to `jobs` connections (`share`).
/// Nothing writes to the database meanwhile (it is a scratch copy), so one snapshot is not needed.
async fn count_in_parallel(
    url: &crate::dburl::DbUrl,
    tables: &[(String, String)],
    expected: &[TableCount],
    jobs: usize,
) -> Result<Vec<TableCount>> {
    let err = |e: tokio_postgres::Error| pg::db_error(url, &e);
    let counting = share(tables, expected, jobs).into_iter().map(|mine| async move {
        let mut c = pg::connect(url).await?;
        let tx = c.build_transaction().read_only(true).start().await.map_err(err)?;
        let n = count_rows(&tx, &mine).await.map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok::<_, Error>(n)
    });
    let mut all: Vec<TableCount> = futures_util::future::try_join_all(counting).await?.into_iter().flatten().collect();
    all.sort_by(|a, b| (&a.schema, &a.table).cmp(&(&b.schema, &b.table)));
    Ok(all)
}

/// ANALYZE every table of the copy before it is swapped in, on up to `jobs` connections: a
/// standby that takes over must plan queries with statistics from the first query, not after
/// autovacuum comes round to each table (pg_restore leaves a restore unanalyzed).
async fn analyze(url: &crate::dburl::DbUrl, tables: &[TableCount], jobs: usize) -> Result<()> {
    let names: Vec<(String, String)> = tables.iter().map(|t| (t.schema.clone(), t.table.clone())).collect();
    let err = |e: tokio_postgres::Error| pg::db_error(url, &e);
    let analyzing = share(&names, tables, jobs).into_iter().map(|mine| async move {
        let c = pg::connect(url).await?;
        for (s, t) in &mine {
            c.batch_execute(&format!("ANALYZE {}.{}", quote_ident(s), quote_ident(t))).await.map_err(err)?;
        }
        Ok::<_, Error>(())
    });
    futures_util::future::try_join_all(analyzing).await?;
    Ok(())
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
    jobs: usize,
) -> Result<()> {
    match differences(scratch, counts, matviews_src, sequences, jobs).await?.into_iter().next() {
        Some(what) => Err(Error::step("validate", what)),
        None => Ok(()),
    }
}

/// Every way the copy at `scratch` differs from what the dump recorded (see `validate`), each
/// named; empty when it matches. Sync stops at the first; drill journals them all. The tables are
/// counted on `jobs` connections at once, the largest (by `counts`) first.
pub(crate) async fn differences(
    scratch: &crate::dburl::DbUrl,
    counts: &[TableCount],
    matviews_src: Option<&[(String, String, bool)]>,
    sequences: &[SeqValue],
    jobs: usize,
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut client = pg::connect(scratch).await?;
    let err = |e: tokio_postgres::Error| pg::db_error(scratch, &e);
    let tx = client.build_transaction().read_only(true).start().await.map_err(err)?;
    let tables = leaf_tables(&tx).await.map_err(err)?;
    let got = count_in_parallel(scratch, &tables, counts, jobs).await?;
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
