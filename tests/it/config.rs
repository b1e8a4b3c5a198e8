//! What loading drctl.toml means for an operator: where a relative store lands, where a password
//! comes from when the URL has none, and how bad values and unknown keys are reported (issue 16,
//! items 1, 8, 9 and 10).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::harness::TestDir;
use crate::harness::drctl::Drctl;
use crate::harness::moto::Moto;
use crate::harness::pg::Cluster;

/// A small database of its own: one table of three rows.
fn small_db(prefix: &str) -> String {
    let pg = Cluster::shared();
    let db = crate::harness::unique_name(prefix);
    pg.create_db(&db);
    pg.psql(&db, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c');");
    db
}

/// `[environments.prod]` on the shared cluster; `password` is put into the URL literally when given.
fn env_section(db: &str, password: Option<&str>) -> String {
    let pw = password.map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "[environments.prod]\ndatabase_url = \"postgres://postgres{pw}@127.0.0.1:{}/{db}?sslmode=disable\"\n",
        Cluster::shared().port
    )
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap()
}

// --- item 1: a relative store is beside drctl.toml, and every report says which store it used ---

#[test]
fn the_default_store_is_beside_the_config_file_whatever_the_cwd() {
    let dir = TestDir::new();
    let elsewhere = TestDir::new();
    let db = small_db("cfg_store");
    let pw = Cluster::shared().password();
    // No [store]: the default file://./.drctl.
    let config = dir.write_config(&env_section(&db, Some(pw)));
    let want = format!("file://{}/.drctl", canonical(dir.path()).display());

    let r = Drctl::new().config(&config).cwd(elsewhere.path()).args(["backup"]).run().expect_code(0);
    r.assert_no_secret(pw);
    assert_eq!(r.stdout.lines().next(), Some(format!("backup prod · store {want}").as_str()), "{}", r.stdout);
    assert!(dir.path().join(".drctl/journal").is_dir(), "the store is not beside drctl.toml");
    assert!(!elsewhere.path().join(".drctl").exists(), "the store followed the working directory");

    let j = Drctl::new().config(&config).cwd(elsewhere.path()).args(["backup", "-o", "json"]).run().expect_code(0);
    assert_eq!(j.json()["store"], want.as_str());
    // `backup list` from the config's own directory sees both: one store, not two.
    let l = Drctl::new().config("drctl.toml").cwd(dir.path()).args(["backup", "list", "-o", "json"]).run();
    assert_eq!(l.expect_code(0).json()["backups"].as_array().unwrap().len(), 2);

    let c = Drctl::new().config(&config).cwd(elsewhere.path()).args(["check", "-o", "json"]).run().expect_code(0);
    assert_eq!(c.json()["store"], want.as_str());
    let c = Drctl::new().config(&config).cwd(elsewhere.path()).args(["check"]).run().expect_code(0);
    assert!(c.stdout.contains(&format!("store {want}")), "{}", c.stdout);
}

// --- item 8: libpq's password sources, for drctl's connections and pg_dump's ---

