//! RDS behind a trait: what promote-replica asks of an RDS read replica (is it one, is it
//! available, where does it listen) and the one change it makes to it; what pitr-restore asks of a
//! source instance (its settings, its restorable window) and the instance it creates from it; and
//! what `status --audit` asks of any instance (automated backups kept, Multi-AZ).
//!
//! The trait exists because tests need a fake: moto promotes at once (the replica never leaves
//! "available"), still names the source instance after the promotion, and promotes an instance that
//! is no replica without complaint where RDS answers InvalidDBInstanceState; and a restored instance
//! is "available" in moto the moment RestoreDBInstanceToPointInTime returns, where RDS spends many
//! minutes "creating" and "backing-up". So neither the waits nor a rerun after one can be staged
//! against moto. [`FakeRds`] plays RDS's states; [`SdkRds`] is run against moto in
//! tests/it/clients.rs and tests/it/pitr.rs.
//!
//! There is no waiter here: the SDK's waiter sleeps as it likes and fails with its own error, and
//! the runbooks must journal that the change was sent before they wait and stop with exit 6 at
//! their own deadline, so they poll `describe` themselves.
//!
//! The restorable window: its end is the source's LatestRestorableTime (DescribeDBInstances). Its
//! start is the RestoreWindow.EarliestTime of the source's active automated backup
//! (DescribeDBInstanceAutomatedBackups), which is what RDS answers; moto answers no RestoreWindow,
//! so without one the start is the oldest automated snapshot's SnapshotCreateTime
//! (DescribeDBSnapshots, type automated), which both answer: RDS restores a point in time from the
//! automated snapshot before it plus the transaction logs after, so no point before the oldest
//! automated snapshot can be reached.
//!
//! Errors, as in dns.rs: a failed `describe` is `Error::Unreachable` naming the instance, a failed
//! or refused promotion or restore `Error::Step` (exit 1).

use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_rds::primitives::DateTime;

use crate::clients::aws_problem;
use crate::error::{Error, Result};

/// An RDS DB instance as the runbooks and `status --audit` need to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub id: String,
    /// As RDS reports it: "available", "creating", "backing-up", "modifying", "rebooting", …
    pub status: String,
    /// The instance this one replicates from (its id, or its ARN when it is in another region);
    /// `None` for an instance that is no read replica.
    pub read_replica_source: Option<String>,
    /// Host and port; `None` while RDS is still creating the instance.
    pub endpoint: Option<(String, u16)>,
    /// BackupRetentionPeriod: days of automated backups (and so of point-in-time restore) RDS
    /// keeps; 0 means automated backups are off. `None` when RDS did not say.
    pub backup_retention_days: Option<i32>,
    /// MultiAZ: a synchronous standby in another availability zone. `None` when RDS did not say.
    pub multi_az: Option<bool>,
    /// DBInstanceClass, e.g. `db.r6g.large`.
    pub instance_class: Option<String>,
    /// The DB subnet group's name (the VPC subnets it is placed in); `None` when RDS names none.
    pub subnet_group: Option<String>,
    /// The ids of its VPC security groups, in RDS's order.
    pub security_groups: Vec<String>,
    /// The name of its DB parameter group.
    pub parameter_group: Option<String>,
    /// PubliclyAccessible: whether its endpoint resolves to a public address.
    pub publicly_accessible: Option<bool>,
    /// TagList, as (key, value) in RDS's order.
    pub tags: Vec<(String, String)>,
    /// LatestRestorableTime: the newest point a point-in-time restore from it can reach (a few
    /// minutes behind now: RDS uploads transaction logs every 5 minutes). `None` without backups.
    pub latest_restorable_time: Option<SystemTime>,
}

impl InstanceInfo {
    pub fn is_replica(&self) -> bool {
        self.read_replica_source.is_some()
    }

    pub fn is_available(&self) -> bool {
        self.status == "available"
    }

