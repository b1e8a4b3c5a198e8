//! pitr-restore --target-instance NEW_ID: an RDS env's instance restored to a point in time as a
//! new instance beside it. The console procedure it replaces: "Restore to point in time" on the
//! source, then re-enter by hand the subnet group, security groups, parameter group, Multi-AZ and
//! instance class (the form defaults to the account's: the default VPC, its default security
//! group, the engine's default parameter group), then refresh until the new instance is
//! available and copy its endpoint.
//!
//! Preflight (exit 3, nothing created): `target-instance-free` (no NEW_ID, or the one this command
//! created earlier, recognised by its tags: then the run resumes with it), `source-instance` (the
//! env's instance exists, is available, keeps automated backups), `target-window` (the time lies in
//! the source's restorable window, which the failure states; see clients/rds.rs for where its start
//! comes from).
//!
//! Steps: `restore` (RestoreDBInstanceToPointInTime with every setting copied from the source and
//! tags saying drctl made it from which source to which point; journaled as sent), `wait-available`
//! (DescribeDBInstances until `available`; past policy.restore_timeout exit 6). A rerun finds the
//! instance by its tags and waits on it: the restore is never sent twice. Locks `pitr:ENV` (one
//! restore of an env at a time) and `rds:NEW_ID` (one run creating that instance). The source is
//! only read.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::local::Target;
use crate::cli::PitrRestoreArgs;
use crate::clients::rds::{InstanceInfo, Rds, RestorePoint, RestoreRequest};
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::engine::run::Runbook;
use crate::engine::runctx::wait_for;
use crate::engine::step::{Check, Step, StepLog};
use crate::error::{Error, Result};

/// How often RDS is asked how the restore is going: it takes many minutes (the AWS CLI's waiter
/// asks every 30 s); a few seconds keeps the report's timing honest without throttling.
const POLL_RDS: Duration = Duration::from_secs(5);

/// The tags that mark an instance as this command's: from which source, to which point, by which
/// run. A rerun recognises its instance by the first two, whatever the journal holds.
pub const TAG_OF: &str = "drctl:pitr-restore-of";
pub const TAG_TO: &str = "drctl:pitr-restore-to";
pub const TAG_RUN: &str = "drctl:pitr-restore-run";

/// Statuses an instance being restored does not come back from by waiting.
const FAILED: &[&str] = &[
    "failed",
    "restore-error",
    "incompatible-restore",
    "incompatible-parameters",
    "incompatible-network",
    "incompatible-option-group",
    "inaccessible-encryption-credentials",
    "storage-full",
    "deleting",
];

/// Statuses of a source RDS restores from: `backing-up` is its daily backup window.
const SOURCE_OK: &[&str] = &["available", "backing-up"];

pub async fn pitr_restore_rds(cx: &Ctx, env: &EnvConfig, args: &PitrRestoreArgs, target: &str) -> Result<Runbook> {
    let point = restore_point(args)?;
    let api: Arc<dyn Rds> = Arc::new(cx.rds_api().await);
    runbook(env, point, args.target_time.as_deref(), target, api, POLL_RDS)
}

/// `--target-time T` or `--latest`; `--target-lsn` is a usage error (RDS restores to a time).
fn restore_point(args: &PitrRestoreArgs) -> Result<RestorePoint> {
    if let Some(l) = &args.target_lsn {
        return Err(Error::usage(format!(
            "--target-lsn {l}: an RDS instance is restored to a time, not a WAL location \
             (RestoreDBInstanceToPointInTime takes none)"
        ))
        .with_hint("give --target-time RFC3339 (UTC, ending in Z) or --latest"));
    }
    Ok(match Target::from_args(args)? {
        Target::Time(t) => RestorePoint::Time(t),
        Target::Latest => RestorePoint::Latest,
        Target::Lsn(_) => unreachable!("--target-lsn is refused above"),
        Target::Backup(_) => unreachable!("from_args never names a backup: drill does"),
    })
}

