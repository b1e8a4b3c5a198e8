//! sync's parallel load: a table of millions of rows loaded on several connections at once arrives
//! identical, and so do tables without a primary key or with a text key; one connection failing
//! stops the run with the target untouched; the stored audit copy restores by hand.

use std::time::Duration;

use crate::backup::sh_env;
use crate::harness::pg::Cluster;
use crate::harness::{unique_name, wait_until};
use crate::sync::{checked, databases_like, dump_objects, fingerprint, pair};

fn pg() -> &'static Cluster {
    Cluster::shared()
}

/// Row count and an order-independent checksum of every row's text (a multiset hash: a row
/// missing, doubled or changed shows), cheap enough for millions of rows.
fn checksum(db: &str, table: &str) -> String {
    pg().psql(db, &format!("SELECT count(*) || ':' || coalesce(sum(hashtext(x::text)::bigint), 0) FROM {table} x"))
}

fn checksums(db: &str) -> Vec<String> {
    ["big", "nokey", "textkey"].iter().map(|t| format!("{t}={}", checksum(db, t))).collect()
}

fn sync_jobs(p: &crate::sync::Pair, jobs: &str) -> crate::harness::drctl::Drctl {
    crate::sync::drctl(&p.config).args(["sync", "--from", "prod", "--to", "staging", "--jobs", jobs, "-o", "json"])
}

#[test]
fn a_large_table_loads_on_several_connections_and_a_failed_one_stops_the_run() {
    let p = pair("sync_par", "sync_from = \"prod\"", "");
    pg().psql(
        &p.from,
        "CREATE TABLE big (id bigint PRIMARY KEY, v text, n int);
         INSERT INTO big SELECT g, 'row ' || g, g % 1000 FROM generate_series(1, 3000000) g;
         CREATE INDEX big_n ON big (n);
         CREATE TABLE nokey (a int, b text);
         INSERT INTO nokey SELECT g % 500, CASE WHEN g % 7 = 0 THEN E'tab\\there\\nnewline' ELSE 'dup' END
           FROM generate_series(1, 200000) g;
         CREATE TABLE textkey (k text PRIMARY KEY, amount numeric, big_id bigint REFERENCES big (id));
         INSERT INTO textkey SELECT md5(g::text), g / 3.0, g FROM generate_series(1, 100000) g;",
    );
    let before = fingerprint(&p.to);
    let scratch = format!("{}__drctl_new", p.to);

    // One of the COPY connections is ended by the server mid-load (as an admin or a crash would):
    // the run fails, the other connections stop, the target is untouched and the copy dropped.
    let child = sync_jobs(&p, "3").spawn();
    let copying = format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = '{scratch}' AND query LIKE 'COPY public.big %' LIMIT 1"
    );
    let mut victim = String::new();
    let caught = wait_until(Duration::from_secs(120), || {
        victim = pg().try_psql("postgres", &copying).unwrap_or_default().trim().to_string();
        !victim.is_empty()
    });
    assert!(caught, "no COPY into big was seen on {scratch}");
    pg().psql("postgres", &format!("SELECT pg_terminate_backend({victim})"));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("COPY into public.big"), "the failed connection's own error is reported: {stderr}");
    assert_eq!(fingerprint(&p.to), before);
    assert_eq!(databases_like(&p.to), p.to, "the scratch copy is dropped after a failure");
    assert!(
        wait_until(Duration::from_secs(20), || {
            pg().psql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{scratch}'")).trim()
                == "0"
        }),
        "no connection keeps loading once the run failed"
    );

    // The rerun loads every table identically, the big one on several connections.
    let r = checked(sync_jobs(&p, "3").run().expect_code(0));
    let doc = r.json();
    assert_eq!(checksums(&p.to), checksums(&p.from));
    let copies: i64 = pg().psql(&p.to, "SELECT count(DISTINCT xmin::text) FROM big").trim().parse().unwrap();
    assert!(copies >= 2, "big was loaded by {copies} COPY transaction(s), expected one per connection");
    // Indexes and constraints were built after the data (pg_restore --jobs), and hold.
    let indexes = pg().psql(
        &p.to,
        "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename IN ('big', 'textkey')",
    );
    assert_eq!(indexes, "big_n,big_pkey,textkey_pkey");
    let fk =
        pg().psql(&p.to, "SELECT count(*) FROM pg_constraint WHERE conname = 'textkey_big_id_fkey' AND convalidated");
    assert_eq!(fk, "1");

    // The audit copy is a backup of prod that restores by hand: cat | zstd -dc | pg_restore.
    let id = doc["backup_id"].as_str().unwrap().to_string();
    let objects = dump_objects(&p, &id);
    let restored = unique_name("sync_par_hand");
    pg().create_db(&restored);
    let cat = objects.iter().map(|o| o.display().to_string()).collect::<Vec<_>>().join(" ");
    sh_env(
        &format!(
            "cat {cat} | zstd -dc | pg_restore --no-owner -d 'postgres://postgres@127.0.0.1:{}/{restored}'",
            pg().port
        ),
        &[("PGPASSWORD", pg().password())],
    );
    assert_eq!(checksums(&restored), checksums(&p.from));
}

#[test]
fn a_dump_with_large_objects_is_restored_by_one_pg_restore_and_still_validated() {
    let p = pair("sync_lo", "sync_from = \"prod\"", "");
    pg().psql(&p.from, "SELECT lo_from_bytea(424242, 'a large object'::bytea)");
    let r = checked(sync_jobs(&p, "2").run().expect_code(0));
    assert_eq!(r.json()["status"], "ok", "{}", r.stdout);
    assert_eq!(fingerprint(&p.to), fingerprint(&p.from));
    assert_eq!(pg().psql(&p.to, "SELECT convert_from(lo_get(424242), 'UTF8')"), "a large object");
    // The restore step says how it loaded: the archive's BLOBS entries take the serial path.
    let events = crate::sync::journal_events(&p.dir.path().join("store"));
    let restore = events
        .iter()
        .find(|e| e["details"]["step"] == "restore" && e["details"]["load"].is_string())
        .unwrap_or_else(|| panic!("no restore step entry with `load` in {events:?}"));
    assert_eq!(restore["details"]["load"], "serial", "{restore}");
}