    /// The value of tag `key`, if it has one.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Where a point-in-time restore starts from: the oldest point it can reach, and how RDS said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earliest {
    pub time: SystemTime,
    /// "RestoreWindow of its automated backups" or "its oldest automated snapshot" (module doc).
    pub from: &'static str,
}

/// What a point-in-time restore recovers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestorePoint {
    /// RestoreTime.
    Time(SystemTime),
    /// UseLatestRestorableTime: whatever LatestRestorableTime is when RDS takes the request.
    Latest,
}

/// RestoreDBInstanceToPointInTime's parameters. Every setting is given explicitly: what RDS picks
/// for one left out is the account's default (the default VPC's subnet group and security group, the
/// engine's default parameter group, single-AZ), not the source's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreRequest {
    pub source: String,
    pub target: String,
    pub point: RestorePoint,
    pub instance_class: Option<String>,
    pub subnet_group: Option<String>,
    pub security_groups: Vec<String>,
    pub parameter_group: Option<String>,
    pub multi_az: Option<bool>,
    pub publicly_accessible: Option<bool>,
    pub tags: Vec<(String, String)>,
}

#[async_trait]
pub trait Rds: Send + Sync {
    /// DescribeDBInstances of one instance; `None` when RDS says there is no such instance.
    async fn describe(&self, id: &str) -> Result<Option<InstanceInfo>>;

    /// PromoteReadReplica: returns once RDS accepted it; the promotion is done when `describe`
    /// shows the instance available with no `read_replica_source`.
    ///
    /// The SDK retries a request whose answer was lost, and when the lost attempt was applied RDS
    /// refuses the retry (the instance is already modifying), so on an error `describe` the
    /// instance before concluding the promotion was not sent.
    async fn promote_read_replica(&self, id: &str) -> Result<()>;

    /// The start of `id`'s restorable window (see the module doc); `None` when RDS holds no
    /// automated backup of it yet.
    async fn earliest_restorable_time(&self, id: &str) -> Result<Option<Earliest>>;

    /// RestoreDBInstanceToPointInTime: returns once RDS accepted it; the new instance is ready
    /// when `describe` of `req.target` shows it available.
    ///
    /// As with a promotion, a lost answer's retry is refused (DBInstanceAlreadyExists) although
    /// the restore is under way, so on an error `describe` the target before concluding.
    async fn restore_to_point_in_time(&self, req: &RestoreRequest) -> Result<()>;
}

/// The SDK client, from `Aws::rds()`.
pub struct SdkRds {
    client: aws_sdk_rds::Client,
}

impl SdkRds {
    pub fn new(client: aws_sdk_rds::Client) -> SdkRds {
        SdkRds { client }
    }
}

