//! Load a `pg_dump -Fc -Z0` stream into a database on several connections at once, as it passes.
//!
//! The one stream `sync` reads from FROM (and stores as the audit copy) is restored in
//! PostgreSQL's own three sections, the way `pg_restore --section` splits a restore:
//!
//! 1. **pre-data** (tables, types, functions …): `pg_restore --section=pre-data`, reading the
//!    archive's table of contents from memory (`/dev/fd/N` of a memfd holding just the header and
//!    TOC: those entries have no data, so pg_restore needs nothing else).
//! 2. **data**: drctl itself. Each TABLE DATA block is COPY text (see `demux`); its rows are cut
//!    into batches of whole rows and handed to `jobs` connections, each running the entry's own
//!    `COPY … FROM stdin` statement, so one large table loads on every connection at once and
//!    small tables pass through one. Rows are counted as they pass (a COPY text row ends with the
//!    only raw newline it can contain), and every connection's COPY count must add up to them.
//!    SEQUENCE SET entries run their `setval`.
//! 3. **post-data** (indexes, constraints, triggers, materialized view data …):
//!    `pg_restore -j JOBS --section=post-data` from the same in-memory TOC, which builds indexes
//!    and constraints in parallel in pg_restore's own dependency order.
//!
//! An archive with anything else in its data section (large objects) is restored by one plain
//! `pg_restore` reading the whole stream, as before; its rows are still counted from the stream.
//!
//! Memory stays flat: the input is read 1 MiB at a time and at most `jobs` batches (of ~256 KiB)
//! wait in the queue; a slow database slows the reader, and so pg_dump, down. Nothing is written
//! to local disk. The first failure on any connection cancels the others (their sessions end, the
//! uncommitted COPYs roll back) and is what the run reports.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc};
use tokio_postgres::CopyInSink;
use tokio_util::sync::CancellationToken;

use super::demux::{Demux, Event, is_terminator};
use super::toc::{self, Entry, Parsed, SECTION_DATA, Toc};
use crate::catalog::TableCount;
use crate::clients::{pg, pgtools::PgTools};
use crate::config::EnvConfig;
use crate::error::{Error, Result};

const CHUNK: usize = 1 << 20;
/// Rows are handed to the connections this many bytes at a time (whole rows: a batch ends at a
/// row's end, so one longer row makes a longer batch).
const BATCH: usize = 256 << 10;
/// A TOC larger than this is refused (the run fails rather than buffer without bound).
const MAX_TOC: usize = 256 << 20;

/// What the load did, for validation.
pub struct Loaded {
    pub toc: Toc,
    /// Rows of every TABLE DATA entry, counted in the stream.
    pub rows: Vec<TableCount>,
    /// `None` when loaded in parallel; else why one pg_restore read the whole stream.
    pub serial_because: Option<String>,
    /// How the rows were loaded: `parallel` (split across the connections) or `serial` (one
    /// pg_restore).
    pub mode: &'static str,
    /// Milliseconds spent in each part, for the step's log: pre-data, data, post-data (parallel
    /// load only).
    pub phases_ms: Option<[u64; 3]>,
}