/// The runbook over `api` (tests hand it a FakeRds), polling every `poll`.
pub(crate) fn runbook(
    env: &EnvConfig,
    point: RestorePoint,
    time_arg: Option<&str>,
    target: &str,
    api: Arc<dyn Rds>,
    poll: Duration,
) -> Result<Runbook> {
    let source =
        env.rds_instance.clone().ok_or_else(|| Error::usage(format!("env {} has no rds_instance", env.name)))?;
    crate::config::rds_instance_id(target).map_err(|p| {
        Error::usage(format!("--target-instance {target}: {p}"))
            .with_hint("give the identifier of the instance to create, e.g. app-prod-restored")
    })?;
    // RDS stores identifiers lowercased: `App-X` and `app-x` are one instance, and one lock.
    let target = target.to_ascii_lowercase();
    if target.eq_ignore_ascii_case(&source) {
        return Err(Error::usage(format!(
            "--target-instance {target} is {}'s own instance: pitr-restore creates a new instance beside it",
            env.name
        ))
        .with_hint(format!("give a new identifier, e.g. {target}-restored")));
    }
    let to = match point {
        RestorePoint::Time(t) => at(t),
        RestorePoint::Latest => "latest".to_string(),
    };
    let line = match (point, time_arg) {
        (RestorePoint::Time(_), Some(t)) => format!("--env {} --target-time {t} --target-instance {target}", env.name),
        _ => format!("--env {} --latest --target-instance {target}", env.name),
    };
    let plan = Arc::new(Plan { env: env.name.clone(), source, target: target.clone(), point, to, api, poll });
    Ok(Runbook::new("pitr-restore", Some(&env.name), line)
        .lock(format!("pitr:{}", env.name))
        .lock(format!("rds:{target}"))
        .resumable()
        // The one change: every setting given explicitly, the instance tagged as drctl's.
        .step(Restore { plan: plan.clone() })
        // Minutes of "creating" and "backing-up"; past the deadline exit 6, a rerun waits again.
        .step(WaitAvailable { plan }))
}

