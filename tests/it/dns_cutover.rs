//! dns-cutover against moto's Route 53 and a health endpoint the test controls: the record moves
//! in one batch, the exact previous record set and the change id are journaled before the wait, a
//! rerun is "already done", and every refusal (unhealthy, stale standby, no confirmation) changes
//! nothing. What moto cannot stage (a change still PENDING, an edit racing drctl's) is covered by
//! FakeDns and the engine's own tests.

use std::path::PathBuf;

use aws_sdk_route53::types::RrType;
use serde_json::Value;

use crate::clients::{ELB_ZONE, alias_set, cname_set, sdk, upsert, zone};
use crate::harness::TestDir;
use crate::harness::drctl::Drctl;
use crate::harness::fault_proxy::FaultProxy;
use crate::harness::http::Health;
use crate::harness::moto::Moto;

const PROD_ALB: &str = "prod-alb-123.us-east-1.elb.amazonaws.com";
const STG_ALB: &str = "stg-alb-456.us-east-1.elb.amazonaws.com";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

struct Setup {
    dir: TestDir,
    config: PathBuf,
    zone_id: String,
    record: String,
    health: Health,
}

/// A zone with `app.<zone>` pointing at prod (a CNAME, or with `alias` an A alias), and a config
/// whose staging env is served by `health`; `staging_extra` is added to staging's section.
fn setup(prefix: &str, alias: bool, staging_extra: &str) -> Setup {
    setup_at(prefix, alias, staging_extra, &Moto::shared().endpoint(), "20s")
}

/// The same, with drctl's AWS endpoint `endpoint` (a proxy in front of moto) and `dns_timeout`.
fn setup_at(prefix: &str, alias: bool, staging_extra: &str, endpoint: &str, dns_timeout: &str) -> Setup {
    let r53 = aws_sdk_route53::Client::new(&sdk());
    let (zone_id, zone_name, record) = rt().block_on(async {
        let (zone_id, zone_name) = zone(&r53, prefix).await;
        let record = format!("app.{zone_name}");
        let set = if alias { alias_set(&record, PROD_ALB) } else { cname_set(&record, 300, PROD_ALB) };
        upsert(&r53, &zone_id, set).await;
        (zone_id, zone_name, record)
    });
    let _ = zone_name;
    let health = Health::start();
    let dir = TestDir::new();
    let kind = if alias { "A" } else { "CNAME" };
    let config = dir.write_config(&format!(
        "[store]\nurl = \"file://{store}\"\n\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{moto}\"\n\n\
         [policy]\ndns_timeout = \"{dns_timeout}\"\n\n\
         [dns]\nzone_id = \"{zone_id}\"\nrecord = \"{record}\"\ntype = \"{kind}\"\nttl = 60\n\n\
         [environments.prod]\ndatabase_url = \"postgres://app@127.0.0.1:1/app\"\ndns_target = \"{PROD_ALB}\"\n\
         dns_alias_zone_id = \"{ELB_ZONE}\"\n\n\
         [environments.staging]\ndatabase_url = \"postgres://app@127.0.0.1:1/app\"\ndns_target = \"{STG_ALB}\"\n\
         dns_alias_zone_id = \"{ELB_ZONE}\"\nhealth_url = \"{health}\"\n{staging_extra}\n",
        store = dir.path().join("store").display(),
        moto = endpoint,
        health = health.url(),
    ));
    Setup { dir, config, zone_id, record, health }
}

impl Setup {
    fn drctl(&self) -> Drctl {
        Drctl::new().config(&self.config)
    }

