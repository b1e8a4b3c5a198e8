//! A flaky S3 endpoint: with every third request answered 503 SlowDown, 500 InternalError or a
//! connection reset (`harness::fault_proxy` in front of moto), a backup of a small database still
//! completes, and deep verification through the same flaky endpoint passes. What makes it pass is
//! the SDK's standard retry mode with enough attempts (src/clients/aws.rs).

use crate::harness::TestDir;
use crate::harness::drctl::{Drctl, RunResult};
use crate::harness::fault_proxy::FaultProxy;
use crate::harness::moto::Moto;
use crate::harness::pg::Cluster;

#[test]
fn every_third_s3_request_failing_a_backup_completes_and_deep_verifies() {
    let moto = Moto::shared();
    let pg = Cluster::shared();
    let bucket = Moto::unique_bucket("faults");
    // Created directly on moto: the proxy is for drctl's requests only.
    moto.create_bucket(&bucket);
    let db = crate::harness::unique_name("faults");
    pg.create_db(&db);
    pg.psql(&db, "CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t VALUES (1, 'one row');");

    let proxy = FaultProxy::start(moto.port, 3);
    let dir = TestDir::new();
    let config = dir.write_config(&format!(
        "[store]\nurl = \"s3://{bucket}/drctl\"\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [environments.prod]\ndatabase_url = \"postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/{db}?sslmode=disable\"\n",
        proxy.endpoint(),
        pg.port
    ));
    let drctl = || Drctl::new().config(&config).env("TEST_PG_PASSWORD", pg.password());
    let diagnose = |what: &str, r: &RunResult| {
        format!(
            "{what} exited {}\nstdout:\n{}\nstderr:\n{}\nproxy: {:?}\nlast requests:\n{}",
            r.code,
            r.stdout,
            r.stderr,
            proxy.stats(),
            proxy.recent(40)
        )
    };

    let backup = drctl().args(["backup", "--env", "prod", "--yes", "-o", "json"]).run();
    assert_eq!(backup.code, 0, "{}", diagnose("backup", &backup));
    backup.assert_no_secret(pg.password());
    let doc = backup.json();
    assert_eq!(doc["status"], "ok", "{doc}");
    let id = doc["id"].as_str().expect("backup id").to_string();
    let after_backup = proxy.stats();
    assert!(after_backup.failed > 0, "the backup saw no fault: {after_backup:?}");

    let verify = drctl().args(["verify-chain", "--journal", "--backups", "--deep", "-o", "json"]).run();
    assert_eq!(verify.code, 0, "{}", diagnose("verify-chain", &verify));
    let doc = verify.json();
    assert_eq!(doc["ok"], true, "{doc}");
    let backups = doc["chains"].as_array().unwrap().iter().find(|c| c["chain"] == "backups").expect("backups chain");
    assert_eq!(backups["entries"], 1, "{doc}");

    let list = drctl().args(["backup", "list", "-o", "json"]).run();
    assert_eq!(list.code, 0, "{}", diagnose("backup list", &list));
    let listed = list.json()["backups"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["verified"], true);

    // Every third request really failed, each kind of fault happened, and nothing else broke:
    // every request the proxy did forward got moto's answer through.
    let st = proxy.stats();
    eprintln!("fault proxy: {st:?}");
    assert_eq!(st.failed, st.total / 3, "{st:?}");
    assert!(st.slow_down > 0 && st.internal_error > 0 && st.reset > 0, "{st:?}");
    assert_eq!(st.forwarded + st.failed, st.total, "{st:?}\n{}", proxy.recent(40));
    assert_eq!(st.upstream_errors, 0, "{st:?}\n{}", proxy.recent(40));
    assert!(st.failed > after_backup.failed, "verification saw no fault: {st:?}");
    // The retries are what carries it: with them off, the same endpoint fails a backup.
    let unretried = drctl().env("AWS_MAX_ATTEMPTS", "1").args(["backup", "--env", "prod", "--yes"]).run();
    assert_ne!(unretried.code, 0, "{}", diagnose("backup without retries", &unretried));
    assert!(
        // A HEAD's 503 or 500 has no body to carry the code: then only the status names it.
        ["SlowDown", "InternalError", "HTTP 503", "HTTP 500", "dispatch failure", "connection"]
            .iter()
            .any(|w| unretried.stderr.contains(w)),
        "{}",
        diagnose("backup without retries", &unretried)
    );
    // The objects are in moto whatever the proxy did.
    let objects = moto.request("GET", &format!("/{bucket}?list-type=2&prefix=drctl/backups/prod/{id}/"));
    assert!(objects.contains("manifest.json"), "{objects}");
}
