//! failover and rollback end to end: a real primary with a streaming replica (pg_basebackup -R),
//! or a warm standby kept by `sync` on the shared cluster; moto's Route 53 (through the harness
//! proxy where a test needs PENDING answers or counted changes); health endpoints the test
//! controls. What it must show: the cutover works composed (promote-replica's steps, then
//! dns-cutover's), a rerun is already done, a crash anywhere resumes without resending, and
//! rollback refuses to abandon writes made since the cutover unless told to.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_route53::types::RrType;
use serde_json::Value;

use crate::clients::{ELB_ZONE, alias_set, cname_set, sdk, upsert, zone};
use crate::harness::drctl::{Drctl, RunResult};
use crate::harness::fault_proxy::FaultProxy;
use crate::harness::http::{Health, Webhook};
use crate::harness::moto::Moto;
use crate::harness::pg::Cluster;
use crate::harness::{TestDir, unique_name, wait_until};

const PROD_ALB: &str = "prod-alb-123.us-east-1.elb.amazonaws.com";
const STG_ALB: &str = "stg-alb-456.us-east-1.elb.amazonaws.com";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Route 53 side: a zone with `app.<zone>` pointing at prod, a CNAME (TTL 300) or an A alias.
struct Zone {
    id: String,
    record: String,
    alias: bool,
}

impl Zone {
    fn new(prefix: &str, alias: bool) -> Zone {
        let r53 = aws_sdk_route53::Client::new(&sdk());
        rt().block_on(async {
            let (id, name) = zone(&r53, prefix).await;
            let record = format!("app.{name}");
            let set = if alias { alias_set(&record, PROD_ALB) } else { cname_set(&record, 300, PROD_ALB) };
            upsert(&r53, &id, set).await;
            Zone { id, record, alias }
        })
    }

    fn toml(&self) -> String {
        format!(
            "[dns]\nzone_id = \"{}\"\nrecord = \"{}\"\ntype = \"{}\"\nttl = 60\n",
            self.id,
            self.record,
            if self.alias { "A" } else { "CNAME" }
        )
    }