fn system_time(t: Option<&DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

#[async_trait]
impl Rds for SdkRds {
    async fn describe(&self, id: &str) -> Result<Option<InstanceInfo>> {
        let out = match self.client.describe_db_instances().db_instance_identifier(id).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_db_instance_not_found_fault()) => return Ok(None),
            Err(e) => return Err(describe_error(id, aws_problem("RDS", &e))),
        };
        // RDS answers for the one identifier asked (it stores identifiers lowercased).
        let Some(db) = out.db_instances().first() else { return Ok(None) };
        Ok(Some(InstanceInfo {
            id: db.db_instance_identifier().unwrap_or(id).to_string(),
            status: db.db_instance_status().unwrap_or_default().to_string(),
            read_replica_source: db.read_replica_source_db_instance_identifier().map(str::to_string),
            endpoint: db
                .endpoint()
                .and_then(|e| Some((e.address()?.to_string(), e.port().and_then(|p| u16::try_from(p).ok())?))),
            backup_retention_days: db.backup_retention_period(),
            multi_az: db.multi_az(),
            instance_class: db.db_instance_class().map(str::to_string),
            subnet_group: db.db_subnet_group().and_then(|g| g.db_subnet_group_name()).map(str::to_string),
            security_groups: db
                .vpc_security_groups()
                .iter()
                .filter_map(|g| g.vpc_security_group_id())
                .map(str::to_string)
                .collect(),
            parameter_group: db
                .db_parameter_groups()
                .first()
                .and_then(|g| g.db_parameter_group_name())
                .map(str::to_string),
            publicly_accessible: db.publicly_accessible(),
            tags: db
                .tag_list()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
                .collect(),
            latest_restorable_time: system_time(db.latest_restorable_time()),
        }))
    }

    async fn promote_read_replica(&self, id: &str) -> Result<()> {
        self.client
            .promote_read_replica()
            .db_instance_identifier(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| promote_error(id, aws_problem("RDS", &e)))
    }

    async fn earliest_restorable_time(&self, id: &str) -> Result<Option<Earliest>> {
        match self.client.describe_db_instance_automated_backups().db_instance_identifier(id).send().await {
            Ok(out) => {
                // Only the live instance's backups ("active"): "retained" ones are of an earlier
                // instance of the same name, which a restore from this one cannot reach.
                let earliest = out
                    .db_instance_automated_backups()
                    .iter()
                    .filter(|b| b.status().is_none_or(|s| s == "active"))
                    .filter_map(|b| system_time(b.restore_window()?.earliest_time()))
                    .min();
                if let Some(time) = earliest {
                    return Ok(Some(Earliest { time, from: "RestoreWindow of its automated backups" }));
                }
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_db_instance_automated_backup_not_found_fault()) => {}
            Err(e) => return Err(describe_error(id, aws_problem("RDS", &e))),
        }
        let out = self
            .client
            .describe_db_snapshots()
            .db_instance_identifier(id)
            .snapshot_type("automated")
            .send()
            .await
            .map_err(|e| describe_error(id, aws_problem("RDS", &e)))?;
        let oldest = out.db_snapshots().iter().filter_map(|s| system_time(s.snapshot_create_time())).min();
        Ok(oldest.map(|time| Earliest { time, from: "its oldest automated snapshot" }))
    }

    async fn restore_to_point_in_time(&self, r: &RestoreRequest) -> Result<()> {
        let tags =
            r.tags.iter().map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(k).value(v).build()).collect::<Vec<_>>();
        let mut call = self
            .client
            .restore_db_instance_to_point_in_time()
            .source_db_instance_identifier(&r.source)
            .target_db_instance_identifier(&r.target)
            .set_db_instance_class(r.instance_class.clone())
            .set_db_subnet_group_name(r.subnet_group.clone())
            .set_db_parameter_group_name(r.parameter_group.clone())
            .set_multi_az(r.multi_az)
            .set_publicly_accessible(r.publicly_accessible)
            .set_tags(Some(tags));
        if !r.security_groups.is_empty() {
            call = call.set_vpc_security_group_ids(Some(r.security_groups.clone()));
        }
        call = match r.point {
            RestorePoint::Time(t) => call.restore_time(DateTime::from(t)),
            RestorePoint::Latest => call.use_latest_restorable_time(true),
        };
        call.send().await.map(|_| ()).map_err(|e| restore_error(r, aws_problem("RDS", &e)))
    }
}

fn describe_error(id: &str, problem: String) -> Error {
    Error::Unreachable { what: format!("RDS instance {id}"), problem }
}

fn promote_error(id: &str, problem: impl std::fmt::Display) -> Error {
    Error::Step { step: "RDS PromoteReadReplica".into(), problem: format!("{id}: {problem}") }
}

fn restore_error(r: &RestoreRequest, problem: impl std::fmt::Display) -> Error {
    Error::Step {
        step: "RDS RestoreDBInstanceToPointInTime".into(),
        problem: format!("{} from {}: {problem}", r.target, r.source),
    }
}

