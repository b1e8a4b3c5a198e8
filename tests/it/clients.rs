//! The real Route 53 and RDS clients against moto: the SDK calls drctl sends are ones moto accepts,
//! and what it answers comes back as drctl reads it. What moto does not model (a change still
//! Pending, an edit racing drctl's, RDS's promotion states) is tested on FakeDns and FakeRds,
//! beside them in src/clients.
//!
//! These tests call the library in-process, not the binary, so they cannot take credentials from
//! the environment the way `Drctl` hands them to its children (setting variables in a test process
//! whose other threads read them is unsound): the SDK config is built here with static fake
//! credentials, and otherwise as `Aws` builds it (endpoint, region, retries).

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_route53::config::{Credentials, Region, SharedCredentialsProvider};
use aws_sdk_route53::types::{
    AliasTarget as SdkAliasTarget, Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use drctl::clients::aws::retry_config;
use drctl::clients::dns::{
    AliasTarget, ChangeStatus, Dns, RecordData, RecordSet, RecordType, Route53Dns, record_changed,
};
use drctl::clients::rds::{Rds, SdkRds};
use drctl::error::{Error, exit};

use crate::harness::moto::Moto;
use crate::harness::unique_name;

/// us-east-1's ELB hosted zone, as a `dns_alias_zone_id` would name it.
pub(crate) const ELB_ZONE: &str = "Z35SXDOTRQ7X7K";

pub(crate) fn sdk() -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(Moto::shared().endpoint())
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new("testing", "testing", None, None, "it")))
        .retry_config(retry_config())
        .build()
}

/// A new hosted zone `<unique>.example.com` (its id without `/hostedzone/`, its name).
pub(crate) async fn zone(r53: &aws_sdk_route53::Client, prefix: &str) -> (String, String) {
    let name = format!("{}.example.com", unique_name(prefix).replace('_', "-"));
    let out = r53.create_hosted_zone().name(&name).caller_reference(&name).send().await.expect("CreateHostedZone");
    let id = out.hosted_zone().expect("hosted zone").id().trim_start_matches("/hostedzone/").to_string();
    (id, name)
}

/// Set a record up as an operator would, with the raw SDK. Names go without the trailing dot: moto
/// matches a later DELETE against the name as it was sent here, with the dot stripped.
pub(crate) async fn upsert(r53: &aws_sdk_route53::Client, zone_id: &str, set: ResourceRecordSet) {
    let change = Change::builder().action(ChangeAction::Upsert).resource_record_set(set).build().unwrap();
    r53.change_resource_record_sets()
        .hosted_zone_id(zone_id)
        .change_batch(ChangeBatch::builder().changes(change).build().unwrap())
        .send()
        .await
        .expect("ChangeResourceRecordSets (setup)");
}

pub(crate) fn cname_set(name: &str, ttl: i64, value: &str) -> ResourceRecordSet {
    ResourceRecordSet::builder()
        .name(name)
        .r#type(RrType::Cname)
        .ttl(ttl)
        .resource_records(ResourceRecord::builder().value(value).build().unwrap())
        .build()
        .unwrap()
}

pub(crate) fn alias_set(name: &str, dns_name: &str) -> ResourceRecordSet {
    let target =
        SdkAliasTarget::builder().dns_name(dns_name).hosted_zone_id(ELB_ZONE).evaluate_target_health(false).build();
    ResourceRecordSet::builder().name(name).r#type(RrType::A).alias_target(target.unwrap()).build().unwrap()
}

// --- Route 53 ---------------------------------------------------------------------------------

