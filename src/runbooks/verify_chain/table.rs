//! `verify-chain --env ENV --table T`: verify an application's hash-chained table at the speed of
//! reading it, and hold it to the heads recorded by earlier runs (anchors).
//!
//! Replaces the application's own replay tool (about 100 events per second). The table is read with
//! COPY BINARY, several ranges of an integer order column at once over separate connections that
//! share one exported snapshot, so the ranges are one consistent view of a table that is still
//! being appended to. Each range is checked as it streams (`scan::RangeScan`), and the links where
//! ranges meet are checked afterwards. Memory is a few rows per connection whatever the table size.
//!
//! A self-consistent chain cannot show that its tail was cut off or that the whole history was
//! rewritten, so every successful run journals the head (`chain-anchor`: order value, hash,
//! count) and every run first checks that each recorded head still exists with the same hash.

use std::time::Instant;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_postgres::Client;

use super::scan::{self, Bad, CopyParser, Edge, Key, Kind, RangeScan, Rule};
use crate::cli::{ByteaHash, Genesis, VerifyChainArgs};
use crate::clients::pg;
use crate::config::{ChainConfig, EnvConfig};
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::journal::{self, fold::State};

/// The journal event of an anchor.
pub const ANCHOR_EVENT: &str = "chain-anchor";

/// Below this many rows (estimated), one connection is faster than several.
const PARALLEL_MIN_ROWS: f64 = 50_000.0;

/// One table's settings: the contract's defaults, then drctl.toml, then flags.
#[derive(Debug, Clone)]
pub struct Spec {
    pub table: String,
    pub order_by: String,
    pub hash_column: String,
    pub prev_column: String,
    pub content: String,
    pub genesis: Genesis,
    pub bytea_hash: ByteaHash,
    pub dense: bool,
    pub all_errors: bool,
    pub since_anchor: bool,
    pub jobs: usize,
    /// An empty table passes; otherwise it is exit 3 (a wrong table name or an emptied one).
    pub allow_empty: bool,
}

impl Spec {
    /// `config` was validated when drctl.toml loaded, so its values parse.
    pub fn new(table: &str, config: Option<&ChainConfig>, a: &VerifyChainArgs) -> Spec {
        let pick = |flag: &Option<String>, conf: Option<&String>, default: &str| {
            flag.clone().or_else(|| conf.cloned()).unwrap_or_else(|| default.to_string())
        };
        let c = config.cloned().unwrap_or(ChainConfig {
            order_by: None,
            hash_column: None,
            prev_column: None,
            content: None,
            genesis: None,
            bytea_hash: None,
            allow_empty: None,
        });
        Spec {
            table: table.to_string(),
            order_by: pick(&a.order_by, c.order_by.as_ref(), "id"),
            hash_column: pick(&a.hash_column, c.hash_column.as_ref(), "hash"),
            prev_column: pick(&a.prev_column, c.prev_column.as_ref(), "prev_hash"),
            content: pick(&a.content, c.content.as_ref(), "payload::text"),
            genesis: a.genesis.unwrap_or(match c.genesis.as_deref() {
                Some("null") => Genesis::Null,
                Some("empty") => Genesis::Empty,
                _ => Genesis::Zeros,
            }),
            bytea_hash: a.bytea_hash.unwrap_or(match c.bytea_hash.as_deref() {
                Some("raw") => ByteaHash::Raw,
                _ => ByteaHash::Hex,
            }),
            dense: a.dense,
            all_errors: a.all_errors,
            since_anchor: a.since_anchor,
            jobs: a.jobs.map_or(4, usize::from),
            allow_empty: a.allow_empty || c.allow_empty.unwrap_or(false),
        }
    }
}

/// One anchor as journaled (folded into the journal's state).
pub use crate::journal::fold::Anchor;

/// A table's verdict.
#[derive(Debug)]
pub struct TableResult {
    pub chain: String,
    pub entries: u64,
    pub errors: Vec<Bad>,
    pub elapsed_s: f64,
    /// The head to anchor: (key, canonical hash, count); `None` when empty or broken.
    pub head: Option<(Key, String, u64)>,
    pub anchors_checked: usize,
}

