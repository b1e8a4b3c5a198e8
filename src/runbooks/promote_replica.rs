//! promote-replica --env ENV: make a streaming replica (`replica_of = "P"`) the primary.
//!
//! Replaces "promote it in the console" and the half-remembered psql steps around it. Before the
//! promotion the old primary P is fenced when it answers — connections to its app database
//! disallowed and its sessions ended — so nothing more is written there, then drctl waits until ENV
//! has replayed everything P wrote, so the promotion loses nothing; an old primary that does not
//! answer (the usual case in an incident) is reported "not fenced" and never blocks the run. The
//! fence is a catalog change, so it replicates: right after `pg_promote` drctl allows connections
//! to ENV's app database again and proves ENV accepts a write.
//!
//! With `data_dir` set for the old primary (drctl runs on its host and manages its server), the
//! fence is `pg_ctl stop -m fast` instead. An RDS read replica (`rds_instance`) is promoted by
//! PromoteReadReplica, journaled as sent before the wait, then waited for until RDS shows it
//! `available` with no source instance (a status read right after the call still says
//! `available`, so both are required); a rerun waits on the same promotion, never sends it again.

use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, json};

use crate::clients::pg;
use crate::clients::pg::replication as repl;
use crate::clients::rds::{InstanceInfo, Rds};
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::engine::run::{Confirm, Runbook};
use crate::engine::runctx::wait_for;
use crate::engine::step::{Check, Step, StepLog};
use crate::error::{Error, Result};
use crate::runbooks::sync::target::maintenance_url;

/// How often ENV is asked how far it replayed while it catches up with the fenced primary.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How often RDS is asked whether the promotion finished (it takes minutes).
const POLL_RDS: Duration = Duration::from_secs(2);

pub async fn promote_replica(cx: &Ctx, env: &EnvConfig) -> Result<Runbook> {
    let file = cx.config.file.display().to_string();
    let Some(primary) = &env.replica_of else {
        return Err(Error::config(
            &file,
            format!(
                "[environments.{}] replica_of: not set, so {} is not a replica drctl may promote",
                env.name, env.name
            ),
        ));
    };
    let primary = cx.config.env(primary)?.clone();
    let rds = match &env.rds_instance {
        Some(id) => Some(RdsTarget { id: id.clone(), api: Arc::new(cx.rds_api().await) }),
        None => None,
    };
    let pair = Pair { env: env.clone(), primary, max_lag: cx.config.policy.max_replica_lag_bytes, rds };
    let mut rb = Runbook::new("promote-replica", Some(&env.name), format!("--env {}", env.name))
        .lock(format!("env:{}", env.name))
        .resumable();
    rb.confirm = Some(Confirm {
        env: env.name.clone(),
        question: format!("promote {} to a primary, fencing {} if it answers", env.name, pair.primary.name),
    });
    let timeout = cx.config.policy.promote_timeout;
    Ok(rb
        // Nothing more is written on the old primary (when it answers), and its last LSN is known.
        .step(FencePrimary { pair: pair.clone() })
        // ENV has replayed everything the fenced primary wrote: the promotion loses nothing.
        .step(WaitReplay { pair: pair.clone(), timeout })
        .step(Promote { pair: pair.clone(), timeout })
        // The fence replicated to ENV with everything else: lift it there, then prove ENV writes.
        .step(Unfence { pair }))
}

#[derive(Clone)]
struct Pair {
    env: EnvConfig,
    primary: EnvConfig,
    max_lag: u64,
    /// ENV's RDS instance, when RDS manages it: its role and promotion go through the RDS API.
    rds: Option<RdsTarget>,
}

#[derive(Clone)]
struct RdsTarget {
    id: String,
    api: Arc<dyn Rds>,
}

impl RdsTarget {
    async fn describe(&self) -> Result<InstanceInfo> {
        self.api.describe(&self.id).await?.ok_or_else(|| Error::Unreachable {
            what: format!("RDS instance {}", self.id),
            problem: "RDS has no such instance (rds_instance)".into(),
        })
    }
}