fn at(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

struct Plan {
    env: String,
    source: String,
    target: String,
    point: RestorePoint,
    /// `latest` or the target time (RFC 3339, ms): the TAG_TO value.
    to: String,
    api: Arc<dyn Rds>,
    poll: Duration,
}

/// What RDS holds under the target identifier.
enum Found {
    Absent,
    /// Created by this command (same source, same point): a rerun continues with it.
    Ours(InstanceInfo),
    /// Someone else's, or drctl's from another source or to another point: never touched.
    Other(InstanceInfo, String),
}

impl Plan {
    async fn find(&self) -> Result<Found> {
        Ok(match self.api.describe(&self.target).await? {
            None => Found::Absent,
            Some(i) => match (i.tag(TAG_OF), i.tag(TAG_TO)) {
                (Some(of), Some(to)) if of.eq_ignore_ascii_case(&self.source) && to == self.to => Found::Ours(i),
                (Some(of), Some(to)) => {
                    let why = format!(
                        "drctl restored it from {of} to {to}, not from {} to {}",
                        self.source,
                        self.describe_to()
                    );
                    Found::Other(i, why)
                }
                _ => Found::Other(i, format!("drctl did not create it (it has no {TAG_OF} tag)")),
            },
        })
    }

    fn describe_to(&self) -> String {
        match self.point {
            RestorePoint::Time(t) => at(t),
            RestorePoint::Latest => "the latest restorable time".into(),
        }
    }

    /// The request: the source's settings, its tags (but AWS's own `aws:` ones, which no one may
    /// set) and drctl's.
    fn request(&self, src: &InstanceInfo, run_id: &str) -> RestoreRequest {
        let mut tags: Vec<(String, String)> = src
            .tags
            .iter()
            .filter(|(k, _)| !k.starts_with("aws:") && ![TAG_OF, TAG_TO, TAG_RUN].contains(&k.as_str()))
            .cloned()
            .collect();
        tags.push((TAG_OF.into(), self.source.clone()));
        tags.push((TAG_TO.into(), self.to.clone()));
        tags.push((TAG_RUN.into(), run_id.to_string()));
        RestoreRequest {
            source: self.source.clone(),
            target: self.target.clone(),
            point: self.point,
            instance_class: src.instance_class.clone(),
            subnet_group: src.subnet_group.clone(),
            security_groups: src.security_groups.clone(),
            parameter_group: src.parameter_group.clone(),
            multi_az: src.multi_az,
            publicly_accessible: src.publicly_accessible,
            tags,
        }
    }

    fn sent_what(&self) -> String {
        format!("RestoreDBInstanceToPointInTime of {} into {} (to {})", self.source, self.target, self.describe_to())
    }

    /// The report's fields, from what RDS shows now.
    fn report(&self, cx: &Ctx, i: &InstanceInfo) {
        cx.run.report("source_instance", self.source.clone());
        cx.run.report("target_instance", i.id.clone());
        cx.run.report("endpoint", i.endpoint.as_ref().map(|(h, p)| format!("{h}:{p}")));
        if cx.run.report_field("restored_to").is_none() {
            // For --latest, the LatestRestorableTime read right before the request, when this run
            // or the one it resumes sent it; else only "latest" is known.
            let journaled = cx.run.sent("restore").or_else(|| cx.run.finished("restore"));
            let latest = journaled.and_then(|d| d["restored_to"].as_str().map(str::to_string));
            cx.run.report("restored_to", latest.unwrap_or_else(|| self.to.clone()));
        }
    }
}

/// "creating, db.r6g.large, Multi-AZ, subnet group app-subnets, security groups sg-1, sg-2, …".
fn settings(i: &InstanceInfo) -> String {
    let mut s = vec![i.instance_class.clone().unwrap_or_else(|| "class unknown".into())];
    s.push(if i.multi_az == Some(true) { "Multi-AZ".into() } else { "single-AZ".into() });
    s.push(format!("subnet group {}", i.subnet_group.as_deref().unwrap_or("(none)")));
    s.push(if i.security_groups.is_empty() {
        "no VPC security group".into()
    } else {
        format!("security groups {}", i.security_groups.join(" "))
    });
    s.push(format!("parameter group {}", i.parameter_group.as_deref().unwrap_or("(none)")));
    s.join(", ")
}

// ---------------------------------------------------------------------------------------------

struct Restore {
    plan: Arc<Plan>,
}

impl Restore {
    /// `source-instance` and `target-window`, for a restore not sent yet.
    async fn source_checks(&self) -> Vec<Check> {
        let p = &self.plan;
        let src = match p.api.describe(&p.source).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return vec![
                    Check::fail(
                        "source-instance",
                        format!("RDS has no instance {} (rds_instance of env {})", p.source, p.env),
                    ),
                    Check::fail("target-window", format!("not known: there is no instance {}", p.source)),
                ];
            }
            Err(e) => {
                return vec![
                    Check::fail("source-instance", e.to_string()),
                    Check::fail("target-window", format!("not known: {} could not be described", p.source)),
                ];
            }
        };
        let retention = src.backup_retention_days.unwrap_or(0);
        let source = if retention < 1 {
            Check::fail(
                "source-instance",
                format!(
                    "{} keeps no automated backups (BackupRetentionPeriod {retention}): RDS has no point in time to \
                     restore it to; set a retention of at least 1 day (it covers only what follows)",
                    src.id
                ),
            )
        } else if !SOURCE_OK.contains(&src.status.as_str()) {
            Check::fail("source-instance", format!("{} is {}, not available", src.id, src.status))
        } else {
            Check::pass(
                "source-instance",
                format!("{} is {}, automated backups kept {retention} days; {}", src.id, src.status, settings(&src)),
            )
        };
        let window = match (p.api.earliest_restorable_time(&p.source).await, src.latest_restorable_time) {
            (Err(e), _) => Check::fail("target-window", e.to_string()),
            (Ok(None), _) | (_, None) => Check::fail(
                "target-window",
                format!("{} has no restorable window yet: RDS holds no automated backup of it", src.id),
            ),
            (Ok(Some(e)), Some(l)) => {
                let window = format!("{} ({}) .. {} (LatestRestorableTime)", at(e.time), e.from, at(l));
                match p.point {
                    RestorePoint::Latest => Check::pass(
                        "target-window",
                        format!(
                            "the latest restorable time, now {}; {}'s restorable window is {window}",
                            at(l),
                            src.id
                        ),
                    ),
                    RestorePoint::Time(t) if e.time <= t && t <= l => Check::pass(
                        "target-window",
                        format!("{} lies in {}'s restorable window {window}", at(t), src.id),
                    ),
                    RestorePoint::Time(t) => {
                        let later = if t > l {
                            " (LatestRestorableTime trails the present by about 5 minutes: a later time cannot be \
                             reached yet)"
                        } else {
                            ""
                        };
                        Check::fail(
                            "target-window",
                            format!("{} is outside {}'s restorable window {window}{later}", at(t), src.id),
                        )
                    }
                }
            }
        };
        vec![source, window]
    }
}