/// The table and its columns, as the server knows them.
struct Resolved {
    /// `to_regclass(T)::text`: quoted as the server quotes it.
    table: String,
    order: String,
    order_type: String,
    int_key: bool,
    order_nullable: bool,
    prev: String,
    hash: String,
    rule: Rule,
    estimate: f64,
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn db_err(env: &EnvConfig, what: &str, e: &tokio_postgres::Error) -> Error {
    Error::Db {
        target: format!("{}/{} ({what})", env.database_url.addr(), env.database_url.dbname),
        problem: pg::describe(e),
    }
}

async fn resolve(client: &Client, env: &EnvConfig, s: &Spec) -> Result<Resolved> {
    let missing = |what: String| {
        Error::usage(what).with_hint(format!(
            "check --table and the column flags (or [environments.{}.chains.{}] in drctl.toml)",
            env.name, s.table
        ))
    };
    let row = client.query_one("SELECT to_regclass($1)::text, to_regclass($1)::oid::int8", &[&s.table]).await;
    let (table, oid): (Option<String>, Option<i64>) = match row {
        Ok(r) => (r.get(0), r.get(1)),
        Err(e) if e.as_db_error().is_some() => {
            return Err(missing(format!("`{}` is not a table name: {}", s.table, pg::describe(&e))));
        }
        Err(e) => return Err(db_err(env, "resolve table", &e)),
    };
    let (Some(table), Some(oid)) = (table, oid) else {
        return Err(missing(format!(
            "table `{}` does not exist in env {} (database {})",
            s.table, env.name, env.database_url.dbname
        )));
    };
    let cols = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod), atttypid::regtype::text, NOT attnotnull \
             FROM pg_attribute WHERE attrelid = $1::int8::oid AND attnum > 0 AND NOT attisdropped",
            &[&oid],
        )
        .await
        .map_err(|e| db_err(env, "read columns", &e))?;
    let col = |name: &str, flag: &str| -> Result<(String, String, bool)> {
        cols.iter()
            .find(|r| r.get::<_, String>(0) == name)
            .map(|r| (r.get::<_, String>(1), r.get::<_, String>(2), r.get::<_, bool>(3)))
            .ok_or_else(|| missing(format!("table {table} has no column `{name}` ({flag})")))
    };
    let (order_type, order_base, order_nullable) = col(&s.order_by, "--order-by")?;
    let int_key = matches!(order_base.as_str(), "smallint" | "integer" | "bigint");
    if s.dense && !int_key {
        return Err(missing(format!("--dense needs an integer order column; {table}.{} is {order_type}", s.order_by)));
    }
    let kind = |name: &str, flag: &str| -> Result<Kind> {
        let (t, base, _) = col(name, flag)?;
        match base.as_str() {
            "bytea" => Ok(Kind::Bytea),
            "text" | "character varying" | "character" => Ok(Kind::Text),
            _ => Err(missing(format!("{table}.{name} ({flag}) is {t}; a hash column is text (hex) or bytea"))),
        }
    };
    let prev_kind = kind(&s.prev_column, "--prev-column")?;
    let hash_kind = kind(&s.hash_column, "--hash-column")?;
    let probe = format!("SELECT ({})::text FROM {table} LIMIT 0", s.content);
    if let Err(e) = client.prepare(&probe).await {
        return Err(missing(format!("--content `{}` does not work on {table}: {}", s.content, pg::describe(&e))));
    }
    let estimate: f32 = client
        .query_one("SELECT reltuples FROM pg_class WHERE oid = $1::int8::oid", &[&oid])
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1.0);
    Ok(Resolved {
        table,
        order: quote_ident(&s.order_by),
        order_type,
        int_key,
        order_nullable,
        prev: quote_ident(&s.prev_column),
        hash: quote_ident(&s.hash_column),
        rule: Rule {
            int_key,
            prev: prev_kind,
            hash: hash_kind,
            bytea_hash: s.bytea_hash,
            dense: s.dense,
            all_errors: s.all_errors,
        },
        estimate: f64::from(estimate),
    })
}