#[tokio::test]
async fn current_finds_cname_and_alias_records_by_their_exact_name() {
    let r53 = aws_sdk_route53::Client::new(&sdk());
    let (zone_id, zone_name) = zone(&r53, "dns_current").await;
    let app = format!("app.{zone_name}");
    upsert(&r53, &zone_id, cname_set(&app, 60, "Stg-ALB.example.net")).await;
    upsert(&r53, &zone_id, alias_set(&format!("www.{zone_name}"), "dualstack.prod-alb-1.us-east-1.elb.amazonaws.com"))
        .await;
    // Listed right after app.<zone>: a lookup of a name that does not exist starts there.
    upsert(&r53, &zone_id, cname_set(&format!("dualstack.app.{zone_name}"), 60, "other.example.net")).await;
    let dns = Route53Dns::new(r53.clone());

    let c = dns.current(&zone_id, &app, RecordType::Cname).await.unwrap().expect("the CNAME");
    assert_eq!(c, RecordSet::cname(format!("{app}."), 60, "Stg-ALB.example.net"), "as listed: the name with its dot");
    assert!(c.points_at("stg-alb.example.net."));
    // The zone id as Route 53 itself returns it works too (the SDK strips the prefix).
    let again = dns.current(&format!("/hostedzone/{zone_id}"), &format!("{app}."), RecordType::Cname).await.unwrap();
    assert_eq!(again.as_ref(), Some(&c));

    let a = dns.current(&zone_id, &format!("www.{zone_name}"), RecordType::A).await.unwrap().expect("the alias");
    let RecordData::Alias(target) = &a.data else { panic!("not an alias: {a:?}") };
    assert_eq!(target.hosted_zone_id, ELB_ZONE);
    assert!(!target.evaluate_target_health);
    assert!(a.points_at("prod-alb-1.us-east-1.elb.amazonaws.com"), "{a:?}");

    // Exact matches only: the wrong type, and the records listed next, are not the record.
    assert_eq!(dns.current(&zone_id, &app, RecordType::A).await.unwrap(), None);
    assert_eq!(dns.current(&zone_id, &format!("api.{zone_name}"), RecordType::Cname).await.unwrap(), None);
    assert_eq!(dns.current(&zone_id, &format!("zzz.{zone_name}"), RecordType::Cname).await.unwrap(), None);
}

#[tokio::test]
async fn current_in_a_zone_that_does_not_exist_names_the_zone() {
    let dns = Route53Dns::new(aws_sdk_route53::Client::new(&sdk()));
    let err = dns.current("Z0000NOSUCHZONE", "app.example.com", RecordType::Cname).await.unwrap_err();
    let Error::Unreachable { what, problem } = &err else { panic!("{err:?}") };
    assert!(what.contains("Z0000NOSUCHZONE"), "{what}");
    assert!(problem.contains("NoSuchHostedZone") && problem.contains("app.example.com"), "{problem}");
    assert_eq!(err.exit_code(), exit::PREFLIGHT);
}

#[tokio::test]
async fn change_swaps_a_cname_in_one_batch_and_restores_the_journaled_record_exactly() {
    let r53 = aws_sdk_route53::Client::new(&sdk());
    let (zone_id, zone_name) = zone(&r53, "dns_swap").await;
    let app = format!("app.{zone_name}");
    upsert(&r53, &zone_id, cname_set(&app, 300, "stg-alb.example.net")).await;
    let dns = Route53Dns::new(r53.clone());

    let old = dns.current(&zone_id, &app, RecordType::Cname).await.unwrap().unwrap();
    let journaled = serde_json::to_string(&old).unwrap();
    let new = RecordSet::cname(&app, 60, "prod-alb.example.net");
    let id = dns.change(&zone_id, Some(&old), &new, "drctl dns-cutover --to prod").await.unwrap();
    assert!(id.0.contains("/change/"), "{id}");
    assert_eq!(dns.status(&id).await.unwrap(), ChangeStatus::InSync, "moto is INSYNC at once");
    let now = dns.current(&zone_id, &app, RecordType::Cname).await.unwrap().unwrap();
    assert_eq!(now, RecordSet::cname(format!("{app}."), 60, "prod-alb.example.net"));

    // Rollback's shape: DELETE what is there now, CREATE the journaled record, read back equal.
    let previous: RecordSet = serde_json::from_str(&journaled).unwrap();
    dns.change(&zone_id, Some(&now), &previous, "drctl rollback").await.unwrap();
    let restored = dns.current(&zone_id, &app, RecordType::Cname).await.unwrap().unwrap();
    assert_eq!(serde_json::to_string(&restored).unwrap(), journaled);

    // With no record there, the batch is the CREATE alone.
    let fresh = RecordSet::alias(
        format!("new.{zone_name}"),
        RecordType::A,
        AliasTarget {
            dns_name: "dualstack.prod-alb-1.us-east-1.elb.amazonaws.com".into(),
            hosted_zone_id: ELB_ZONE.into(),
            evaluate_target_health: true,
        },
    );
    dns.change(&zone_id, None, &fresh, "drctl dns-cutover --to prod").await.unwrap();
    let created = dns.current(&zone_id, &fresh.name, RecordType::A).await.unwrap().unwrap();
    assert_eq!(created.data, fresh.data);
}