    /// The record exactly as Route 53 (moto) lists it: type, TTL and values, or the alias.
    fn record(&self) -> String {
        let r53 = aws_sdk_route53::Client::new(&sdk());
        let rtype = if self.alias { RrType::A } else { RrType::Cname };
        rt().block_on(async {
            let out = r53
                .list_resource_record_sets()
                .hosted_zone_id(&self.id)
                .start_record_name(&self.record)
                .start_record_type(rtype.clone())
                .send()
                .await
                .unwrap();
            out.resource_record_sets()
                .iter()
                .filter(|r| r.name().trim_end_matches('.') == self.record && r.r#type() == &rtype)
                .map(|r| match r.alias_target() {
                    Some(a) => format!("{} alias {} {}", r.r#type().as_str(), a.dns_name(), a.hosted_zone_id()),
                    None => format!(
                        "{} {} {}",
                        r.r#type().as_str(),
                        r.ttl().unwrap_or(0),
                        r.resource_records().iter().map(|v| v.value()).collect::<Vec<_>>().join(",")
                    ),
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
    }

    fn points_at(&self, target: &str) -> bool {
        self.record().contains(target)
    }
}

/// A primary (database `app`, table `t` with 100 rows) and its streaming replica, named prod and
/// replica (`replica_of = "prod"`), each with a health endpoint; `aws` is the endpoint drctl uses.
struct ReplicaSite {
    primary: Cluster,
    replica: Cluster,
    zone: Zone,
    dir: TestDir,
    config: PathBuf,
    _health_prod: Health,
    health_replica: Health,
    webhook: Webhook,
}

/// With `managed`, prod declares its data_dir and pg_bin: drctl manages its server (the fence is
/// stopping it, and rollback starts it again).
fn replica_site(prefix: &str, alias: bool, aws: &str, managed: bool) -> ReplicaSite {
    let primary = Cluster::start_new();
    primary.create_db("app");
    primary.psql("app", "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100);");
    let replica = Cluster::start_replica(&primary);
    assert!(wait_until(Duration::from_secs(30), || replica.try_psql("app", "SELECT count(*) FROM t").as_deref()
        == Ok("100")));
    let prod_extra = match managed {
        true => {
            format!("data_dir = \"{}\"\npg_bin = \"{}\"\n", primary.data_dir.display(), primary.bin_dir().display())
        }
        false => String::new(),
    };
    let zone = Zone::new(prefix, alias);
    let (health_prod, health_replica, webhook) = (Health::start(), Health::start(), Webhook::start());
    let dir = TestDir::new();
    let config = dir.write_config(&format!(
        "[store]\nurl = \"file://{store}\"\n\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{aws}\"\n\n\
         [policy]\npromote_timeout = \"30s\"\ndns_timeout = \"20s\"\n\n{dns}\n\
         [notify]\nwebhook_url = \"${{TEST_WEBHOOK}}\"\n\n\
         [environments.prod]\ndatabase_url = \"postgres://postgres:${{PAIR_PG_PASSWORD}}@127.0.0.1:{pport}/app?sslmode=disable\"\n\
         dns_target = \"{PROD_ALB}\"\ndns_alias_zone_id = \"{ELB_ZONE}\"\nhealth_url = \"{hp}\"\n{prod_extra}\n\
         [environments.replica]\ndatabase_url = \"postgres://postgres:${{PAIR_PG_PASSWORD}}@127.0.0.1:{rport}/app?sslmode=disable\"\n\
         replica_of = \"prod\"\ndns_target = \"{STG_ALB}\"\ndns_alias_zone_id = \"{ELB_ZONE}\"\nhealth_url = \"{hr}\"\n",
        store = dir.path().join("store").display(),
        dns = zone.toml(),
        pport = primary.port,
        rport = replica.port,
        hp = health_prod.url(),
        hr = health_replica.url(),
    ));
    ReplicaSite { primary, replica, zone, dir, config, _health_prod: health_prod, health_replica, webhook }
}

impl ReplicaSite {
    fn drctl(&self) -> Drctl {
        Drctl::new()
            .config(&self.config)
            .env("PAIR_PG_PASSWORD", self.primary.password())
            .env("TEST_WEBHOOK", self.webhook.url())
    }
    fn run(&self, args: &[&str]) -> RunResult {
        let r = self.drctl().args(args).args(["--yes", "-o", "json"]).run();
        r.assert_no_secret(self.primary.password());
        r.assert_no_secret(self.webhook.token());
        r
    }
    fn journal(&self) -> Vec<Value> {
        journal_of(&self.dir.path().join("store"))
    }
}

fn journal_of(store: &std::path::Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(store.join("journal")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|f| serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap()).collect()
}

fn steps(doc: &Value) -> Vec<(String, String)> {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap().to_string(), s["state"].as_str().unwrap().to_string()))
        .collect()
}

fn ok(r: &RunResult) -> Value {
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    r.json()
}

#[test]
fn failover_to_a_replica_with_the_primary_up_then_rollback_refuses_to_abandon_writes_unless_accepted() {
    let s = replica_site("fo_up", false, &Moto::shared().endpoint(), false);
    s.primary.psql("app", "INSERT INTO t SELECT generate_series(101, 3000);");
    let before = s.zone.record();
    assert_eq!(before, format!("CNAME 300 {PROD_ALB}"));

    let r = s.run(&["failover", "--to", "replica"]);
    let doc = ok(&r);
    assert_eq!(doc["status"], "ok", "{doc}");
    let names: Vec<String> = steps(&doc).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["fence-primary", "wait-replay", "promote", "unfence-target", "mark-cutover", "point-record", "readiness"],
        "promote-replica's steps, the mark, dns-cutover's step, the readiness: {doc}"
    );
    assert!(steps(&doc).iter().all(|(_, st)| st == "applied"), "{doc}");
    assert_eq!(r.check("old-primary")["ok"], true);
    assert!(r.check("old-primary")["detail"].as_str().unwrap().contains("a primary at LSN"), "{doc}");
    // Promoted and writable, with every row; the old primary fenced; the record on the replica.
    assert_eq!(s.replica.psql("app", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(s.replica.psql("app", "SELECT count(*) FROM t"), "3000");
    assert!(s.primary.try_psql("app", "SELECT 1").unwrap_err().contains("not currently accepting connections"));
    assert_eq!(s.zone.record(), format!("CNAME 60 {STG_ALB}"));
    // Readiness and RTO, reported and journaled.
    let ready = &doc["readiness"];
    assert_eq!(
        (ready["role"].as_str(), ready["writable"].as_bool(), ready["healthy"].as_bool()),
        (Some("promoted"), Some(true), Some(true)),
        "{doc}"
    );
    assert_eq!(ready["live"], true, "{doc}");
    assert_eq!(doc["data_age_s"], 0, "the fenced primary was replayed to its end: nothing lost: {doc}");
    assert!(doc["rto_ms"].as_u64().is_some_and(|ms| ms > 0 && ms < 120_000), "{doc}");
    assert_eq!(doc["primary_fenced"], true);
    let text = s.drctl().args(["failover", "--to", "replica", "--yes"]).run();
    assert_eq!(text.code, 0, "{}", text.stderr);
    let j = s.journal();
    let done = j.iter().rev().find(|e| e["event"] == "step-done" && e["details"]["step"] == "readiness").unwrap();
    assert!(done["details"]["rto_ms"].as_u64().is_some(), "{done}");
    assert_eq!(done["details"]["role"], "promoted");
    let mark = j.iter().find(|e| e["event"] == "step-done" && e["details"]["step"] == "mark-cutover").unwrap();
    assert!(mark["details"]["lsn"].is_string() && mark["details"]["tables"]["public.t"].is_array(), "{mark}");

    // The rerun above (table output) was already done: nothing sent again, no second message.
    assert!(text.stdout.contains("failover already_done"), "{}", text.stdout);
    let posted = s.webhook.bodies();
    assert_eq!(posted.len(), 1, "one message for one failover: {posted:?}");
    let msg: Value = serde_json::from_str(&posted[0]).unwrap();
    let line = msg["text"].as_str().unwrap();
    assert!(
        line.starts_with(&format!("FAILOVER EXECUTED: {} now points to replica ({STG_ALB}). RTO ", s.zone.record))
            && line.contains("data age 0s"),
        "{line}"
    );
    assert_eq!(j.iter().filter(|e| e["event"] == "step-sent" && e["details"]["step"] == "point-record").count(), 1);

    // Users wrote on the promoted env: rollback would abandon those rows, so it refuses, naming them.
    s.replica.psql("app", "INSERT INTO t SELECT generate_series(3001, 3005); UPDATE t SET id = id WHERE id <= 2;");
    // The server publishes a session's counts as it ends: wait until they show.
    let counted = "SELECT n_tup_upd >= 2 FROM pg_stat_user_tables WHERE relname = 't'";
    assert!(wait_until(Duration::from_secs(10), || s.replica.psql("app", counted) == "t"));
    let r = s.run(&["rollback"]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    let c = r.check("writes-since-cutover");
    assert_eq!(c["ok"], false, "{c}");
    let detail = c["detail"].as_str().unwrap();
    assert!(detail.contains("public.t +5 inserted, 2 updated, 0 deleted") && detail.contains("LSN"), "{detail}");
    assert_eq!(r.json()["writes_since_cutover"]["tables"][0]["inserted"], 5, "{}", r.stdout);
    assert!(
        r.stderr.contains("or waive one deliberately (journaled): --accept writes-since-cutover"),
        "the hint names the waiver: {}",
        r.stderr
    );
    assert_eq!(s.zone.record(), format!("CNAME 60 {STG_ALB}"), "nothing moved");
    assert!(s.primary.try_psql("app", "SELECT 1").is_err(), "still fenced");

    // Accepted: the old primary accepts connections again and the record is exactly what it was.
    let r = s.run(&["rollback", "--accept", "writes-since-cutover"]);
    let doc = ok(&r);
    assert_eq!(doc["status"], "ok", "{doc}");
    assert_eq!(
        steps(&doc),
        [("unfence-primary".into(), "applied".into()), ("restore-record".into(), "applied".into())]
    );
    assert_eq!(s.zone.record(), before, "the exact previous record set (TTL included)");
    assert_eq!(s.primary.psql("app", "SELECT count(*) FROM t"), "3000");
    let first_run = j.iter().find(|e| e["runbook"] == "failover").unwrap()["run_id"].clone();
    assert_eq!(doc["rolls_back"], first_run, "{doc}");
    let started = s.journal().into_iter().rev().find(|e| e["event"] == "run-started").unwrap();
    assert_eq!(started["details"]["accepted"][0]["check"], "writes-since-cutover", "{started}");
    assert!(r.check("target-healthy")["detail"].as_str().unwrap().contains("once unfence-primary has unfenced prod"));
    // Rerun: already done, and never an older cutover.
    let again = ok(&s.run(&["rollback"]));
    assert_eq!(again["status"], "already_done", "{again}");
    // Messages: the failover, the refused rollback (a failed run), the rollback; none for reruns.
    let posted: Vec<String> = s
        .webhook
        .bodies()
        .iter()
        .map(|b| serde_json::from_str::<Value>(b).unwrap()["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(posted.len(), 3, "{posted:?}");
    assert!(posted[1].starts_with("drctl rollback prod FAILED (exit 3, preflight_failed)"), "{posted:?}");
    assert!(
        posted[2].starts_with(&format!("ROLLBACK EXECUTED: {} points to prod again ({PROD_ALB})", s.zone.record)),
        "{posted:?}"
    );
    let _ = &s.health_replica;
}

#[test]
fn failover_with_the_primary_crashed_is_not_fenced_reports_data_age_and_rolls_back_an_alias() {
    let s = replica_site("fo_down", true, &Moto::shared().endpoint(), false);
    s.primary.psql("app", "INSERT INTO t VALUES (101);");
    assert!(wait_until(Duration::from_secs(20), || s.replica.psql("app", "SELECT count(*) FROM t") == "101"));
    let before = s.zone.record();
    s.primary.stop();
    let r = s.run(&["failover", "--to", "replica"]);
    let doc = ok(&r);
    assert!(r.check("old-primary")["detail"].as_str().unwrap().contains("does not answer"), "{doc}");
    let fence = doc["steps"].as_array().unwrap().iter().find(|s| s["step"] == "fence-primary").unwrap().clone();
    assert!(fence["detail"].as_str().unwrap().contains("not fenced"), "{fence}");
    assert_eq!(doc["primary_fenced"], false);
    assert!(doc["data_as_of"].is_string(), "the last replayed commit: {doc}");
    assert!(doc["data_age_s"].as_u64().is_some(), "{doc}");
    assert!(s.zone.points_at(STG_ALB), "{}", s.zone.record());

    // No writes since: the rollback needs no acceptance; nothing was fenced, so nothing unfenced.
    let back = ok(&s.run(&["rollback"]));
    assert_eq!(back["status"], "ok", "{back}");
    assert_eq!(steps(&back)[0], ("unfence-primary".into(), "done".into()));
    assert_eq!(s.zone.record(), before, "the alias is back exactly: {back}");
}

/// Warm standby: prod and staging are databases on the shared cluster, staging kept by sync.
struct StandbySite {
    dir: TestDir,
    config: PathBuf,
    zone: Zone,
    prod: String,
    staging: String,
    _health: Health,
}

fn pg() -> &'static Cluster {
    Cluster::shared()
}

fn standby_site(prefix: &str, rpo: &str) -> StandbySite {
    let (prod, staging) = (unique_name(&format!("{prefix}_p")), unique_name(&format!("{prefix}_s")));
    pg().create_db(&prod);
    pg().psql(
        &prod,
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'new' FROM generate_series(1, 2000) g;",
    );
    pg().create_db(&staging);
    pg().psql(&staging, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'old');");
    let zone = Zone::new(prefix, false);
    let health = Health::start();
    let dir = TestDir::new();
    let site = StandbySite { config: dir.path().join("drctl.toml"), dir, zone, prod, staging, _health: health };
    site.write_config(rpo);
    site
}

impl StandbySite {
    fn write_config(&self, rpo: &str) {
        let url = |db: &str| {
            format!("postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/{db}?sslmode=disable", pg().port)
        };
        self.dir.write_config(&format!(
            "[store]\nurl = \"file://{store}\"\n\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{aws}\"\n\n\
             [policy]\nrpo = \"{rpo}\"\nlock_ttl = \"3s\"\n\n{dns}\n\
             [environments.prod]\ndatabase_url = \"{p}\"\ndns_target = \"{PROD_ALB}\"\nhealth_url = \"{h}\"\n\n\
             [environments.staging]\ndatabase_url = \"{st}\"\nsync_from = \"prod\"\ndns_target = \"{STG_ALB}\"\nhealth_url = \"{h}\"\n",
            store = self.dir.path().join("store").display(),
            aws = Moto::shared().endpoint(),
            dns = self.zone.toml(),
            p = url(&self.prod),
            st = url(&self.staging),
            h = self._health.url(),
        ));
    }
    fn drctl(&self) -> Drctl {
        Drctl::new().config(&self.config).env("TEST_PG_PASSWORD", pg().password())
    }
    fn run(&self, args: &[&str]) -> RunResult {
        let r = self.drctl().args(args).args(["--yes", "-o", "json"]).run();
        r.assert_no_secret(pg().password());
        r
    }
}

#[test]
fn failover_to_a_warm_standby_checks_its_data_age_against_the_rpo_and_a_plain_cutover_rolls_back() {
    let s = standby_site("fo_warm", "1s");
    ok(&s.run(&["sync", "--from", "prod", "--to", "staging"]));
    std::thread::sleep(Duration::from_millis(2100));
    // Beyond the RPO: refused, naming the age; nothing moved.
    let r = s.run(&["failover", "--to", "staging"]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    let fresh = r.check("standby-fresh");
    assert!(fresh["detail"].as_str().unwrap().contains("old (last sync's snapshot"), "{fresh}");
    assert!(s.zone.points_at(PROD_ALB));
    // Accepted: no promotion step, the record moved, the waiver journaled with what it found.
    let doc = ok(&s.run(&["failover", "--to", "staging", "--accept", "standby-fresh"]));
    let names: Vec<String> = steps(&doc).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["mark-cutover", "point-record", "readiness"], "{doc}");
    assert!(s.zone.points_at(STG_ALB));
    assert_eq!(doc["readiness"]["role"], "primary", "{doc}");
    assert!(doc["data_age_s"].as_u64().is_some_and(|a| a >= 2), "{doc}");
    let j = journal_of(&s.dir.path().join("store"));
    let started = j.iter().rev().find(|e| e["event"] == "run-started" && e["runbook"] == "failover").unwrap();
    assert_eq!(started["details"]["accepted"][0]["check"], "standby-fresh", "{started}");

    // Back (no writes on staging), then within the RPO the same failover needs no waiver. (A new
    // zone for each round trip: moto's DELETE also matches a record's earlier values.)
    ok(&s.run(&["rollback"]));
    assert!(s.zone.points_at(PROD_ALB));
    let mut s = s;
    s.zone = Zone::new("fo_warm2", false);
    s.write_config("6h");
    ok(&s.run(&["sync", "--from", "prod", "--to", "staging"]));
    // Off a TTY without --yes: refused, nothing moved.
    let r = s.drctl().args(["failover", "--to", "staging"]).run();
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("pass --yes"), "{}", r.stderr);
    assert!(s.zone.points_at(PROD_ALB));
    // The table report: checks, steps, then the readiness table and the RTO.
    let r = s.drctl().args(["failover", "--to", "staging", "--yes"]).run();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for shown in ["old-primary", "mark-cutover", "readiness", "writable", "data_as_of", "rto_ms: ", "failover ok"] {
        assert!(r.stdout.contains(shown), "{shown} missing:\n{}", r.stdout);
    }
    assert_eq!(s.run(&["failover", "--to", "staging"]).json()["status"], "already_done");
    ok(&s.run(&["rollback"]));

    s.zone = Zone::new("fo_warm3", false);
    s.write_config("6h");
    // A plain dns-cutover, rolled back with no acceptance: nothing journaled to compare against.
    ok(&s.run(&["dns-cutover", "--to", "staging"]));
    let back = s.run(&["rollback"]);
    let doc = ok(&back);
    assert_eq!(doc["status"], "ok", "{doc}");
    assert!(back.check("writes-since-cutover")["detail"].as_str().unwrap().contains("not checked"), "{doc}");
    assert_eq!(s.zone.record(), format!("CNAME 300 {PROD_ALB}"));
}

#[test]
fn failover_takes_over_the_lock_of_a_sync_into_its_target_and_that_sync_never_swaps() {
    let s = standby_site("fo_lock", "6h");
    ok(&s.run(&["sync", "--from", "prod", "--to", "staging"]));
    pg().psql(&s.prod, "UPDATE t SET v = 'newer'");
    let staged = pg().psql(&s.staging, "SELECT count(*) || ':' || max(v) FROM t");
    // A session holding an exclusive lock on prod's table keeps the next sync's pg_dump waiting
    // with env:staging held.
    let mut blocker = std::process::Command::new(pg().bin_dir().join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", &s.prod])
        .args(["-p", &pg().port.to_string()])
        .env("PGPASSWORD", pg().password())
        .env("PGSSLMODE", "disable")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut blocker_in = blocker.stdin.take().unwrap();
    use std::io::Write;
    writeln!(blocker_in, "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE;").unwrap();
    blocker_in.flush().unwrap();
    let waiting =
        format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock'", s.prod);
    let sync = s.drctl().args(["sync", "--from", "prod", "--to", "staging", "-o", "json"]).spawn();
    assert!(
        wait_until(Duration::from_secs(60), || pg().psql("postgres", &waiting) != "0"),
        "the sync's dump never waited"
    );

    let doc = ok(&s.run(&["failover", "--to", "staging"]));
    assert_eq!(doc["lock_taken_over"]["holder"], "sync --from prod --to staging", "{doc}");
    assert!(s.zone.points_at(STG_ALB));
    writeln!(blocker_in, "ROLLBACK;").unwrap();
    drop(blocker_in);
    blocker.wait().unwrap();
    let out = sync.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "the sync stops: its lock was taken\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pg().psql(&s.staging, "SELECT count(*) || ':' || max(v) FROM t"), staged, "staging kept its data");
    let j = journal_of(&s.dir.path().join("store"));
    let took = j.iter().find(|e| e["event"] == "lock-taken-over").expect("journaled");
    assert_eq!(took["runbook"], "failover");
    assert_eq!(took["details"]["target"], "env:staging");
    assert_eq!(took["details"]["holder"], "sync --from prod --to staging");
    assert!(
        !j.iter().any(|e| e["event"] == "sync-done" && e["time"].as_str() > took["time"].as_str()),
        "no swap after it"
    );
}

#[test]
fn a_failover_killed_at_every_step_boundary_and_while_route53_is_pending_resumes_sending_each_change_once() {
    let proxy = FaultProxy::start(Moto::shared().port, 0);
    let s = replica_site("fo_kill", false, &proxy.endpoint(), false);
    s.primary.psql("app", "INSERT INTO t SELECT generate_series(101, 500);");
    let t0 = Instant::now();
    let failover = || s.drctl().args(["failover", "--to", "replica", "--yes", "-o", "json"]);
    for step in ["fence-primary", "wait-replay", "promote", "unfence-target", "mark-cutover"] {
        let r = failover().env("DRCTL_TEST_KILL_AFTER", step).run();
        assert_eq!(r.code, 128 + 9, "killed after {step}: {}\n{}", r.stdout, r.stderr);
        let j = s.journal();
        let last = j.last().unwrap();
        assert_eq!((last["event"].as_str(), last["details"]["step"].as_str()), (Some("step-done"), Some(step)));
    }
    // Killed while Route 53 still answers PENDING: the change is out, journaled as sent.
    proxy.route53_pending(true);
    let polled = proxy.stats().route53_pending_answers;
    let mut child = failover().spawn();
    assert!(
        wait_until(Duration::from_secs(30), || proxy.stats().route53_pending_answers >= polled + 2),
        "{:?}",
        proxy.stats()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(proxy.stats().route53_changes, 1);
    proxy.route53_pending(false);
    let r = failover().env("DRCTL_TEST_KILL_AFTER", "point-record").run();
    assert_eq!(r.code, 128 + 9, "{}", r.stderr);
    let doc = ok(&failover().run());
    assert_eq!(doc["status"], "ok", "{doc}");
    let st = steps(&doc);
    assert!(
        st[..6].iter().all(|(_, state)| state == "done") && st[6] == ("readiness".into(), "applied".into()),
        "{doc}"
    );
    // One change sent per intended change, in eight runs.
    assert_eq!(proxy.stats().route53_changes, 1, "one Route 53 batch");
    let j = s.journal();
    for step in ["fence-primary", "promote", "point-record"] {
        let sent = j.iter().filter(|e| e["event"] == "step-sent" && e["details"]["step"] == step).count();
        assert_eq!(sent, 1, "{step} sent once");
    }
    assert_eq!(j.iter().filter(|e| e["event"] == "step-done" && e["details"]["step"] == "promote").count(), 1);
    assert_eq!(s.replica.psql("app", "SELECT count(*) FROM t"), "500");
    assert!(s.zone.points_at(STG_ALB));
    // The RTO counts from the first attempt's start, not the last one's.
    let rto = doc["rto_ms"].as_u64().unwrap();
    assert!(rto as u128 >= t0.elapsed().as_millis() / 2 && rto > 1000, "RTO {rto} ms over {:?}", t0.elapsed());
}

#[test]
fn a_failover_that_stopped_the_old_primary_is_rolled_back_by_starting_it_again() {
    let s = replica_site("fo_managed", false, &Moto::shared().endpoint(), true);
    let doc = ok(&s.run(&["failover", "--to", "replica"]));
    let fence = doc["steps"].as_array().unwrap().iter().find(|s| s["step"] == "fence-primary").unwrap().clone();
    assert!(fence["detail"].as_str().unwrap().contains("server stopped"), "{fence}");
    assert!(s.primary.try_psql("postgres", "SELECT 1").is_err(), "the old primary is down");

    let back = ok(&s.run(&["rollback"]));
    assert_eq!(steps(&back)[0], ("unfence-primary".into(), "applied".into()), "{back}");
    assert!(back["steps"][0]["detail"].as_str().unwrap().contains("server started"), "{back}");
    assert_eq!(s.primary.psql("app", "SELECT count(*) FROM t"), "100", "the old primary serves again");
    assert!(s.zone.points_at(PROD_ALB));
}
