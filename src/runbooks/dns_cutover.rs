//! dns-cutover --to ENV: point `[dns].record` at ENV's `dns_target`.
//!
//! Replaces the seed ADR's procedure: curl the standby's health URL, open the Route 53 console,
//! edit the `app` record by hand, sleep 60, nslookup, post in Slack. Here the target is checked
//! first (healthy, CORS, TLS for the record's name, data fresh enough), the record is changed by
//! one batch that fails if anyone touched it since it was read, the exact previous record set and
//! the change id are journaled *before* the wait (so `rollback` can put it back, and a rerun after
//! a crash waits on the same change instead of sending another), and the run ends when Route 53
//! says INSYNC and the record reads back as the target.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::{Map, json};

use crate::clients::dns::{AliasTarget, ChangeId, ChangeStatus, Dns, RecordSet, RecordType, record_changed};
use crate::config::{DnsConfig, EnvConfig};
use crate::ctx::Ctx;
use crate::engine::run::{Confirm, Runbook};
use crate::engine::runctx::wait_for;
use crate::engine::step::{Check, Step, StepLog};
use crate::error::{Error, Result, error_chain};
use crate::runbooks::check::health;

/// How often GetChange is asked while waiting for INSYNC (Route 53 takes about a minute).
/// Throttling and PriorRequestNotComplete answers are retried with backoff by the SDK itself
/// (aws-runtime classifies both as throttling; clients/aws.rs allows 10 attempts).
const POLL_EVERY: Duration = Duration::from_secs(2);

pub async fn dns_cutover(cx: &Ctx, to: &EnvConfig) -> Result<Runbook> {
    let dns = cx.config.dns.clone().ok_or_else(|| {
        Error::config(cx.config.file.display(), "dns-cutover needs a [dns] section: zone_id, record, type")
    })?;
    let api: Arc<dyn Dns> = Arc::new(cx.dns_api().await);
    let step = PointRecord::new(cx, &dns, to, api)?;
    let mut rb = Runbook::new("dns-cutover", Some(&to.name), format!("--to {}", to.name))
        // `dns` for the record; `env:TO` so no sync replaces TO's data while traffic moves to it.
        .lock("dns".into())
        .lock(format!("env:{}", to.name))
        .resumable();
    rb.confirm = Some(Confirm {
        env: to.name.clone(),
        question: format!("point {} {} at {} ({})", dns.kind, dns.record, to.name, step.create.target().unwrap_or("")),
    });
    Ok(rb.step(step))
}

/// The one step: read, check, change, wait, read back. dns-cutover's `point-record`, and
/// rollback's `restore-record` (the journaled previous record set, exactly, back in place).
pub struct PointRecord {
    id: &'static str,
    dns: DnsConfig,
    /// The env the record will send users to: its health, CORS and TLS are checked (rollback
    /// returning to a record no env's dns_target names has none).
    to: Option<EnvConfig>,
    create: RecordSet,
    restore: Option<Restore>,
    api: Arc<dyn Dns>,
    /// The record as preflight read it: the batch DELETEs exactly this.
    read: Mutex<Option<Option<RecordSet>>>,
    rpo: Duration,
    max_lag: u64,
    health_timeout: Duration,
    cors_origin: Option<String>,
    timeout: Duration,
}

/// What rollback's restore-record knows of the cutover it undoes.
pub struct Restore {
    /// The cutover's first run id, journaled as `rolls_back` (the fold marks it rolled back).
    pub rolls_back: String,
    /// What the cutover set: the record must still hold it (`record-unchanged`).
    pub set: Option<RecordSet>,
    /// The env returned to is the old primary the failover fenced: its app (and so its health
    /// URL) may need the database the step before this one unfences, so target-healthy, cors and
    /// tls are checked at the moment of acting, after the unfence, not in preflight.
    pub check_at_act: bool,
}

