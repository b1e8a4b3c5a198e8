//! pitr-restore of an RDS env, through the real SDK (`SdkRds`) against moto, with the fault proxy
//! in front: it counts and records every RestoreDBInstanceToPointInTime (moto's restore copies
//! the source's settings whatever the request says, so only the request shows that drctl sent
//! them) and, for the exit 6 test, plays RDS's `creating` that moto skips. The waits' state machine
//! itself (creating → backing-up → available, the deadline, the rerun) is also covered on FakeRds
//! in src/runbooks/pitr_restore/rds.rs.
//!
//! The source is a PostgreSQL instance in moto in a DB subnet group of the default VPC's subnets,
//! with two VPC security groups, its own parameter group, Multi-AZ, 7 days of backups and two tags.
//! The tests have no EC2 SDK: the subnets and security groups are made with EC2 Query API calls
//! sent to moto by hand (moto routes them by the credential scope and checks no signature).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aws_sdk_rds::types::Tag;

use crate::harness::drctl::{Drctl, RunResult};
use crate::harness::fault_proxy::FaultProxy;
use crate::harness::moto::Moto;
use crate::harness::{TestDir, random_hex, unique_name};

/// The source instance's master password: never drctl's to know, never in its output.
const MASTER_PASSWORD: &str = "pitr-master-not-for-output-1";

/// One EC2 Query API call to moto; the response body. Panics unless moto answers 200.
fn ec2(params: &[(&str, &str)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let body = params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .chain(["Version=2016-11-15".to_string()])
        .collect::<Vec<_>>()
        .join("&");
    let port = Moto::shared().port;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to moto");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\
         X-Amz-Date: 20260101T000000Z\r\nAuthorization: AWS4-HMAC-SHA256 \
         Credential=testing/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host;x-amz-date, Signature=00\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"), "EC2 {params:?}:\n{out}");
    out
}

/// The text of every `<tag>…</tag>` in `xml`.
fn xml_values<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

struct Source {
    id: String,
    subnet_group: String,
    security_groups: Vec<String>,
    parameter_group: String,
}

/// The source instance, set up as an operator's production instance is (module doc).
async fn source(client: &aws_sdk_rds::Client) -> Source {
    let id = unique_name("pitr-src").replace('_', "-");
    let subnets_xml =
        ec2(&[("Action", "DescribeSubnets"), ("Filter.1.Name", "default-for-az"), ("Filter.1.Value.1", "true")]);
    let subnets: Vec<String> = xml_values(&subnets_xml, "subnetId").into_iter().take(2).map(str::to_string).collect();
    assert_eq!(subnets.len(), 2, "moto's default VPC has a subnet per AZ:\n{subnets_xml}");
    let vpc = xml_values(&subnets_xml, "vpcId")[0].to_string();
    let security_groups: Vec<String> = ["a", "b"]
        .iter()
        .map(|n| {
            let name = format!("{id}-{n}");
            let xml = ec2(&[
                ("Action", "CreateSecurityGroup"),
                ("GroupName", &name),
                ("GroupDescription", "pitr-restore test"),
                ("VpcId", &vpc),
            ]);
            xml_values(&xml, "groupId")[0].to_string()
        })
        .collect();
    let subnet_group = format!("{id}-subnets");
    client
        .create_db_subnet_group()
        .db_subnet_group_name(&subnet_group)
        .db_subnet_group_description("pitr-restore test")
        .set_subnet_ids(Some(subnets))
        .send()
        .await
        .expect("CreateDBSubnetGroup");
    let parameter_group = format!("{id}-pg16");
    client
        .create_db_parameter_group()
        .db_parameter_group_name(&parameter_group)
        .db_parameter_group_family("postgres16")
        .description("pitr-restore test")
        .send()
        .await
        .expect("CreateDBParameterGroup");
    client
        .create_db_instance()
        .db_instance_identifier(&id)
        .engine("postgres")
        .engine_version("16.3")
        .db_instance_class("db.m5.large")
        .allocated_storage(20)
        .master_username("app")
        .master_user_password(MASTER_PASSWORD)
        .db_subnet_group_name(&subnet_group)
        .set_vpc_security_group_ids(Some(security_groups.clone()))
        .db_parameter_group_name(&parameter_group)
        .multi_az(true)
        .backup_retention_period(7)
        .publicly_accessible(false)
        .tags(Tag::builder().key("team").value("payments").build())
        .tags(Tag::builder().key("cost-center").value("42").build())
        .send()
        .await
        .expect("CreateDBInstance");
    Source { id, subnet_group, security_groups, parameter_group }
}

