//! promote-replica on a real primary + streaming replica pair (pg_basebackup -R): fenced when the
//! primary answers, "not fenced" when it is down, refused beyond the lag limit unless accepted.

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::drctl::{Drctl, RunResult};
use crate::harness::pg::Cluster;
use crate::harness::{TestDir, wait_until};

struct Pair {
    primary: Cluster,
    replica: Cluster,
    dir: TestDir,
    config: PathBuf,
}

/// A primary with database `app` (table `t`, 100 rows), a streaming replica of it, and a config
/// naming them `prod` and `rep` (`replica_of = "prod"`); `policy` goes into `[policy]`.
fn pair(policy: &str) -> Pair {
    pair_with(policy, false)
}

/// The same; with `managed`, prod declares its `data_dir` (drctl manages its server).
fn pair_with(policy: &str, managed: bool) -> Pair {
    let primary = Cluster::start_new();
    primary.create_db("app");
    primary.psql("app", "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100);");
    let replica = Cluster::start_replica(&primary);
    assert!(wait_until(Duration::from_secs(30), || replica.try_psql("app", "SELECT count(*) FROM t").as_deref()
        == Ok("100")));
    let dir = TestDir::new();
    let config = dir.write_config(&format!(
        "[store]\nurl = \"file://{}/store\"\n\n[policy]\npromote_timeout = \"30s\"\n{policy}\n\n\
         [environments.prod]\ndatabase_url = \"postgres://postgres:${{PAIR_PG_PASSWORD}}@127.0.0.1:{}/app?sslmode=disable\"\n{}\n\
         [environments.rep]\ndatabase_url = \"postgres://postgres:${{PAIR_PG_PASSWORD}}@127.0.0.1:{}/app?sslmode=disable\"\n\
         replica_of = \"prod\"\n",
        dir.path().display(),
        primary.port,
        if managed {
            format!("data_dir = \"{}\"\npg_bin = \"{}\"\n", primary.data_dir.display(), primary.bin_dir().display())
        } else {
            String::new()
        },
        replica.port
    ));
    Pair { primary, replica, dir, config }
}

impl Pair {
    fn drctl(&self) -> Drctl {
        Drctl::new().config(&self.config).env("PAIR_PG_PASSWORD", self.primary.password())
    }
    fn promote(&self, more: &[&str]) -> RunResult {
        let r = self.drctl().args(["promote-replica", "--env", "rep", "--yes", "-o", "json"]).args(more).run();
        r.assert_no_secret(self.primary.password());
        r
    }
}