/// A test double for [`Rds`], for the runbooks' tests of what moto cannot stage. After a promote
/// the instance is "modifying" for a programmable number of `describe` calls, then "available" with
/// no source, as RDS goes. Promoting an instance that is no replica, or one that is not available,
/// fails as RDS's InvalidDBInstanceState does; an unknown id as DBInstanceNotFound. A restore
/// creates the target "creating", without an endpoint, for a programmable number of describes (the
/// last of them "backing-up", RDS's first backup of the new instance), then "available" with an
/// endpoint; it is refused as RDS refuses it: DBInstanceAlreadyExists, DBInstanceNotFound for the
/// source, PointInTimeRestoreNotEnabled without backups, InvalidRestoreFault outside the window set
/// with [`FakeRds::window`]. It counts calls and can fail the Nth one. Not `#[cfg(test)]`:
/// tests/it uses it too.
#[derive(Default)]
pub struct FakeRds {
    state: Mutex<FakeState>,
}

/// A method of [`Rds`], to count and to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RdsCall {
    Describe,
    Promote,
    Earliest,
    Restore,
}

/// Calls made so far, each method counted whether it succeeded or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RdsCalls {
    pub describe: usize,
    pub promote: usize,
    pub earliest: usize,
    pub restore: usize,
}

/// A change under way, and the describes still to answer before it is done.
#[derive(Debug, Clone, Copy)]
enum Underway {
    Promotion(u32),
    Restore(u32),
}

#[derive(Default)]
struct FakeState {
    instances: Vec<(InstanceInfo, Option<Underway>)>,
    /// Instance → the start of its restorable window.
    earliest: Vec<(String, SystemTime)>,
    promote_takes: u32,
    restore_takes: u32,
    injected: Vec<(RdsCall, usize, Injected)>,
    calls: RdsCalls,
    restores: Vec<RestoreRequest>,
}

enum Injected {
    Error(Error),
    Throttling,
    /// Apply the change, then fail as the SDK's retry of it would.
    LostAnswer,
}

const THROTTLED: &str = "Throttling: Rate exceeded";