/// Load the archive `input` into database `db` on `env`'s server (with `env`'s pg_bin and
/// credentials), on `jobs` connections.
pub async fn load<R: AsyncRead + Unpin>(mut input: R, env: &EnvConfig, db: &str, jobs: usize) -> Result<Loaded> {
    let mut head: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let toc = loop {
        let n = input.read(&mut buf).await.map_err(read_err)?;
        if n == 0 {
            return Err(Error::step("restore", "the dump ended inside its table of contents"));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(t) = toc_in(&head).map_err(|e| Error::step("restore", e))? {
            break t;
        }
    };
    match serial_reason(&toc) {
        None => parallel(input, head, toc, env, db, jobs).await,
        Some(why) => serial(input, head, toc, env, db, why).await,
    }
}

/// The TOC of an archive whose first bytes are `head`: `None` while more are needed; an error for
/// what is no archive drctl reads, or a TOC beyond `MAX_TOC`.
fn toc_in(head: &[u8]) -> std::result::Result<Option<Toc>, String> {
    match toc::parse(head) {
        Parsed::Done(t) => Ok(Some(t)),
        Parsed::Unsupported(why) => Err(format!("cannot read the dump: {why}")),
        Parsed::Incomplete if head.len() > MAX_TOC => {
            Err(format!("the dump's table of contents is larger than {} MiB", MAX_TOC >> 20))
        }
        Parsed::Incomplete => Ok(None),
    }
}

fn read_err(e: std::io::Error) -> Error {
    Error::step("restore", format!("reading the dump: {e}"))
}

/// Why this archive is not one drctl loads itself: anything in the data section but table data
/// (as COPY) and sequence values.
fn serial_reason(toc: &Toc) -> Option<String> {
    toc.entries.iter().filter(|e| e.section == SECTION_DATA).find_map(|e| match e.desc.as_str() {
        "TABLE DATA" if e.copy_stmt.is_some() => None,
        "SEQUENCE SET" => None,
        other => Some(format!("the dump holds {other} entries")),
    })
}

/// pg_restore's options for every part of the restore. Ownership and grants as the dump has them
/// (the roles were checked in preflight), so the copy matches its source; tablespaces and
/// subscriptions are the source server's own: a standby that subscribed to the source's
/// publishers would compete with it for their changes.
const RESTORE_FLAGS: [&str; 4] = ["--exit-on-error", "--no-password", "--no-tablespaces", "--no-subscriptions"];

/// pg_restore into database `db` on `env`'s server (with `env`'s pg_bin and credentials), reading
/// the archive on stdin.
pub(crate) fn spawn_restore_into(env: &EnvConfig, db: &str) -> Result<crate::clients::pgtools::Running> {
    let url = env.database_url.with_dbname(db);
    let conninfo = conninfo(db);
    let mut flags = RESTORE_FLAGS.to_vec();
    flags.extend(["-d", &conninfo]);
    PgTools::new(env.pg_bin.as_deref()).spawn("pg_restore", &flags, Some(&url), true)
}

fn conninfo(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The first line pg_restore calls an error (with --exit-on-error any SQL error is fatal).
fn restore_error(stderr: &str) -> Result<()> {
    match stderr.lines().find(|l| l.contains("error")) {
        Some(line) => Err(Error::step("restore", format!("pg_restore reported: {line}"))),
        None => Ok(()),
    }
}

/// Row counts per TABLE DATA entry, by dumpId, as the stream passes.
#[derive(Default)]
struct Counted {
    rows: HashMap<i64, i64>,
}

impl Counted {
    fn tables(&self, toc: &Toc) -> Vec<TableCount> {
        toc.entries
            .iter()
            .filter(|e| e.desc == "TABLE DATA")
            .map(|e| TableCount {
                schema: e.namespace.clone().unwrap_or_default(),
                table: e.tag.clone().unwrap_or_default(),
                rows: self.rows.get(&e.dump_id).copied().unwrap_or(0),
            })
            .collect()
    }
}

/// Rows per TABLE DATA block of a stream that is only passed on (serial restore, backup): the
/// newlines of every chunk but the end-of-data line.
pub struct RowCounter {
    demux: Demux,
    counted: Counted,
    current: Option<i64>,
    /// The current chunk while it is short enough to be the end-of-data line; `None` once longer.
    chunk: Option<Vec<u8>>,
    chunk_rows: i64,
}

impl RowCounter {
    pub fn new(int_size: usize) -> Self {
        RowCounter {
            demux: Demux::new(int_size),
            counted: Counted::default(),
            current: None,
            chunk: Some(Vec::new()),
            chunk_rows: 0,
        }
    }

    /// The next bytes after the TOC.
    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        let mut events = Vec::new();
        self.demux.feed(data, &mut events).map_err(|e| Error::step("restore", format!("reading the dump: {e}")))?;
        for e in events {
            match e {
                Event::Start { dump_id, blobs: false } => self.current = Some(dump_id),
                Event::Start { blobs: true, .. } | Event::End => self.current = None,
                Event::Data { bytes, last } => {
                    let Some(id) = self.current else { continue };
                    self.chunk_rows += rows_in(bytes);
                    if let Some(c) = &mut self.chunk {
                        c.extend_from_slice(bytes);
                        if c.len() > 16 {
                            self.chunk = None;
                        }
                    }
                    if last {
                        if !self.chunk.as_deref().is_some_and(is_terminator) {
                            *self.counted.rows.entry(id).or_default() += self.chunk_rows;
                        }
                        self.chunk = Some(Vec::new());
                        self.chunk_rows = 0;
                    }
                }
            }
        }
        Ok(())
    }

    /// The counts, once the stream ended (between two blocks, or it was cut short).
    pub fn finish(self, toc: &Toc) -> Result<Vec<TableCount>> {
        if !self.demux.at_block_boundary() {
            return Err(Error::step("restore", "the dump ended inside a data block"));
        }
        Ok(self.counted.tables(toc))
    }
}

/// The rows of every TABLE DATA entry of an archive stream that is only passed on (backup):
/// the TOC parsed from the first bytes, then the blocks counted. Feed it every byte in order.
#[derive(Default)]
pub struct StreamCounter {
    head: Vec<u8>,
    toc: Option<Toc>,
    rows: Option<RowCounter>,
    error: Option<String>,
}

impl StreamCounter {
    pub fn feed(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Some(r) = &mut self.rows {
            if let Err(e) = r.feed(data) {
                self.error = Some(e.to_string());
            }
            return;
        }
        self.head.extend_from_slice(data);
        match toc_in(&self.head) {
            Ok(Some(t)) => {
                let mut r = RowCounter::new(t.int_size);
                let rest = std::mem::take(&mut self.head);
                if let Err(e) = r.feed(&rest[t.len..]) {
                    self.error = Some(e.to_string());
                }
                self.toc = Some(t);
                self.rows = Some(r);
            }
            Ok(None) => {}
            Err(e) => self.error = Some(e),
        }
    }

    /// Rows per TABLE DATA entry, once the stream ended.
    pub fn finish(self) -> std::result::Result<Vec<TableCount>, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        match (self.toc, self.rows) {
            (Some(t), Some(r)) => r.finish(&t).map_err(|e| e.to_string()),
            _ => Err("the dump ended inside its table of contents".into()),
        }
    }
}