impl PointRecord {
    /// rollback's step: put `previous` back exactly, after checking `to` (when an env's
    /// dns_target is what `previous` points at) as dns-cutover checks its target.
    pub fn restore(
        cx: &Ctx,
        dns: &DnsConfig,
        to: Option<&EnvConfig>,
        previous: RecordSet,
        restore: Restore,
        api: Arc<dyn Dns>,
    ) -> PointRecord {
        Self::with(cx, "restore-record", dns, to.cloned(), previous, Some(restore), api)
    }

    /// The fields both steps share: the policy's limits, nothing read yet.
    fn with(
        cx: &Ctx,
        id: &'static str,
        dns: &DnsConfig,
        to: Option<EnvConfig>,
        create: RecordSet,
        restore: Option<Restore>,
        api: Arc<dyn Dns>,
    ) -> PointRecord {
        let p = &cx.config.policy;
        PointRecord {
            id,
            dns: dns.clone(),
            to,
            create,
            restore,
            api,
            read: Mutex::new(None),
            rpo: p.rpo,
            max_lag: p.max_replica_lag_bytes,
            health_timeout: p.health_timeout,
            cors_origin: p.cors_origin.clone(),
            timeout: p.dns_timeout,
        }
    }

    pub fn new(cx: &Ctx, dns: &DnsConfig, to: &EnvConfig, api: Arc<dyn Dns>) -> Result<PointRecord> {
        let file = cx.config.file.display().to_string();
        let target = to.dns_target.clone().ok_or_else(|| {
            Error::config(
                &file,
                format!(
                    "[environments.{}] dns_target: not set, so there is nothing to point {} at",
                    to.name, dns.record
                ),
            )
        })?;
        let rtype = RecordType::parse(&dns.kind)
            .ok_or_else(|| Error::config(&file, format!("[dns] type: `{}` is not CNAME or A", dns.kind)))?;
        let create = match rtype {
            RecordType::Cname => RecordSet::cname(dns.record.clone(), dns.ttl, target),
            RecordType::A => {
                let zone = to.dns_alias_zone_id.clone().ok_or_else(|| {
                    Error::config(
                        &file,
                        format!(
                            "[environments.{}] dns_alias_zone_id: an A record is an alias, which needs the \
                             target's own hosted zone (the load balancer's)",
                            to.name
                        ),
                    )
                })?;
                let alias = AliasTarget { dns_name: target, hosted_zone_id: zone, evaluate_target_health: false };
                RecordSet::alias(dns.record.clone(), RecordType::A, alias)
            }
        };
        Ok(Self::with(cx, "point-record", dns, Some(to.clone()), create, None, api))
    }

    /// Where the record will send resolvers (an A record with addresses, restored by rollback,
    /// has no target name: shown as such).
    fn target(&self) -> &str {
        self.create.target().unwrap_or("(addresses)")
    }

    /// Whether `r` is already what this step creates: pointing at the target, or for a restore
    /// the very record set journaled.
    fn in_place(&self, r: &RecordSet) -> bool {
        match &self.restore {
            Some(_) => same_record(r, &self.create),
            None => r.points_at(self.target()),
        }
    }

    /// `record-unchanged` (restore): the record still holds what the cutover set, so putting the
    /// previous one back undoes that cutover and not somebody's later edit.
    fn record_unchanged(&self, current: &Result<Option<RecordSet>>) -> Option<Check> {
        const ID: &str = "record-unchanged";
        let r = self.restore.as_ref()?;
        Some(match current {
            Ok(Some(c)) if self.in_place(c) => {
                Check::pass(ID, format!("{}: already restored", self.describe(&Some(c.clone()))))
            }
            Ok(now) if now.as_ref().zip(r.set.as_ref()).is_some_and(|(n, set)| same_record(n, set)) => {
                Check::pass(ID, format!("{}, as run {} set it", self.describe(now), r.rolls_back))
            }
            Ok(now) => Check::fail(
                ID,
                format!(
                    "{} is not what run {} set ({}): someone changed it since; --accept record-unchanged \
                     replaces it anyway",
                    self.describe(now),
                    r.rolls_back,
                    RecordSet::shown(r.set.as_ref())
                ),
            ),
            Err(e) => Check::fail(ID, e.to_string()),
        })
    }