/// Every anchor's row must still exist with its hash. One query, by the order column's index.
async fn check_anchors(client: &Client, env: &EnvConfig, r: &Resolved, anchors: &[Anchor]) -> Result<Vec<Bad>> {
    if anchors.is_empty() {
        return Ok(Vec::new());
    }
    let mut keys: Vec<&str> = anchors.iter().map(|a| a.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let hash_text = match r.rule.hash {
        Kind::Bytea => format!("encode({}, 'hex')", r.hash),
        Kind::Text => format!("{}::text", r.hash),
    };
    let sql = format!(
        "SELECT {o}::text, {hash_text} FROM {t} WHERE {o} = ANY($1::text[]::{ty}[])",
        o = r.order,
        t = r.table,
        ty = r.order_type
    );
    let rows = client.query(&sql, &[&keys]).await.map_err(|e| db_err(env, "check anchors", &e))?;
    let found: Vec<(String, Option<String>)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let mut bad = Vec::new();
    for a in anchors {
        let here: Vec<&Option<String>> = found.iter().filter(|(k, _)| *k == a.key).map(|(_, h)| h).collect();
        let what = format!(
            "the head anchored at journal seq {} ({}, hash {})",
            a.seq,
            crate::output::table::count(a.count, "entry"),
            scan::short(Some(a.hash.as_bytes()))
        );
        let reason = if here.is_empty() {
            Some(format!("anchor_missing: {what} no longer exists: the chain was truncated"))
        } else if !here.iter().any(|h| h.as_deref() == Some(a.hash.as_str())) {
            let now = here[0].as_deref().map(str::as_bytes);
            Some(format!(
                "anchor_mismatch: {what} now has hash {}: the history up to it was rewritten",
                scan::short(now)
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            let key = match a.key.parse::<i64>() {
                Ok(i) if r.int_key => Key::Int(i),
                _ => Key::Text(a.key.clone()),
            };
            bad.push(Bad { index: a.count.saturating_sub(1), key, reason });
        }
    }
    Ok(bad)
}

/// One range of the scan: `None` bounds are open.
#[derive(Debug, Clone, Copy)]
struct Range {
    after: Option<i64>,
    upto: Option<i64>,
}

/// Verify one table; `state` is the journal's (for its anchors).
pub async fn verify(cx: &Ctx, env: &EnvConfig, s: &Spec, state: &State) -> Result<TableResult> {
    let t0 = Instant::now();
    let client = pg::connect(&env.database_url).await?;
    let r = resolve(&client, env, s).await?;
    // One snapshot for the anchor check and every range, held by this transaction until the end.
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| db_err(env, "begin", &e))?;
    let all_anchors = state.anchors(&env.name, &s.table).to_vec();
    let mut errors = check_anchors(&client, env, &r, &all_anchors).await?;
    let anchors_checked = all_anchors.len();

    // Where the scan starts: the genesis, or after the newest anchor.
    let newest = all_anchors.last().filter(|_| s.since_anchor);
    if s.since_anchor && newest.is_none() {
        cx.out.info(&format!("{}: no anchor yet, verifying the whole chain", s.table));
    }
    let start_index = newest.map_or(0, |a| a.count);
    let start_edge: Option<Edge> = newest.map(|a| Edge {
        key: match a.key.parse::<i64>() {
            Ok(i) if r.int_key => Key::Int(i),
            _ => Key::Text(a.key.clone()),
        },
        link: Some(a.hash.clone().into_bytes()),
    });
    let after_text: Option<String> = match newest {
        None => None,
        Some(a) if r.int_key => Some(a.key.parse::<i64>().map(|i| i.to_string()).map_err(|_| {
            Error::integrity(
                &s.table,
                format!("anchor seq {}", a.seq),
                format!("anchored key `{}` is not an integer", a.key),
            )
        })?),
        Some(a) => {
            let q: String = client
                .query_one("SELECT quote_literal($1::text)", &[&a.key])
                .await
                .map_err(|e| db_err(env, "quote", &e))?
                .get(0);
            Some(format!("{q}::{}", r.order_type))
        }
    };

    let ranges = plan_ranges(&client, env, &r, s, after_text.as_deref()).await?;
    // Range bounds never match NULL; one unbounded scan meets such rows at the end (ORDER BY puts
    // NULLs last) and reports them itself.
    let null_keys = if ranges.len() > 1 && r.order_nullable {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {} WHERE {} IS NULL)", r.table, r.order);
        client.query_one(&sql, &[]).await.map_err(|e| db_err(env, "null keys", &e))?.get::<_, bool>(0)
    } else {
        false
    };
    let snapshot: Option<String> = if ranges.len() > 1 {
        match client.query_one("SELECT pg_export_snapshot()", &[]).await {
            Ok(row) => Some(row.get(0)),
            Err(e) => return Err(db_err(env, "export snapshot", &e)),
        }
    } else {
        None
    };

    let progress = cx.out.progress(
        &format!("verifying {}", s.table),
        (r.estimate > 0.0 && newest.is_none()).then_some(r.estimate as u64),
        false,
    );
    let mut set = JoinSet::new();
    for (i, range) in ranges.iter().enumerate() {
        let sql = copy_sql(&r, s, *range, if range.after.is_none() { after_text.as_deref() } else { None });
        let url = env.database_url.clone();
        let (snapshot, progress, rule, env) = (snapshot.clone(), progress.clone(), r.rule, env.clone());
        set.spawn(async move {
            let client = pg::connect(&url).await?;
            if let Some(id) = &snapshot {
                client
                    .batch_execute(&format!(
                        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{id}'"
                    ))
                    .await
                    .map_err(|e| db_err(&env, "import snapshot", &e))?;
            }
            let scan = scan_range(&client, &env, &sql, rule, &progress).await?;
            Ok::<_, Error>((i, scan))
        });
    }
    let mut scans: Vec<Option<RangeScan>> = (0..ranges.len()).map(|_| None).collect();
    loop {
        let next = tokio::select! {
            n = set.join_next() => n,
            _ = cx.cancel.cancelled() => {
                return Err(Error::Interrupted { signal: cx.interrupted_by().unwrap_or(libc::SIGTERM) });
            }
        };
        let Some(joined) = next else { break };
        let (i, scan) = joined.map_err(|e| Error::step("verify-chain", format!("a range worker died: {e}")))??;
        scans[i] = Some(scan);
    }
    progress.finish();
    let _ = client.batch_execute("COMMIT").await;

    // Stitch the ranges: each one's first row links to the last row before it.
    let mut before: Option<Edge> = start_edge;
    let mut offset = start_index;
    let mut entries_read = 0u64;
    let mut complete = true;
    let mut head = None;
    for scan in scans.into_iter().flatten() {
        entries_read += scan.count;
        if !complete {
            // An earlier range stopped at its first error: positions here are unknown, and only
            // the first error is reported anyway.
            continue;
        }
        let mut range_errors = scan.errors.clone();
        if let Some(first) = &scan.first {
            let problem = match &before {
                Some(b) => scan::link_problem(s.dense, b, first),
                None => (first.link != scan::genesis_link(s.genesis)).then(|| {
                    format!(
                        "prev_mismatch: the first row's prev_hash is {}, not the genesis value ({}): rows \
                         before it were deleted, or --genesis is wrong",
                        scan::short(first.link.as_deref()),
                        scan::short(scan::genesis_link(s.genesis).as_deref())
                    )
                }),
            };
            if let Some(reason) = problem {
                // One entry per row: the link is checked before the row's own hash.
                range_errors.retain(|b| b.index != 0);
                range_errors.insert(0, Bad { index: 0, key: first.key.clone(), reason });
            }
        }
        errors.extend(range_errors.into_iter().map(|b| Bad { index: b.index + offset, ..b }));
        if scan.stopped {
            complete = false;
        }
        offset += scan.count;
        if let Some(last) = scan.last() {
            head = Some(last.clone());
            before = Some(last);
        }
    }
    if null_keys && complete {
        errors.push(Bad {
            index: offset,
            key: Key::Null,
            reason: "null_key: rows with a NULL order value have no place in the chain".into(),
        });
    }
    errors.sort_by_key(|b| b.index);
    if !s.all_errors {
        errors.truncate(1);
    }
    let head = match (&head, errors.is_empty()) {
        (Some(h), true) => {
            Some((h.key.clone(), String::from_utf8_lossy(h.link.as_deref().unwrap_or_default()).into_owned(), offset))
        }
        _ => None,
    };
    Ok(TableResult {
        chain: s.table.clone(),
        entries: entries_read,
        errors,
        elapsed_s: t0.elapsed().as_secs_f64(),
        head,
        anchors_checked,
    })
}

/// Split an integer order column into `jobs` ranges of equal width (open at both ends, so rows
/// outside [min, max] cannot be missed); anything else is one range.
async fn plan_ranges(
    client: &Client,
    env: &EnvConfig,
    r: &Resolved,
    s: &Spec,
    after: Option<&str>,
) -> Result<Vec<Range>> {
    let one = vec![Range { after: None, upto: None }];
    // reltuples is -1 until the table is first analyzed: then the key span decides.
    if !r.int_key || s.jobs < 2 || (0.0..PARALLEL_MIN_ROWS).contains(&r.estimate) {
        return Ok(one);
    }
    let filter = after.map(|a| format!(" WHERE {} > {a}", r.order)).unwrap_or_default();
    let sql = format!("SELECT min({o})::int8, max({o})::int8 FROM {t}{filter}", o = r.order, t = r.table);
    let row = client.query_one(&sql, &[]).await.map_err(|e| db_err(env, "min/max", &e))?;
    let (Some(lo), Some(hi)): (Option<i64>, Option<i64>) = (row.get(0), row.get(1)) else {
        return Ok(one);
    };
    let width = (i128::from(hi) - i128::from(lo) + 1) / s.jobs as i128;
    if width * (s.jobs as i128) < PARALLEL_MIN_ROWS as i128 {
        return Ok(one);
    }
    let mut ranges = Vec::with_capacity(s.jobs);
    let mut prev: Option<i64> = None;
    for i in 1..s.jobs {
        let cut = (i128::from(lo) + width * i as i128 - 1) as i64;
        ranges.push(Range { after: prev, upto: Some(cut) });
        prev = Some(cut);
    }
    ranges.push(Range { after: prev, upto: None });
    Ok(ranges)
}

fn copy_sql(r: &Resolved, s: &Spec, range: Range, after_anchor: Option<&str>) -> String {
    let key = if r.int_key { format!("{}::int8", r.order) } else { format!("{}::text", r.order) };
    let mut conds = Vec::new();
    if let Some(a) = after_anchor {
        conds.push(format!("{} > {a}", r.order));
    }
    if let Some(a) = range.after {
        conds.push(format!("{} > {a}", r.order));
    }
    if let Some(u) = range.upto {
        conds.push(format!("{} <= {u}", r.order));
    }
    let filter = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
    format!(
        "COPY (SELECT {key}, {p}, {h}, ({c})::text FROM {t}{filter} ORDER BY {o}) TO STDOUT (FORMAT binary)",
        p = r.prev,
        h = r.hash,
        c = s.content,
        t = r.table,
        o = r.order
    )
}

/// Stream one range through the rule. The connection task reads the socket while this one hashes.
async fn scan_range(
    client: &Client,
    env: &EnvConfig,
    sql: &str,
    rule: Rule,
    progress: &crate::output::progress::Progress,
) -> Result<RangeScan> {
    let stream = client.copy_out(sql).await.map_err(|e| db_err(env, "COPY", &e))?;
    let mut stream = std::pin::pin!(stream);
    let mut scan = RangeScan::new(rule);
    let mut parser = CopyParser::default();
    let mut reported = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| db_err(env, "COPY", &e))?;
        let go_on = parser.feed(&chunk, &mut |row| scan.row(row)).map_err(|p| Error::Db {
            target: format!("{}/{}", env.database_url.addr(), env.database_url.dbname),
            problem: p,
        })?;
        if scan.count - reported >= 8192 {
            progress.inc(scan.count - reported);
            reported = scan.count;
        }
        if !go_on {
            break;
        }
    }
    progress.inc(scan.count - reported);
    Ok(scan)
}

