//! RDS behind a trait: what promote-replica asks of an RDS read replica (is it one, is it
//! available, where does it listen) and the one change it makes to it, and what `status --audit`
//! asks of any instance (automated backups kept, Multi-AZ).
//!
//! The trait exists because tests need a fake: moto promotes at once (the replica never leaves
//! "available"), still names the source instance after the promotion, and promotes an instance that
//! is no replica without complaint where RDS answers InvalidDBInstanceState, so neither the wait
//! for a promotion nor a rerun after one can be staged against it. [`FakeRds`] plays RDS's states;
//! [`SdkRds`] is run against moto in tests/it/clients.rs.
//!
//! There is no waiter here: the SDK's waiter sleeps as it likes and fails with its own error, and
//! promote-replica must journal that the promotion was sent before it waits and stop with exit 6 at
//! its own deadline, so it polls `describe` itself.
//!
//! Errors, as in dns.rs: a failed `describe` is `Error::Unreachable` naming the instance, a failed
//! or refused promotion `Error::Step` (exit 1).

use std::sync::Mutex;

use async_trait::async_trait;

use crate::clients::aws_problem;
use crate::error::{Error, Result};

/// An RDS DB instance as promote-replica and `status --audit` need to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub id: String,
    /// As RDS reports it: "available", "modifying", "backing-up", "rebooting", …
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
}

impl InstanceInfo {
    pub fn is_replica(&self) -> bool {
        self.read_replica_source.is_some()
    }

    pub fn is_available(&self) -> bool {
        self.status == "available"
    }
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
}

fn describe_error(id: &str, problem: String) -> Error {
    Error::Unreachable { what: format!("RDS instance {id}"), problem }
}

fn promote_error(id: &str, problem: impl std::fmt::Display) -> Error {
    Error::Step { step: "RDS PromoteReadReplica".into(), problem: format!("{id}: {problem}") }
}

/// A test double for [`Rds`], for the runbooks' tests of what moto cannot stage. After a promote
/// the instance is "modifying" for a programmable number of `describe` calls, then "available" with
/// no source, as RDS goes. Promoting an instance that is no replica, or one that is not available,
/// fails as RDS's InvalidDBInstanceState does; an unknown id as DBInstanceNotFound. It counts calls
/// and can fail the Nth one. Not `#[cfg(test)]`: tests/it uses it too.
#[derive(Default)]
pub struct FakeRds {
    state: Mutex<FakeState>,
}

/// A method of [`Rds`], to count and to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RdsCall {
    Describe,
    Promote,
}

/// Calls made so far, each method counted whether it succeeded or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RdsCalls {
    pub describe: usize,
    pub promote: usize,
}

#[derive(Default)]
struct FakeState {
    /// Each instance, and for one being promoted, the describes still answering "modifying".
    instances: Vec<(InstanceInfo, Option<u32>)>,
    promote_takes: u32,
    injected: Vec<(RdsCall, usize, Injected)>,
    calls: RdsCalls,
}

enum Injected {
    Error(Error),
    Throttling,
    /// Apply the promotion, then fail as the SDK's retry of it would.
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
    /// by default: automated backups kept 1 day, single-AZ.
    pub fn primary(id: &str) -> InstanceInfo {
        InstanceInfo {
            id: id.into(),
            status: "available".into(),
            read_replica_source: None,
            endpoint: Some((format!("{id}.fake.rds.amazonaws.com"), 5432)),
            backup_retention_days: Some(1),
            multi_az: Some(false),
        }
    }

    /// An available read replica of `source`.
    pub fn replica(id: &str, source: &str) -> InstanceInfo {
        InstanceInfo { read_replica_source: Some(source.into()), ..FakeRds::primary(id) }
    }

    /// The instance as the fake holds it, without counting a call or moving a promotion on.
    pub fn instance(&self, id: &str) -> Option<InstanceInfo> {
        self.state().instances.iter().find(|(i, _)| i.id == id).map(|(i, _)| i.clone())
    }

    /// A promotion from now on shows "modifying" to this many describes before "available".
    pub fn promote_takes(&self, describes: u32) {
        self.state().promote_takes = describes;
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

    pub fn calls(&self) -> RdsCalls {
        self.state().calls
    }
}

impl FakeState {
    fn enter(&mut self, call: RdsCall) -> Option<Injected> {
        let n = match call {
            RdsCall::Describe => &mut self.calls.describe,
            RdsCall::Promote => &mut self.calls.promote,
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
        let Some((info, promoting)) = st.instances.iter_mut().find(|(i, _)| i.id == id) else { return Ok(None) };
        match promoting {
            Some(0) => {
                info.status = "available".into();
                info.read_replica_source = None;
                *promoting = None;
            }
            Some(left) => *left -= 1,
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
        let Some((info, promoting)) = st.instances.iter_mut().find(|(i, _)| i.id == id) else {
            return Err(promote_error(id, format!("DBInstanceNotFound: DBInstance {id} not found.")));
        };
        if !info.is_replica() {
            return Err(promote_error(id, "InvalidDBInstanceState: DB Instance is not a read replica."));
        }
        if !info.is_available() {
            return Err(promote_error(id, format!("InvalidDBInstanceState: DB instance {id} is {}.", info.status)));
        }
        info.status = "modifying".into();
        *promoting = Some(takes);
        if lost {
            return Err(promote_error(id, format!("InvalidDBInstanceState: DB instance {id} is modifying.")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(rds.calls(), RdsCalls { describe: 2, promote: 0 });
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
        assert_eq!(rds.calls(), RdsCalls { describe: 3, promote: 2 });
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
}