    /// The record's target as Route 53 (moto) lists it now.
    fn target(&self, rtype: RrType) -> Option<String> {
        let r53 = aws_sdk_route53::Client::new(&sdk());
        rt().block_on(async {
            let out = r53
                .list_resource_record_sets()
                .hosted_zone_id(&self.zone_id)
                .start_record_name(&self.record)
                .start_record_type(rtype.clone())
                .send()
                .await
                .unwrap();
            out.resource_record_sets()
                .iter()
                .find(|r| r.name().trim_end_matches('.') == self.record && r.r#type() == &rtype)
                .and_then(|r| match r.alias_target() {
                    Some(a) => Some(a.dns_name().to_string()),
                    None => r.resource_records().first().map(|v| v.value().to_string()),
                })
        })
    }

    /// The journal's entries, oldest first.
    fn journal(&self) -> Vec<Value> {
        let r = self.drctl().args(["log", "-o", "json", "--limit", "1000"]).run().expect_code(0);
        let mut v = r.json()["entries"].as_array().unwrap().clone();
        v.reverse();
        v
    }
}

#[test]
fn a_cname_moves_to_the_target_with_the_previous_record_journaled_and_a_rerun_is_already_done() {
    let s = setup("cut_cname", false, "");
    let r = s.drctl().args(["dns-cutover", "--to", "staging", "--yes", "-o", "json"]).run();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let doc = r.json();
    assert_eq!(doc["status"], "ok", "{doc}");
    assert_eq!(s.target(RrType::Cname).as_deref(), Some(STG_ALB));
    assert_eq!(doc["previous_ttl"], 300, "{doc}");
    assert_eq!(doc["target"], STG_ALB);
    assert!(doc["cached_answers_expire_by"].is_string(), "{doc}");
    for id in ["record-exists", "target-healthy", "cors", "tls", "standby-fresh"] {
        assert_eq!(r.check(id)["ok"], true, "{id}: {doc}");
    }
    assert!(s.health.requests() >= 2, "the health URL was asked twice in a row");

    // Journaled before the wait: the change id and the exact record set it replaced.
    let j = s.journal();
    let sent = j.iter().position(|e| e["event"] == "step-sent").expect("step-sent");
    let done = j.iter().position(|e| e["event"] == "step-done").expect("step-done");
    assert!(sent < done);
    let d = &j[sent]["details"];
    assert!(d["change_id"].as_str().is_some_and(|c| !c.is_empty()), "{d}");
    assert_eq!(d["previous"]["type"], "CNAME", "{d}");
    assert_eq!(d["previous"]["ttl"], 300, "{d}");
    assert_eq!(d["previous"]["values"][0], PROD_ALB, "{d}");
    assert_eq!(d["new"]["values"][0], STG_ALB, "{d}");

    // Rerun: nothing to do, nothing sent.
    let again = s.drctl().args(["dns-cutover", "--to", "staging", "--yes", "-o", "json"]).run().expect_code(0);
    assert_eq!(again.json()["status"], "already_done", "{}", again.stdout);
    assert_eq!(s.journal().iter().filter(|e| e["event"] == "step-sent").count(), 1);
}

#[test]
fn an_a_alias_moves_to_the_target_zone_alias() {
    let s = setup("cut_alias", true, "");
    s.drctl().args(["dns-cutover", "--to", "staging", "--yes"]).run().expect_code(0);
    let now = s.target(RrType::A).expect("the alias");
    assert_eq!(now.trim_end_matches('.').to_ascii_lowercase(), STG_ALB);
    let j = s.journal();
    let d = &j.iter().find(|e| e["event"] == "step-sent").unwrap()["details"];
    assert_eq!(d["previous"]["alias"]["dns_name"].as_str().map(|n| n.trim_end_matches('.')), Some(PROD_ALB), "{d}");
    assert_eq!(d["new"]["alias"]["hosted_zone_id"], ELB_ZONE, "{d}");
}

#[test]
fn an_unhealthy_target_or_a_refused_confirmation_changes_nothing() {
    let s = setup("cut_refuse", false, "");
    s.health.set_status(503);
    let r = s.drctl().args(["dns-cutover", "--to", "staging", "--yes", "-o", "json"]).run().expect_code(3);
    assert_eq!(r.check("target-healthy")["ok"], false);
    assert!(r.check("target-healthy")["detail"].as_str().unwrap().contains("503"), "{}", r.stdout);
    assert_eq!(s.target(RrType::Cname).as_deref(), Some(PROD_ALB));
    assert!(s.journal().iter().any(|e| e["event"] == "preflight-failed"));

    // Healthy again, but no TTY and no --yes: refused before anything is sent.
    s.health.set_status(200);
    let r = s.drctl().args(["dns-cutover", "--to", "staging"]).stdin("staging\n").run().expect_code(2);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    assert_eq!(s.target(RrType::Cname).as_deref(), Some(PROD_ALB));
    assert!(!s.journal().iter().any(|e| e["event"] == "step-sent"));

    // A dry run reports the step pending and sends nothing.
    let r = s.drctl().args(["dns-cutover", "--to", "staging", "--dry-run", "-o", "json"]).run().expect_code(0);
    assert_eq!(r.json()["steps"][0]["state"], "pending", "{}", r.stdout);
    assert_eq!(s.target(RrType::Cname).as_deref(), Some(PROD_ALB));
}

#[test]
fn a_stale_standby_is_refused_unless_accepted_and_the_waiver_is_journaled() {
    // Declared a warm standby of prod and never synced: its data age is unknown, so not fresh.
    let s = setup("cut_stale", false, "sync_from = \"prod\"\n");
    let r = s.drctl().args(["dns-cutover", "--to", "staging", "--yes", "-o", "json"]).run().expect_code(3);
    let c = r.check("standby-fresh");
    assert_eq!(c["ok"], false);
    assert!(c["detail"].as_str().unwrap().contains("never synced"), "{c}");
    assert_eq!(s.target(RrType::Cname).as_deref(), Some(PROD_ALB));

    let r =
        s.drctl().args(["dns-cutover", "--to", "staging", "--yes", "--accept", "standby-fresh", "-o", "json"]).run();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(s.target(RrType::Cname).as_deref(), Some(STG_ALB));
    let j = s.journal();
    let started = j.iter().rev().find(|e| e["event"] == "run-started").unwrap();
    assert_eq!(started["details"]["accepted"][0]["check"], "standby-fresh", "{started}");
    assert!(started["details"]["accepted"][0]["found"].as_str().unwrap().contains("never synced"), "{started}");
    let _ = &s.dir;
}

#[test]
fn a_change_still_pending_past_the_deadline_is_exit_6_and_reruns_wait_on_it_even_after_kill_9() {
    // Route 53 through a proxy that answers GetChange PENDING while told to, and counts changes.
    let proxy = FaultProxy::start(Moto::shared().port, 0);
    let s = setup_at("cut_pending", false, "", &proxy.endpoint(), "3s");
    proxy.route53_pending(true);
    let r = s.drctl().args(["dns-cutover", "--to", "staging", "--yes", "-o", "json"]).run();
    assert_eq!(r.code, 6, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["status"], "outcome_unknown", "{}", r.stdout);
    assert!(r.stderr.contains("never by sending again"), "the hint says what a rerun does: {}", r.stderr);
    assert_eq!(proxy.stats().route53_changes, 1);
    let failed = s.journal().into_iter().rev().find(|e| e["event"] == "step-failed").expect("step-failed");
    assert!(failed["details"]["change_id"].is_string(), "what was sent is in the failure too: {failed}");

    // A rerun waits on the journaled change; killed with -9 while waiting, it leaves nothing half-done.
    let polled = proxy.stats().route53_pending_answers;
    let mut child = s.drctl().args(["dns-cutover", "--to", "staging", "--yes"]).spawn();
    assert!(
        crate::harness::wait_until(std::time::Duration::from_secs(20), || {
            proxy.stats().route53_pending_answers >= polled + 2
        }),
        "the rerun polls GetChange: {:?}",
        proxy.stats()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(proxy.stats().route53_changes, 1, "the rerun sent nothing: it waited");

    // The change propagates: the next rerun waits on the same change, finds it INSYNC, verifies.
    proxy.route53_pending(false);
    let r = s.drctl().args(["dns-cutover", "--to", "staging", "--yes", "-o", "json"]).run();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["status"], "ok", "{}", r.stdout);
    assert_eq!(proxy.stats().route53_changes, 1, "one change in three runs");
    assert_eq!(s.target(RrType::Cname).as_deref(), Some(STG_ALB));
    let j = s.journal();
    let starts: Vec<&Value> = j.iter().filter(|e| e["event"] == "run-started").collect();
    assert_eq!(starts.len(), 3);
    assert!(starts[2]["details"]["resumes"].is_string(), "{}", starts[2]);
    let done = j.iter().rev().find(|e| e["event"] == "step-done").unwrap();
    assert_eq!(done["details"]["step"], "point-record");
    assert!(done["details"]["previous"]["values"][0] == PROD_ALB, "{done}");
}

#[test]
fn on_a_tty_the_checks_and_the_plan_come_before_the_prompt_and_the_typed_name_proceeds() {
    let s = setup("cut_tty", false, "");
    let cmd = format!(
        "stty cols 160 rows 50; {} -c {} dns-cutover --to staging --no-progress",
        env!("CARGO_BIN_EXE_drctl"),
        s.config.display()
    );
    let envs =
        [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_EC2_METADATA_DISABLED", "true")];
    // Answered once the prompt is there (the checks take well under 5 s); nothing sent before.
    let (status, screen) = crate::harness::on_tty(&cmd, &envs, std::time::Duration::from_secs(5), b"staging\n", || {
        assert_eq!(s.target(RrType::Cname).as_deref(), Some(PROD_ALB), "nothing sent before the answer");
    });
    assert_eq!(status, Some(0), "{screen}");
    let prompt = screen.find("Type the env name").unwrap_or_else(|| panic!("no prompt:\n{screen}"));
    let checks = screen.find("target-healthy").unwrap_or_else(|| panic!("no checks:\n{screen}"));
    let plan = screen.find("pending").unwrap_or_else(|| panic!("no plan:\n{screen}"));
    assert!(checks < prompt && plan < prompt, "the checks and the plan come first:\n{screen}");
    assert_eq!(s.target(RrType::Cname).as_deref(), Some(STG_ALB));
}

#[test]
fn tls_passes_for_a_certificate_valid_for_the_record_name_and_fails_naming_it_otherwise() {
    let s = setup("cut_tls", false, "");
    let record = s.record.clone();
    for (names, ok) in [(vec!["localhost", record.as_str()], true), (vec!["localhost"], false)] {
        let pki = TestDir::new();
        let (ca, cert, key) = crate::harness::http::test_pki(pki.path(), &names);
        let port = crate::harness::http::start_https(&cert, &key);
        // staging's health URL is https on localhost (the certificate's other name).
        let text = std::fs::read_to_string(&s.config)
            .unwrap()
            .replace(&s.health.url(), &format!("https://localhost:{port}/health"));
        std::fs::write(&s.config, text).unwrap();
        let r = s
            .drctl()
            .env("SSL_CERT_FILE", &ca)
            .args(["dns-cutover", "--to", "staging", "--dry-run", "-o", "json"])
            .run();
        let tls = r.check("tls");
        assert_eq!(tls["ok"], ok, "{tls}\n{}", r.stderr);
        assert_eq!(r.check("target-healthy")["ok"], true, "{}", r.stdout);
        if !ok {
            assert!(tls["detail"].as_str().unwrap().contains(&record), "names the record: {tls}");
        }
        // Put the plain URL back for the next round's replace.
        let text = std::fs::read_to_string(&s.config)
            .unwrap()
            .replace(&format!("https://localhost:{port}/health"), &s.health.url());
        std::fs::write(&s.config, text).unwrap();
    }
}
