//! check against moto: the `dns-zone` and `rds-instance` checks read Route 53 and RDS through
//! drctl's clients, pass on what exists and name what does not.

use serde_json::Value;

use crate::clients::{cname_set, sdk, upsert, zone};
use crate::harness::TestDir;
use crate::harness::drctl::{Drctl, RunResult};
use crate::harness::moto::Moto;

const PROD_ALB: &str = "prod-alb-123.us-east-1.elb.amazonaws.com";

/// The check `id` of target `target` in a `check -o json` document.
fn check(r: &RunResult, target: &str, id: &str) -> Value {
    let doc = r.json();
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["target"] == target && c["check"] == id)
        .unwrap_or_else(|| panic!("no {target} {id} in {doc}"))
        .clone()
}

#[test]
fn dns_zone_and_rds_instance_pass_on_what_exists_and_name_what_does_not() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (zone_id, record, instance) = rt.block_on(async {
        let r53 = aws_sdk_route53::Client::new(&sdk());
        let (zone_id, zone_name) = zone(&r53, "chk").await;
        let record = format!("app.{zone_name}");
        upsert(&r53, &zone_id, cname_set(&record, 300, PROD_ALB)).await;
        let instance = crate::clients::rds_instance(&aws_sdk_rds::Client::new(&sdk()), "chk-rds").await;
        (zone_id, record, instance)
    });
    let dir = TestDir::new();
    // The databases do not answer (db-reachable fails, exit 3): only the AWS checks are looked at.
    let config = |zone_id: &str| {
        dir.write_config(&format!(
            "[store]\nurl = \"file://{store}\"\n\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{moto}\"\n\n\
             [dns]\nzone_id = \"{zone_id}\"\nrecord = \"{record}\"\n\n\
             [environments.prod]\ndatabase_url = \"postgres://app@127.0.0.1:1/app\"\nrds_instance = \"{instance}\"\n\n\
             [environments.gone]\ndatabase_url = \"postgres://app@127.0.0.1:1/app\"\nrds_instance = \"chk-no-such-db\"\n",
            store = dir.path().join("store").display(),
            moto = Moto::shared().endpoint(),
        ))
    };

    let r = Drctl::new().config(config(&zone_id)).args(["check", "-o", "json"]).run().expect_code(3);
    let dns = check(&r, "dns", "dns-zone");
    assert_eq!(dns["ok"], true, "{dns}");
    let detail = dns["detail"].as_str().unwrap();
    assert!(detail.contains(&zone_id) && detail.contains(PROD_ALB), "{dns}");
    let rds = check(&r, "prod", "rds-instance");
    assert_eq!(rds["ok"], true, "{rds}");
    assert_eq!(rds["detail"], format!("{instance}: available"), "{rds}");
    let gone = check(&r, "gone", "rds-instance");
    assert_eq!(gone["ok"], false, "{gone}");
    assert!(gone["detail"].as_str().unwrap().contains("chk-no-such-db"), "{gone}");

    let r = Drctl::new().config(config("Z0000NOSUCHZONE")).args(["check", "-o", "json"]).run().expect_code(3);
    let dns = check(&r, "dns", "dns-zone");
    assert_eq!(dns["ok"], false, "{dns}");
    let detail = dns["detail"].as_str().unwrap();
    assert!(detail.contains("Z0000NOSUCHZONE") && detail.contains("NoSuchHostedZone"), "{dns}");
}