impl FakeRds {
    pub fn new() -> FakeRds {
        FakeRds::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock has failed already; its state is still readable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds (or replaces) an instance as it is now; no call is counted.
    pub fn put(&self, info: InstanceInfo) {
        let mut st = self.state();
        st.instances.retain(|(i, _)| i.id != info.id);
        st.instances.push((info, None));
    }

    /// An available primary listening on `<id>.fake.rds.amazonaws.com:5432`, as RDS creates one
    /// by default: automated backups kept 1 day, single-AZ, in no subnet group, with no tags and
    /// no restorable window (see [`FakeRds::window`]).
    pub fn primary(id: &str) -> InstanceInfo {
        InstanceInfo {
            id: id.into(),
            status: "available".into(),
            read_replica_source: None,
            endpoint: Some((format!("{id}.fake.rds.amazonaws.com"), 5432)),
            backup_retention_days: Some(1),
            multi_az: Some(false),
            instance_class: Some("db.t3.micro".into()),
            subnet_group: None,
            security_groups: Vec::new(),
            parameter_group: Some("default.postgres16".into()),
            publicly_accessible: Some(false),
            tags: Vec::new(),
            latest_restorable_time: None,
        }
    }

    /// An available read replica of `source`.
    pub fn replica(id: &str, source: &str) -> InstanceInfo {
        InstanceInfo { read_replica_source: Some(source.into()), ..FakeRds::primary(id) }
    }

    /// The instance as the fake holds it, without counting a call or moving a change on.
    pub fn instance(&self, id: &str) -> Option<InstanceInfo> {
        self.state().instances.iter().find(|(i, _)| i.id == id).map(|(i, _)| i.clone())
    }

    /// `id`'s restorable window: from `earliest` (its automated backups' RestoreWindow) to
    /// `latest` (LatestRestorableTime).
    pub fn window(&self, id: &str, earliest: SystemTime, latest: SystemTime) {
        let mut st = self.state();
        st.earliest.retain(|(i, _)| i != id);
        st.earliest.push((id.to_string(), earliest));
        if let Some((info, _)) = st.instances.iter_mut().find(|(i, _)| i.id == id) {
            info.latest_restorable_time = Some(latest);
        }
    }

    /// A promotion from now on shows "modifying" to this many describes before "available".
    pub fn promote_takes(&self, describes: u32) {
        self.state().promote_takes = describes;
    }

    /// A restore from now on shows its target not available to this many describes ("creating",
    /// the last one "backing-up") before "available".
    pub fn restore_takes(&self, describes: u32) {
        self.state().restore_takes = describes;
    }

    /// Every change under way is done after `describes` more describes of its instance (0: at
    /// the next one).
    pub fn finish_after(&self, describes: u32) {
        for (_, u) in self.state().instances.iter_mut() {
            match u {
                Some(Underway::Promotion(n) | Underway::Restore(n)) => *n = describes,
                None => {}
            }
        }
    }

    /// The `nth` call (1-based, counted from the fake's creation) of `call` fails with `error` and
    /// has no effect.
    pub fn fail_on(&self, call: RdsCall, nth: usize, error: Error) {
        self.state().injected.push((call, nth, Injected::Error(error)));
    }

    /// The `nth` call of `call` fails as `SdkRds` fails once the SDK's retries of a throttled
    /// request ran out, and has no effect.
    pub fn throttle(&self, call: RdsCall, nth: usize) {
        self.state().injected.push((call, nth, Injected::Throttling));
    }

    /// The `nth` promote is applied but its answer is lost, and the SDK's retry of it is refused:
    /// the caller sees InvalidDBInstanceState although the promotion is under way.
    pub fn lose_answer(&self, nth: usize) {
        self.state().injected.push((RdsCall::Promote, nth, Injected::LostAnswer));
    }

    /// The `nth` restore is applied but its answer is lost, and the SDK's retry of it is refused:
    /// the caller sees DBInstanceAlreadyExists although the restore is under way.
    pub fn lose_restore_answer(&self, nth: usize) {
        self.state().injected.push((RdsCall::Restore, nth, Injected::LostAnswer));
    }

    pub fn calls(&self) -> RdsCalls {
        self.state().calls
    }

    /// Every restore request the fake accepted, in order.
    pub fn restores(&self) -> Vec<RestoreRequest> {
        self.state().restores.clone()
    }
}

impl FakeState {
    fn enter(&mut self, call: RdsCall) -> Option<Injected> {
        let n = match call {
            RdsCall::Describe => &mut self.calls.describe,
            RdsCall::Promote => &mut self.calls.promote,
            RdsCall::Earliest => &mut self.calls.earliest,
            RdsCall::Restore => &mut self.calls.restore,
        };
        *n += 1;
        let n = *n;
        let i = self.injected.iter().position(|(c, nth, _)| *c == call && *nth == n)?;
        Some(self.injected.remove(i).2)
    }
}

#[async_trait]
impl Rds for FakeRds {
    async fn describe(&self, id: &str) -> Result<Option<InstanceInfo>> {
        let mut st = self.state();
        match st.enter(RdsCall::Describe) {
            Some(Injected::Error(e)) => return Err(e),
            Some(Injected::Throttling) => return Err(describe_error(id, THROTTLED.into())),
            Some(Injected::LostAnswer) | None => {}
        }
        let Some((info, underway)) = st.instances.iter_mut().find(|(i, _)| i.id == id) else { return Ok(None) };
        match underway {
            Some(Underway::Promotion(0)) => {
                info.status = "available".into();
                info.read_replica_source = None;
                *underway = None;
            }
            Some(Underway::Restore(0)) => {
                info.status = "available".into();
                info.endpoint = Some((format!("{}.fake.rds.amazonaws.com", info.id), 5432));
                *underway = None;
            }
            Some(Underway::Restore(left)) => {
                info.status = if *left == 1 { "backing-up" } else { "creating" }.into();
                *left -= 1;
            }
            Some(Underway::Promotion(left)) => *left -= 1,
            None => {}
        }
        Ok(Some(info.clone()))
    }