#[test]
fn a_url_without_password_uses_pgpassfile_or_pgpassword_like_libpq() {
    let dir = TestDir::new();
    let home = TestDir::new();
    let db = small_db("cfg_pgpass");
    let pg = Cluster::shared();
    let pw = pg.password();
    let config = dir.write_config(&format!("[store]\nurl = \"file://./store\"\n{}", env_section(&db, None)));
    let drctl = || Drctl::new().config(&config).env("HOME", home.path());

    // No source at all: the error says where a password may come from.
    let r = drctl().args(["check", "-o", "json"]).run().expect_code(3);
    let doc = r.json();
    let reach = doc["checks"].as_array().unwrap().iter().find(|c| c["check"] == "db-reachable").unwrap().clone();
    let detail = reach["detail"].as_str().unwrap();
    assert!(
        detail.contains("none was found") && detail.contains("PGPASSWORD") && detail.contains("~/.pgpass"),
        "{reach}"
    );

    // A 0600 passfile: drctl's connection and pg_dump's (which gets it as PGPASSWORD) both use it.
    // The first line does not match (another port), the second does.
    let passfile =
        dir.write("pgpass", &format!("127.0.0.1:1:*:postgres:wrong\n127.0.0.1:{}:*:postgres:{pw}\n", pg.port));
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = drctl().env("PGPASSFILE", &passfile).args(["backup", "-o", "json"]).run().expect_code(0);
    r.assert_no_secret(pw);
    assert_eq!(r.json()["status"], "ok");

    // ~/.pgpass when PGPASSFILE is unset.
    std::fs::copy(&passfile, home.path().join(".pgpass")).unwrap();
    std::fs::set_permissions(home.path().join(".pgpass"), std::fs::Permissions::from_mode(0o600)).unwrap();
    drctl().args(["backup"]).run().expect_code(0).assert_no_secret(pw);

    // Group-readable: ignored with libpq's warning, so the server's password request fails.
    std::fs::set_permissions(home.path().join(".pgpass"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let r = drctl().args(["check"]).run().expect_code(3);
    r.assert_no_secret(pw);
    assert!(r.stderr.contains("group or world access") && r.stderr.contains("chmod 0600"), "{}", r.stderr);

    // PGPASSWORD comes before the passfile.
    let r = drctl().env("PGPASSWORD", pw).args(["backup"]).run().expect_code(0);
    r.assert_no_secret(pw);
    assert!(!r.stderr.contains("group or world access"), "{}", r.stderr);
}

#[test]
fn a_keyword_value_connection_string_is_refused_with_the_url_form() {
    let dir = TestDir::new();
    let config = dir
        .write_config("[environments.prod]\ndatabase_url = \"host=db-prod dbname=app user=app password=kv-hunter2\"\n");
    let r = Drctl::new().config(&config).args(["check", "-o", "json"]).run().expect_code(2);
    r.assert_no_secret("kv-hunter2");
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(
        r.stderr.contains("[environments.prod] database_url") && r.stderr.contains("keyword/value"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("postgres://USER@HOST:PORT/DB"), "{}", r.stderr);
    assert!(!r.stderr.contains("relative URL"), "{}", r.stderr);
}

// --- item 9: bad AWS names are config errors; AWS errors say what happened and what to do ---

#[test]
fn an_empty_zone_id_is_a_config_error_not_an_sdk_construction_failure() {
    let dir = TestDir::new();
    let db = small_db("cfg_zone");
    let pw = Cluster::shared().password();
    let config = dir
        .write_config(&format!("{}[dns]\nzone_id = \"\"\nrecord = \"app.example.com\"\n", env_section(&db, Some(pw))));
    for cmd in ["status", "check"] {
        let r = Drctl::new().config(&config).args([cmd, "-o", "json"]).run().expect_code(2);
        assert!(r.stdout.is_empty(), "{cmd}: {}", r.stdout);
        assert!(r.stderr.contains("[dns] zone_id: must not be empty"), "{cmd}: {}", r.stderr);
        assert!(!r.stderr.contains("ConstructionFailure"), "{cmd}: {}", r.stderr);
    }
}

#[test]
fn a_missing_bucket_is_named_with_what_to_do() {
    let moto = Moto::shared();
    let bucket = format!("{}-missing", Moto::unique_bucket("cfg"));
    let dir = TestDir::new();
    let db = small_db("cfg_bucket");
    let pw = Cluster::shared().password();
    let config = dir.write_config(&format!(
        "[store]\nurl = \"s3://{bucket}/drctl\"\n[aws]\nendpoint_url = \"{}\"\n{}",
        moto.endpoint(),
        env_section(&db, Some(pw))
    ));
    let said = format!("the bucket `{bucket}` does not exist (S3 NoSuchBucket)");
    let r = Drctl::new().config(&config).args(["backup"]).run().expect_code(3);
    r.assert_no_secret(pw);
    assert!(r.stdout.contains(&said) || r.stderr.contains(&said), "{r:?}");
    assert!(!r.stderr.contains("HeadBucket") && !r.stderr.contains(": NotFound"), "{}", r.stderr);

    let r = Drctl::new().config(&config).args(["check", "-o", "json"]).run().expect_code(3);
    let doc = r.json();
    let store = doc["checks"].as_array().unwrap().iter().find(|c| c["target"] == "store").unwrap().clone();
    let detail = store["detail"].as_str().unwrap();
    assert!(detail.contains(&said), "{store}");
    assert!(detail.contains(&format!("aws s3 mb s3://{bucket}")) && detail.contains("[store] url"), "{store}");
}

// --- item 10: every unknown key at once ---

#[test]
fn every_unknown_key_is_reported_in_one_run() {
    let dir = TestDir::new();
    let config = dir.write_config(
        "[store]\nulr = \"file:///x\"\n\n[environments.prod]\ndatabase_url = \"postgres://a@h/d\"\n\
         sync_form = \"staging\"\n\n[polciy]\nrpo = \"1h\"\n",
    );
    let r = Drctl::new().config(&config).args(["check", "-o", "json"]).run().expect_code(2);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    let at = |needle: &str| r.stderr.find(needle).unwrap_or_else(|| panic!("{needle} missing:\n{}", r.stderr));
    let (a, b, c) =
        (at("line 2: unknown key `ulr`"), at("line 6: unknown key `sync_form`"), at("line 8: unknown key `polciy`"));
    assert!(a < b && b < c, "not in file order:\n{}", r.stderr);
    assert!(r.stderr.contains(&config.display().to_string()) && r.stderr.contains("3 unknown keys"), "{}", r.stderr);
}