#[tokio::test]
async fn a_change_whose_delete_no_longer_matches_is_refused_as_a_concurrent_edit_and_changes_nothing() {
    let r53 = aws_sdk_route53::Client::new(&sdk());
    let (zone_id, zone_name) = zone(&r53, "dns_race").await;
    let app = format!("app.{zone_name}");
    upsert(&r53, &zone_id, cname_set(&app, 60, "stg-alb.example.net")).await;
    let dns = Route53Dns::new(r53.clone());
    let before = dns.current(&zone_id, &app, RecordType::Cname).await.unwrap().unwrap();

    // What drctl read before someone edited the record. moto checks a DELETE against every value the
    // record ever had rather than its current one, so only a value it never had is refused there;
    // Route 53 refuses any value but the current one (FakeDns stages that race).
    let stale = RecordSet::cname(format!("{app}."), 60, "rep-alb.example.net");
    let new = RecordSet::cname(&app, 60, "prod-alb.example.net");
    let err = dns.change(&zone_id, Some(&stale), &new, "drctl dns-cutover --to prod").await.unwrap_err();
    assert!(record_changed(&err), "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains(&zone_id) && shown.contains(&app) && shown.contains("changed since drctl read it"),
        "{shown}"
    );
    assert_eq!(err.exit_code(), exit::STEP_FAILED);
    assert_eq!(dns.current(&zone_id, &app, RecordType::Cname).await.unwrap(), Some(before), "the batch is atomic");

    // A batch refused for another reason is not a concurrent edit.
    let outside = RecordSet::cname("app.other-zone.example.org", 60, "prod-alb.example.net");
    let err = dns.change(&zone_id, None, &outside, "wrong zone").await.unwrap_err();
    assert!(!record_changed(&err), "{err}");
    assert!(err.to_string().contains("not permitted in zone"), "{err}");
}

// --- RDS --------------------------------------------------------------------------------------

/// A PostgreSQL RDS instance in moto, `<prefix>-<unique>`; its id.
pub(crate) async fn rds_instance(client: &aws_sdk_rds::Client, prefix: &str) -> String {
    let id = unique_name(prefix).replace('_', "-");
    client
        .create_db_instance()
        .db_instance_identifier(&id)
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("app")
        .master_user_password("not-a-secret-1")
        .send()
        .await
        .expect("CreateDBInstance");
    id
}

/// A primary and its read replica in moto's RDS: (primary id, replica id).
pub(crate) async fn rds_pair(client: &aws_sdk_rds::Client, prefix: &str) -> (String, String) {
    let primary = rds_instance(client, &format!("{prefix}-p")).await;
    let replica = unique_name(&format!("{prefix}-r")).replace('_', "-");
    client
        .create_db_instance_read_replica()
        .db_instance_identifier(&replica)
        .source_db_instance_identifier(&primary)
        .send()
        .await
        .expect("CreateDBInstanceReadReplica");
    (primary, replica)
}

#[tokio::test]
async fn rds_describes_a_primary_and_its_replica_and_promotes_the_replica() {
    let client = aws_sdk_rds::Client::new(&sdk());
    let (primary, replica) = rds_pair(&client, "rds").await;
    let rds = SdkRds::new(client);

    let p = rds.describe(&primary).await.unwrap().expect("the primary");
    assert_eq!(
        (p.id.as_str(), p.status.as_str(), p.read_replica_source.as_deref()),
        (primary.as_str(), "available", None)
    );
    let (host, port) = p.endpoint.clone().expect("an endpoint");
    assert!(!host.is_empty() && port == 5432, "{host}:{port}");
    let r = rds.describe(&replica).await.unwrap().expect("the replica");
    assert_eq!(r.read_replica_source.as_deref(), Some(primary.as_str()));
    assert!(r.is_replica() && r.is_available());

    assert_eq!(rds.describe("drctl-no-such-instance").await.unwrap(), None);

    rds.promote_read_replica(&replica).await.unwrap();
    let after = rds.describe(&replica).await.unwrap().unwrap();
    // RDS goes "modifying" and, once available, names no source. moto is available at once and
    // keeps the source, so a runbook's "promoted?" must not rest on the source alone against moto.
    assert_eq!(after.status, "available");
    assert_eq!(after.read_replica_source.as_deref(), Some(primary.as_str()));
}