struct World {
    rt: tokio::runtime::Runtime,
    client: aws_sdk_rds::Client,
    src: Source,
    proxy: FaultProxy,
    dir: TestDir,
    config: PathBuf,
    password: String,
}

/// A source in moto, the proxy in front of moto (restores `creating` for `creating_describes`
/// describes) and a config whose env `prod` is the source.
fn world(creating_describes: u32, restore_timeout: &str) -> World {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = aws_sdk_rds::Client::new(&crate::clients::sdk());
    let src = rt.block_on(source(&client));
    let proxy = FaultProxy::start(Moto::shared().port, 0);
    proxy.simulate_rds_restores(creating_describes);
    let dir = TestDir::new();
    let config = dir.write_config(&format!(
        "[store]\nurl = \"file://{}/store\"\n\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\n\
         [policy]\nrestore_timeout = \"{restore_timeout}\"\n\n[environments.prod]\n\
         database_url = \"postgres://app:${{PITR_PG_PASSWORD}}@db.invalid:5432/app\"\nrds_instance = \"{}\"\n",
        dir.path().display(),
        proxy.endpoint(),
        src.id
    ));
    World { rt, client, src, proxy, dir, config, password: random_hex(12) }
}

impl World {
    fn drctl(&self) -> Drctl {
        Drctl::new().config(&self.config).env("PITR_PG_PASSWORD", &self.password)
    }

    fn restore(&self, args: &[&str]) -> RunResult {
        let r = self.drctl().args(["pitr-restore", "--env", "prod", "-o", "json"]).args(args).run();
        r.assert_no_secret(&self.password);
        r.assert_no_secret(MASTER_PASSWORD);
        r
    }

    fn describe(&self, id: &str) -> Option<aws_sdk_rds::types::DbInstance> {
        match self.rt.block_on(self.client.describe_db_instances().db_instance_identifier(id).send()) {
            Ok(out) => out.db_instances().first().cloned(),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_db_instance_not_found_fault()) => None,
            Err(e) => panic!("DescribeDBInstances {id}: {e:?}"),
        }
    }

    /// What RDS (moto) shows of `id`: the settings pitr-restore copies.
    fn settings(&self, id: &str) -> Settings {
        let db = self.describe(id).unwrap_or_else(|| panic!("no instance {id}"));
        let mut security_groups: Vec<String> =
            db.vpc_security_groups().iter().filter_map(|g| g.vpc_security_group_id()).map(str::to_string).collect();
        security_groups.sort();
        Settings {
            subnet_group: db.db_subnet_group().and_then(|g| g.db_subnet_group_name()).map(str::to_string),
            security_groups,
            parameter_group: db
                .db_parameter_groups()
                .first()
                .and_then(|g| g.db_parameter_group_name())
                .map(str::to_string),
            multi_az: db.multi_az(),
            instance_class: db.db_instance_class().map(str::to_string),
            tags: db
                .tag_list()
                .iter()
                .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
                .collect(),
        }
    }

    fn journal(&self) -> Vec<serde_json::Value> {
        let log = self.drctl().args(["log", "-o", "json", "--limit", "1000"]).run().expect_code(0).json();
        log["entries"].as_array().unwrap().clone()
    }
}

#[derive(Debug, PartialEq)]
struct Settings {
    subnet_group: Option<String>,
    security_groups: Vec<String>,
    parameter_group: Option<String>,
    multi_az: Option<bool>,
    instance_class: Option<String>,
    tags: BTreeMap<String, String>,
}

/// The fields of a recorded RestoreDBInstanceToPointInTime whose names start with `prefix`
/// (`VpcSecurityGroupIds.` → the list's members, sorted).
fn members(req: &BTreeMap<String, String>, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = req.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v.clone()).collect();
    v.sort();
    v
}

/// The request's tags, from `Tags.Tag.N.Key` / `Tags.Tag.N.Value`.
fn request_tags(req: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    req.iter()
        .filter_map(|(k, key)| {
            let n = k.strip_prefix("Tags.")?.strip_suffix(".Key")?;
            Some((key.clone(), req.get(&format!("Tags.{n}.Value")).cloned().unwrap_or_default()))
        })
        .collect()
}