    async fn current(&self) -> Result<Option<RecordSet>> {
        let rtype = self.create.rtype;
        self.api.current(&self.dns.zone_id, &self.dns.record, rtype).await
    }

    fn describe(&self, r: &Option<RecordSet>) -> String {
        format!("{} {} -> {}", self.dns.kind, self.dns.record, RecordSet::shown(r.as_ref()))
    }

    /// `standby-fresh`: the data ENV would serve is recent enough to send users to.
    async fn standby_fresh(&self, cx: &Ctx, to: &EnvConfig) -> Check {
        const ID: &str = "standby-fresh";
        if let Some(from) = &to.sync_from {
            let state = match cx.journal.state().await {
                Ok(s) => s,
                Err(e) => return Check::fail(ID, format!("cannot read the journal: {e}")),
            };
            let Some(last) = state.syncs.get(&to.name) else {
                return Check::fail(ID, format!("{} was never synced from {from}", to.name));
            };
            let age = humantime::parse_rfc3339(&last.snapshot_time)
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            let shown = humantime::format_duration(Duration::from_secs(age.as_secs()));
            return if age <= self.rpo {
                Check::pass(
                    ID,
                    format!("{}'s data is {shown} old (snapshot {}), within policy.rpo", to.name, last.snapshot_time),
                )
            } else {
                Check::fail(
                    ID,
                    format!(
                        "{}'s data is {shown} old (last sync's snapshot {}), beyond policy.rpo {}: users would lose \
                         the writes since",
                        to.name,
                        last.snapshot_time,
                        humantime::format_duration(self.rpo)
                    ),
                )
            };
        }
        if to.replica_of.is_some() {
            let lag = async {
                // Its maintenance_db: a fence on the old primary replicates, and refuses the app database.
                let c = crate::clients::pg::connect(&crate::runbooks::sync::target::maintenance_url(to)).await?;
                crate::clients::pg::replication::role_and_lag(&c)
                    .await
                    .map_err(|e| crate::clients::pg::db_error(&to.database_url, &e))
            };
            // Right after a base backup the replay position can be ahead of what streaming
            // received (the backup's own WAL): that is no lag.
            let lag = async { lag.await.map(|(r, l)| (r, l.map(|b| b.max(0)))) };
            return match lag.await {
                Ok((false, _)) => Check::pass(ID, format!("{} is promoted: it holds everything it replayed", to.name)),
                Ok((true, lag)) if lag.unwrap_or(0) as u64 <= self.max_lag => Check::pass(
                    ID,
                    format!("{} is a replica {} bytes behind what it received", to.name, lag.unwrap_or(0)),
                ),
                Ok((true, lag)) => Check::fail(
                    ID,
                    format!(
                        "{} is a replica {} bytes behind, beyond policy.max_replica_lag_bytes {}",
                        to.name,
                        lag.unwrap_or(0),
                        self.max_lag
                    ),
                ),
                Err(e) => Check::fail(ID, format!("{} could not be asked for its lag: {e}", to.name)),
            };
        }
        Check::pass(ID, format!("{} declares neither sync_from nor replica_of: its data is its own", to.name))
    }