#[test]
fn with_the_primary_up_it_is_fenced_the_replica_catches_up_is_promoted_and_writable() {
    let p = pair("");
    // Written right before the run: the promoted env must have them all.
    p.primary.psql("app", "INSERT INTO t SELECT generate_series(101, 5000);");
    let r = p.promote(&[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let doc = r.json();
    assert_eq!(doc["status"], "ok", "{doc}");
    assert_eq!(doc["primary_fenced"], true, "{doc}");
    assert_eq!(doc["writable"], true, "{doc}");
    assert_eq!(r.check("replica-lag")["ok"], true);
    assert_eq!(p.replica.psql("app", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(p.replica.psql("app", "SELECT count(*) FROM t"), "5000", "every row written before the fence");
    p.replica.psql("app", "INSERT INTO t VALUES (5001)");
    // The old primary refuses connections to the app database; its maintenance db still answers.
    let refused = p.primary.try_psql("app", "SELECT 1").unwrap_err();
    assert!(refused.contains("not currently accepting connections"), "{refused}");
    assert_eq!(p.primary.psql("postgres", "SELECT datallowconn FROM pg_database WHERE datname = 'app'"), "f");

    // Journaled: the fence (with the primary's final LSN) before the wait, then the promotion.
    let log = p.drctl().args(["log", "-o", "json"]).run().expect_code(0).json();
    let entries = log["entries"].as_array().unwrap();
    let sent = entries
        .iter()
        .find(|e| e["event"] == "step-sent" && e["details"]["step"] == "fence-primary")
        .expect("the fence journaled");
    assert_eq!(sent["details"]["step"], "fence-primary");
    assert!(sent["details"]["primary_lsn"].is_string(), "{sent}");

    // Rerun: already done, nothing changed.
    let again = p.promote(&[]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert_eq!(again.json()["status"], "already_done", "{}", again.stdout);
    let _ = &p.dir;
}

#[test]
fn with_the_primary_down_it_is_promoted_and_reported_not_fenced() {
    let p = pair("");
    p.primary.stop();
    let r = p.promote(&[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let doc = r.json();
    assert_eq!(doc["primary_fenced"], false, "{doc}");
    let lag = r.check("replica-lag");
    assert_eq!(lag["ok"], true, "an unreachable primary never refuses the run: {lag}");
    assert!(lag["detail"].as_str().unwrap().contains("does not answer"), "{lag}");
    let fence = doc["steps"].as_array().unwrap().iter().find(|s| s["step"] == "fence-primary").unwrap().clone();
    assert!(fence["detail"].as_str().unwrap().contains("not fenced"), "{fence}");
    assert_eq!(p.replica.psql("app", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(p.replica.psql("app", "SELECT count(*) FROM t"), "100");
}

#[test]
fn lag_beyond_the_limit_is_refused_with_the_figure_unless_accepted() {
    let p = pair("max_replica_lag_bytes = 0");
    // Replay paused on the replica, then WAL written on the primary: the replica falls behind.
    p.replica.psql("postgres", "SELECT pg_wal_replay_pause()");
    p.primary.psql("app", "INSERT INTO t SELECT generate_series(101, 2000);");
    let r = p.promote(&[]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    let lag = r.check("replica-lag");
    assert!(lag["detail"].as_str().unwrap().contains("bytes behind"), "{lag}");
    assert_eq!(p.replica.psql("postgres", "SELECT pg_is_in_recovery()"), "t", "nothing changed");
    assert!(p.primary.try_psql("app", "SELECT 1").is_ok(), "the primary was not fenced");

    // Accepted: the run fences the primary and waits for the replica to replay to the fence's
    // LSN, which it does once replay resumes.
    let r = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_secs(2));
            p.replica.psql("postgres", "SELECT pg_wal_replay_resume()");
        });
        p.promote(&["--accept", "replica-lag"])
    });
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.check("replica-lag")["accepted"], true);
    assert_eq!(p.replica.psql("app", "SELECT count(*) FROM t"), "2000", "it waited for the replay");
    let log = p.drctl().args(["log", "-o", "json"]).run().expect_code(0).json();
    let started = log["entries"].as_array().unwrap().iter().find(|e| e["event"] == "run-started").unwrap().clone();
    assert_eq!(started["details"]["accepted"][0]["check"], "replica-lag", "{started}");
}

#[test]
fn with_data_dir_declared_the_old_primary_is_fenced_by_stopping_its_server() {
    let p = pair_with("", true);
    p.primary.psql("app", "INSERT INTO t SELECT generate_series(101, 3000);");
    let r = p.promote(&[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["primary_fenced"], true, "{}", r.stdout);
    let gone = p.primary.try_psql("postgres", "SELECT 1").unwrap_err();
    assert!(gone.contains("Connection refused") || gone.contains("connection refused"), "the server is down: {gone}");
    assert_eq!(p.replica.psql("app", "SELECT count(*) FROM t"), "3000", "everything before the stop");
    let log = p.drctl().args(["log", "-o", "json"]).run().expect_code(0).json();
    let sent = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "step-sent" && e["details"]["step"] == "fence-primary")
        .unwrap()
        .clone();
    assert_eq!(sent["details"]["how"], "server stopped", "{sent}");
    assert_eq!(sent["details"]["data_dir"], p.primary.data_dir.display().to_string());
}

#[test]
fn an_rds_read_replica_is_promoted_through_the_api_waited_for_and_never_promoted_twice() {
    use crate::harness::fault_proxy::{FaultProxy, RdsSim};
    let p = pair("");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (rds_primary, rds_replica) =
        rt.block_on(crate::clients::rds_pair(&aws_sdk_rds::Client::new(&crate::clients::sdk()), "prm"));
    // RDS's states in front of moto: `modifying` for a while after PromoteReadReplica, then
    // `available` with no source; the promotion itself is the local replica's pg_promote.
    let proxy = FaultProxy::start(crate::harness::moto::Moto::shared().port, 0);
    let (psql, port, pw) = (p.replica.bin_dir().join("psql"), p.replica.port, p.primary.password().to_string());
    proxy.simulate_rds(RdsSim {
        modifying_describes: 1_000,
        on_promote: Box::new(move |_| {
            let out = std::process::Command::new(&psql)
                .args([
                    "-X",
                    "-A",
                    "-t",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-p",
                    &port.to_string(),
                    "-d",
                    "postgres",
                ])
                .args(["-c", "SELECT pg_promote()"])
                .env("PGPASSWORD", &pw)
                .env("PGSSLMODE", "disable")
                .output()
                .expect("psql");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }),
    });
    let text = std::fs::read_to_string(&p.config).unwrap();
    let text = text
        .replace("[policy]\npromote_timeout = \"30s\"", "[policy]\npromote_timeout = \"3s\"")
        .replace("[environments.prod]\n", &format!("[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\n[environments.prod]\nrds_instance = \"{rds_primary}\"\n", proxy.endpoint()))
        .replace("replica_of = \"prod\"\n", &format!("replica_of = \"prod\"\nrds_instance = \"{rds_replica}\"\n"));
    // An instance RDS says is no replica, and drctl never promoted: refused, nothing sent.
    let bad = p.dir.write(
        "bad.toml",
        &text.replace(&format!("rds_instance = \"{rds_replica}\""), &format!("rds_instance = \"{rds_primary}\"")),
    );
    let r = Drctl::new()
        .config(&bad)
        .env("PAIR_PG_PASSWORD", p.primary.password())
        .args(["promote-replica", "--env", "rep", "--yes", "-o", "json"])
        .run();
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.check("declared-role")["ok"], false, "{}", r.stdout);
    assert_eq!(proxy.stats().rds_promotes, 0);
    std::fs::write(&p.config, text).unwrap();

    // Still modifying past promote_timeout: exit 6, the promotion journaled as sent.
    let r = p.promote(&[]);
    assert_eq!(r.code, 6, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(proxy.stats().rds_promotes, 1);
    let log = p.drctl().args(["log", "-o", "json"]).run().expect_code(0).json();
    let sent: Vec<serde_json::Value> =
        log["entries"].as_array().unwrap().iter().filter(|e| e["event"] == "step-sent").cloned().collect();
    assert!(
        sent.iter().any(|e| e["details"]["step"] == "promote" && e["details"]["rds_instance"] == rds_replica.as_str()),
        "{sent:?}"
    );

    // RDS finishes: the rerun waits on the same promotion, never sends another, and completes.
    proxy.rds_finish_promotions();
    let r = p.promote(&[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["writable"], true, "{}", r.stdout);
    assert_eq!(proxy.stats().rds_promotes, 1, "PromoteReadReplica once in two runs");
    assert_eq!(p.replica.psql("app", "SELECT pg_is_in_recovery()"), "f");
    let again = p.promote(&[]);
    assert_eq!(again.json()["status"], "already_done", "{}", again.stdout);
    assert_eq!(proxy.stats().rds_promotes, 1);
}
