//! check: the first command after writing drctl.toml. Validates the config (already done by
//! loading it) and reaches every endpoint it names with the privileges the runbooks need.
//! Takes no lock; writes nothing but a probe object in the store, deleted again.
//!
//! Backups hold every row of production, so `check` also asks the store who else could read it
//! (`Store::audit`): `store-private` (a file store's modes; an S3 bucket's public-access block),
//! and for S3 `bucket-encryption` and `bucket-versioning`. They run after `store-writable`, whose
//! probe has by then created a missing file-store root the way every later write would.
//!
//! `wal-archiving` (runbooks/wal/archiving.rs) proves that a primary archiving through drctl
//! wal-push reaches this store: it switches the server to a new WAL segment and waits for the
//! old one in the store's WAL index.

use std::time::Duration;

use serde_json::{Value, json};

use super::backup::{quote_ident, store_writable};
use crate::clients::dns::{Dns, RecordSet, RecordType};
use crate::clients::rds::Rds;
use crate::clients::{pg, pgtools::PgTools};
use crate::config::{DnsConfig, EnvConfig};
use crate::ctx::Ctx;
use crate::engine::step::Check;
use crate::error::{Error, Result};
use crate::output::table::new_table;

pub async fn check(cx: &Ctx, env: Option<&str>) -> Result<(Value, String, Option<Error>)> {
    let envs: Vec<&EnvConfig> = match env {
        Some(e) => vec![cx.config.env(e)?],
        None => cx.config.environments.values().collect(),
    };
    let mut rows: Vec<(String, Check)> = Vec::new();
    rows.push((
        "config".into(),
        Check::pass(
            "config-valid",
            format!(
                "{} ({}), store {}",
                cx.config.file.display(),
                crate::output::table::count(cx.config.environments.len() as u64, "env"),
                cx.store.url()
            ),
        ),
    ));
    let mut store = store_writable(cx).await;
    if let Some(h) = crate::error::store_hint(cx.store.url(), &store.detail).filter(|_| !store.ok) {
        store.detail = format!("{}; {h}", store.detail);
    }
    rows.push(("store".into(), store));
    for f in cx.store.audit().await {
        rows.push(("store".into(), if f.ok { Check::pass(f.check, f.detail) } else { Check::fail(f.check, f.detail) }));
    }
    for e in envs {
        for c in check_env(cx, e).await {
            rows.push((e.name.clone(), c));
        }
    }
    if let Some(dns) = &cx.config.dns {
        rows.push(("dns".into(), dns_zone(cx, dns).await));
    }
    let ok = rows.iter().all(|(_, c)| c.ok);
    let mut t = new_table(&["target", "check", "ok", "detail"]);
    for (target, c) in &rows {
        t.add_row(vec![
            target.clone(),
            c.check.clone(),
            if c.ok { "ok".into() } else { "FAILED".into() },
            c.detail.clone(),
        ]);
    }
    let doc = json!({
        "ok": ok,
        "store": cx.store.url(),
        "checks": rows.iter().map(|(target, c)| json!({"target": target, "check": c.check, "ok": c.ok, "detail": c.detail, "accepted": false})).collect::<Vec<_>>(),
    });
    // `check` runs no steps, so nothing here is waived: the hint names no --accept.
    let err = (!ok).then(|| Error::Preflight {
        failed: rows.iter().filter(|(_, c)| !c.ok).map(|(t, c)| format!("{t} {}: {}", c.check, c.detail)).collect(),
        waivable: Vec::new(),
    });
    Ok((doc, format!("{t}\n"), err))
}