#[async_trait]
impl Step for Restore {
    fn id(&self) -> &'static str {
        "restore"
    }
    fn check_ids(&self) -> &'static [&'static str] {
        &["target-instance-free", "source-instance", "target-window"]
    }

    async fn preflight(&self, _cx: &Ctx) -> Vec<Check> {
        let p = &self.plan;
        // The target first: the instance this command created earlier makes this run a resume,
        // and then the source's state and window no longer matter.
        match p.find().await {
            Ok(Found::Absent) => {
                let mut c = vec![Check::pass(
                    "target-instance-free",
                    format!("no instance {} exists: it will be created", p.target),
                )];
                c.extend(self.source_checks().await);
                c
            }
            Ok(Found::Ours(i)) => {
                let by = i.tag(TAG_RUN).unwrap_or("?");
                vec![
                    Check::pass(
                        "target-instance-free",
                        format!(
                            "{} is the instance drctl restored from {} to {} (run {by}), now {}: continued, not sent again",
                            i.id,
                            p.source,
                            p.describe_to(),
                            i.status
                        ),
                    ),
                    Check::pass("source-instance", format!("not needed: {} was restored from it already", i.id)),
                    Check::pass(
                        "target-window",
                        format!("not needed: {} was restored to {} already", i.id, p.describe_to()),
                    ),
                ]
            }
            Ok(Found::Other(i, why)) => {
                let mut c = vec![Check::fail(
                    "target-instance-free",
                    format!(
                        "an instance {} already exists (status {}) and {why}: give another --target-instance",
                        i.id, i.status
                    ),
                )];
                c.extend(self.source_checks().await);
                c
            }
            Err(e) => {
                let mut c = vec![Check::fail("target-instance-free", e.to_string())];
                c.extend(self.source_checks().await);
                c
            }
        }
    }

    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        Ok(matches!(self.plan.find().await?, Found::Ours(_)))
    }

    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let p = &self.plan;
        let timeout = cx.config.policy.restore_timeout;
        if cx.run.sent(self.id()).is_some() {
            // The run this one resumes sent it and saw no instance yet: wait for it, never send again.
            wait_for(&p.sent_what(), timeout, p.poll, || async {
                Ok(matches!(p.find().await?, Found::Ours(_)).then_some(()))
            })
            .await?;
            log.summary(format!("{} found, created by the restore the resumed run sent", p.target));
            return Ok(());
        }
        // Read again now: the settings as they are at the moment of the restore.
        let src = p
            .api
            .describe(&p.source)
            .await?
            .ok_or_else(|| Error::step(self.id(), format!("RDS has no instance {} any more", p.source)))?;
        let req = p.request(&src, &cx.run_id);
        if let Err(e) = p.api.restore_to_point_in_time(&req).await {
            // The SDK retries a request whose answer was lost, and RDS refuses the retry once the
            // first attempt took (DBInstanceAlreadyExists): the tags tell whether it was ours.
            if !matches!(p.find().await?, Found::Ours(_)) {
                return Err(e);
            }
        }
        let restored_to = match p.point {
            RestorePoint::Time(t) => Some(at(t)),
            RestorePoint::Latest => src.latest_restorable_time.map(at),
        };
        let mut d = Map::new();
        d.insert("source_instance".into(), p.source.clone().into());
        d.insert("target_instance".into(), p.target.clone().into());
        d.insert("restore_to".into(), p.to.clone().into());
        d.insert("restored_to".into(), restored_to.clone().into());
        d.insert("instance_class".into(), req.instance_class.clone().into());
        d.insert("subnet_group".into(), req.subnet_group.clone().into());
        d.insert("security_groups".into(), json!(req.security_groups));
        d.insert("parameter_group".into(), req.parameter_group.clone().into());
        d.insert("multi_az".into(), req.multi_az.into());
        d.insert("publicly_accessible".into(), req.publicly_accessible.into());
        d.insert("tags".into(), Value::Object(req.tags.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect()));
        // Journaled before anything waits on it: a rerun finds it here (and by the tags).
        log.sent(d).await?;
        if let Some(t) = restored_to {
            cx.run.report("restored_to", t);
        }
        log.summary(format!("restore of {} into {} sent: {}", p.source, p.target, settings(&src)));
        Ok(())
    }

    async fn verify(&self, cx: &Ctx) -> Result<()> {
        // RDS lists the new instance as soon as it accepts the request; allow it a moment.
        let p = &self.plan;
        let within = cx.config.policy.restore_timeout.min(Duration::from_secs(120));
        wait_for(&p.sent_what(), within, p.poll, || async {
            Ok(matches!(p.find().await?, Found::Ours(_)).then_some(()))
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------

struct WaitAvailable {
    plan: Arc<Plan>,
}

#[async_trait]
impl Step for WaitAvailable {
    fn id(&self) -> &'static str {
        "wait-available"
    }

    async fn is_done(&self, cx: &Ctx) -> Result<bool> {
        match self.plan.find().await? {
            Found::Ours(i) if i.is_available() => {
                self.plan.report(cx, &i);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let p = &self.plan;
        let progress = cx.out.progress(&format!("RDS restore into {}", p.target), None, false);
        let last = Mutex::new(String::new());
        let t0 = std::time::Instant::now();
        let waited = wait_for(&p.sent_what(), cx.config.policy.restore_timeout, p.poll, || async {
            progress.inc(1);
            let Some(i) = p.api.describe(&p.target).await? else {
                return Err(Error::step(
                    self.id(),
                    format!("RDS shows no instance {} any more: it was deleted while it was being restored", p.target),
                ));
            };
            {
                let mut last = last.lock().expect("last status");
                if *last != i.status {
                    cx.out.info(&format!("{}: {}", i.id, i.status));
                    *last = i.status.clone();
                }
            }
            if FAILED.contains(&i.status.as_str()) {
                return Err(Error::step(
                    self.id(),
                    format!(
                        "{} is {}: RDS could not restore it; see its events (aws rds describe-events \
                         --source-type db-instance --source-identifier {}), delete it, and rerun",
                        i.id, i.status, i.id
                    ),
                ));
            }
            Ok(i.is_available().then_some(i))
        })
        .await;
        progress.finish();
        let i = waited?;
        p.report(cx, &i);
        let endpoint = i.endpoint.as_ref().map(|(h, port)| format!("{h}:{port}"));
        log.set("target_instance", i.id.clone());
        log.set("endpoint", endpoint.clone());
        log.set("waited_ms", t0.elapsed().as_millis() as u64);
        log.summary(format!("{} is available at {}", i.id, endpoint.as_deref().unwrap_or("(no endpoint shown)")));
        Ok(())
    }

    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        match self.plan.find().await? {
            Found::Ours(i) if i.is_available() => Ok(()),
            Found::Ours(i) => Err(Error::step(self.id(), format!("{} is {} again", i.id, i.status))),
            _ => Err(Error::step(self.id(), format!("RDS shows no instance {} restored by drctl", self.plan.target))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use serde_json::Value;

    use super::*;
    use crate::clients::rds::{FakeRds, RdsCall};
    use crate::ctx::for_test_with;
    use crate::engine::run::execute;
    use crate::error::exit;
    use crate::journal::test_store::MemStore;
    use crate::journal::{entries, read_all};

    const CONFIG: &str = "[policy]\nrestore_timeout = \"200ms\"\n\n[environments.prod]\n\
                          database_url = \"postgres://app@db.example.com/app\"\nrds_instance = \"app-prod\"\n";

    /// app-prod in a subnet group, two security groups, its own parameter group, Multi-AZ, tagged,
    /// restorable from a day ago to five minutes ago.
    fn world() -> (Arc<FakeRds>, SystemTime) {
        let rds = Arc::new(FakeRds::new());
        rds.put(InstanceInfo {
            instance_class: Some("db.r6g.large".into()),
            subnet_group: Some("app-subnets".into()),
            security_groups: vec!["sg-0a".into(), "sg-0b".into()],
            parameter_group: Some("app-pg16".into()),
            multi_az: Some(true),
            backup_retention_days: Some(7),
            tags: vec![("team".into(), "payments".into()), ("aws:cloudformation:stack-name".into(), "x".into())],
            ..FakeRds::primary("app-prod")
        });
        let now = SystemTime::now();
        rds.window("app-prod", now - Duration::from_secs(86_400), now - Duration::from_secs(300));
        (rds, now)
    }

    fn env() -> EnvConfig {
        let store = Arc::new(MemStore::new());
        for_test_with(store, &[], CONFIG).config.env("prod").unwrap().clone()
    }

    fn rb(rds: &Arc<FakeRds>, point: RestorePoint) -> Runbook {
        let api: Arc<dyn Rds> = rds.clone();
        let time = match point {
            RestorePoint::Time(t) => Some(at(t)),
            RestorePoint::Latest => None,
        };
        runbook(&env(), point, time.as_deref(), "app-restored", api, Duration::from_millis(1)).unwrap()
    }

    async fn run(store: &Arc<MemStore>, rds: &Arc<FakeRds>, point: RestorePoint) -> crate::engine::run::Outcome {
        execute(&for_test_with(store.clone(), &["--yes"], CONFIG), rb(rds, point)).await
    }

    async fn events(store: &MemStore) -> Vec<(String, Value)> {
        let all = read_all(store).await.unwrap();
        entries(&all).map(|e| (e.event.clone(), e.details.clone())).collect()
    }

    #[tokio::test]
    async fn a_restore_copies_the_sources_settings_waits_until_available_and_reports_the_endpoint() {
        let (rds, now) = world();
        rds.restore_takes(4);
        let store = Arc::new(MemStore::new());
        let t = now - Duration::from_secs(3_600);
        let out = run(&store, &rds, RestorePoint::Time(t)).await;
        assert!(out.error.is_none(), "{:?}", out.error.map(|e| e.to_string()));
        let r = &out.report;
        assert_eq!(r.status, "ok");
        assert_eq!(r.extra["target_instance"], "app-restored");
        assert_eq!(r.extra["endpoint"], "app-restored.fake.rds.amazonaws.com:5432");
        assert_eq!(r.extra["restored_to"], at(t).as_str());
        assert_eq!(r.extra["source_instance"], "app-prod");
        let states: Vec<_> = r.steps.iter().map(|s| (s.step.as_str(), s.state)).collect();
        use crate::engine::report::StepState::Applied;
        assert_eq!(states, [("restore", Applied), ("wait-available", Applied)]);

        let sent = rds.restores();
        assert_eq!(sent.len(), 1);
        let req = &sent[0];
        assert_eq!(
            (req.source.as_str(), req.target.as_str(), req.point),
            ("app-prod", "app-restored", RestorePoint::Time(t))
        );
        assert_eq!(req.instance_class.as_deref(), Some("db.r6g.large"));
        assert_eq!(req.subnet_group.as_deref(), Some("app-subnets"));
        assert_eq!(req.security_groups, ["sg-0a", "sg-0b"]);
        assert_eq!(req.parameter_group.as_deref(), Some("app-pg16"));
        assert_eq!(req.multi_az, Some(true));
        let tags: Vec<(&str, &str)> = req.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(&tags[..3], [("team", "payments"), (TAG_OF, "app-prod"), (TAG_TO, at(t).as_str())]);
        assert_eq!(tags[3].0, TAG_RUN);
        assert!(!tags.iter().any(|(k, _)| k.starts_with("aws:")), "AWS's own tags cannot be set: {tags:?}");

        // Journaled: the restore as sent before the wait, then both steps done.
        let ev = events(&store).await;
        let i = ev.iter().position(|(e, d)| e == "step-sent" && d["step"] == "restore").expect("step-sent");
        assert_eq!(ev[i].1["subnet_group"], "app-subnets");
        assert_eq!(ev[i].1["security_groups"], serde_json::json!(["sg-0a", "sg-0b"]));
        let done = ev.iter().position(|(e, d)| e == "step-done" && d["step"] == "wait-available").unwrap();
        assert!(i < done);

        // A rerun after success: already done, not sent again.
        let again = run(&store, &rds, RestorePoint::Time(t)).await;
        assert!(again.error.is_none());
        assert_eq!(again.report.status, "already_done");
        assert_eq!(again.report.extra["endpoint"], "app-restored.fake.rds.amazonaws.com:5432");
        assert_eq!(rds.calls().restore, 1);
    }

    #[tokio::test]
    async fn past_the_deadline_it_exits_6_and_the_rerun_waits_on_the_same_instance_without_sending_again() {
        let (rds, _) = world();
        rds.restore_takes(1_000_000);
        let store = Arc::new(MemStore::new());
        let out = run(&store, &rds, RestorePoint::Latest).await;
        let e = out.error.expect("outcome unknown");
        assert_eq!(e.exit_code(), exit::UNKNOWN_OUTCOME, "{e}");
        assert!(e.to_string().contains("RestoreDBInstanceToPointInTime of app-prod into app-restored"), "{e}");
        assert_eq!(out.report.status, "outcome_unknown");
        assert_eq!(rds.calls().restore, 1);
        assert_eq!(rds.instance("app-restored").unwrap().status, "creating");

        // Still creating: exit 6 again, nothing sent.
        let out = run(&store, &rds, RestorePoint::Latest).await;
        assert_eq!(out.error.unwrap().exit_code(), exit::UNKNOWN_OUTCOME);
        let pre = &out.report.preflight;
        let free = pre.iter().find(|c| c.check == "target-instance-free").unwrap();
        assert!(free.ok && free.detail.contains("continued, not sent again"), "{free:?}");
        assert_eq!(rds.calls().restore, 1);

        // RDS finishes while the rerun waits (the 4th describe it makes): it resumes the run,
        // waits, and ends ok; still one restore.
        rds.finish_after(3);
        let out = run(&store, &rds, RestorePoint::Latest).await;
        assert!(out.error.is_none(), "{:?}", out.error.map(|e| e.to_string()));
        assert_eq!(out.report.status, "ok");
        use crate::engine::report::StepState::{Applied, Done};
        let states: Vec<_> = out.report.steps.iter().map(|s| s.state).collect();
        assert_eq!(states, [Done, Applied]);
        assert_eq!(out.report.extra["endpoint"], "app-restored.fake.rds.amazonaws.com:5432");
        let latest = at(rds.instance("app-prod").unwrap().latest_restorable_time.unwrap());
        assert_eq!(out.report.extra["restored_to"], latest.as_str(), "from the resumed run's step-sent");
        assert_eq!(rds.calls().restore, 1, "RestoreDBInstanceToPointInTime once in three runs");
        let ev = events(&store).await;
        let starts: Vec<&Value> = ev.iter().filter(|(e, _)| e == "run-started").map(|(_, d)| d).collect();
        assert_eq!(starts.len(), 3);
        assert!(starts[1]["resumes"].is_string() && starts[2]["resumes"].is_string(), "{starts:?}");
    }

    #[tokio::test]
    async fn a_time_outside_the_window_is_refused_stating_the_window_and_nothing_is_created() {
        let (rds, now) = world();
        let store = Arc::new(MemStore::new());
        let t = now - Duration::from_secs(3 * 86_400);
        let out = run(&store, &rds, RestorePoint::Time(t)).await;
        assert_eq!(out.error.unwrap().exit_code(), exit::PREFLIGHT);
        let w = out.report.preflight.iter().find(|c| c.check == "target-window").unwrap();
        assert!(!w.ok, "{w:?}");
        let p = rds.instance("app-prod").unwrap();
        let window = format!(
            "{} (RestoreWindow of its automated backups) .. {} (LatestRestorableTime)",
            at(now - Duration::from_secs(86_400)),
            at(p.latest_restorable_time.unwrap())
        );
        assert!(w.detail.contains(&window) && w.detail.contains(&at(t)), "{}", w.detail);
        // In the future: refused too, saying why.
        let out = run(&store, &rds, RestorePoint::Time(now + Duration::from_secs(60))).await;
        let w = out.report.preflight.iter().find(|c| c.check == "target-window").unwrap();
        assert!(!w.ok && w.detail.contains("trails the present"), "{w:?}");
        assert_eq!(rds.calls().restore, 0);
        assert_eq!(rds.instance("app-restored"), None);
    }

    #[tokio::test]
    async fn an_instance_drctl_did_not_create_or_a_source_without_backups_is_refused() {
        let (rds, _) = world();
        rds.put(FakeRds::primary("app-restored"));
        let store = Arc::new(MemStore::new());
        let out = run(&store, &rds, RestorePoint::Latest).await;
        assert_eq!(out.error.unwrap().exit_code(), exit::PREFLIGHT);
        let free = out.report.preflight.iter().find(|c| c.check == "target-instance-free").unwrap();
        assert!(!free.ok && free.detail.contains("drctl did not create it"), "{free:?}");
        // Not even with --accept: it is not waivable.
        let cx = for_test_with(store.clone(), &["--yes", "--accept", "target-instance-free"], CONFIG);
        let out = execute(&cx, rb(&rds, RestorePoint::Latest)).await;
        assert_eq!(out.error.unwrap().exit_code(), exit::USAGE);

        // drctl's, but from another point: refused too.
        let mut other = FakeRds::primary("app-restored");
        other.tags = vec![(TAG_OF.into(), "app-prod".into()), (TAG_TO.into(), "2026-01-01T00:00:00.000Z".into())];
        rds.put(other);
        let out = run(&store, &rds, RestorePoint::Latest).await;
        let free = out.report.preflight.iter().find(|c| c.check == "target-instance-free").unwrap();
        assert!(
            !free.ok && free.detail.contains("to 2026-01-01T00:00:00.000Z, not from app-prod to the latest"),
            "{free:?}"
        );

        let (rds, _) = world();
        rds.put(InstanceInfo { backup_retention_days: Some(0), ..rds.instance("app-prod").unwrap() });
        let out = run(&store, &rds, RestorePoint::Latest).await;
        assert_eq!(out.error.unwrap().exit_code(), exit::PREFLIGHT);
        let src = out.report.preflight.iter().find(|c| c.check == "source-instance").unwrap();
        assert!(!src.ok && src.detail.contains("BackupRetentionPeriod 0"), "{src:?}");
        assert_eq!(rds.calls().restore, 0);
    }

    #[tokio::test]
    async fn a_lost_answer_is_recognised_by_the_tags_and_a_throttled_restore_fails_without_creating_anything() {
        let (rds, _) = world();
        rds.lose_restore_answer(1);
        let store = Arc::new(MemStore::new());
        let out = run(&store, &rds, RestorePoint::Latest).await;
        assert!(out.error.is_none(), "{:?}", out.error.map(|e| e.to_string()));
        assert_eq!(rds.calls().restore, 1);

        let (rds, _) = world();
        rds.throttle(RdsCall::Restore, 1);
        let store = Arc::new(MemStore::new());
        let out = run(&store, &rds, RestorePoint::Latest).await;
        let e = out.error.unwrap();
        assert_eq!(e.exit_code(), exit::STEP_FAILED, "{e}");
        assert!(e.to_string().contains("Throttling"), "{e}");
        assert_eq!(rds.instance("app-restored"), None);
        // The rerun sends it (nothing was sent before) and completes.
        let out = run(&store, &rds, RestorePoint::Latest).await;
        assert!(out.error.is_none(), "{:?}", out.error.map(|e| e.to_string()));
        assert_eq!(rds.calls().restore, 2);
    }

    #[tokio::test]
    async fn a_restore_that_rds_fails_stops_with_exit_1_naming_the_status() {
        let (rds, _) = world();
        rds.restore_takes(1_000);
        let store = Arc::new(MemStore::new());
        let cx = for_test_with(store.clone(), &["--yes"], &CONFIG.replace("200ms", "5s"));
        let handle = {
            let rds = rds.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let i = rds.instance("app-restored").unwrap();
                rds.put(InstanceInfo { status: "incompatible-restore".into(), ..i });
            })
        };
        let out = execute(&cx, rb(&rds, RestorePoint::Latest)).await;
        handle.await.unwrap();
        let e = out.error.unwrap();
        assert_eq!(e.exit_code(), exit::STEP_FAILED, "{e}");
        assert!(e.to_string().contains("app-restored is incompatible-restore"), "{e}");
    }

    #[test]
    fn bad_input_is_a_usage_error_naming_the_flag() {
        let (rds, _) = world();
        let api: Arc<dyn Rds> = rds.clone();
        let bad = |id: &str| {
            runbook(&env(), RestorePoint::Latest, None, id, api.clone(), Duration::from_millis(1)).err().unwrap()
        };
        let e = bad("1-restored");
        assert_eq!(e.exit_code(), exit::USAGE);
        assert!(e.to_string().contains("--target-instance 1-restored"), "{e}");
        let e = bad("App-Prod");
        assert!(e.to_string().contains("own instance"), "{e}");
        let ok = runbook(&env(), RestorePoint::Latest, None, "App-Restored", api, Duration::from_millis(1)).unwrap();
        assert_eq!(ok.lock_order(), ["pitr:prod", "rds:app-restored"]);
        assert_eq!(ok.args, "--env prod --latest --target-instance app-restored");
        assert_eq!(rds.calls(), Default::default(), "nothing asked of RDS");
    }
}