/// The exact rows of every leaf table in the dump's snapshot: what the dump stream held for it.
/// pg_dump reads each table once, in that snapshot, so counting its rows as they pass reads the
/// source once instead of twice (`count(*)` in the same snapshot finds the same numbers). A leaf
/// table without data in the dump is an error, not a zero.
pub fn snapshot_counts(
    tables: &[(String, String)],
    dumped: &[TableCount],
) -> std::result::Result<Vec<TableCount>, String> {
    tables
        .iter()
        .map(|(schema, table)| {
            dumped
                .iter()
                .find(|d| &d.schema == schema && &d.table == table)
                .cloned()
                .ok_or_else(|| format!("table {schema}.{table} has no data in the dump"))
        })
        .collect()
}

fn rows_in(bytes: &[u8]) -> i64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as i64
}

// --- serial: one pg_restore --------------------------------------------------------------------

async fn serial<R: AsyncRead + Unpin>(
    mut input: R,
    head: Vec<u8>,
    toc: Toc,
    env: &EnvConfig,
    db: &str,
    why: String,
) -> Result<Loaded> {
    let mut restoring = spawn_restore_into(env, db)?;
    let mut stdin = restoring.stdin.take().ok_or_else(|| Error::step("restore", "pg_restore has no stdin"))?;
    let mut counter = RowCounter::new(toc.int_size);
    let write = |e: std::io::Error| Error::step("restore", format!("pg_restore stopped reading: {e}"));
    let fed = async {
        stdin.write_all(&head).await.map_err(write)?;
        counter.feed(&head[toc.len..])?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = input.read(&mut buf).await.map_err(read_err)?;
            if n == 0 {
                break;
            }
            stdin.write_all(&buf[..n]).await.map_err(write)?;
            counter.feed(&buf[..n])?;
        }
        drop(stdin);
        Ok::<_, Error>(())
    };
    let fed = fed.await;
    let stderr = restoring.wait().await?;
    restore_error(&stderr)?;
    fed?;
    let rows = counter.finish(&toc)?;
    Ok(Loaded { toc, rows, serial_because: Some(why), mode: "serial", phases_ms: None })
}

