//! The harness itself, and drctl's PostgreSQL clients against the harness's real servers: the
//! shared cluster answers, databases are fresh, a replica streams, moto serves buckets, and
//! `clients::pg` / `clients::pgtools` do what the runbooks rely on.

use std::time::Duration;

use drctl::clients::{pg, pgtools::PgTools};
use drctl::dburl::DbUrl;

use crate::harness::moto::Moto;
use crate::harness::pg::Cluster;
use crate::harness::{TestDir, unique_name, wait_until};

// --- the harness ---

#[test]
fn shared_cluster_answers() {
    let c = Cluster::shared();
    assert_eq!(c.psql("postgres", "select 1"), "1");
    assert_eq!(c.psql("postgres", "select current_setting('server_version_num')::int / 10000"), "15");
    assert!(c.superuser_url("x").contains(c.password()));
}

#[test]
fn create_db_gives_a_fresh_database_each_time() {
    let c = Cluster::shared();
    let db = unique_name("smoke");
    c.create_db(&db);
    c.psql(&db, "create table t (id int); insert into t values (1), (2)");
    assert_eq!(c.psql(&db, "select count(*) from t"), "2");
    c.create_db(&db);
    assert_eq!(c.psql(&db, "select count(*) from pg_class where relname = 't'"), "0");
    assert!(c.try_psql(&db, "select * from t").unwrap_err().contains("does not exist"));
}

#[test]
fn a_replica_streams_from_its_primary() {
    // Not the shared cluster: a replica attached to it would make every sync target on it a
    // source (`target-is-source`, pg_stat_replication) for as long as this test runs.
    let primary = &Cluster::start_new();
    let db = unique_name("replica");
    primary.create_db(&db);
    let replica = Cluster::start_replica(primary);
    assert_ne!(replica.port, primary.port);
    assert_eq!(replica.psql("postgres", "select pg_is_in_recovery()"), "t");
    assert_eq!(primary.psql("postgres", "select pg_is_in_recovery()"), "f");
    primary.psql(&db, "create table t (v text); insert into t values ('after the base backup')");
    let seen = wait_until(Duration::from_secs(10), || {
        replica.try_psql(&db, "select v from t").is_ok_and(|v| v == "after the base backup")
    });
    assert!(seen, "the row written on the primary did not reach the replica within 10 s");
    let dir = replica.dir.clone();
    drop(replica);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn moto_creates_buckets() {
    let moto = Moto::shared();
    let bucket = Moto::unique_bucket("smoke_test");
    moto.create_bucket(&bucket);
    let listing = moto.request("GET", "/");
    assert!(listing.contains(&format!("<Name>{bucket}</Name>")), "{listing}");
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
}

#[test]
fn test_dir_writes_the_config() {
    let dir = TestDir::new();
    let path = dir.write_config("[store]\nurl = \"file://./.drctl\"\n");
    assert_eq!(path, dir.path().join("drctl.toml"));
    assert!(std::fs::read_to_string(&path).unwrap().contains("file://./.drctl"));
}

// --- clients::pg against the real server ---

fn url(c: &Cluster, host: &str, params: &str) -> DbUrl {
    DbUrl::parse(&format!("postgres://postgres:{}@{host}:{}/postgres?{params}", c.password(), c.port)).unwrap()
}

async fn uses_tls(client: &tokio_postgres::Client) -> bool {
    client.query_one("select ssl from pg_stat_ssl where pid = pg_backend_pid()", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn pg_connects_in_every_sslmode() {
    let c = Cluster::shared();
    let ca = format!("sslrootcert={}", c.ca_file().display());
    for (host, params, tls) in [
        ("127.0.0.1", "sslmode=disable".to_string(), false),
        ("127.0.0.1", "sslmode=prefer".to_string(), true),
        ("127.0.0.1", "sslmode=require".to_string(), true),
        ("127.0.0.1", format!("sslmode=require&{ca}"), true),
        // The certificate names localhost only: verify-ca does not care.
        ("127.0.0.1", format!("sslmode=verify-ca&{ca}"), true),
        ("localhost", format!("sslmode=verify-full&{ca}"), true),
    ] {
        let client = pg::connect(&url(c, host, &params)).await.unwrap_or_else(|e| panic!("{host} {params}: {e}"));
        assert_eq!(uses_tls(&client).await, tls, "{host} {params}");
        assert_eq!(pg::server_major(&client).await.unwrap(), 15);
        let app: String = client.query_one("select current_setting('application_name')", &[]).await.unwrap().get(0);
        assert_eq!(app, "drctl");
    }
}

#[tokio::test]
async fn pg_refuses_what_libpq_would_refuse() {
    let c = Cluster::shared();
    let ca = format!("sslrootcert={}", c.ca_file().display());
    for (host, params, why) in [
        ("127.0.0.1", format!("sslmode=verify-full&{ca}"), "not valid for name"),
        // The test CA is not among the system roots.
        ("localhost", "sslmode=verify-full".to_string(), "UnknownIssuer"),
        ("127.0.0.1", "sslmode=verify-ca".to_string(), "UnknownIssuer"),
    ] {
        let e = pg::connect(&url(c, host, &params)).await.err().unwrap_or_else(|| panic!("{host} {params} connected"));
        let text = e.to_string();
        assert!(text.contains(why), "{host} {params}: {text}");
        assert!(text.contains(&format!(":{}/postgres", c.port)), "{text}");
        assert!(!text.contains(c.password()), "{text}");
    }
    let wrong_pw =
        DbUrl::parse(&format!("postgres://postgres:not-it@127.0.0.1:{}/postgres?sslmode=disable", c.port)).unwrap();
    let text = pg::connect(&wrong_pw).await.expect_err("a wrong password connected").to_string();
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("not-it"), "{text}");
}

// --- clients::pgtools against the real tools ---

#[tokio::test]
async fn pgtools_run_the_real_binaries_with_the_password_in_env() {
    let c = Cluster::shared();
    let tools = PgTools::new(Some(c.bin_dir()));
    assert_eq!(tools.major_version("pg_dump").await.unwrap(), 15);
    let db = unique_name("tools");
    c.create_db(&db);
    c.psql(&db, "create table t (id int); insert into t select generate_series(1, 1000)");
    let u = DbUrl::parse(&c.superuser_url(&db)).unwrap();
    let mut run = tools.spawn("pg_dump", &["--table=t", "--data-only"], Some(&u), false).unwrap();
    let pid = run.pid().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&cmdline).contains(c.password()));
    let mut dump = String::new();
    tokio::io::AsyncReadExt::read_to_string(run.stdout.as_mut().unwrap(), &mut dump).await.unwrap();
    run.wait().await.unwrap();
    assert!(dump.contains("COPY public.t (id) FROM stdin;"), "{dump}");
    assert_eq!(dump.lines().filter(|l| l.parse::<u32>().is_ok()).count(), 1000);

    let missing = DbUrl::parse(&c.superuser_url("no_such_db")).unwrap();
    let e = tools.spawn("pg_dump", &[], Some(&missing), false).unwrap().wait().await.unwrap_err().to_string();
    assert!(e.contains("pg_dump") && e.contains("no_such_db"), "{e}");
    assert!(!e.contains(c.password()), "{e}");
}