    /// `target-healthy`: ENV's health_url answers 2xx twice in a row.
    async fn target_healthy(&self) -> Check {
        const ID: &str = "target-healthy";
        let Some(to) = &self.to else {
            return Check::pass(ID, format!("no env's dns_target is {}: not checked", self.target()));
        };
        let Some(url) = &to.health_url else {
            return Check::pass(ID, format!("{} has no health_url: not checked", to.name));
        };
        for attempt in 1..=2 {
            let c = health(url, self.health_timeout).await;
            if !c.ok {
                return Check::fail(ID, c.detail);
            }
            if attempt == 1 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Check::pass(ID, format!("{url}: 2xx twice in a row"))
    }

    /// `cors`: with policy.cors_origin set, the browser app's origin is allowed by ENV.
    async fn cors(&self) -> Check {
        const ID: &str = "cors";
        let (Some(origin), Some(url)) = (&self.cors_origin, self.to.as_ref().and_then(|t| t.health_url.as_ref()))
        else {
            return Check::pass(ID, "no policy.cors_origin (or no health_url): not checked");
        };
        let client = match reqwest::Client::builder().timeout(self.health_timeout).build() {
            Ok(c) => c,
            Err(e) => return Check::fail(ID, e.to_string()),
        };
        match client.get(url.clone()).header("Origin", origin).send().await {
            Ok(r) => {
                let allowed = r.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok());
                match allowed {
                    Some(a) if a == origin || a == "*" => Check::pass(ID, format!("{url} allows origin {origin}")),
                    Some(a) => Check::fail(ID, format!("{url} allows origin {a}, not {origin}")),
                    None => Check::fail(ID, format!("{url} sent no Access-Control-Allow-Origin for {origin}")),
                }
            }
            Err(e) => Check::fail(ID, format!("{url}: {e}")),
        }
    }

    /// `tls`: with an https health_url, ENV serves a certificate valid for the record's name (what
    /// users' browsers will check after the cutover), found by connecting to ENV's health host
    /// while asking for the record's name.
    async fn tls(&self) -> Check {
        const ID: &str = "tls";
        let Some(url) = self.to.as_ref().and_then(|t| t.health_url.as_ref()).filter(|u| u.scheme() == "https") else {
            return Check::pass(ID, "no https health_url: not checked");
        };
        let name = self.dns.record.trim_end_matches('.').to_string();
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return Check::fail(ID, format!("{url} names no host"));
        };
        let addrs: Vec<std::net::SocketAddr> = match tokio::net::lookup_host((host, port)).await {
            Ok(a) => a.collect(),
            Err(e) => return Check::fail(ID, format!("{host}: {e}")),
        };
        let mut as_record = url.clone();
        if as_record.set_host(Some(&name)).is_err() {
            return Check::fail(ID, format!("{name} is not a host name"));
        }
        let client =
            match reqwest::Client::builder().timeout(self.health_timeout).resolve_to_addrs(&name, &addrs).build() {
                Ok(c) => c,
                Err(e) => return Check::fail(ID, e.to_string()),
            };
        match client.get(as_record).send().await {
            Ok(_) => Check::pass(ID, format!("{host} serves a certificate valid for {name}")),
            Err(e) => Check::fail(ID, format!("{host} asked for {name}: {}", error_chain(&e))),
        }
    }
}