// --- parallel: pre-data, data on `jobs` connections, post-data --------------------------------

/// The header and TOC in an anonymous in-memory file (memfd), which pg_restore opens as
/// `/dev/fd/N`; it can seek in it, as `-j` requires, and nothing touches the disk.
fn toc_file(bytes: &[u8]) -> Result<std::fs::File> {
    let name = CString::new("drctl-toc").expect("no NUL");
    // SAFETY: a valid C string; the returned fd is owned by the File from here on.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::step("restore", format!("memfd_create: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(bytes).map_err(|e| Error::step("restore", format!("writing the TOC to memory: {e}")))?;
    Ok(f)
}

/// `pg_restore --section=SECTION [-j jobs]` of the in-memory TOC into `db`.
async fn restore_section(env: &EnvConfig, db: &str, toc: &std::fs::File, section: &str, jobs: usize) -> Result<()> {
    let url = env.database_url.with_dbname(db);
    let (ci, sec, j, path) = (
        conninfo(db),
        format!("--section={section}"),
        format!("--jobs={jobs}"),
        format!("/dev/fd/{}", toc.as_raw_fd()),
    );
    let mut flags = RESTORE_FLAGS.to_vec();
    flags.extend([sec.as_str(), j.as_str(), "-d", &ci, &path]);
    let running =
        PgTools::new(env.pg_bin.as_deref()).spawn_passing("pg_restore", &flags, Some(&url), toc.as_raw_fd())?;
    let stderr = running.wait().await?;
    restore_error(&stderr)
}

/// What pg_restore sets on each connection before it loads data (pg_backup_archiver.c,
/// `_doSetFixedOutputState`), with the archive's own encoding, quoting and search_path entries.
/// synchronous_commit is off because the copy is worthless until the swap, whose own commit
/// flushes all WAL before it.
fn session_sql(toc: &Toc) -> String {
    let mut sql = String::from(
        "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; \
         SET client_min_messages = warning; SET row_security = off; SET check_function_bodies = false; \
         SET xmloption = content; SET synchronous_commit = off; \
         SELECT pg_catalog.set_config('search_path', '', false);",
    );
    for e in toc.entries.iter().filter(|e| matches!(e.desc.as_str(), "ENCODING" | "STDSTRINGS" | "SEARCHPATH")) {
        if let Some(d) = &e.defn {
            sql.push(' ');
            sql.push_str(d.trim());
        }
    }
    sql
}

struct Batch {
    /// Index into the COPY statements.
    table: usize,
    bytes: Bytes,
}

