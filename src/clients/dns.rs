//! Route 53 behind a trait: the app record as it is now, the one way drctl changes it, and whether
//! a change has reached every Route 53 server yet.
//!
//! The trait exists because tests need a fake: moto answers every change INSYNC at once, checks a
//! DELETE against every value the record ever had instead of the one it has, and adds a second
//! record where Route 53 refuses a CREATE over an existing one, so neither a wait that runs past its
//! deadline (exit 6) nor an operator editing the record between drctl's read and its write can be
//! staged against it. [`FakeDns`] stages both; [`Route53Dns`] is run against moto
//! in tests/it/clients.rs.
//!
//! A change is one batch, DELETE of the exact record set drctl read and CREATE of the new one, never
//! an UPSERT: Route 53 applies a batch atomically and refuses a DELETE whose values are not the
//! record's current ones, so when someone changed the record after drctl read it the whole batch
//! fails and nothing changes, where an UPSERT would overwrite their edit without a word. That
//! refusal is the one error a caller must tell apart, with [`record_changed`].
//!
//! [`RecordSet`] is what rollback puts back, so it survives the journal (serde) and the SDK's type
//! without losing anything: `current` refuses a record that uses what `RecordSet` does not model (a
//! routing policy, a health check, a traffic policy) rather than journal it without that part and
//! later restore it without it.
//!
//! Errors: a failed read (`current`, `status`) is `Error::Unreachable` naming the zone or change,
//! as sync's live check reports Route 53; a failed or refused change is `Error::Step` (exit 1, never
//! 3), because once a batch was sent nothing can promise that "nothing was changed".

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_route53::error::ProvideErrorMetadata;
use aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsError;
use aws_sdk_route53::types::{
    AliasTarget as SdkAliasTarget, Change, ChangeAction, ChangeBatch, ChangeStatus as SdkChangeStatus, ResourceRecord,
    ResourceRecordSet, RrType,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::aws_problem;

/// The record types `[dns] type` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordType {
    #[serde(rename = "CNAME")]
    Cname,
    A,
}