impl Pair {
    fn db(&self) -> &str {
        &self.env.database_url.dbname
    }
    async fn env_maint(&self) -> Result<tokio_postgres::Client> {
        pg::connect(&maintenance_url(&self.env)).await
    }
    /// The old primary's maintenance database, or why it cannot be reached.
    async fn primary_maint(&self) -> std::result::Result<tokio_postgres::Client, String> {
        pg::connect(&maintenance_url(&self.primary)).await.map_err(|e| e.to_string())
    }
    fn env_err(&self) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
        move |e| pg::db_error(&maintenance_url(&self.env), &e)
    }
    async fn in_recovery(&self, c: &tokio_postgres::Client) -> Result<bool> {
        repl::in_recovery(c).await.map_err(self.env_err())
    }
    /// Whether ENV is a replica now: RDS's word for an RDS instance, else `pg_is_in_recovery()`.
    async fn is_replica(&self) -> Result<bool> {
        match &self.rds {
            Some(r) => Ok(r.describe().await?.is_replica()),
            None => {
                let c = self.env_maint().await?;
                self.in_recovery(&c).await
            }
        }
    }
    /// Whether the promotion is done: ENV no replica (an RDS instance also `available` again) and
    /// this drctl's journal says it did it (a primary that drctl never promoted is a misdeclared
    /// env, not "done").
    async fn promoted(&self, cx: &Ctx) -> Result<bool> {
        let done = match &self.rds {
            Some(r) => r.describe().await.map(|i| !i.is_replica() && i.is_available())?,
            None => !self.is_replica().await?,
        };
        Ok(done && promoted_by_drctl(cx, &self.env.name).await?)
    }
}

/// Whether a promote step of this env is in the journal as done (this run's own appends are
/// folded into the state too).
async fn promoted_by_drctl(cx: &Ctx, env: &str) -> Result<bool> {
    let state = cx.journal.state().await?;
    Ok(state.promoted.contains(env))
}

// ---------------------------------------------------------------------------------------------

struct FencePrimary {
    pair: Pair,
}