async fn parallel<R: AsyncRead + Unpin>(
    mut input: R,
    head: Vec<u8>,
    toc: Toc,
    env: &EnvConfig,
    db: &str,
    jobs: usize,
) -> Result<Loaded> {
    let jobs = jobs.max(1);
    let url = env.database_url.with_dbname(db);
    let file = toc_file(&head[..toc.len])?;
    let t0 = std::time::Instant::now();
    restore_section(env, db, &file, "pre-data", jobs).await?;
    let pre_ms = t0.elapsed().as_millis() as u64;
    let t1 = std::time::Instant::now();

    // The TABLE DATA entries, by dumpId: their COPY statement's index.
    let mut stmts: Vec<Copy> = Vec::new();
    let mut by_id: HashMap<i64, usize> = HashMap::new();
    for e in toc.entries.iter().filter(|e| e.desc == "TABLE DATA") {
        let stmt = e.copy_stmt.as_deref().unwrap_or_default().trim().trim_end_matches(';').to_string();
        by_id.insert(e.dump_id, stmts.len());
        stmts.push(Copy { stmt, name: qualified(e) });
    }
    let stmts = Arc::new(stmts);
    let setup = session_sql(&toc);
    let mut clients = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        let c = pg::connect(&url).await?;
        c.batch_execute(&setup).await.map_err(|e| pg::db_error(&url, &e))?;
        clients.push(c);
    }

    // Rows go to whichever connection is free, so a large table loads on all of them at once.
    // (Each table whole on one connection, truncated in the COPY's transaction as pg_restore
    // --jobs does to skip WAL under wal_level = minimal, measured slower: the stream delivers one
    // table at a time, so it loads one table at a time, and each commit then syncs its files.)
    let (tx, rx) = mpsc::channel::<Batch>(jobs);
    let rx = Arc::new(Mutex::new(rx));
    let cancel = CancellationToken::new();
    let mut workers = tokio::task::JoinSet::new();
    for client in clients {
        workers.spawn(worker(client, rx.clone(), stmts.clone(), cancel.clone()));
    }
    drop(rx);

    let mut counted = Counted::default();
    let dispatch = async {
        let mut demux = Demux::new(toc.int_size);
        let mut batch = BytesMut::new();
        // (dumpId, COPY index) of the block being read; `chunk` is where its chunk began in batch.
        let mut current: Option<(i64, usize)> = None;
        let mut chunk = 0usize;
        let mut buf = vec![0u8; CHUNK];
        let mut data: &[u8] = &head[toc.len..];
        loop {
            // Events borrow the buffer they were cut from: a new list per read.
            let mut events = Vec::new();
            demux.feed(data, &mut events).map_err(|e| Error::step("restore", format!("reading the dump: {e}")))?;
            for e in events {
                match e {
                    Event::Start { dump_id, blobs } => {
                        let Some(&i) = by_id.get(&dump_id).filter(|_| !blobs) else {
                            return Err(Error::step(
                                "restore",
                                format!("the dump has data for entry {dump_id}, which is no table"),
                            ));
                        };
                        current = Some((dump_id, i));
                        batch = BytesMut::with_capacity(BATCH + (BATCH >> 2));
                        chunk = 0;
                    }
                    Event::Data { bytes, last } => {
                        batch.extend_from_slice(bytes);
                        if !last {
                            continue;
                        }
                        if is_terminator(&batch[chunk..]) {
                            batch.truncate(chunk);
                        }
                        chunk = batch.len();
                        if batch.len() >= BATCH && batch.ends_with(b"\n") {
                            let (id, i) = current.expect("inside a block");
                            send(&tx, &cancel, &mut counted, id, i, batch.split().freeze()).await?;
                            chunk = 0;
                        }
                    }
                    Event::End => {
                        let (id, i) = current.take().expect("inside a block");
                        counted.rows.entry(id).or_default();
                        if !batch.is_empty() {
                            send(&tx, &cancel, &mut counted, id, i, batch.split().freeze()).await?;
                        }
                    }
                }
            }
            let n = input.read(&mut buf).await.map_err(read_err)?;
            if n == 0 {
                break;
            }
            data = &buf[..n];
        }
        if !demux.at_block_boundary() {
            return Err(Error::step("restore", "the dump ended inside a data block"));
        }
        Ok(())
    };
    let dispatched = dispatch.await;
    // No more batches: the workers finish their COPYs and stop.
    drop(tx);
    if dispatched.is_err() {
        cancel.cancel();
    }
    let mut loaded: HashMap<usize, u64> = HashMap::new();
    let mut first_err: Option<Error> = None;
    let mut clients = Vec::new();
    while let Some(r) = workers.join_next().await {
        match r {
            Ok(Ok((client, done))) => {
                clients.push(client);
                for (i, n) in done {
                    *loaded.entry(i).or_default() += n;
                }
            }
            // A worker's own error explains the others' cancellation and the reader's "stopped".
            Ok(Err(Failed::Error(e))) => first_err = first_err.or(Some(e)),
            Ok(Err(Failed::Cancelled)) => {}
            Err(e) => first_err = first_err.or(Some(Error::step("restore", format!("COPY task: {e}")))),
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    dispatched?;

    // Every row counted in the stream reached the table.
    for e in toc.entries.iter().filter(|e| e.desc == "TABLE DATA") {
        let i = by_id[&e.dump_id];
        let (want, got) = (counted.rows.get(&e.dump_id).copied().unwrap_or(0), loaded.get(&i).copied().unwrap_or(0));
        if u64::try_from(want).ok() != Some(got) {
            return Err(Error::step(
                "restore",
                format!("{}: the dump holds {want} rows, COPY loaded {got}", stmts[i].name),
            ));
        }
    }
    // Sequence values (the data section's other entries) on the first connection.
    if let Some(c) = clients.first() {
        for e in toc.entries.iter().filter(|e| e.desc == "SEQUENCE SET") {
            if let Some(d) = &e.defn {
                c.batch_execute(d).await.map_err(|err| pg::db_error(&url, &err))?;
            }
        }
    }
    drop(clients);
    let data_ms = t1.elapsed().as_millis() as u64;
    let t2 = std::time::Instant::now();
    restore_section(env, db, &file, "post-data", jobs).await?;
    let rows = counted.tables(&toc);
    Ok(Loaded {
        toc,
        rows,
        serial_because: None,
        mode: "parallel",
        phases_ms: Some([pre_ms, data_ms, t2.elapsed().as_millis() as u64]),
    })
}

/// A TABLE DATA entry's COPY statement, and its table as shown.
struct Copy {
    stmt: String,
    name: String,
}

fn qualified(e: &Entry) -> String {
    format!("{}.{}", e.namespace.as_deref().unwrap_or_default(), e.tag.as_deref().unwrap_or_default())
}

/// Hand one batch (whole rows of table `i`, entry `id`) to whichever connection takes it first.
async fn send(
    tx: &mpsc::Sender<Batch>,
    cancel: &CancellationToken,
    counted: &mut Counted,
    id: i64,
    i: usize,
    bytes: Bytes,
) -> Result<()> {
    *counted.rows.entry(id).or_default() += rows_in(&bytes);
    tokio::select! {
        r = tx.send(Batch { table: i, bytes }) => r.map_err(|_| Error::step("restore", "every COPY connection stopped")),
        _ = cancel.cancelled() => Err(Error::step("restore", "a COPY connection failed")),
    }
}

enum Failed {
    Error(Error),
    /// Another worker (or the reader) failed first.
    Cancelled,
}

type Copying = (usize, Pin<Box<CopyInSink<Bytes>>>);

/// One connection: COPY each batch it takes into its table, one COPY per run of batches of the
/// same table. Returns its client and the rows each of its COPYs loaded, by COPY index.
async fn worker(
    client: tokio_postgres::Client,
    rx: Arc<Mutex<mpsc::Receiver<Batch>>>,
    stmts: Arc<Vec<Copy>>,
    cancel: CancellationToken,
) -> std::result::Result<(tokio_postgres::Client, Vec<(usize, u64)>), Failed> {
    let r = async {
        let mut current: Option<Copying> = None;
        let mut done = Vec::new();
        let fail = |i: usize, e: tokio_postgres::Error| {
            Failed::Error(Error::step(
                "restore",
                format!(
                    "COPY into {} (the dump's data, loaded by drctl in pg_restore's place): {}",
                    stmts[i].name,
                    pg::describe(&e)
                ),
            ))
        };
        loop {
            let next = tokio::select! {
                b = async { rx.lock().await.recv().await } => b,
                _ = cancel.cancelled() => return Err(Failed::Cancelled),
            };
            let Some(batch) = next else { break };
            if current.as_ref().map(|c| c.0) != Some(batch.table) {
                if let Some((i, mut sink)) = current.take() {
                    done.push((i, sink.as_mut().finish().await.map_err(|e| fail(i, e))?));
                }
                let t = batch.table;
                let sink = client.copy_in(stmts[t].stmt.as_str()).await.map_err(|e| fail(t, e))?;
                current = Some((batch.table, Box::pin(sink)));
            }
            let (i, sink) = current.as_mut().expect("a COPY is open");
            let i = *i;
            tokio::select! {
                r = sink.send(batch.bytes) => r.map_err(|e| fail(i, e))?,
                _ = cancel.cancelled() => return Err(Failed::Cancelled),
            }
        }
        if let Some((i, mut sink)) = current.take() {
            done.push((i, sink.as_mut().finish().await.map_err(|e| fail(i, e))?));
        }
        Ok(done)
    }
    .await;
    match r {
        Ok(done) => Ok((client, done)),
        Err(e) => {
            // The others stop too; this connection closes with the client, rolling its COPY back.
            cancel.cancel();
            Err(e)
        }
    }
}

/// An archive stream read through a `StreamCounter`: what the reader gets is unchanged.
pub struct Counting<R> {
    inner: R,
    counter: Arc<std::sync::Mutex<StreamCounter>>,
}

impl<R> Counting<R> {
    pub fn new(inner: R) -> (Self, Arc<std::sync::Mutex<StreamCounter>>) {
        let counter = Arc::new(std::sync::Mutex::new(StreamCounter::default()));
        (Counting { inner, counter: counter.clone() }, counter)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &r {
            self.counter.lock().expect("counter").feed(&buf.filled()[before..]);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::super::demux::tests::int;
    use super::*;

    /// Two TABLE DATA blocks as pg_dump writes them: a row per chunk, then the `\.` chunk.
    fn blocks() -> Vec<u8> {
        let mut s = Vec::new();
        for (id, rows) in [(7, &[&b"1\ta\n"[..], b"2\tb\\nc\n", b"3\t\\.\n"][..]), (8, &[][..])] {
            s.push(1);
            s.extend(int(id));
            for row in rows.iter().copied().chain([&b"\\.\n\n\n"[..]]) {
                s.extend(int(row.len() as i64));
                s.extend_from_slice(row);
            }
            s.extend(int(0));
        }
        s
    }

    fn toc() -> Toc {
        let entry = |dump_id, tag: &str| Entry {
            dump_id,
            desc: "TABLE DATA".into(),
            section: toc::SECTION_DATA,
            namespace: Some("public".into()),
            tag: Some(tag.into()),
            defn: None,
            copy_stmt: Some(format!("COPY public.{tag} (a, b) FROM stdin;")),
            has_data: true,
        };
        Toc { len: 0, int_size: 4, entries: vec![entry(7, "t"), entry(8, "empty")], sequences: vec![] }
    }

    #[test]
    fn rows_are_counted_without_the_end_of_data_line_at_any_buffer_boundary() {
        let s = blocks();
        for size in 1..=s.len() {
            let mut c = RowCounter::new(4);
            for piece in s.chunks(size) {
                c.feed(piece).unwrap();
            }
            let counts = c.finish(&toc()).unwrap();
            let rows: Vec<(String, i64)> = counts.into_iter().map(|t| (t.table, t.rows)).collect();
            assert_eq!(rows, vec![("t".into(), 3), ("empty".into(), 0)], "pieces of {size} bytes");
        }
        // Cut inside a block: not a whole dump.
        let mut c = RowCounter::new(4);
        c.feed(&s[..s.len() - 3]).unwrap();
        assert!(c.finish(&toc()).is_err());
    }

    #[test]
    fn a_leaf_table_without_data_in_the_dump_is_an_error_not_zero() {
        let dumped = vec![TableCount { schema: "public".into(), table: "t".into(), rows: 3 }];
        let ok = snapshot_counts(&[("public".into(), "t".into())], &dumped).unwrap();
        assert_eq!(ok[0].rows, 3);
        let e = snapshot_counts(&[("public".into(), "gone".into())], &dumped).unwrap_err();
        assert!(e.contains("public.gone has no data"), "{e}");
    }

    #[test]
    fn only_table_data_and_sequence_values_are_loaded_by_drctl() {
        let mut t = toc();
        assert_eq!(serial_reason(&t), None);
        t.entries.push(Entry {
            dump_id: 9,
            desc: "BLOBS".into(),
            section: toc::SECTION_DATA,
            namespace: None,
            tag: Some("BLOBS".into()),
            defn: None,
            copy_stmt: None,
            has_data: true,
        });
        assert_eq!(serial_reason(&t).as_deref(), Some("the dump holds BLOBS entries"));
    }
}