impl TableResult {
    /// No row read, no anchor to hold it to, nothing wrong: the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries == 0 && self.anchors_checked == 0 && self.errors.is_empty()
    }

    pub fn json(&self) -> Value {
        let first = self.errors.first();
        let eps = if self.elapsed_s > 0.0 { (self.entries as f64 / self.elapsed_s) as u64 } else { self.entries };
        json!({
            "chain": self.chain,
            "entries": self.entries,
            "ok": self.errors.is_empty(),
            "first_bad_index": first.map(|b| b.index),
            "first_bad_key": first.map(|b| b.key.to_string()),
            "reason": first.map(|b| b.reason.clone()),
            "errors": self.errors.iter().map(|b| json!({"index": b.index, "key": b.key.to_string(), "reason": b.reason})).collect::<Vec<_>>(),
            "entries_per_second": eps,
            "anchors_checked": self.anchors_checked,
            "head": self.head.as_ref().map(|(k, h, n)| json!({"key": k.to_string(), "hash": h, "count": n})),
        })
    }
}

/// Journal the verified head, unless the newest anchor already says the same.
pub async fn record_anchor(cx: &Ctx, env: &str, res: &TableResult, state: &State) -> Result<bool> {
    let Some((key, hash, count)) = &res.head else { return Ok(false) };
    let key = key.to_string();
    // An unchanged head needs no new anchor: hourly cron on a quiet table would otherwise grow the
    // journal (and every later anchor check) for nothing.
    if state.anchors(env, &res.chain).last().is_some_and(|a| a.key == key && a.hash == *hash && a.count == *count) {
        return Ok(false);
    }
    cx.journal
        .append(journal::NewEntry {
            run_id: cx.run_id.clone(),
            runbook: "verify-chain".into(),
            env: Some(env.to_string()),
            event: ANCHOR_EVENT.into(),
            fences: Default::default(),
            details: json!({"chain": res.chain, "key": key, "hash": hash, "count": count}),
        })
        .await?;
    Ok(true)
}