#[test]
fn restores_to_latest_and_to_a_time_in_the_window_copy_the_sources_settings_and_a_rerun_sends_nothing() {
    let w = world(0, "2m");
    let src = &w.src;
    // A window of a few seconds: from the automated snapshot moto takes at creation to now.
    // The target: 2 s after creation (cut to whole seconds, so at least 1 s after its snapshot).
    std::thread::sleep(Duration::from_millis(3_500));
    let created = w.describe(&src.id).unwrap().instance_create_time().cloned().unwrap();
    let t = SystemTime::try_from(created).unwrap() + Duration::from_secs(2);
    let t = humantime::format_rfc3339_seconds(t).to_string();
    let t_ms = humantime::format_rfc3339_millis(humantime::parse_rfc3339(&t).unwrap()).to_string();

    let latest_id = format!("{}-latest", src.id);
    let at_id = format!("{}-at", src.id);
    let r = w.restore(&["--latest", "--target-instance", &latest_id, "--yes"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let doc = r.json();
    assert_eq!(doc["status"], "ok", "{doc}");
    for id in ["target-instance-free", "source-instance", "target-window"] {
        assert_eq!(r.check(id)["ok"], true, "{id}: {doc}");
    }
    assert!(r.check("target-window")["detail"].as_str().unwrap().contains("its oldest automated snapshot"), "{doc}");
    assert_eq!(doc["target_instance"], latest_id.as_str());
    assert_eq!(doc["source_instance"], src.id.as_str());
    let endpoint = doc["endpoint"].as_str().expect("an endpoint");
    assert!(endpoint.starts_with(&format!("{latest_id}.")) && endpoint.ends_with(":5432"), "{endpoint}");
    assert!(humantime::parse_rfc3339_weak(doc["restored_to"].as_str().unwrap()).is_ok(), "{doc}");

    let r = w.restore(&["--target-time", &t, "--target-instance", &at_id, "--yes"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let doc = r.json();
    assert_eq!(doc["status"], "ok", "{doc}");
    assert!(r.check("target-window")["detail"].as_str().unwrap().contains("lies in"), "{doc}");
    assert_eq!(doc["restored_to"], t_ms.as_str());

    // What moto stores for each new instance: the source's settings, and drctl's tags.
    let want = w.settings(&src.id);
    assert_eq!(want.subnet_group.as_deref(), Some(src.subnet_group.as_str()));
    let mut sgs = src.security_groups.clone();
    sgs.sort();
    assert_eq!(want.security_groups, sgs);
    assert_eq!(want.parameter_group.as_deref(), Some(src.parameter_group.as_str()));
    assert_eq!((want.multi_az, want.instance_class.as_deref()), (Some(true), Some("db.m5.large")));
    for (id, to) in [(&latest_id, "latest".to_string()), (&at_id, t_ms.clone())] {
        let got = w.settings(id);
        assert_eq!(
            (&got.subnet_group, &got.security_groups, &got.parameter_group, got.multi_az, &got.instance_class),
            (&want.subnet_group, &want.security_groups, &want.parameter_group, want.multi_az, &want.instance_class),
            "{id}"
        );
        assert_eq!(got.tags.get("team").map(String::as_str), Some("payments"), "{id}: {:?}", got.tags);
        assert_eq!(got.tags.get("cost-center").map(String::as_str), Some("42"));
        assert_eq!(got.tags.get("drctl:pitr-restore-of"), Some(&src.id));
        assert_eq!(got.tags.get("drctl:pitr-restore-to"), Some(&to));
        assert!(got.tags.contains_key("drctl:pitr-restore-run"), "{:?}", got.tags);
    }

    // What drctl sent: every setting explicitly (moto would have copied them anyway).
    let stats = w.proxy.stats();
    assert_eq!(stats.rds_restores, 2);
    for (req, id) in stats.rds_restore_requests.iter().zip([&latest_id, &at_id]) {
        assert_eq!(req.get("SourceDBInstanceIdentifier"), Some(&src.id), "{req:?}");
        assert_eq!(req.get("TargetDBInstanceIdentifier"), Some(id));
        assert_eq!(req.get("DBSubnetGroupName"), Some(&src.subnet_group), "{req:?}");
        assert_eq!(members(req, "VpcSecurityGroupIds."), sgs, "{req:?}");
        assert_eq!(req.get("DBParameterGroupName"), Some(&src.parameter_group));
        assert_eq!(req.get("MultiAZ").map(String::as_str), Some("true"));
        assert_eq!(req.get("DBInstanceClass").map(String::as_str), Some("db.m5.large"));
        assert_eq!(req.get("PubliclyAccessible").map(String::as_str), Some("false"));
        let tags = request_tags(req);
        assert_eq!(tags.get("team").map(String::as_str), Some("payments"), "{req:?}");
        assert_eq!(tags.get("drctl:pitr-restore-of"), Some(&src.id));
    }
    let (latest_req, at_req) = (&stats.rds_restore_requests[0], &stats.rds_restore_requests[1]);
    assert_eq!(latest_req.get("UseLatestRestorableTime").map(String::as_str), Some("true"));
    assert!(!latest_req.contains_key("RestoreTime"));
    let sent_time = at_req.get("RestoreTime").expect("RestoreTime");
    assert_eq!(humantime::parse_rfc3339_weak(sent_time).unwrap(), humantime::parse_rfc3339(&t).unwrap(), "{sent_time}");

    // Journaled: each restore as sent, with what it copied.
    let journal = w.journal();
    let sent: Vec<&serde_json::Value> =
        journal.iter().filter(|e| e["event"] == "step-sent" && e["details"]["step"] == "restore").collect();
    assert_eq!(sent.len(), 2, "{journal:?}");
    assert!(sent.iter().any(|e| e["details"]["target_instance"] == at_id.as_str()
        && e["details"]["subnet_group"] == src.subnet_group.as_str()));

    // The same command again: the instance is found by its tags, nothing is sent.
    let again = w.restore(&["--latest", "--target-instance", &latest_id, "--yes"]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    let doc = again.json();
    assert_eq!(doc["status"], "already_done", "{doc}");
    assert_eq!(doc["endpoint"], endpoint);
    assert!(again.check("target-instance-free")["detail"].as_str().unwrap().contains("continued, not sent again"));
    // Another point into an instance that exists: refused, whatever made it.
    let other = w.restore(&["--target-time", &t, "--target-instance", &latest_id, "--yes"]);
    assert_eq!(other.code, 3, "{}\n{}", other.stdout, other.stderr);
    let free = other.check("target-instance-free");
    assert!(free["detail"].as_str().unwrap().contains("not from"), "{free}");
    assert_eq!(w.proxy.stats().rds_restores, 2, "no restore sent by the reruns");
    let _ = &w.dir;
}

#[test]
fn a_time_outside_the_window_is_refused_stating_it_and_bad_input_names_the_flag_and_nothing_is_created() {
    let w = world(0, "2m");
    let target = format!("{}-out", w.src.id);
    let r = w.restore(&["--target-time", "2020-01-01T00:00:00Z", "--target-instance", &target, "--yes"]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    let doc = r.json();
    assert_eq!(doc["status"], "preflight_failed");
    let window = r.check("target-window");
    let detail = window["detail"].as_str().unwrap();
    assert_eq!(window["ok"], false);
    assert!(
        detail.starts_with("2020-01-01T00:00:00.000Z is outside")
            && detail.contains(&w.src.id)
            && detail.contains("(its oldest automated snapshot) ..")
            && detail.contains("(LatestRestorableTime)"),
        "{detail}"
    );
    assert!(r.stderr.contains("target-window"), "{}", r.stderr);
    assert_eq!(w.describe(&target).map(|d| d.db_instance_identifier().map(str::to_string)), None);

    // Bad input: exit 2 naming the flag and value, before anything is asked of RDS.
    for (args, named) in [
        (vec!["--target-lsn", "0/3000060", "--target-instance", target.as_str()], "--target-lsn 0/3000060"),
        (vec!["--latest", "--target-instance", "Bad_Id"], "--target-instance Bad_Id"),
        (vec!["--target-time", "yesterday", "--target-instance", target.as_str()], "--target-time yesterday"),
        (
            vec!["--target-time", "2026-12-01T13:59:00+02:00", "--target-instance", target.as_str()],
            "--target-time 2026-12-01T13:59:00+02:00",
        ),
        (vec!["--latest", "--target-instance", w.src.id.as_str()], "own instance"),
    ] {
        let mut all = args.clone();
        all.push("--yes");
        let r = w.restore(&all);
        assert_eq!(r.code, 2, "{args:?}\n{}\n{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(named), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{}", r.stdout);
    }
    let stats = w.proxy.stats();
    assert_eq!(stats.rds_restores, 0);
    assert_eq!(w.describe(&target).map(|_| ()), None, "nothing created");
    let journal = w.journal();
    assert!(!journal.iter().any(|e| e["event"] == "run-started"), "{journal:?}");
}

#[test]
fn past_restore_timeout_it_exits_6_and_the_rerun_waits_on_the_same_instance_never_restoring_twice() {
    // RDS keeps the new instance `creating` far longer than restore_timeout.
    let w = world(1_000_000, "3s");
    let target = format!("{}-slow", w.src.id);
    let args = ["--latest", "--target-instance", &target, "--yes"];
    let r = w.restore(&args);
    assert_eq!(r.code, 6, "{}\n{}", r.stdout, r.stderr);
    let doc = r.json();
    assert_eq!(doc["status"], "outcome_unknown", "{doc}");
    assert!(r.stderr.contains("rerun the same command"), "{}", r.stderr);
    assert_eq!(w.proxy.stats().rds_restores, 1);
    let steps: Vec<(String, String)> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap().to_string(), s["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(steps, [("restore".into(), "applied".into()), ("wait-available".into(), "failed".into())]);
    // Sent, journaled before the wait (`log` lists newest first: compare seq).
    let journal = w.journal();
    let seq = |event: &str, step: &str| {
        journal.iter().find(|e| e["event"] == event && e["details"]["step"] == step).and_then(|e| e["seq"].as_u64())
    };
    let (sent, failed) = (seq("step-sent", "restore"), seq("step-failed", "wait-available"));
    assert!(sent.is_some() && failed.is_some() && sent < failed, "{journal:?}");

    // RDS finishes while the rerun waits (its 4th describe of the instance): it resumes the run,
    // finds the instance by its tags, waits, and ends ok, with no second restore.
    w.proxy.rds_finish_restores_after(3);
    let r = w.restore(&args);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let doc = r.json();
    assert_eq!(doc["status"], "ok", "{doc}");
    let states: Vec<&str> = doc["steps"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["done", "applied"], "{doc}");
    assert!(r.check("unfinished-run")["detail"].as_str().unwrap().starts_with("resumes run"), "{doc}");
    assert!(doc["endpoint"].as_str().unwrap().ends_with(":5432"), "{doc}");
    assert_eq!(w.proxy.stats().rds_restores, 1, "RestoreDBInstanceToPointInTime once in two runs");
    let journal = w.journal();
    let started: Vec<&serde_json::Value> = journal.iter().filter(|e| e["event"] == "run-started").collect();
    assert!(started.iter().any(|e| e["details"]["resumes"].is_string()), "{started:?}");
}

#[test]
fn sdk_rds_reads_the_settings_it_copies_and_the_window_from_moto() {
    use drctl::clients::rds::{Rds, SdkRds};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = aws_sdk_rds::Client::new(&crate::clients::sdk());
    let src = rt.block_on(source(&client));
    let rds = SdkRds::new(client);
    let i = rt.block_on(rds.describe(&src.id)).unwrap().expect("the source");
    assert_eq!(i.subnet_group.as_deref(), Some(src.subnet_group.as_str()));
    let (mut got, mut want) = (i.security_groups.clone(), src.security_groups.clone());
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(i.parameter_group.as_deref(), Some(src.parameter_group.as_str()));
    assert_eq!(
        (i.multi_az, i.instance_class.as_deref(), i.backup_retention_days),
        (Some(true), Some("db.m5.large"), Some(7))
    );
    assert_eq!(i.publicly_accessible, Some(false));
    assert_eq!(i.tag("team"), Some("payments"));
    let latest = i.latest_restorable_time.expect("LatestRestorableTime");
    // moto answers DescribeDBInstanceAutomatedBackups without a RestoreWindow: the start is the
    // oldest automated snapshot, which moto takes when it creates the instance.
    let e = rt.block_on(rds.earliest_restorable_time(&src.id)).unwrap().expect("a window start");
    assert_eq!(e.from, "its oldest automated snapshot");
    assert!(e.time <= latest, "{e:?} .. {latest:?}");
    assert_eq!(rt.block_on(rds.earliest_restorable_time("drctl-no-such-instance")).unwrap(), None);
}