    async fn promote_read_replica(&self, id: &str) -> Result<()> {
        let mut st = self.state();
        let lost = match st.enter(RdsCall::Promote) {
            Some(Injected::Error(e)) => return Err(e),
            Some(Injected::Throttling) => return Err(promote_error(id, THROTTLED)),
            Some(Injected::LostAnswer) => true,
            None => false,
        };
        let takes = st.promote_takes;
        let Some((info, underway)) = st.instances.iter_mut().find(|(i, _)| i.id == id) else {
            return Err(promote_error(id, format!("DBInstanceNotFound: DBInstance {id} not found.")));
        };
        if !info.is_replica() {
            return Err(promote_error(id, "InvalidDBInstanceState: DB Instance is not a read replica."));
        }
        if !info.is_available() {
            return Err(promote_error(id, format!("InvalidDBInstanceState: DB instance {id} is {}.", info.status)));
        }
        info.status = "modifying".into();
        *underway = Some(Underway::Promotion(takes));
        if lost {
            return Err(promote_error(id, format!("InvalidDBInstanceState: DB instance {id} is modifying.")));
        }
        Ok(())
    }

    async fn earliest_restorable_time(&self, id: &str) -> Result<Option<Earliest>> {
        let mut st = self.state();
        match st.enter(RdsCall::Earliest) {
            Some(Injected::Error(e)) => return Err(e),
            Some(Injected::Throttling) => return Err(describe_error(id, THROTTLED.into())),
            Some(Injected::LostAnswer) | None => {}
        }
        Ok(st
            .earliest
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, t)| Earliest { time: *t, from: "RestoreWindow of its automated backups" }))
    }

    async fn restore_to_point_in_time(&self, req: &RestoreRequest) -> Result<()> {
        let mut st = self.state();
        let lost = match st.enter(RdsCall::Restore) {
            Some(Injected::Error(e)) => return Err(e),
            Some(Injected::Throttling) => return Err(restore_error(req, THROTTLED)),
            Some(Injected::LostAnswer) => true,
            None => false,
        };
        if st.instances.iter().any(|(i, _)| i.id == req.target) {
            return Err(restore_error(req, "DBInstanceAlreadyExists: DB instance already exists"));
        }
        let Some((source, _)) = st.instances.iter().find(|(i, _)| i.id == req.source) else {
            return Err(restore_error(req, format!("DBInstanceNotFound: DBInstance {} not found.", req.source)));
        };
        if source.backup_retention_days.unwrap_or(0) < 1 {
            return Err(restore_error(req, "PointInTimeRestoreNotEnabled: automated backups are off"));
        }
        let earliest = st.earliest.iter().find(|(i, _)| *i == req.source).map(|(_, t)| *t);
        if let RestorePoint::Time(t) = req.point {
            let inside = earliest.is_some_and(|e| e <= t) && source.latest_restorable_time.is_some_and(|l| t <= l);
            if !inside {
                return Err(restore_error(
                    req,
                    "InvalidRestoreFault: the restore time is outside the restorable window",
                ));
            }
        }
        let created = InstanceInfo {
            id: req.target.clone(),
            status: "creating".into(),
            read_replica_source: None,
            endpoint: None,
            backup_retention_days: source.backup_retention_days,
            multi_az: Some(req.multi_az.unwrap_or(false)),
            instance_class: req.instance_class.clone().or_else(|| source.instance_class.clone()),
            // What RDS picks for a setting left out: the account's defaults, never the source's.
            subnet_group: req.subnet_group.clone().or_else(|| Some("default".into())),
            security_groups: if req.security_groups.is_empty() {
                vec!["sg-default".into()]
            } else {
                req.security_groups.clone()
            },
            parameter_group: req.parameter_group.clone().or_else(|| Some("default.postgres16".into())),
            publicly_accessible: Some(req.publicly_accessible.unwrap_or(false)),
            tags: req.tags.clone(),
            latest_restorable_time: None,
        };
        let takes = st.restore_takes;
        st.instances.push((created, Some(Underway::Restore(takes))));
        st.restores.push(req.clone());
        if lost {
            return Err(restore_error(req, "DBInstanceAlreadyExists: DB instance already exists"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn fake() -> FakeRds {
        let rds = FakeRds::new();
        rds.put(FakeRds::primary("app-prod"));
        rds.put(FakeRds::replica("app-rep", "app-prod"));
        rds
    }

    #[tokio::test]
    async fn describe_answers_none_for_an_absent_instance() {
        let rds = fake();
        assert_eq!(rds.describe("app-nope").await.unwrap(), None);
        let rep = rds.describe("app-rep").await.unwrap().unwrap();
        assert!(rep.is_replica() && rep.is_available(), "{rep:?}");
        assert_eq!(rep.endpoint, Some(("app-rep.fake.rds.amazonaws.com".into(), 5432)));
        assert_eq!(rds.calls(), RdsCalls { describe: 2, ..RdsCalls::default() });
    }

    #[tokio::test]
    async fn a_promotion_is_modifying_for_the_programmed_describes_then_available_without_a_source() {
        let rds = fake();
        rds.promote_takes(2);
        rds.promote_read_replica("app-rep").await.unwrap();
        for _ in 0..2 {
            let i = rds.describe("app-rep").await.unwrap().unwrap();
            assert_eq!((i.status.as_str(), i.read_replica_source.as_deref()), ("modifying", Some("app-prod")));
        }
        let done = rds.describe("app-rep").await.unwrap().unwrap();
        assert_eq!((done.status.as_str(), done.read_replica_source), ("available", None));
        // Promoting again is what RDS refuses: it is no replica any more.
        let err = rds.promote_read_replica("app-rep").await.unwrap_err();
        assert!(err.to_string().contains("InvalidDBInstanceState") && err.to_string().contains("app-rep"), "{err}");
        assert_eq!(rds.calls(), RdsCalls { describe: 3, promote: 2, ..RdsCalls::default() });
    }

    #[tokio::test]
    async fn promoting_a_primary_an_instance_mid_promotion_or_an_absent_one_fails_as_rds_does() {
        let rds = fake();
        let err = rds.promote_read_replica("app-prod").await.unwrap_err();
        assert!(err.to_string().contains("not a read replica"), "{err}");
        assert_eq!(err.exit_code(), crate::error::exit::STEP_FAILED);
        rds.promote_takes(1);
        rds.promote_read_replica("app-rep").await.unwrap();
        let err = rds.promote_read_replica("app-rep").await.unwrap_err();
        assert!(err.to_string().contains("InvalidDBInstanceState: DB instance app-rep is modifying"), "{err}");
        let err = rds.promote_read_replica("app-nope").await.unwrap_err();
        assert!(err.to_string().contains("DBInstanceNotFound"), "{err}");
        assert_eq!(rds.instance("app-prod").unwrap(), FakeRds::primary("app-prod"));
    }

    #[tokio::test]
    async fn injected_failures_hit_the_nth_call_and_change_nothing() {
        let rds = fake();
        rds.throttle(RdsCall::Promote, 1);
        rds.fail_on(RdsCall::Describe, 1, Error::step("test", "injected"));
        let err = rds.promote_read_replica("app-rep").await.unwrap_err();
        assert!(err.to_string().contains("Throttling"), "{err}");
        assert!(rds.describe("app-rep").await.unwrap_err().to_string().contains("injected"));
        assert!(
            rds.describe("app-rep").await.unwrap().unwrap().is_available(),
            "the throttled promote changed nothing"
        );
    }

    #[tokio::test]
    async fn a_lost_answer_fails_though_the_promotion_is_under_way() {
        let rds = fake();
        rds.lose_answer(1);
        let err = rds.promote_read_replica("app-rep").await.unwrap_err();
        assert!(err.to_string().contains("InvalidDBInstanceState"), "{err}");
        // What the trait's doc tells a caller to do: describe, and find the promotion happening.
        let i = rds.describe("app-rep").await.unwrap().unwrap();
        assert_eq!(i.status, "available", "promote_takes(0): done at the first describe");
        assert_eq!(i.read_replica_source, None);
    }

    fn restore_of(point: RestorePoint) -> RestoreRequest {
        RestoreRequest {
            source: "app-prod".into(),
            target: "app-restored".into(),
            point,
            instance_class: Some("db.r6g.large".into()),
            subnet_group: Some("app-subnets".into()),
            security_groups: vec!["sg-app".into()],
            parameter_group: Some("app-params".into()),
            multi_az: Some(true),
            publicly_accessible: Some(false),
            tags: vec![("team".into(), "db".into())],
        }
    }

    #[tokio::test]
    async fn a_restore_is_creating_then_backing_up_then_available_with_what_was_asked() {
        let rds = fake();
        let now = SystemTime::now();
        rds.window("app-prod", now - Duration::from_secs(86_400), now - Duration::from_secs(300));
        let e = rds.earliest_restorable_time("app-prod").await.unwrap().unwrap();
        assert_eq!(e.time, now - Duration::from_secs(86_400));
        assert_eq!(rds.earliest_restorable_time("app-rep").await.unwrap(), None);
        rds.restore_takes(3);
        let req = restore_of(RestorePoint::Time(now - Duration::from_secs(3_600)));
        rds.restore_to_point_in_time(&req).await.unwrap();
        let states: Vec<(String, bool)> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                let i = rds.describe("app-restored").await.unwrap().unwrap();
                v.push((i.status, i.endpoint.is_some()));
            }
            v
        };
        let want = [("creating", false), ("creating", false), ("backing-up", false), ("available", true)];
        assert_eq!(states, want.map(|(s, e)| (s.to_string(), e)));
        let i = rds.instance("app-restored").unwrap();
        assert_eq!(
            (i.subnet_group.as_deref(), i.security_groups.clone(), i.parameter_group.as_deref(), i.multi_az),
            (Some("app-subnets"), vec!["sg-app".to_string()], Some("app-params"), Some(true))
        );
        assert_eq!(i.tag("team"), Some("db"));
        assert_eq!(rds.restores(), vec![req.clone()]);
        let err = rds.restore_to_point_in_time(&req).await.unwrap_err();
        assert!(err.to_string().contains("DBInstanceAlreadyExists"), "{err}");
        assert_eq!(rds.calls().restore, 2);
    }

    #[tokio::test]
    async fn a_restore_outside_the_window_without_backups_or_of_no_source_is_refused_as_rds_does() {
        let rds = fake();
        let now = SystemTime::now();
        rds.window("app-prod", now - Duration::from_secs(600), now - Duration::from_secs(300));
        let err = rds.restore_to_point_in_time(&restore_of(RestorePoint::Time(now))).await.unwrap_err();
        assert!(err.to_string().contains("InvalidRestoreFault"), "{err}");
        rds.put(InstanceInfo { backup_retention_days: Some(0), ..FakeRds::primary("app-prod") });
        let err = rds.restore_to_point_in_time(&restore_of(RestorePoint::Latest)).await.unwrap_err();
        assert!(err.to_string().contains("PointInTimeRestoreNotEnabled"), "{err}");
        let err = rds
            .restore_to_point_in_time(&RestoreRequest { source: "app-nope".into(), ..restore_of(RestorePoint::Latest) })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("DBInstanceNotFound") && err.to_string().contains("app-restored"), "{err}");
        assert_eq!(rds.instance("app-restored"), None, "nothing was created");
        assert!(rds.restores().is_empty());
    }

    #[tokio::test]
    async fn a_lost_restore_answer_fails_though_the_instance_is_being_created() {
        let rds = fake();
        rds.restore_takes(5);
        rds.lose_restore_answer(1);
        let err = rds.restore_to_point_in_time(&restore_of(RestorePoint::Latest)).await.unwrap_err();
        assert!(err.to_string().contains("DBInstanceAlreadyExists"), "{err}");
        assert_eq!(rds.describe("app-restored").await.unwrap().unwrap().status, "creating");
        rds.finish_after(0);
        assert!(rds.describe("app-restored").await.unwrap().unwrap().is_available());
    }
}
