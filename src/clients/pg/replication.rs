//! The PostgreSQL side of replication, in one place for every runbook that asks: a server's role,
//! how far behind a replica is, the fence promote-replica puts on an old primary (and rollback
//! lifts), the promotion itself and the proof that a server accepts writes.
//!
//! LSNs travel as text (`0/3000148`): tokio-postgres has no `pg_lsn` type, and the server does the
//! arithmetic (`pg_wal_lsn_diff`), so no LSN is ever parsed here.

use tokio_postgres::{Client, Error};

/// `pg_is_in_recovery()`: a replica (or a server still replaying) answers true.
pub async fn in_recovery(c: &Client) -> Result<bool, Error> {
    Ok(c.query_one("SELECT pg_is_in_recovery()", &[]).await?.get(0))
}

/// How far a replica has replayed; `None` on a server that never was one.
pub async fn replay_lsn(c: &Client) -> Result<Option<String>, Error> {
    Ok(c.query_one("SELECT pg_last_wal_replay_lsn()::text", &[]).await?.get(0))
}

/// Where a primary's WAL ends now.
pub async fn current_lsn(c: &Client) -> Result<String, Error> {
    Ok(c.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?.get(0))
}

/// `a - b` in bytes, computed by the server `c` is connected to.
pub async fn lsn_diff(c: &Client, a: &str, b: &str) -> Result<i64, Error> {
    Ok(c.query_one("SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)::bigint", &[&a, &b]).await?.get(0))
}

/// Whether the server is in recovery, and replication lag in bytes: the largest replay lag among
/// a primary's streaming replicas (none: null), or a replica's received-but-not-replayed WAL.
pub async fn role_and_lag(c: &Client) -> Result<(bool, Option<i64>), Error> {
    if in_recovery(c).await? {
        let lag: Option<i64> = c
            .query_one("SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint", &[])
            .await?
            .get(0);
        Ok((true, lag))
    } else {
        let lag: Option<i64> = c
            .query_one(
                "SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn))::bigint FROM pg_stat_replication",
                &[],
            )
            .await?
            .get(0);
        Ok((false, lag))
    }
}

/// `ALTER DATABASE` needs the name as an identifier: the server quotes it (`quote_ident`), so
/// whatever the name holds it is never read as SQL.
async fn ident(c: &Client, db: &str) -> Result<String, Error> {
    Ok(c.query_one("SELECT quote_ident($1)", &[&db]).await?.get(0))
}

/// The fence: no new connection to `db`, then every session in it ended, so nothing more is
/// written there. Run from another database of the server (its maintenance_db). Returns how many
/// sessions were ended. A catalog change: on a primary it replicates to its replicas too.
pub async fn fence(c: &Client, db: &str) -> Result<i64, Error> {
    let name = ident(c, db).await?;
    c.batch_execute(&format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")).await?;
    Ok(c.query_one(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
        &[&db],
    )
    .await?
    .get(0))
}

/// Lift the fence: connections to `db` allowed again.
pub async fn unfence(c: &Client, db: &str) -> Result<(), Error> {
    let name = ident(c, db).await?;
    c.batch_execute(&format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")).await
}

/// Whether `db` accepts connections (`pg_database.datallowconn`); `None` when there is no such db.
pub async fn allows_connections(c: &Client, db: &str) -> Result<Option<bool>, Error> {
    Ok(c.query_opt("SELECT datallowconn FROM pg_database WHERE datname = $1", &[&db]).await?.map(|r| r.get(0)))
}

/// `pg_promote(wait => true)`: false when the promotion did not finish within `wait_seconds`.
pub async fn promote(c: &Client, wait_seconds: i32) -> Result<bool, Error> {
    Ok(c.query_one("SELECT pg_promote(true, $1)", &[&wait_seconds]).await?.get(0))
}

/// Proof that the database `c` is connected to accepts a write: a temp table written in a
/// transaction that is rolled back, so nothing stays behind.
pub async fn write_probe(c: &Client) -> Result<(), Error> {
    c.batch_execute("BEGIN; CREATE TEMP TABLE drctl_probe (x int); INSERT INTO drctl_probe VALUES (1); ROLLBACK").await
}

/// Rows inserted, updated and deleted per user table since the server's statistics began, keyed
/// `schema.table`: what rollback compares with the figures journaled at the cutover. (The server
/// publishes a session's counts when its transaction ends, at most once a second, and a pooled
/// session's within a minute at the latest.)
pub async fn table_counters(c: &Client) -> Result<Vec<(String, i64, i64, i64)>, Error> {
    let rows = c
        .query(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(relname), n_tup_ins, n_tup_upd, n_tup_del \
             FROM pg_stat_user_tables ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
}

/// When the last transaction a replica replayed was committed (RFC 3339 UTC) and how many seconds
/// ago, by the server's clock; it stays put after a promotion. None when it replayed none.
pub async fn last_replayed(c: &Client) -> Result<Option<(String, i64)>, Error> {
    let r = c
        .query_one(
            "SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
                    extract(epoch FROM now() - t)::bigint \
             FROM (SELECT pg_last_xact_replay_timestamp() AS t) x",
            &[],
        )
        .await?;
    let (t, age): (Option<String>, Option<i64>) = (r.get(0), r.get(1));
    Ok(t.zip(age))
}