#[async_trait]
impl Step for FencePrimary {
    fn id(&self) -> &'static str {
        "fence-primary"
    }
    fn check_ids(&self) -> &'static [&'static str] {
        &["declared-role", "replica-lag"]
    }
    async fn preflight(&self, cx: &Ctx) -> Vec<Check> {
        let p = &self.pair;
        let env = match p.env_maint().await {
            Ok(c) => c,
            Err(e) => return vec![Check::fail("db-reachable", e.to_string())],
        };
        let in_recovery = match &p.rds {
            Some(_) => p.is_replica().await,
            None => p.in_recovery(&env).await,
        };
        let in_recovery = match in_recovery {
            Ok(r) => r,
            Err(e) => return vec![Check::fail("declared-role", e.to_string())],
        };
        if !in_recovery {
            if let (Some(old), Some(_)) = (cx.run.resumes(), cx.run.sent("promote")) {
                return vec![Check::pass(
                    "declared-role",
                    format!("{} is being promoted by run {old}, which this run resumes", p.env.name),
                )];
            }
            return vec![match promoted_by_drctl(cx, &p.env.name).await {
                Ok(true) => Check::pass("declared-role", format!("{} is promoted (by drctl, journaled)", p.env.name)),
                Ok(false) => Check::fail(
                    "declared-role",
                    format!(
                        "{} declares replica_of = \"{}\" but is not in recovery, and drctl never promoted it: \
                         fix the declaration",
                        p.env.name, p.primary.name
                    ),
                ),
                Err(e) => Check::fail("declared-role", e.to_string()),
            }];
        }
        let role =
            Check::pass("declared-role", format!("{} is in recovery: a replica of {}", p.env.name, p.primary.name));
        let replay = match repl::replay_lsn(&env).await {
            Ok(r) => r,
            Err(e) => return vec![role, Check::fail("replica-lag", pg::describe(&e))],
        };
        let lag = match p.primary_maint().await {
            Err(why) => Check::pass(
                "replica-lag",
                format!(
                    "{} does not answer ({why}): lag unknown; {} replayed up to {}",
                    p.primary.name,
                    p.env.name,
                    replay.as_deref().unwrap_or("?")
                ),
            ),
            Ok(primary) => match (repl::current_lsn(&primary).await, replay) {
                (Ok(cur), Some(rep)) => match repl::lsn_diff(&primary, &cur, &rep).await {
                    Ok(bytes) if bytes.max(0) as u64 <= p.max_lag => Check::pass(
                        "replica-lag",
                        format!("{} is {bytes} bytes behind {} ({rep} of {cur})", p.env.name, p.primary.name),
                    ),
                    Ok(bytes) => Check::fail(
                        "replica-lag",
                        format!(
                            "{} is {bytes} bytes behind {} ({rep} of {cur}), beyond policy.max_replica_lag_bytes \
                                 {}: promoting now would wait for, or lose, that much",
                            p.env.name, p.primary.name, p.max_lag
                        ),
                    ),
                    Err(e) => Check::fail("replica-lag", pg::describe(&e)),
                },
                (Ok(_), None) => Check::fail("replica-lag", format!("{} reports no replay position", p.env.name)),
                (Err(e), _) => Check::fail("replica-lag", pg::describe(&e)),
            },
        };
        vec![role, lag]
    }
    async fn is_done(&self, cx: &Ctx) -> Result<bool> {
        // Once ENV is promoted, or its promotion sent, the fence has done its work (and rollback's
        // to undo): fencing again would write WAL that ENV, no longer replicating, never gets.
        // A resumed run whose earlier attempt fenced it does not fence (nor journal it) twice.
        Ok(cx.run.sent("promote").is_some() || cx.run.finished(self.id()).is_some() || self.pair.promoted(cx).await?)
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let p = &self.pair;
        let primary = match p.primary_maint().await {
            Ok(c) => c,
            Err(why) => {
                log.set("fenced", false);
                log.set("why_not", why.clone());
                log.summary(format!("{} not fenced: it does not answer ({why})", p.primary.name));
                cx.run.report("primary_fenced", false);
                return Ok(());
            }
        };
        let err = |e: tokio_postgres::Error| pg::db_error(&maintenance_url(&p.primary), &e);
        let mut d = Map::new();
        d.insert("fenced".into(), true.into());
        d.insert("primary".into(), p.primary.name.clone().into());
        d.insert("database".into(), p.primary.database_url.dbname.clone().into());
        let (lsn, summary) = match &p.primary.data_dir {
            // drctl manages the old primary's server: stopping it is the surest fence. A fast
            // shutdown ends the sessions and sends the replicas all WAL before it exits.
            Some(dir) => {
                let lsn = repl::current_lsn(&primary).await.map_err(err)?;
                drop(primary);
                crate::clients::pgtools::PgTools::new(p.primary.pg_bin.as_deref()).stop_server(dir).await?;
                d.insert("how".into(), "server stopped".into());
                d.insert("data_dir".into(), dir.display().to_string().into());
                (
                    lsn.clone(),
                    format!(
                        "{}: server stopped (pg_ctl stop -m fast -D {}), final LSN {lsn}",
                        p.primary.name,
                        dir.display()
                    ),
                )
            }
            None => {
                // New connections refused first, then the sessions there ended: nothing more is written.
                let ended = repl::fence(&primary, &p.primary.database_url.dbname).await.map_err(err)?;
                let lsn = repl::current_lsn(&primary).await.map_err(err)?;
                d.insert("how".into(), "connections disallowed".into());
                d.insert("sessions_ended".into(), ended.into());
                let summary = format!(
                    "{}: connections to {} disallowed, {ended} sessions ended, final LSN {lsn}",
                    p.primary.name, p.primary.database_url.dbname
                );
                (lsn, summary)
            }
        };
        d.insert("primary_lsn".into(), lsn.clone().into());
        // Journaled at once: rollback unfences what this says was fenced, even if the run dies now.
        log.sent(d).await?;
        log.summary(summary);
        cx.run.report("primary_fenced", true);
        cx.run.report("primary_lsn", lsn);
        Ok(())
    }
    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

struct WaitReplay {
    pair: Pair,
    timeout: Duration,
}

#[async_trait]
impl Step for WaitReplay {
    fn id(&self) -> &'static str {
        "wait-replay"
    }
    async fn is_done(&self, cx: &Ctx) -> Result<bool> {
        Ok(cx.run.sent("promote").is_some() || self.pair.promoted(cx).await?)
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let p = &self.pair;
        let Some(target) =
            cx.run.report_field("primary_lsn").and_then(|v| v.as_str().map(str::to_string)).or_else(|| {
                let fenced = cx.run.sent("fence-primary").or_else(|| cx.run.finished("fence-primary"));
                fenced.and_then(|s| s["primary_lsn"].as_str().map(str::to_string))
            })
        else {
            log.summary("the old primary was not fenced: nothing known to wait for");
            return Ok(());
        };
        let env = p.env_maint().await?;
        let replayed = wait_for(
            &format!("the fence of {} (final LSN {target})", p.primary.name),
            self.timeout,
            POLL_EVERY,
            || async {
                let Some(r) = repl::replay_lsn(&env).await.map_err(p.env_err())? else { return Ok(None) };
                let behind = repl::lsn_diff(&env, &target, &r).await.map_err(p.env_err())?;
                Ok((behind <= 0).then_some(r))
            },
        )
        .await?;
        log.set("replayed_lsn", replayed.clone());
        log.summary(format!("{} replayed up to {replayed}, the fenced primary's end {target}", p.env.name));
        Ok(())
    }
    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

