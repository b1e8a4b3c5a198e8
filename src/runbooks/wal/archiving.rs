//! check's `wal-archiving`: does this env's server archive its WAL through drctl into this
//! store? Settings prove little (a typo in the path, a config file the server cannot read, AWS
//! credentials only the operator has), so for a primary whose archive_command runs drctl
//! wal-push it is proven by a round trip: a tiny write (so the segment is not empty: on an idle
//! segment `pg_switch_wal()` switches nothing), `pg_switch_wal()`, and a wait of at most
//! `WAIT` until that segment is listed in the store's WAL index.
//!
//! An env that does not archive at all is not a failure (`not archiving`, with the lines to add);
//! one that stopped archiving while the store holds its WAL is, as is archive_mode on with no
//! archive_command (WAL then piles up in pg_wal until the disk is full).

use std::time::{Duration, Instant};

use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::engine::step::Check;
use crate::wal::{WalFile, find_archived, recorded_system};

const ID: &str = "wal-archiving";
/// How long the archived segment may take to show in the index.
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

/// The two postgresql.conf lines that archive this env's WAL through this drctl and config.
fn settings(cx: &Ctx, env: &str) -> String {
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "/usr/bin/drctl".into());
    let file = std::fs::canonicalize(&cx.config.file).unwrap_or_else(|_| cx.config.file.clone());
    format!("archive_mode = on, archive_command = '{exe} -c {} wal-push --env {env} %p'", file.display())
}

/// The env an archive_command's drctl pushes to, when it names one (`--env E`, `--env=E`, `-e E`).
fn env_named(command: &str) -> Option<&str> {
    let words: Vec<&str> = command.split_whitespace().collect();
    words.iter().enumerate().find_map(|(i, w)| match *w {
        "--env" | "-e" => words.get(i + 1).copied(),
        w => w.strip_prefix("--env="),
    })
}

pub async fn wal_archiving(cx: &Ctx, e: &EnvConfig, client: &tokio_postgres::Client, in_recovery: bool) -> Check {
    let setting = |name: &'static str| async move {
        client
            .query_one("SELECT current_setting($1, true)", &[&name])
            .await
            .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
            .map_err(|err| format!("reading {name}: {}", crate::clients::pg::describe(&err)))
    };
    let (mode, command, library) = match (setting("archive_mode").await, setting("archive_command").await) {
        (Ok(m), Ok(c)) => (m, c, setting("archive_library").await.unwrap_or_default()),
        (Err(err), _) | (_, Err(err)) => return Check::fail(ID, err),
    };
    if mode == "off" {
        return match recorded_system(&*cx.store, &e.name).await {
            Ok(None) => Check::pass(
                ID,
                format!(
                    "not archiving (archive_mode = off); for pitr-restore, set {} and restart",
                    settings(cx, &e.name)
                ),
            ),
            Ok(Some(_)) => Check::fail(
                ID,
                format!(
                    "archive_mode is off, but the store holds WAL archived from this env (wal/{}/): recovery ends at \
                     the last file pushed; set {} and restart",
                    e.name,
                    settings(cx, &e.name)
                ),
            ),
            Err(err) => Check::fail(ID, format!("archive_mode is off; reading the store: {err}")),
        };
    }
    if !library.is_empty() {
        return Check::pass(ID, format!("archived by archive_library `{library}`, not drctl: not checked"));
    }
    if command.trim().is_empty() {
        return Check::fail(
            ID,
            format!(
                "archive_mode = {mode} with an empty archive_command: WAL stays in pg_wal until the disk is full; set {}",
                settings(cx, &e.name)
            ),
        );
    }
    if !(command.contains("drctl") && command.contains("wal-push")) {
        return Check::pass(ID, format!("archive_command `{command}` is not drctl wal-push: not checked"));
    }
    if let Some(other) = env_named(&command).filter(|n| *n != e.name) {
        return Check::fail(
            ID,
            format!(
                "archive_command `{command}` pushes to env `{other}`, not `{}`: set {}",
                e.name,
                settings(cx, &e.name)
            ),
        );
    }
    if in_recovery {
        return Check::pass(ID, format!("a replica (archive_mode = {mode}): archiving is checked on its primary"));
    }
    round_trip(cx, e, client, &command).await
}

/// Force a segment out and wait for its index line.
async fn round_trip(cx: &Ctx, e: &EnvConfig, client: &tokio_postgres::Client, command: &str) -> Check {
    let user = &e.database_url.user;
    // A commit record: the current segment then holds something, so the switch happens.
    if let Err(err) = client.query_one("SELECT txid_current()", &[]).await {
        return Check::fail(ID, format!("writing a commit record: {}", crate::clients::pg::describe(&err)));
    }
    let name: String = match client.query_one("SELECT pg_walfile_name(pg_switch_wal())", &[]).await {
        Ok(r) => r.get(0),
        Err(err) => {
            return Check::fail(
                ID,
                format!(
                    "pg_switch_wal(): {}; to let check prove archiving, GRANT EXECUTE ON FUNCTION pg_switch_wal() TO {}",
                    crate::clients::pg::describe(&err),
                    crate::runbooks::backup::quote_ident(user)
                ),
            );
        }
    };
    let Some(f) = WalFile::parse(&name) else {
        return Check::fail(ID, format!("pg_switch_wal() named `{name}`, not a segment"));
    };
    let started = Instant::now();
    let mut last_err = None;
    while started.elapsed() < WAIT {
        match recorded_system(&*cx.store, &e.name).await {
            Ok(Some(sysid)) => match find_archived(&*cx.store, &e.name, sysid, &f).await {
                Ok(Some(a)) => {
                    return Check::pass(
                        ID,
                        format!(
                            "{name} archived in {:.1} s through drctl wal-push ({} bytes, {} stored, sha256 {}…)",
                            started.elapsed().as_secs_f64(),
                            a.bytes,
                            a.stored_bytes,
                            &a.sha256[..a.sha256.len().min(12)]
                        ),
                    );
                }
                Ok(None) => {}
                Err(err) => last_err = Some(err.to_string()),
            },
            Ok(None) => {}
            Err(err) => last_err = Some(err.to_string()),
        }
        tokio::time::sleep(POLL).await;
    }
    let archiver = client
        .query_one(
            "SELECT coalesce(last_archived_wal, '-'), coalesce(last_failed_wal, '-'), failed_count, \
             coalesce(to_char(last_failed_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '-') FROM pg_stat_archiver",
            &[],
        )
        .await
        .map(|r| {
            format!(
                "pg_stat_archiver: last archived {}, last failed {} at {} ({} failures)",
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(3),
                r.get::<_, i64>(2)
            )
        })
        .unwrap_or_else(|err| format!("pg_stat_archiver: {}", crate::clients::pg::describe(&err)));
    let store = last_err.map(|e| format!("; reading the store: {e}")).unwrap_or_default();
    Check::fail(
        ID,
        format!(
            "{name} was switched out but is not in this store's WAL index after {} s ({archiver}{store}); \
             archive_command is `{command}`: the server log has wal-push's error",
            WAIT.as_secs()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_env_an_archive_command_names() {
        assert_eq!(env_named("/usr/bin/drctl -c /etc/drctl/drctl.toml wal-push --env prod %p"), Some("prod"));
        assert_eq!(env_named("drctl wal-push --env=stg %p"), Some("stg"));
        assert_eq!(env_named("drctl -e qa wal-push %p"), Some("qa"));
        assert_eq!(env_named("drctl wal-push %p"), None);
    }
}