#[async_trait]
impl Step for PointRecord {
    fn id(&self) -> &'static str {
        self.id
    }
    fn check_ids(&self) -> &'static [&'static str] {
        match self.restore {
            Some(_) => &["record-unchanged", "target-healthy", "cors", "tls"],
            None => &["record-exists", "target-healthy", "cors", "tls", "standby-fresh"],
        }
    }
    async fn preflight(&self, cx: &Ctx) -> Vec<Check> {
        let current = self.current().await;
        if let Some(unchanged) = self.record_unchanged(&current) {
            if let Ok(r) = current {
                *self.read.lock().expect("read") = Some(r);
            }
            if self.restore.as_ref().is_some_and(|r| r.check_at_act) {
                let env = self.to.as_ref().map(|t| t.name.as_str()).unwrap_or("-");
                let later = format!("checked right before the change, once unfence-primary has unfenced {env}");
                return vec![
                    unchanged,
                    Check::pass("target-healthy", later.clone()),
                    Check::pass("cors", later.clone()),
                    Check::pass("tls", later),
                ];
            }
            let (healthy, cors, tls) = tokio::join!(self.target_healthy(), self.cors(), self.tls());
            return vec![unchanged, healthy, cors, tls];
        }
        let to = self.to.as_ref().expect("a cutover has its env");
        let exists = match &current {
            Ok(Some(r)) => Check::pass("record-exists", self.describe(&Some(r.clone()))),
            Ok(None) => Check::fail(
                "record-exists",
                format!(
                    "{} {} does not exist in zone {}: --accept record-exists creates it",
                    self.dns.kind, self.dns.record, self.dns.zone_id
                ),
            ),
            Err(e) => Check::fail("record-exists", e.to_string()),
        };
        if let Ok(r) = current {
            *self.read.lock().expect("read") = Some(r);
        }
        let (healthy, cors, tls, fresh) =
            tokio::join!(self.target_healthy(), self.cors(), self.tls(), self.standby_fresh(cx, to));
        vec![exists, healthy, cors, tls, fresh]
    }
    async fn guard(&self, _cx: &Ctx) -> Vec<Check> {
        if !self.restore.as_ref().is_some_and(|r| r.check_at_act) {
            return Vec::new();
        }
        let (healthy, cors, tls) = tokio::join!(self.target_healthy(), self.cors(), self.tls());
        vec![healthy, cors, tls]
    }
    async fn is_done(&self, cx: &Ctx) -> Result<bool> {
        // A change this run (or the one it resumes) sent is done only once INSYNC: apply waits on it.
        if cx.run.sent(self.id()).is_some() {
            return Ok(false);
        }
        Ok(self.current().await?.is_some_and(|r| self.in_place(&r)))
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let (id, previous): (ChangeId, Option<RecordSet>) = match cx.run.sent(self.id()) {
            Some(sent) => {
                let id = serde_json::from_value(sent["change_id"].clone())
                    .map_err(|e| Error::step(self.id(), format!("the journaled change id is unreadable: {e}")))?;
                let previous = serde_json::from_value(sent["previous"].clone())
                    .map_err(|e| Error::step(self.id(), format!("the journaled previous record is unreadable: {e}")))?;
                cx.out.info(&format!("dns-cutover: waiting on change {id} sent by the run this one resumes"));
                (id, previous)
            }
            None => {
                let read = self.read.lock().expect("read").clone();
                let previous = match read {
                    Some(r) => r,
                    // Preflight could not read it (and record-exists was waived): read now.
                    None => self.current().await?,
                };
                let comment = match (&self.restore, &self.to) {
                    (Some(r), _) => format!("drctl rollback of run {} (run {})", r.rolls_back, cx.run_id),
                    (None, Some(to)) => format!("drctl dns-cutover --to {} (run {})", to.name, cx.run_id),
                    (None, None) => format!("drctl (run {})", cx.run_id),
                };
                let id = match self.api.change(&self.dns.zone_id, previous.as_ref(), &self.create, &comment).await {
                    Ok(id) => id,
                    Err(e) if record_changed(&e) => {
                        // The SDK retries a request whose answer was lost; if the lost one was
                        // applied, its retry is refused like a concurrent edit. Look again.
                        if self.current().await?.is_some_and(|r| self.in_place(&r)) {
                            return Err(Error::OutcomeUnknown {
                                sent: format!(
                                    "the change of {} to {} (its answer, and so its id, was lost)",
                                    self.dns.record,
                                    self.target()
                                ),
                                waited: "0s".into(),
                            });
                        }
                        return Err(Error::step(
                            self.id(),
                            format!(
                                "{} {} changed after drctl read it ({}): nothing was changed; rerun to read it again",
                                self.dns.kind,
                                self.dns.record,
                                self.describe(&previous)
                            ),
                        ));
                    }
                    Err(e) => return Err(e),
                };
                let mut sent = Map::new();
                sent.insert("change_id".into(), json!(id));
                sent.insert("previous".into(), json!(previous));
                sent.insert("new".into(), json!(self.create));
                log.sent(sent).await?;
                (id, previous)
            }
        };
        let api = self.api.clone();
        wait_for(&format!("Route 53 change {id}"), self.timeout, POLL_EVERY, || {
            let (api, id) = (api.clone(), id.clone());
            async move { Ok((api.status(&id).await? == ChangeStatus::InSync).then_some(())) }
        })
        .await?;
        let previous_ttl = match previous.as_ref().map(|p| &p.data) {
            Some(crate::clients::dns::RecordData::Values { ttl, .. }) => Some(*ttl),
            _ => None,
        };
        // Resolvers that cached the old answer keep it for its TTL after the change is served.
        let expires = SystemTime::now() + Duration::from_secs(previous_ttl.unwrap_or(0).max(0) as u64);
        let expires = humantime::format_rfc3339_seconds(expires).to_string();
        log.set("previous_ttl", json!(previous_ttl));
        log.set("cached_answers_expire_by", expires.clone());
        log.summary(format!(
            "{} -> {} (was {}); INSYNC; cached answers expire by {expires}",
            self.dns.record,
            self.target(),
            self.describe(&previous)
        ));
        if let Some(r) = &self.restore {
            log.set("rolls_back", r.rolls_back.clone());
            cx.run.report("rolls_back", r.rolls_back.clone());
        }
        cx.run.report("record", self.dns.record.clone());
        cx.run.report("target", self.target().to_string());
        cx.run.report("previous", json!(previous));
        cx.run.report("previous_ttl", json!(previous_ttl));
        cx.run.report("change_id", json!(id));
        cx.run.report("cached_answers_expire_by", expires);
        Ok(())
    }
    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        let now = self.current().await?;
        if now.as_ref().is_some_and(|r| self.in_place(r)) {
            Ok(())
        } else {
            Err(Error::step(self.id(), format!("after the change the record reads {}", self.describe(&now))))
        }
    }
}