impl RecordType {
    /// `[dns] type` as config.rs validated it: `CNAME` or `A`.
    pub fn parse(s: &str) -> Option<RecordType> {
        match s {
            "CNAME" => Some(RecordType::Cname),
            "A" => Some(RecordType::A),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::Cname => "CNAME",
            RecordType::A => "A",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<RecordType> for RrType {
    fn from(t: RecordType) -> RrType {
        match t {
            RecordType::Cname => RrType::Cname,
            RecordType::A => RrType::A,
        }
    }
}

/// One simple-routing record set, as Route 53 lists it (the name ends in a dot). In the journal it
/// is `{"name", "type", "ttl", "values"}` or `{"name", "type", "alias": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RecordSetJson", into = "RecordSetJson")]
pub struct RecordSet {
    pub name: String,
    pub rtype: RecordType,
    pub data: RecordData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    /// A CNAME's target or an A record's addresses, cached by resolvers for `ttl` seconds.
    Values { ttl: i64, values: Vec<String> },
    /// Route 53 answers with the target's own records (a load balancer's); an alias has no TTL.
    Alias(AliasTarget),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasTarget {
    pub dns_name: String,
    /// The target's own hosted zone (an ELB's zone in its region), not the record's.
    pub hosted_zone_id: String,
    pub evaluate_target_health: bool,
}

impl RecordSet {
    pub fn cname(name: impl Into<String>, ttl: i64, target: impl Into<String>) -> RecordSet {
        RecordSet {
            name: name.into(),
            rtype: RecordType::Cname,
            data: RecordData::Values { ttl, values: vec![target.into()] },
        }
    }

    pub fn alias(name: impl Into<String>, rtype: RecordType, target: AliasTarget) -> RecordSet {
        RecordSet { name: name.into(), rtype, data: RecordData::Alias(target) }
    }

    /// Where the record sends resolvers: the CNAME's target or the alias's DNS name; `None` for an
    /// A record with addresses, which no env's `dns_target` can name.
    pub fn target(&self) -> Option<&str> {
        match (&self.data, self.rtype) {
            (RecordData::Alias(a), _) => Some(&a.dns_name),
            (RecordData::Values { values, .. }, RecordType::Cname) => values.first().map(String::as_str),
            (RecordData::Values { .. }, RecordType::A) => None,
        }
    }

    /// What `record` sends resolvers to, for messages: its target, or why there is none.
    pub fn shown(record: Option<&RecordSet>) -> String {
        match record.map(RecordSet::target) {
            None => "(no such record)".to_string(),
            Some(None) => "(addresses, not an alias)".to_string(),
            Some(Some(t)) => t.to_string(),
        }
    }

    /// Whether the record sends resolvers to `target` (an env's `dns_target`), as the contract
    /// compares names.
    pub fn points_at(&self, target: &str) -> bool {
        self.target().is_some_and(|t| same_name(t, target))
    }

    /// The record set as the SDK sends it. The name goes without its trailing dot: Route 53 reads
    /// both forms as the same name, but moto keeps the name of each change as it was sent and later
    /// matches a DELETE against it with the dot stripped, so a record created with the dot could
    /// never be deleted there (a cutover's CREATE is the next rollback's DELETE).
    fn to_sdk(&self) -> std::result::Result<ResourceRecordSet, String> {
        let name = self.name.strip_suffix('.').unwrap_or(&self.name);
        let mut b = ResourceRecordSet::builder().name(name).r#type(self.rtype.into());
        match &self.data {
            RecordData::Values { values, .. } if values.is_empty() => {
                return Err(format!("{} {} has no values", self.name, self.rtype));
            }
            RecordData::Values { ttl, values } => {
                b = b.ttl(*ttl);
                for v in values {
                    b = b.resource_records(ResourceRecord::builder().value(v).build().map_err(|e| e.to_string())?);
                }
            }
            RecordData::Alias(a) => {
                b = b.alias_target(
                    SdkAliasTarget::builder()
                        .dns_name(&a.dns_name)
                        .hosted_zone_id(&a.hosted_zone_id)
                        .evaluate_target_health(a.evaluate_target_health)
                        .build()
                        .map_err(|e| e.to_string())?,
                );
            }
        }
        b.build().map_err(|e| e.to_string())
    }

    /// What Route 53 listed, or why drctl will not manage it: every field it does not model would
    /// be lost on the way back.
    fn from_sdk(rs: &ResourceRecordSet) -> std::result::Result<RecordSet, String> {
        let what = format!("{} {}", rs.name(), rs.r#type().as_str());
        let unmodelled = [
            ("SetIdentifier", rs.set_identifier().is_some()),
            ("Weight", rs.weight().is_some()),
            ("Region", rs.region().is_some()),
            ("GeoLocation", rs.geo_location().is_some()),
            ("GeoProximityLocation", rs.geo_proximity_location().is_some()),
            ("Failover", rs.failover().is_some()),
            ("MultiValueAnswer", rs.multi_value_answer().is_some()),
            ("CidrRoutingConfig", rs.cidr_routing_config().is_some()),
            ("HealthCheckId", rs.health_check_id().is_some()),
            ("TrafficPolicyInstanceId", rs.traffic_policy_instance_id().is_some()),
        ];
        if let Some((field, _)) = unmodelled.iter().find(|(_, set)| *set) {
            return Err(format!(
                "{what} has a {field}: drctl changes only simple records, and restoring this one would drop it"
            ));
        }
        let rtype = match rs.r#type() {
            RrType::Cname => RecordType::Cname,
            RrType::A => RecordType::A,
            other => return Err(format!("{what}: type {} is not CNAME or A", other.as_str())),
        };
        let data = match (rs.alias_target(), rs.ttl(), rs.resource_records()) {
            (Some(a), None, []) => RecordData::Alias(AliasTarget {
                dns_name: a.dns_name().to_string(),
                hosted_zone_id: a.hosted_zone_id().to_string(),
                evaluate_target_health: a.evaluate_target_health(),
            }),
            (None, Some(ttl), records) if !records.is_empty() => {
                RecordData::Values { ttl, values: records.iter().map(|r| r.value().to_string()).collect() }
            }
            _ => return Err(format!("{what} is neither an alias nor a TTL with values")),
        };
        Ok(RecordSet { name: rs.name().to_string(), rtype, data })
    }
}

/// The journal form: flat, so an entry reads like the Route 53 console.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordSetJson {
    name: String,
    #[serde(rename = "type")]
    rtype: RecordType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    values: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alias: Option<AliasTarget>,
}

impl TryFrom<RecordSetJson> for RecordSet {
    type Error = String;

    fn try_from(j: RecordSetJson) -> std::result::Result<RecordSet, String> {
        let data = match (j.ttl, j.values, j.alias) {
            (Some(ttl), Some(values), None) if !values.is_empty() => RecordData::Values { ttl, values },
            (None, None, Some(a)) => RecordData::Alias(a),
            _ => return Err(format!("record set {}: want `ttl` and `values`, or `alias`", j.name)),
        };
        Ok(RecordSet { name: j.name, rtype: j.rtype, data })
    }
}

impl From<RecordSet> for RecordSetJson {
    fn from(r: RecordSet) -> RecordSetJson {
        let (ttl, values, alias) = match r.data {
            RecordData::Values { ttl, values } => (Some(ttl), Some(values), None),
            RecordData::Alias(a) => (None, None, Some(a)),
        };
        RecordSetJson { name: r.name, rtype: r.rtype, ttl, values, alias }
    }
}

/// Route 53's id of a submitted change (`/change/C2682N5HXP0BZ4`), journaled before waiting so a
/// rerun waits on it instead of sending the change again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChangeId(pub String);

impl fmt::Display for ChangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeStatus {
    /// Accepted, not yet served by every Route 53 name server.
    Pending,
    /// Every Route 53 name server answers with it (resolvers may still hold the old answer for a TTL).
    InSync,
}

/// Whether two names are the same target as the contract compares them: case-insensitively, without
/// the trailing dot or a `dualstack.` prefix (an alias to an ALB is `dualstack.<its DNS name>`, the
/// same load balancer). Route 53's `\NNN` escapes (it lists `*` as `\052`) are read as the
/// characters they stand for.
pub fn same_name(a: &str, b: &str) -> bool {
    fn bare(s: &str) -> String {
        let c = canonical(s);
        c.strip_prefix("dualstack.").map(str::to_string).unwrap_or(c)
    }
    bare(a) == bare(b)
}

/// Record names compare like [`same_name`] but keep a `dualstack.` label: `dualstack.app.example.com`
/// is another record than `app.example.com`, and a listing that starts at the one may return the other.
fn same_record(a: &str, b: &str) -> bool {
    canonical(a) == canonical(b)
}

fn canonical(name: &str) -> String {
    let name = name.trim();
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        let escaped = rest
            .strip_prefix('\\')
            .and_then(|r| r.get(..3))
            .filter(|d| d.bytes().all(|b| (b'0'..=b'7').contains(&b)))
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match escaped {
            Some(byte) => {
                out.push(char::from(byte).to_ascii_lowercase());
                rest = &rest[4..];
            }
            None => {
                out.push(c.to_ascii_lowercase());
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

#[async_trait]
pub trait Dns: Send + Sync {
    /// The record set `name` of type `rtype` in `zone_id` exactly as Route 53 holds it; `None` when
    /// there is none. An error when it uses a routing policy, a health check or a traffic policy.
    async fn current(&self, zone_id: &str, name: &str, rtype: RecordType) -> Result<Option<RecordSet>>;

    /// Sends one batch: DELETE `delete` (what `current` returned), then CREATE `create`; with no
    /// current record, CREATE alone. Returns once Route 53 accepted it; `status` says when it is served.
    ///
    /// The batch is refused as a whole when the record is no longer `delete` (or, with `delete`
    /// `None`, when one now exists): [`record_changed`] is true of that error. The SDK retries a
    /// request whose answer was lost, and if the lost attempt was applied its retry is refused that
    /// same way, so before reporting a concurrent edit read the record again: if it equals `create`,
    /// the change is this run's own (its id is lost with the answer).
    async fn change(
        &self,
        zone_id: &str,
        delete: Option<&RecordSet>,
        create: &RecordSet,
        comment: &str,
    ) -> Result<ChangeId>;

    /// GetChange: whether the change is served yet.
    async fn status(&self, id: &ChangeId) -> Result<ChangeStatus>;
}

/// The SDK client, from `Aws::route53()`.
pub struct Route53Dns {
    client: aws_sdk_route53::Client,
}

impl Route53Dns {
    pub fn new(client: aws_sdk_route53::Client) -> Route53Dns {
        Route53Dns { client }
    }
}

#[async_trait]
impl Dns for Route53Dns {
    async fn current(&self, zone_id: &str, name: &str, rtype: RecordType) -> Result<Option<RecordSet>> {
        // The listing starts at (name, type) in Route 53's order, so the record, when it exists, is
        // the first one; anything else there is the next record and means there is none.
        let out = self
            .client
            .list_resource_record_sets()
            .hosted_zone_id(zone_id)
            .start_record_name(name)
            .start_record_type(rtype.into())
            .max_items(1)
            .send()
            .await
            .map_err(|e| read_error(zone_id, name, rtype, aws_problem("Route 53", &e)))?;
        let Some(rs) = out.resource_record_sets().first() else { return Ok(None) };
        if !same_record(rs.name(), name) || rs.r#type() != &RrType::from(rtype) {
            return Ok(None);
        }
        RecordSet::from_sdk(rs).map(Some).map_err(|p| read_error(zone_id, name, rtype, p))
    }

    async fn change(
        &self,
        zone_id: &str,
        delete: Option<&RecordSet>,
        create: &RecordSet,
        comment: &str,
    ) -> Result<ChangeId> {
        let subject = delete.unwrap_or(create);
        let mut changes = Vec::with_capacity(2);
        for (action, rs) in
            delete.map(|d| (ChangeAction::Delete, d)).into_iter().chain([(ChangeAction::Create, create)])
        {
            let set = rs.to_sdk().map_err(|p| change_error(zone_id, rs, p))?;
            let c = Change::builder().action(action).resource_record_set(set).build();
            changes.push(c.map_err(|e| change_error(zone_id, rs, e.to_string()))?);
        }
        let batch = ChangeBatch::builder()
            .set_changes(Some(changes))
            .comment(comment)
            .build()
            .map_err(|e| change_error(zone_id, subject, e.to_string()))?;
        let sent = self.client.change_resource_record_sets().hosted_zone_id(zone_id).change_batch(batch).send().await;
        match sent {
            Ok(out) => match out.change_info() {
                Some(info) => Ok(ChangeId(info.id().to_string())),
                None => Err(change_error(zone_id, subject, "Route 53 accepted the batch but returned no change id")),
            },
            Err(e) => {
                let mut messages: Vec<String> = e.message().map(str::to_string).into_iter().collect();
                if let Some(ChangeResourceRecordSetsError::InvalidChangeBatch(b)) = e.as_service_error() {
                    messages.extend(b.messages().iter().filter(|m| !messages.contains(m)).cloned().collect::<Vec<_>>());
                }
                if is_conflict(e.code(), &messages) {
                    Err(record_changed_error(zone_id, subject, &messages.join("; ")))
                } else if e.code() == Some("InvalidChangeBatch") && !messages.is_empty() {
                    Err(change_error(zone_id, subject, format!("InvalidChangeBatch: {}", messages.join("; "))))
                } else {
                    Err(change_error(zone_id, subject, aws_problem("Route 53", &e)))
                }
            }
        }
    }

    async fn status(&self, id: &ChangeId) -> Result<ChangeStatus> {
        let out = self
            .client
            .get_change()
            .id(&id.0)
            .send()
            .await
            .map_err(|e| status_error(id, aws_problem("Route 53", &e)))?;
        let status = out.change_info().map(|c| c.status());
        Ok(match status {
            Some(SdkChangeStatus::Insync) => ChangeStatus::InSync,
            // A status this SDK does not know is not proof of INSYNC: keep waiting, and let the
            // deadline (exit 6) decide.
            _ => ChangeStatus::Pending,
        })
    }
}

/// Named in every ChangeResourceRecordSets error; [`record_changed`] keys on it.
const CHANGE_OP: &str = "Route 53 ChangeResourceRecordSets";
/// The words of the refusal a caller must tell apart, as the operator reads them.
const RECORD_CHANGED: &str = "changed since drctl read it";

/// Whether `e` is Route 53 refusing a change batch because the record is no longer what drctl read
/// (the DELETE matched nothing, or the CREATE found a record already there). Nothing was changed.
pub fn record_changed(e: &Error) -> bool {
    matches!(e, Error::Step { step, problem } if step == CHANGE_OP && problem.contains(RECORD_CHANGED))
}

/// Whether Route 53's refusal says the record is not what the batch assumed (the messages are
/// Route 53's own wording), as opposed to a batch that is wrong whatever the record holds.
fn is_conflict(code: Option<&str>, messages: &[String]) -> bool {
    let any = |needles: &[&str]| messages.iter().any(|m| needles.iter().any(|n| m.contains(n)));
    match code {
        Some("InvalidChangeBatch") => {
            any(&["but it was not found", "do not match the current values", "but it already exists"])
        }
        // moto 5.2.5 refuses a DELETE that matches nothing with this message. Route 53 sends it
        // only for a DELETE carrying neither an alias nor a TTL with values, which `to_sdk` never
        // sends, so from a `RecordSet` it can only mean the moto refusal.
        Some("InvalidInput") => any(&["but found none in Change with [Action=DELETE"]),
        _ => false,
    }
}

fn read_error(zone_id: &str, name: &str, rtype: RecordType, problem: String) -> Error {
    Error::Unreachable {
        what: format!("Route 53 zone {zone_id}"),
        problem: format!("reading {name} {rtype}: {problem}"),
    }
}

fn change_error(zone_id: &str, rs: &RecordSet, problem: impl fmt::Display) -> Error {
    Error::Step { step: CHANGE_OP.into(), problem: format!("zone {zone_id}, {} {}: {problem}", rs.name, rs.rtype) }
}

fn record_changed_error(zone_id: &str, rs: &RecordSet, detail: &str) -> Error {
    Error::Step {
        step: CHANGE_OP.into(),
        problem: format!(
            "zone {zone_id}: {} {} {RECORD_CHANGED}, and Route 53 refused the whole batch ({detail})",
            rs.name, rs.rtype
        ),
    }
}

fn status_error(id: &ChangeId, problem: String) -> Error {
    Error::Unreachable { what: format!("Route 53 change {id}"), problem }
}

/// A test double for [`Dns`], for the runbooks' tests of what moto cannot stage: changes that stay
/// Pending for a number of polls, throttling on the Nth call, a concurrent edit of the record, and a
/// change whose answer was lost. It keeps records in memory, refuses a DELETE that is not exactly
/// the current record set and a CREATE over an existing one as Route 53 does (with the same
/// errors `Route53Dns` returns), and counts calls. Not `#[cfg(test)]`: tests/it uses it too.
#[derive(Default)]
pub struct FakeDns {
    state: Mutex<FakeState>,
}

/// A method of [`Dns`], to count and to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsCall {
    Current,
    Change,
    Status,
}

/// Calls made so far, each method counted whether it succeeded or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsCalls {
    pub current: usize,
    pub change: usize,
    pub status: usize,
}

#[derive(Default)]
struct FakeState {
    /// (zone id without `/hostedzone/`, record set named as Route 53 lists it, with the dot).
    records: Vec<(String, RecordSet)>,
    /// Polls a change made from now on answers Pending before InSync.
    pending_polls: u32,
    /// Polls each change still answers Pending, by id without `/change/`.
    changes: HashMap<String, u32>,
    next_change: u64,
    injected: Vec<(DnsCall, usize, Injected)>,
    calls: DnsCalls,
}

enum Injected {
    Error(Error),
    Throttling,
    /// Apply the change, then fail as the SDK's retry of it would.
    LostAnswer,
}

impl FakeDns {
    pub fn new() -> FakeDns {
        FakeDns::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock has failed already; its state is still readable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Puts `record` in `zone_id`, replacing one of the same name and type, as an operator editing
    /// it in the console would: no call is counted.
    pub fn put(&self, zone_id: &str, mut record: RecordSet) {
        if !record.name.ends_with('.') {
            record.name.push('.');
        }
        let zone = bare_zone(zone_id);
        let mut st = self.state();
        st.records.retain(|(z, r)| !(*z == zone && same_record(&r.name, &record.name) && r.rtype == record.rtype));
        st.records.push((zone, record));
    }

    /// Removes the record, as an operator would; no call is counted.
    pub fn remove(&self, zone_id: &str, name: &str, rtype: RecordType) {
        let zone = bare_zone(zone_id);
        self.state().records.retain(|(z, r)| !(*z == zone && same_record(&r.name, name) && r.rtype == rtype));
    }

    /// The record as the fake holds it, without counting a call.
    pub fn record(&self, zone_id: &str, name: &str, rtype: RecordType) -> Option<RecordSet> {
        let zone = bare_zone(zone_id);
        let st = self.state();
        st.records
            .iter()
            .find(|(z, r)| *z == zone && same_record(&r.name, name) && r.rtype == rtype)
            .map(|(_, r)| r.clone())
    }

    /// Every change made from now on answers `status` Pending `polls` times, then InSync.
    pub fn pending_polls(&self, polls: u32) {
        self.state().pending_polls = polls;
    }

    /// The `nth` call (1-based, counted from the fake's creation) of `call` fails with `error` and
    /// has no effect.
    pub fn fail_on(&self, call: DnsCall, nth: usize, error: Error) {
        self.state().injected.push((call, nth, Injected::Error(error)));
    }

    /// The `nth` call of `call` fails as `Route53Dns` fails once the SDK's retries of a throttled
    /// request ran out (`Throttling: Rate exceeded`), and has no effect.
    pub fn throttle(&self, call: DnsCall, nth: usize) {
        self.state().injected.push((call, nth, Injected::Throttling));
    }

    /// The `nth` change is applied but its answer is lost, and the SDK's retry of it is refused
    /// because the record is no longer what it deletes: the caller sees [`record_changed`] although
    /// the record now holds what it asked for.
    pub fn lose_answer(&self, nth: usize) {
        self.state().injected.push((DnsCall::Change, nth, Injected::LostAnswer));
    }

    pub fn calls(&self) -> DnsCalls {
        self.state().calls
    }
}

impl FakeState {
    /// Counts the call and takes what was injected for it, if anything.
    fn enter(&mut self, call: DnsCall) -> Option<Injected> {
        let n = match call {
            DnsCall::Current => &mut self.calls.current,
            DnsCall::Change => &mut self.calls.change,
            DnsCall::Status => &mut self.calls.status,
        };
        *n += 1;
        let n = *n;
        let i = self.injected.iter().position(|(c, nth, _)| *c == call && *nth == n)?;
        Some(self.injected.remove(i).2)
    }

    fn find(&self, zone: &str, name: &str, rtype: RecordType) -> Option<usize> {
        self.records.iter().position(|(z, r)| z == zone && same_record(&r.name, name) && r.rtype == rtype)
    }
}

const THROTTLED: &str = "Throttling: Rate exceeded";

#[async_trait]
impl Dns for FakeDns {
    async fn current(&self, zone_id: &str, name: &str, rtype: RecordType) -> Result<Option<RecordSet>> {
        let mut st = self.state();
        match st.enter(DnsCall::Current) {
            Some(Injected::Error(e)) => return Err(e),
            Some(Injected::Throttling) => return Err(read_error(zone_id, name, rtype, THROTTLED.into())),
            Some(Injected::LostAnswer) | None => {}
        }
        let zone = bare_zone(zone_id);
        Ok(st.find(&zone, name, rtype).map(|i| st.records[i].1.clone()))
    }

    async fn change(
        &self,
        zone_id: &str,
        delete: Option<&RecordSet>,
        create: &RecordSet,
        _comment: &str,
    ) -> Result<ChangeId> {
        let subject = delete.unwrap_or(create);
        let mut st = self.state();
        let lost = match st.enter(DnsCall::Change) {
            Some(Injected::Error(e)) => return Err(e),
            Some(Injected::Throttling) => return Err(change_error(zone_id, subject, THROTTLED)),
            Some(Injected::LostAnswer) => true,
            None => false,
        };
        for rs in delete.into_iter().chain([create]) {
            rs.to_sdk().map_err(|p| change_error(zone_id, rs, p))?;
        }
        let zone = bare_zone(zone_id);
        // Checked whole before anything is applied: a refused batch changes nothing.
        let mut after = st.records.clone();
        if let Some(d) = delete {
            let found = st.find(&zone, &d.name, d.rtype);
            let refusal = match found {
                None => Some("but it was not found"),
                Some(i) if !same_set(&st.records[i].1, d) => {
                    Some("but the values provided do not match the current values")
                }
                Some(_) => None,
            };
            if let Some(why) = refusal {
                let msg = format!(
                    "Tried to delete resource record set [name='{}', type='{}'] {why}",
                    dotted(&d.name),
                    d.rtype
                );
                return Err(record_changed_error(zone_id, d, &msg));
            }
            after.retain(|(z, r)| !(*z == zone && same_record(&r.name, &d.name) && r.rtype == d.rtype));
        }
        let clash = |r: &RecordSet| same_record(&r.name, &create.name);
        if after.iter().any(|(z, r)| *z == zone && clash(r) && r.rtype == create.rtype) {
            let msg = format!(
                "Tried to create resource record set [name='{}', type='{}'] but it already exists",
                dotted(&create.name),
                create.rtype
            );
            return Err(record_changed_error(zone_id, create, &msg));
        }
        // A CNAME is the only record of its name (RFC 1034 3.6.2); Route 53 refuses the batch.
        if after
            .iter()
            .any(|(z, r)| *z == zone && clash(r) && (r.rtype == RecordType::Cname || create.rtype == RecordType::Cname))
        {
            let msg = format!(
                "InvalidChangeBatch: RRSet of type {} with DNS name {} is not permitted as it conflicts with other records with the same DNS name in zone {zone}",
                create.rtype,
                dotted(&create.name)
            );
            return Err(change_error(zone_id, create, msg));
        }
        let mut stored = create.clone();
        stored.name = dotted(&stored.name);
        after.push((zone, stored));
        st.records = after;
        st.next_change += 1;
        let id = format!("CFAKE{:09}", st.next_change);
        let polls = st.pending_polls;
        st.changes.insert(id.clone(), polls);
        if lost {
            let msg = format!(
                "Tried to delete resource record set [name='{}', type='{}'] but the values provided do not match the current values",
                dotted(&subject.name),
                subject.rtype
            );
            return Err(record_changed_error(zone_id, subject, &msg));
        }
        Ok(ChangeId(format!("/change/{id}")))
    }

    async fn status(&self, id: &ChangeId) -> Result<ChangeStatus> {
        let mut st = self.state();
        match st.enter(DnsCall::Status) {
            Some(Injected::Error(e)) => return Err(e),
            Some(Injected::Throttling) => return Err(status_error(id, THROTTLED.into())),
            Some(Injected::LostAnswer) | None => {}
        }
        let bare = id.0.strip_prefix("/change/").unwrap_or(&id.0);
        match st.changes.get_mut(bare) {
            None => Err(status_error(id, "NoSuchChange: A change with the specified change ID does not exist.".into())),
            Some(0) => Ok(ChangeStatus::InSync),
            Some(left) => {
                *left -= 1;
                Ok(ChangeStatus::Pending)
            }
        }
    }
}

/// Route 53 takes zone ids with or without the prefix its own answers carry.
fn bare_zone(zone_id: &str) -> String {
    zone_id.strip_prefix("/hostedzone/").unwrap_or(zone_id).to_string()
}

fn dotted(name: &str) -> String {
    if name.ends_with('.') { name.to_string() } else { format!("{name}.") }
}

/// Route 53's DELETE rule: every value as it was created. Names compare as DNS names; the values of
/// a record set are a set, so their order does not count.
fn same_set(a: &RecordSet, b: &RecordSet) -> bool {
    let data = match (&a.data, &b.data) {
        (RecordData::Values { ttl: ta, values: va }, RecordData::Values { ttl: tb, values: vb }) => {
            let (mut va, mut vb) = (va.clone(), vb.clone());
            va.sort();
            vb.sort();
            ta == tb && va == vb
        }
        (RecordData::Alias(x), RecordData::Alias(y)) => {
            same_record(&x.dns_name, &y.dns_name)
                && x.hosted_zone_id == y.hosted_zone_id
                && x.evaluate_target_health == y.evaluate_target_health
        }
        _ => false,
    };
    data && same_record(&a.name, &b.name) && a.rtype == b.rtype
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "Z0123456789ABCDEFGHIJ";
    const APP: &str = "app.example.com";

    fn alb(name: &str) -> AliasTarget {
        AliasTarget { dns_name: name.into(), hosted_zone_id: "Z368ELLRRE2KJ0".into(), evaluate_target_health: false }
    }

    #[test]
    fn names_compare_without_case_trailing_dot_or_dualstack() {
        assert!(same_name("prod-alb.example.net", "PROD-ALB.example.net."));
        assert!(same_name("dualstack.prod-alb.example.net.", "prod-alb.example.net"));
        assert!(same_name("Dualstack.prod-alb.example.net", "dualstack.PROD-alb.example.net."));
        assert!(same_name("\\052.example.com.", "*.example.com"));
        assert!(!same_name("prod-alb.example.net", "stg-alb.example.net"));
        assert!(!same_name("prod-alb.example.net", "prod-alb.example.net.evil.com"));
        assert!(!same_name("dualstackprod-alb.example.net", "prod-alb.example.net"));
        // Record names keep the label: the record after app.example.com in the listing may be it.
        assert!(same_record("App.Example.com.", "app.example.com"));
        assert!(!same_record("dualstack.app.example.com.", "app.example.com"));
    }

    #[test]
    fn a_record_set_journals_flat_and_reads_back_equal() {
        let c = RecordSet::cname("app.example.com.", 60, "prod-alb.example.net");
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"name":"app.example.com.","type":"CNAME","ttl":60,"values":["prod-alb.example.net"]}"#);
        assert_eq!(serde_json::from_str::<RecordSet>(&json).unwrap(), c);

        let a = RecordSet::alias("app.example.com.", RecordType::A, alb("dualstack.prod-alb.example.net."));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            json,
            r#"{"name":"app.example.com.","type":"A","alias":{"dns_name":"dualstack.prod-alb.example.net.","hosted_zone_id":"Z368ELLRRE2KJ0","evaluate_target_health":false}}"#
        );
        assert_eq!(serde_json::from_str::<RecordSet>(&json).unwrap(), a);
    }

    #[test]
    fn a_journaled_record_set_that_is_neither_values_nor_alias_is_refused() {
        for bad in [
            r#"{"name":"a.","type":"CNAME","ttl":60}"#,
            r#"{"name":"a.","type":"CNAME","ttl":60,"values":[]}"#,
            r#"{"name":"a.","type":"A","ttl":60,"values":["10.0.0.1"],"alias":{"dns_name":"x","hosted_zone_id":"Z1","evaluate_target_health":false}}"#,
            r#"{"name":"a.","type":"A"}"#,
            r#"{"name":"a.","type":"AAAA","ttl":60,"values":["::1"]}"#,
            r#"{"name":"a.","type":"A","ttl":60,"values":["10.0.0.1"],"weight":1}"#,
        ] {
            assert!(serde_json::from_str::<RecordSet>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_sdk_form_round_trips_and_routing_policies_are_refused() {
        for rs in [
            RecordSet::cname("app.example.com.", 300, "prod-alb.example.net"),
            RecordSet {
                name: "app.example.com.".into(),
                rtype: RecordType::A,
                data: RecordData::Values { ttl: 60, values: vec!["10.0.0.2".into(), "10.0.0.1".into()] },
            },
            RecordSet::alias("app.example.com.", RecordType::A, alb("dualstack.prod-alb.example.net.")),
        ] {
            let sdk = rs.to_sdk().unwrap();
            assert_eq!(sdk.name(), "app.example.com", "sent without the dot (moto)");
            let mut back = RecordSet::from_sdk(&sdk).unwrap();
            back.name.push('.');
            assert_eq!(back, rs);
        }
        let weighted = RecordSet::cname(APP, 60, "x.example.net").to_sdk().unwrap();
        let weighted = ResourceRecordSet::builder()
            .name(weighted.name())
            .r#type(RrType::Cname)
            .ttl(60)
            .resource_records(ResourceRecord::builder().value("x.example.net").build().unwrap())
            .set_identifier("blue")
            .weight(10)
            .build()
            .unwrap();
        let err = RecordSet::from_sdk(&weighted).unwrap_err();
        assert!(err.contains("SetIdentifier") && err.contains("simple records"), "{err}");
        let empty =
            RecordSet { name: APP.into(), rtype: RecordType::A, data: RecordData::Values { ttl: 60, values: vec![] } };
        assert!(empty.to_sdk().is_err());
    }

    #[test]
    fn points_at_compares_the_target_as_the_contract_says() {
        assert!(RecordSet::cname(APP, 60, "Prod-ALB.example.net.").points_at("prod-alb.example.net"));
        assert!(
            RecordSet::alias(APP, RecordType::A, alb("dualstack.prod-alb.example.net."))
                .points_at("prod-alb.example.net")
        );
        assert!(!RecordSet::cname(APP, 60, "stg-alb.example.net").points_at("prod-alb.example.net"));
        let plain_a = RecordSet {
            name: APP.into(),
            rtype: RecordType::A,
            data: RecordData::Values { ttl: 60, values: vec!["10.0.0.1".into()] },
        };
        assert_eq!(plain_a.target(), None);
        assert!(!plain_a.points_at("10.0.0.1"));
    }

    #[test]
    fn only_refusals_about_the_records_state_count_as_a_concurrent_edit() {
        let m = |s: &str| vec![s.to_string()];
        for (code, msg) in [
            (
                "InvalidChangeBatch",
                "[Tried to delete resource record set [name='app.example.com.', type='CNAME'] but it was not found]",
            ),
            (
                "InvalidChangeBatch",
                "[Tried to delete resource record set [name='app.example.com.', type='CNAME'] but the values provided do not match the current values]",
            ),
            (
                "InvalidChangeBatch",
                "[Tried to create resource record set [name='app.example.com.', type='CNAME'] but it already exists]",
            ),
            (
                "InvalidInput",
                "Invalid request: Expected exactly one of [AliasTarget, all of [TTL, and ResourceRecords], or TrafficPolicyInstanceId], but found none in Change with [Action=DELETE, Name=app.example.com., Type=CNAME, SetIdentifier=null]",
            ),
        ] {
            assert!(is_conflict(Some(code), &m(msg)), "{msg}");
        }
        for (code, msg) in [
            (
                "InvalidChangeBatch",
                "[RRSet of type CNAME with DNS name example.com. is not permitted at apex in zone example.com.]",
            ),
            ("InvalidChangeBatch", "RRSet with DNS name app.other.org. is not permitted in zone example.com."),
            (
                "InvalidInput",
                "Invalid request: Expected exactly one of [AliasTarget, all of [TTL, and ResourceRecords], or TrafficPolicyInstanceId], but found none in Change with [Action=CREATE, Name=a., Type=A, SetIdentifier=null]",
            ),
            ("Throttling", "Rate exceeded"),
        ] {
            assert!(!is_conflict(Some(code), &m(msg)), "{msg}");
        }
        let rs = RecordSet::cname(APP, 60, "x");
        assert!(record_changed(&record_changed_error(ZONE, &rs, "x")));
        assert!(!record_changed(&change_error(ZONE, &rs, "InvalidChangeBatch: not permitted at apex")));
        assert!(!record_changed(&read_error(ZONE, APP, RecordType::Cname, RECORD_CHANGED.into())));
        let shown = record_changed_error(ZONE, &rs, "Tried to delete").to_string();
        assert!(
            shown.contains(ZONE) && shown.contains(APP) && shown.contains("changed since drctl read it"),
            "{shown}"
        );
        assert_eq!(record_changed_error(ZONE, &rs, "x").exit_code(), crate::error::exit::STEP_FAILED);
    }

    #[tokio::test]
    async fn the_fake_swaps_a_record_only_when_the_delete_matches_exactly() {
        let dns = FakeDns::new();
        dns.put(ZONE, RecordSet::cname(APP, 60, "stg-alb.example.net"));
        let old =
            dns.current(&format!("/hostedzone/{ZONE}"), "APP.example.com.", RecordType::Cname).await.unwrap().unwrap();
        assert_eq!(old, RecordSet::cname("app.example.com.", 60, "stg-alb.example.net"));
        assert_eq!(dns.current(ZONE, APP, RecordType::A).await.unwrap(), None);

        // Someone changes the TTL in the console between our read and our write.
        dns.put(ZONE, RecordSet::cname(APP, 300, "stg-alb.example.net"));
        let new = RecordSet::cname(APP, 60, "prod-alb.example.net");
        let err = dns.change(ZONE, Some(&old), &new, "cutover").await.unwrap_err();
        assert!(record_changed(&err), "{err}");
        assert!(err.to_string().contains("do not match the current values"), "{err}");
        assert_eq!(
            dns.record(ZONE, APP, RecordType::Cname).unwrap().data,
            RecordData::Values { ttl: 300, values: vec!["stg-alb.example.net".into()] }
        );

        // Read again and it goes through; values order does not count.
        let old = dns.current(ZONE, APP, RecordType::Cname).await.unwrap().unwrap();
        let id = dns.change(ZONE, Some(&old), &new, "cutover").await.unwrap();
        assert!(id.0.starts_with("/change/"), "{id}");
        assert!(dns.record(ZONE, APP, RecordType::Cname).unwrap().points_at("prod-alb.example.net"));

        // Deleted by someone else meanwhile: not found.
        dns.remove(ZONE, APP, RecordType::Cname);
        let err = dns.change(ZONE, Some(&old), &new, "again").await.unwrap_err();
        assert!(record_changed(&err) && err.to_string().contains("not found"), "{err}");
        assert_eq!(dns.calls(), DnsCalls { current: 3, change: 3, status: 0 });
    }

    #[tokio::test]
    async fn the_fake_refuses_a_create_over_an_existing_record_and_a_cname_beside_another_type() {
        let dns = FakeDns::new();
        let cname = RecordSet::cname(APP, 60, "stg-alb.example.net");
        dns.change(ZONE, None, &cname, "first").await.unwrap();
        let err = dns.change(ZONE, None, &cname, "second").await.unwrap_err();
        assert!(record_changed(&err) && err.to_string().contains("already exists"), "{err}");

        let alias = RecordSet::alias(APP, RecordType::A, alb("dualstack.prod-alb.example.net."));
        let err = dns.change(ZONE, None, &alias, "beside").await.unwrap_err();
        assert!(!record_changed(&err) && err.to_string().contains("conflicts with other records"), "{err}");
        // In one batch, CNAME -> A alias is fine: the DELETE goes first.
        let current = dns.current(ZONE, APP, RecordType::Cname).await.unwrap().unwrap();
        dns.change(ZONE, Some(&current), &alias, "switch").await.unwrap();
        assert_eq!(dns.record(ZONE, APP, RecordType::Cname), None);
        assert!(dns.record(ZONE, APP, RecordType::A).unwrap().points_at("prod-alb.example.net"));
    }

    #[tokio::test]
    async fn fake_changes_answer_pending_for_the_programmed_polls_then_insync() {
        let dns = FakeDns::new();
        dns.pending_polls(2);
        let id = dns.change(ZONE, None, &RecordSet::cname(APP, 60, "a.example.net"), "c").await.unwrap();
        assert_eq!(dns.status(&id).await.unwrap(), ChangeStatus::Pending);
        assert_eq!(dns.status(&id).await.unwrap(), ChangeStatus::Pending);
        assert_eq!(dns.status(&id).await.unwrap(), ChangeStatus::InSync);
        assert_eq!(
            dns.status(&ChangeId(id.0.trim_start_matches("/change/").into())).await.unwrap(),
            ChangeStatus::InSync
        );
        let err = dns.status(&ChangeId("/change/CNOSUCH".into())).await.unwrap_err();
        assert!(err.to_string().contains("NoSuchChange"), "{err}");
        assert_eq!(dns.calls().status, 5);
    }

    #[tokio::test]
    async fn injected_failures_hit_the_nth_call_and_change_nothing() {
        let dns = FakeDns::new();
        dns.throttle(DnsCall::Change, 1);
        dns.fail_on(DnsCall::Current, 2, Error::step("test", "injected"));
        let rs = RecordSet::cname(APP, 60, "a.example.net");
        let err = dns.change(ZONE, None, &rs, "c").await.unwrap_err();
        assert!(err.to_string().contains("Throttling") && !record_changed(&err), "{err}");
        assert_eq!(dns.record(ZONE, APP, RecordType::Cname), None);
        dns.change(ZONE, None, &rs, "c").await.unwrap();
        assert!(dns.current(ZONE, APP, RecordType::Cname).await.unwrap().is_some());
        assert!(dns.current(ZONE, APP, RecordType::Cname).await.unwrap_err().to_string().contains("injected"));
        assert!(dns.current(ZONE, APP, RecordType::Cname).await.unwrap().is_some());
        assert_eq!(dns.calls(), DnsCalls { current: 3, change: 2, status: 0 });
    }

    #[tokio::test]
    async fn a_lost_answer_reads_as_a_concurrent_edit_though_the_change_went_through() {
        let dns = FakeDns::new();
        dns.put(ZONE, RecordSet::cname(APP, 60, "stg-alb.example.net"));
        dns.lose_answer(1);
        let old = dns.current(ZONE, APP, RecordType::Cname).await.unwrap().unwrap();
        let new = RecordSet::cname(APP, 60, "prod-alb.example.net");
        let err = dns.change(ZONE, Some(&old), &new, "cutover").await.unwrap_err();
        assert!(record_changed(&err), "{err}");
        // What the trait's doc tells a caller to do: read again, and find its own change.
        let now = dns.current(ZONE, APP, RecordType::Cname).await.unwrap().unwrap();
        assert!(same_set(&now, &new));
    }
}