struct Promote {
    pair: Pair,
    timeout: Duration,
}

impl Promote {
    /// PromoteReadReplica, journaled as sent before the wait; a rerun finds it and only waits.
    async fn promote_rds(&self, cx: &Ctx, r: &RdsTarget, log: &mut StepLog) -> Result<()> {
        if cx.run.sent(self.id()).is_none() {
            if r.describe().await?.is_replica()
                && let Err(e) = r.api.promote_read_replica(&r.id).await
            {
                // The SDK retries a call whose answer was lost; if the lost one took, RDS
                // refuses the retry. A replica still `available` means it did not take.
                let now = r.describe().await?;
                if now.is_replica() && now.is_available() {
                    return Err(e);
                }
            }
            let mut d = Map::new();
            d.insert("rds_instance".into(), r.id.clone().into());
            log.sent(d).await?;
        }
        let info = wait_for(&format!("RDS PromoteReadReplica of {}", r.id), self.timeout, POLL_RDS, || async {
            let i = r.describe().await?;
            Ok((!i.is_replica() && i.is_available()).then_some(i))
        })
        .await?;
        log.set("rds_status", info.status);
        Ok(())
    }
}

#[async_trait]
impl Step for Promote {
    fn id(&self) -> &'static str {
        "promote"
    }
    async fn is_done(&self, cx: &Ctx) -> Result<bool> {
        // A promotion sent by the run this one resumes is done only once RDS says so: apply waits.
        if cx.run.sent(self.id()).is_some() {
            return Ok(false);
        }
        self.pair.promoted(cx).await
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let p = &self.pair;
        if let Some(r) = &p.rds {
            self.promote_rds(cx, r, log).await?;
        }
        let env = p.env_maint().await?;
        if p.rds.is_none() && p.in_recovery(&env).await? {
            // Journaled first: a rerun after a crash right after pg_promote finds ENV out of
            // recovery, and must know that was this run, not a misdeclared env.
            if cx.run.sent(self.id()).is_none() {
                let mut d = Map::new();
                d.insert("pg_promote".into(), p.env.name.clone().into());
                log.sent(d).await?;
            }
            if !repl::promote(&env, 60).await.map_err(p.env_err())? {
                return Err(Error::step(self.id(), format!("pg_promote on {} did not finish within 60 s", p.env.name)));
            }
        }
        // The journal's record that drctl promoted it (the fold keeps it: `declared-role`).
        log.set("promoted", p.env.name.clone());
        let lsn = repl::current_lsn(&env).await.map_err(p.env_err())?;
        log.set("lsn_at_promotion", lsn.clone());
        log.summary(format!("{} is a primary (LSN {lsn})", p.env.name));
        cx.run.report("promoted", json!(p.env.name));
        cx.run.report("lsn_at_promotion", lsn);
        Ok(())
    }
    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        let p = &self.pair;
        if p.is_replica().await? {
            return Err(Error::step(self.id(), format!("{} is still a replica after its promotion", p.env.name)));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

struct Unfence {
    pair: Pair,
}

impl Unfence {
    async fn allows_connections(&self) -> Result<bool> {
        let p = &self.pair;
        let env = p.env_maint().await?;
        Ok(repl::allows_connections(&env, p.db()).await.map_err(p.env_err())?.unwrap_or(false))
    }
}

#[async_trait]
impl Step for Unfence {
    fn id(&self) -> &'static str {
        "unfence-target"
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        self.allows_connections().await
    }
    async fn apply(&self, _cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let p = &self.pair;
        let env = p.env_maint().await?;
        repl::unfence(&env, p.db()).await.map_err(p.env_err())?;
        log.summary(format!("connections to {} on {} allowed again (the fence had replicated)", p.db(), p.env.name));
        Ok(())
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        // ENV accepts a write in its app database: a temp table in a transaction rolled back.
        let p = &self.pair;
        let c = pg::connect(&p.env.database_url).await?;
        repl::write_probe(&c).await.map_err(|e| pg::db_error(&p.env.database_url, &e))?;
        cx.run.report("writable", true);
        Ok(())
    }
}