/// The same record set, as Route 53 compares them: names without the trailing dot and case,
/// alias targets likewise, TTL and values exactly.
pub fn same_record(a: &RecordSet, b: &RecordSet) -> bool {
    use crate::clients::dns::{RecordData, same_name};
    if !same_name(&a.name, &b.name) || a.rtype != b.rtype {
        return false;
    }
    match (&a.data, &b.data) {
        (RecordData::Values { ttl: t1, values: v1 }, RecordData::Values { ttl: t2, values: v2 }) => {
            t1 == t2 && v1.len() == v2.len() && v1.iter().zip(v2).all(|(x, y)| same_name(x, y))
        }
        (RecordData::Alias(x), RecordData::Alias(y)) => {
            same_name(&x.dns_name, &y.dns_name)
                && x.hosted_zone_id == y.hosted_zone_id
                && x.evaluate_target_health == y.evaluate_target_health
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::PointRecord;
    use crate::clients::dns::{FakeDns, RecordSet, RecordType};
    use crate::ctx::{Ctx, for_test_with};
    use crate::engine::run::{Runbook, execute};
    use crate::engine::step::{Step, StepLog};
    use crate::error::{Result, exit};
    use crate::journal::test_store::MemStore;

    const ZONE: &str = "Z0FAKE";
    const CONFIG: &str = "[policy]\ndns_timeout = \"1s\"\n\n[dns]\nzone_id = \"Z0FAKE\"\nrecord = \"app.example.com\"\n\
        type = \"CNAME\"\nttl = 60\n\n[environments.prod]\ndatabase_url = \"postgres://u@127.0.0.1:1/x\"\n\
        dns_target = \"prod-alb.example.net\"\n\n[environments.staging]\ndatabase_url = \"postgres://u@127.0.0.1:1/x\"\n\
        dns_target = \"stg-alb.example.net\"\n";

    /// An operator editing the record in the console after drctl's preflight read it.
    struct ConsoleEdit(Arc<FakeDns>);

    #[async_trait]
    impl Step for ConsoleEdit {
        fn id(&self) -> &'static str {
            "console-edit"
        }
        async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
            Ok(false)
        }
        async fn apply(&self, _cx: &Ctx, _log: &mut StepLog) -> Result<()> {
            self.0.put(ZONE, RecordSet::cname("app.example.com", 60, "hotfix-alb.example.net"));
            Ok(())
        }
        async fn verify(&self, _cx: &Ctx) -> Result<()> {
            Ok(())
        }
    }

    /// An empty journal, and Route 53 with the record pointing at prod.
    fn prod_live() -> (Arc<MemStore>, Arc<FakeDns>) {
        let fake = Arc::new(FakeDns::new());
        fake.put(ZONE, RecordSet::cname("app.example.com", 300, "prod-alb.example.net"));
        (Arc::new(MemStore::new()), fake)
    }

    fn runbook(cx: &Ctx, fake: &Arc<FakeDns>, edit: bool) -> Runbook {
        let to = cx.config.env("staging").unwrap();
        let step = PointRecord::new(cx, cx.config.dns.as_ref().unwrap(), to, fake.clone()).unwrap();
        let rb = Runbook::new("dns-cutover", Some("staging"), "--to staging".into()).lock("dns".into()).resumable();
        let rb = if edit { rb.step(ConsoleEdit(fake.clone())) } else { rb };
        rb.step(step)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edit_between_the_read_and_the_change_fails_the_batch_and_overwrites_nothing() {
        let (store, fake) = prod_live();
        let cx = for_test_with(store.clone(), &["--yes"], CONFIG);
        let out = execute(&cx, runbook(&cx, &fake, true)).await;
        let e = out.error.expect("refused");
        assert_eq!(e.exit_code(), exit::STEP_FAILED, "{e}");
        assert!(e.to_string().contains("changed after drctl read it"), "{e}");
        let now = fake.record(ZONE, "app.example.com", RecordType::Cname).unwrap();
        assert!(now.points_at("hotfix-alb.example.net"), "the operator's edit stands: {now:?}");
        assert_eq!(fake.calls().change, 1);
        assert_eq!(fake.calls().status, 0, "nothing sent, nothing waited for");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_whose_answer_was_lost_is_outcome_unknown_then_already_done() {
        let (store, fake) = prod_live();
        fake.lose_answer(1);
        let cx = for_test_with(store.clone(), &["--yes"], CONFIG);
        let out = execute(&cx, runbook(&cx, &fake, false)).await;
        let e = out.error.expect("not known to have taken");
        assert_eq!(e.exit_code(), exit::UNKNOWN_OUTCOME, "{e}");
        // The record holds what drctl asked for: the rerun sees it done and sends nothing.
        let cx = for_test_with(store.clone(), &["--yes"], CONFIG);
        let out = execute(&cx, runbook(&cx, &fake, false)).await;
        assert!(out.error.is_none(), "{:?}", out.error.map(|e| e.to_string()));
        assert_eq!(out.report.steps[0].state, crate::engine::report::StepState::Done);
        assert_eq!(fake.calls().change, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pending_past_the_deadline_is_exit_6_and_the_rerun_waits_on_the_same_change() {
        let (store, fake) = prod_live();
        fake.pending_polls(1_000);
        let cx = for_test_with(store.clone(), &["--yes"], CONFIG);
        let out = execute(&cx, runbook(&cx, &fake, false)).await;
        assert_eq!(out.error.expect("pending").exit_code(), exit::UNKNOWN_OUTCOME);
        let polls = fake.calls().status;
        assert!(polls >= 1);
        let cx = for_test_with(store.clone(), &["--yes"], CONFIG);
        let out = execute(&cx, runbook(&cx, &fake, false)).await;
        assert_eq!(out.error.expect("still pending").exit_code(), exit::UNKNOWN_OUTCOME);
        assert_eq!(fake.calls().change, 1, "waited, never sent again");
        assert!(fake.calls().status > polls);
    }
}