async fn check_env(cx: &Ctx, e: &EnvConfig) -> Vec<Check> {
    let url = &e.database_url;
    let mut out = Vec::new();
    match pg::connect(url).await {
        Err(err) => out.push(Check::fail("db-reachable", err.to_string())),
        Ok(client) => {
            let major = pg::server_major(&client).await.ok();
            out.push(Check::pass(
                "db-reachable",
                format!(
                    "PostgreSQL {} at {}/{}",
                    major.map(|m| m.to_string()).unwrap_or("?".into()),
                    url.addr(),
                    url.dbname
                ),
            ));
            // backup: pg_dump must read every table.
            let q = "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relkind IN ('r','p','v','m','S') AND n.nspname NOT IN ('pg_catalog','information_schema') \
                     AND n.nspname NOT LIKE 'pg_toast%' \
                     AND NOT has_table_privilege(c.oid, CASE WHEN c.relkind = 'S' THEN 'SELECT' ELSE 'SELECT' END) ORDER BY 1,2 LIMIT 5";
            out.push(match client.query(q, &[]).await {
                Ok(rows) if rows.is_empty() => Check::pass("can-dump", format!("{} can read every table", url.user)),
                Ok(rows) => Check::fail(
                    "can-dump",
                    format!(
                        "{} cannot read {} (pg_dump would fail): grant SELECT or use a role with pg_read_all_data",
                        url.user,
                        rows.iter()
                            .map(|r| format!("{}.{}", quote_ident(r.get(0)), quote_ident(r.get(1))))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                Err(err) => Check::fail("can-dump", err.to_string()),
            });
            if e.sync_from.is_some() {
                let q = "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user";
                out.push(match client.query_one(q, &[]).await.map(|r| r.get::<_, bool>(0)) {
                    Ok(true) => Check::pass(
                        "can-create-db",
                        format!("{} has CREATEDB (sync restores into a scratch database)", url.user),
                    ),
                    Ok(false) => Check::fail(
                        "can-create-db",
                        format!(
                            "{} lacks CREATEDB, which sync needs: ALTER ROLE {} CREATEDB",
                            url.user,
                            quote_ident(&url.user)
                        ),
                    ),
                    Err(err) => Check::fail("can-create-db", err.to_string()),
                });
            }
            let in_recovery = client.query_one("SELECT pg_is_in_recovery()", &[]).await.map(|r| r.get::<_, bool>(0));
            let replica = in_recovery.as_ref().is_ok_and(|r| *r);
            let promoted = cx.journal.state().await.map(|s| s.promoted.contains(&e.name)).unwrap_or(false);
            out.push(match (in_recovery, e.replica_of.is_some()) {
                (Ok(r), declared) if r == declared => {
                    Check::pass("declared-role", if r { "a replica, as declared" } else { "a primary, as declared" })
                }
                (Ok(false), true) if promoted => {
                    Check::pass("declared-role", "promoted: declared replica_of, and drctl promoted it (journaled)")
                }
                (Ok(r), _) => Check::fail(
                    "declared-role",
                    if r {
                        "the server is a replica but the env declares no replica_of".to_string()
                    } else {
                        "the env declares replica_of but the server is a primary".to_string()
                    },
                ),
                (Err(err), _) => Check::fail("declared-role", err.to_string()),
            });
            let tools = PgTools::new(e.pg_bin.as_deref());
            out.push(match (tools.major_version("pg_dump").await, major) {
                (Ok(d), Some(s)) if d >= s => Check::pass("pg-dump-version", format!("pg_dump {d} >= server {s}")),
                (Ok(d), Some(s)) => {
                    Check::fail("pg-dump-version", format!("pg_dump {d} is older than the server ({s}): set pg_bin"))
                }
                (Ok(d), None) => Check::pass("pg-dump-version", format!("pg_dump {d}")),
                (Err(err), _) => Check::fail("pg-dump-version", err.to_string()),
            });
            // Last: its round trip may wait for the archiver.
            out.push(super::wal::archiving::wal_archiving(cx, e, &client, replica).await);
        }
    }
    if let Some(h) = &e.health_url {
        out.push(health(h, cx.config.policy.health_timeout).await);
    }
    if let Some(id) = &e.rds_instance {
        out.push(match cx.rds_api().await.describe(id).await {
            Ok(Some(i)) => {
                Check::pass("rds-instance", format!("{id}: {}", if i.status.is_empty() { "?" } else { &i.status }))
            }
            Ok(None) => Check::fail("rds-instance", format!("{id}: DBInstanceNotFound: RDS has no such instance")),
            Err(err) => Check::fail("rds-instance", err.to_string()),
        });
    }
    out
}

/// `dns-zone`: the zone answers for `[dns].record`, read through the client dns-cutover and `live`
/// use. What the record holds is shown, not judged: a zone without the record yet passes.
async fn dns_zone(cx: &Ctx, dns: &DnsConfig) -> Check {
    let rtype = RecordType::parse(&dns.kind).unwrap_or(RecordType::Cname);
    match cx.dns_api().await.current(&dns.zone_id, &dns.record, rtype).await {
        Ok(current) => {
            let shown = RecordSet::shown(current.as_ref());
            Check::pass("dns-zone", format!("zone {} readable: {} {} -> {shown}", dns.zone_id, dns.kind, dns.record))
        }
        // Names the zone: `Route 53 zone Z1: reading app.example.com CNAME: NoSuchHostedZone: …`.
        Err(e) => Check::fail("dns-zone", e.to_string()),
    }
}

/// `healthy`: a 2xx answer within `timeout`.
pub async fn health(url: &url::Url, timeout: Duration) -> Check {
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => return Check::fail("health", e.to_string()),
    };
    match client.get(url.clone()).send().await {
        Ok(r) if r.status().is_success() => Check::pass("health", format!("{url}: {}", r.status())),
        Ok(r) => Check::fail("health", format!("{url}: {}", r.status())),
        Err(e) => Check::fail(
            "health",
            format!("{url}: {}", if e.is_timeout() { format!("no answer within {timeout:?}") } else { e.to_string() }),
        ),
    }
}
