//! The run loop, in one place for every runbook:
//! (1) take the locks (skipped under --dry-run), so nothing changes between the checks and the acts;
//! (2) run every preflight check; (3) under --dry-run, report done/pending and stop, writing nothing;
//! (4) confirm, or accept --yes; (5) for each step: stop if interrupted or the lock was lost, skip
//! if `is_done`, otherwise `apply`, `verify` and journal it; (6) the runbook's `finally` steps,
//! whatever (5) came to, so what the steps made for themselves (drill's scratch database) is
//! removed after a success, a failure and an interruption alike.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::lock::{self, HeldLock, Requester};
use super::report::{RunReport, StepReport, StepState};
use super::step::{self, Check, Step, StepLog};
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::journal::{self, Journal, NewEntry};

/// Ask the operator to type the target env's name (contract "Confirmation").
pub struct Confirm {
    pub env: String,
    pub question: String,
}

pub struct Runbook {
    pub name: &'static str,
    pub env: Option<String>,
    /// The command's own arguments (`--env prod`), journaled and shown as the lock holder.
    pub args: String,
    pub locks: Vec<String>,
    pub confirm: Option<Confirm>,
    pub steps: Vec<Box<dyn Step>>,
    /// Run after `steps` whatever happened to them, once the run got to its steps (see `finally`).
    pub finally: Vec<Box<dyn Step>>,
    /// Whether a rerun continues an unfinished run of this runbook and env (contract "Exit codes").
    /// What the run resumes, and what it sent, reach the steps through `cx.run`.
    pub resumable: bool,
    /// Lock target → the holder prefix (`sync `) whose live lock this run may take over:
    /// failover over a sync of its target. The takeover is journaled (`lock-taken-over`).
    pub take_over: Vec<(String, &'static str)>,
}

/// The last run of a runbook and env that started and neither finished nor was abandoned.
#[derive(Debug, Clone)]
pub struct Unfinished {
    pub run_id: String,
    pub args: String,
    pub time: String,
    /// Step id → what it journaled as sent and not yet done (`StepLog::sent`).
    pub sent: BTreeMap<String, Value>,
    /// Step id → what it sent and then saw take, in that run or the runs it resumed.
    pub finished: BTreeMap<String, Value>,
}

impl Runbook {
    pub fn new(name: &'static str, env: Option<&str>, args: String) -> Runbook {
        Runbook {
            name,
            env: env.map(str::to_string),
            args,
            locks: Vec::new(),
            confirm: None,
            steps: Vec::new(),
            finally: Vec::new(),
            resumable: false,
            take_over: Vec::new(),
        }
    }
    /// A rerun with the same arguments journals `resumes: <old run_id>`; different arguments while
    /// a run is unfinished fail the `unfinished-run` check (exit 3) unless it is accepted (abandoned).
    pub fn resumable(mut self) -> Self {
        self.resumable = true;
        self
    }
    pub fn lock(mut self, target: String) -> Self {
        self.locks.push(target);
        self
    }
    pub fn step(self, s: impl Step + 'static) -> Self {
        self.boxed_step(Box::new(s))
    }

    /// A step that runs after the others whatever their outcome (success, a failed step, SIGINT or
    /// SIGTERM, a lost lock), once the run has journaled `run-started`; never in a dry run, whose
    /// plan shows it `pending`. It removes what the steps made for themselves (drill's scratch
    /// database). It is not interrupted, and has no preflight; its failure fails a run that had
    /// succeeded, and is a warning after one that had not (that run's own error is the outcome).
    pub fn finally(mut self, s: impl Step + 'static) -> Self {
        self.assert_new_id(s.id());
        self.finally.push(Box::new(s));
        self
    }

    fn boxed_step(mut self, s: Box<dyn Step>) -> Self {
        self.assert_new_id(s.id());
        self.steps.push(s);
        self
    }

    fn assert_new_id(&self, id: &str) {
        // Step ids key the journal's step-done / step-sent entries of a run, and a resumed run
        // skips by them: two steps of one run under one id would skip or resume each other.
        assert!(
            self.steps.iter().chain(&self.finally).all(|t| t.id() != id),
            "runbook {}: two steps have the id `{id}`",
            self.name,
        );
    }

    /// Run `other`'s steps after this runbook's own, in the same run: one set of locks (both
    /// runbooks'), one preflight, one confirmation (this runbook's, else `other`'s), one report.
    /// `failover` is promote-replica's steps then dns-cutover's.
    pub fn then(mut self, other: Runbook) -> Self {
        for l in other.locks {
            if !self.locks.contains(&l) {
                self.locks.push(l);
            }
        }
        self.confirm = self.confirm.or(other.confirm);
        self.resumable |= other.resumable;
        self.take_over.extend(other.take_over);
        let finally = other.finally;
        let mut rb = other.steps.into_iter().fold(self, Runbook::boxed_step);
        for s in finally {
            rb.assert_new_id(s.id());
            rb.finally.push(s);
        }
        rb
    }

    /// The locks in the order they are taken: one global order (sorted), so two runs that take
    /// several of them, waiting with --lock-wait, never each hold one the other waits for.
    pub fn lock_order(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.locks.iter().map(String::as_str).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Every check id this runbook can report: the engine's own and each step's.
    pub fn check_ids(&self) -> Vec<&'static str> {
        let mut ids = vec!["store-writable"];
        if self.resumable {
            ids.push("unfinished-run");
        }
        for s in &self.steps {
            ids.extend(s.check_ids().iter().copied().filter(|id| !ids.contains(id)).collect::<Vec<_>>());
        }
        ids
    }

    /// `--accept ID` names a check of this runbook that can be waived, or it is a usage error
    /// (exit 2) listing the ids: a typo must not pass silently as a waiver of nothing.
    fn check_accepts(&self, accept: &[String]) -> Result<()> {
        let ids = self.check_ids();
        for a in accept {
            if !ids.contains(&a.as_str()) {
                let waivable: Vec<&str> = ids.iter().copied().filter(|id| step::waivable(id)).collect();
                return Err(Error::usage(format!("--accept {a}: {} has no check `{a}`", self.name)).with_hint(
                    if waivable.is_empty() {
                        format!("{} has no check that can be waived", self.name)
                    } else {
                        format!("checks of {} that --accept can waive: {}", self.name, waivable.join(", "))
                    },
                ));
            }
            if !step::waivable(a) {
                return Err(Error::usage(format!(
                    "--accept {a}: `{a}` cannot be waived: {} cannot run without what it checks",
                    self.name
                ))
                .with_hint(format!("fix what `{a}` reports and rerun")));
            }
        }
        Ok(())
    }
}

/// Writes this run's journal entries, each carrying the run's fences, after confirming every lock is
/// still this run's: an append that finds a higher fence fails with exit 5.
#[derive(Clone)]
pub struct JournalWriter {
    journal: Arc<Journal>,
    run_id: String,
    runbook: String,
    env: Option<String>,
    locks: Arc<Vec<HeldLock>>,
}

impl JournalWriter {
    /// The same writer (run, runbook, fences) for entries about another env: sync commits the dump
    /// it took as a backup of FROM while it holds only TO's lock.
    pub fn for_env(&self, env: &str) -> JournalWriter {
        JournalWriter { env: Some(env.to_string()), ..self.clone() }
    }

    /// Confirm that every lock is still this run's (exit 5 if one was taken over), writing nothing.
    pub async fn confirm_locks(&self) -> Result<()> {
        for l in self.locks.iter() {
            l.confirm().await?;
        }
        Ok(())
    }

    pub async fn append(&self, event: &str, details: Value) -> Result<journal::Entry> {
        let mut fences = BTreeMap::new();
        for l in self.locks.iter() {
            l.confirm().await?;
            fences.insert(l.target.clone(), l.fence);
        }
        self.journal
            .append(NewEntry {
                run_id: self.run_id.clone(),
                runbook: self.runbook.clone(),
                env: self.env.clone(),
                event: event.to_string(),
                fences,
                details,
            })
            .await
    }
}

/// A run's outcome: the report is printed whatever happened; `error` decides the exit code.
pub struct Outcome {
    pub report: RunReport,
    pub error: Option<Error>,
}

pub async fn execute(cx: &Ctx, rb: Runbook) -> Outcome {
    let started = Instant::now();
    cx.run.set_invoked(std::time::SystemTime::now());
    let mut report = RunReport {
        runbook: rb.name.to_string(),
        run_id: cx.run_id.clone(),
        env: rb.env.clone(),
        status: String::new(),
        preflight: Vec::new(),
        steps: rb
            .steps
            .iter()
            .chain(&rb.finally)
            .map(|s| StepReport {
                step: s.id().to_string(),
                state: StepState::Pending,
                duration_ms: 0,
                detail: String::new(),
            })
            .collect(),
        elapsed_ms: 0,
        extra: Map::new(),
        error: None,
    };
    let mut held: Arc<Vec<HeldLock>> = Arc::default();
    let result = match rb.check_accepts(&cx.global.accept) {
        Ok(()) => run_inner(cx, &rb, &mut report, &mut held).await,
        Err(e) => Err(e),
    };
    for l in held.iter() {
        if let Err(e) = l.release().await {
            cx.out.warn(&format!("could not release lock {}: {e}", l.target));
        }
    }
    report.extra = cx.run.report_fields();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(status) => {
            report.status = status.to_string();
            Outcome { report, error: None }
        }
        Err(e) => {
            report.status = e.status().to_string();
            report.error = Some(e.to_string());
            Outcome { report, error: Some(e) }
        }
    }
}

async fn run_inner(
    cx: &Ctx,
    rb: &Runbook,
    report: &mut RunReport,
    held: &mut Arc<Vec<HeldLock>>,
) -> Result<&'static str> {
    let mut acquired = Vec::new();
    let dry = cx.global.dry_run;
    // (1) Locks. A store that cannot be written is a preflight failure (`store-writable`), not exit 5.
    if !dry {
        let who = Requester {
            holder: format!("{} {}", rb.name, rb.args).trim().to_string(),
            run_id: cx.run_id.clone(),
            ttl: cx.config.policy.lock_ttl,
            wait: cx.global.lock_wait,
        };
        for target in rb.lock_order() {
            let prefix = rb.take_over.iter().find(|(t, _)| t == target).map(|(_, p)| *p);
            let may_take = |l: &lock::LockInfo| prefix.is_some_and(|p| l.holder.starts_with(p));
            let got = until_interrupted(cx, lock::acquire_over(cx.store.clone(), target, &who, may_take)).await;
            if got.is_err() {
                // Locks taken before this one are released by `execute`.
                *held = Arc::new(std::mem::take(&mut acquired));
            }
            match got {
                Ok(l) => acquired.push(l),
                Err(e @ (Error::Locked { .. } | Error::LockLost { .. } | Error::Interrupted { .. })) => return Err(e),
                Err(e) => {
                    let c = Check::fail("store-writable", format!("cannot write lock {target}: {e}"));
                    report.preflight.push(c);
                    return Err(Error::preflight(&report.preflight));
                }
            }
        }
    }
    // `execute` releases them whatever happens below.
    *held = Arc::new(acquired);
    let locks = held.clone();
    let writer = JournalWriter {
        journal: cx.journal.clone(),
        run_id: cx.run_id.clone(),
        runbook: rb.name.to_string(),
        env: rb.env.clone(),
        locks: locks.clone(),
    };
    let lost = CancellationToken::new();
    for l in locks.iter() {
        let (lt, lost) = (l.lost.clone(), lost.clone());
        tokio::spawn(async move {
            lt.cancelled().await;
            lost.cancel();
        });
    }
    run_locked(cx, rb, report, &writer, &lost, &locks).await
}

async fn run_locked(
    cx: &Ctx,
    rb: &Runbook,
    report: &mut RunReport,
    writer: &JournalWriter,
    lost: &CancellationToken,
    locks: &[HeldLock],
) -> Result<&'static str> {
    let dry = cx.global.dry_run;
    // (2) Preflight: first whether an earlier run of this runbook and env is unfinished (read with
    // the locks held, so no run of it is live), then every step's checks, before the first change.
    let mut abandon = None;
    if rb.resumable {
        let found = match until_interrupted(cx, unfinished_run(cx, rb.name, rb.env.as_deref())).await {
            Ok(f) => f,
            Err(e) => return interrupted_before_steps(cx, writer, locks, e).await,
        };
        match found {
            Some(u) if u.args == rb.args => {
                report.preflight.push(Check::pass(
                    "unfinished-run",
                    format!("resumes run {} (started {}, same arguments)", u.run_id, u.time),
                ));
                cx.run.set_resumed(u.run_id, u.sent, u.finished);
            }
            Some(u) => {
                let mut c = Check::fail(
                    "unfinished-run",
                    format!(
                        "run {} ({} {}, started {}) on {} is unfinished: rerun it with those arguments to \
                         resume it, or pass --accept unfinished-run to abandon it",
                        u.run_id,
                        rb.name,
                        u.args,
                        u.time,
                        rb.env.as_deref().unwrap_or("-")
                    ),
                );
                if cx.global.accept.iter().any(|a| a == "unfinished-run") {
                    c.accepted = true;
                    abandon = Some(u);
                }
                report.preflight.push(c);
            }
            None => report.preflight.push(Check::pass("unfinished-run", "no unfinished run to resume")),
        }
    }
    for s in &rb.steps {
        let checks = match until_interrupted(cx, async { Ok(s.preflight(cx).await) }).await {
            Ok(c) => c,
            Err(e) => return interrupted_before_steps(cx, writer, locks, e).await,
        };
        for mut c in checks {
            if !c.ok && cx.global.accept.iter().any(|a| a == &c.check) {
                c.accepted = true;
            }
            report.preflight.push(c);
        }
    }
    if report.preflight.iter().any(|c| !c.ok && !c.accepted) {
        if !dry {
            writer
                .append("preflight-failed", json!({ "args": rb.args, "checks": checks_json(&report.preflight) }))
                .await?;
        }
        return Err(Error::preflight(&report.preflight));
    }

    // (3) Dry run: the plan, and nothing written.
    if dry {
        plan(cx, rb, report).await?;
        return Ok("planned");
    }

    // (4) Confirmation where the runbook moves live traffic or data. The operator at the prompt
    // sees every check and the plan first: what they are agreeing to.
    if let Some(c) = &rb.confirm {
        if !cx.global.yes && std::io::stdin().is_terminal() {
            plan(cx, rb, report).await?;
            report.status = "awaiting confirmation".into();
            cx.out.plan(&crate::output::table::run_report(report));
            report.status.clear();
            report.steps.iter_mut().for_each(|s| s.state = StepState::Pending);
        }
        let (question, env, yes) = (c.question.clone(), c.env.clone(), cx.global.yes);
        // The prompt blocks on stdin: read it off the runtime so Ctrl-C still stops the run.
        let answer = tokio::task::spawn_blocking(move || confirm(yes, &question, &env));
        match until_interrupted(cx, async { answer.await.map_err(|e| Error::usage(format!("confirmation: {e}")))? })
            .await
        {
            Ok(()) => {}
            Err(e @ Error::Interrupted { .. }) => return interrupted_before_steps(cx, writer, locks, e).await,
            Err(e) => return Err(e),
        }
    }

    let accepted: Vec<Value> =
        report.preflight.iter().filter(|c| c.accepted).map(|c| json!({"check": c.check, "found": c.detail})).collect();
    if let Some(u) = abandon {
        writer.append("run-abandoned", json!({ "run_id": u.run_id, "args": u.args })).await?;
    }
    let mut started = json!({ "args": rb.args, "accepted": accepted });
    if let Some(t) = cx.run.invoked() {
        started["invoked"] = humantime::format_rfc3339_millis(t).to_string().into();
    }
    if let Some(old) = cx.run.resumes() {
        started["resumes"] = old.into();
    }
    writer.append("run-started", started).await?;
    // A lock taken from a holder that had not released it: whose, and why that was allowed. The
    // holder (a sync failover took over, a dead run) finds out at its next lock check.
    for l in locks.iter() {
        if let Some(t) = &l.took_over {
            let p = &t.previous;
            writer
                .append(
                    "lock-taken-over",
                    json!({ "target": l.target, "holder": p.holder, "run_id": p.run_id, "host": p.host,
                            "pid": p.pid, "fence": p.fence, "why": t.why }),
                )
                .await?;
            cx.out.warn(&format!("took over lock {} from {} (run {}): {}", l.target, p.holder, p.run_id, t.why));
            cx.run.report("lock_taken_over", json!({ "target": l.target, "holder": p.holder, "run_id": p.run_id }));
        }
    }

    // (5) The steps, then (6) the finally steps whatever the steps came to.
    let outcome = run_steps(cx, rb, report, writer, lost, locks).await;
    let all_done = run_finally(cx, rb, report, writer, outcome).await?;
    writer.append("run-done", json!({ "args": rb.args })).await?;
    Ok(if all_done { "already_done" } else { "ok" })
}

/// (5) Each step in order: `Ok(true)` when every one was already done.
async fn run_steps(
    cx: &Ctx,
    rb: &Runbook,
    report: &mut RunReport,
    writer: &JournalWriter,
    lost: &CancellationToken,
    locks: &[HeldLock],
) -> Result<bool> {
    let mut all_done = true;
    for (i, s) in rb.steps.iter().enumerate() {
        let t0 = Instant::now();
        if let Some(sig) = cx.interrupted_by() {
            return interrupted(writer, s.id(), sig).await.map(|_| false);
        }
        if s.is_done(cx).await? {
            report.steps[i].state = StepState::Done;
            continue;
        }
        all_done = false;
        // (5a) An irreversible step's guards, re-checked now, waived by --accept as in preflight.
        if let Err(e) = guard(cx, writer, s.as_ref(), report).await {
            report.steps[i].state = StepState::Failed;
            report.steps[i].detail = "refused by its guards at the moment of acting".into();
            return Err(e);
        }
        let mut log = StepLog::new(writer.clone(), s.id());
        // What an earlier attempt sent is part of this attempt's record too (step-done, step-failed).
        if let Some(Value::Object(sent)) = cx.run.sent(s.id()) {
            log.details.extend(sent.iter().filter(|(k, _)| k.as_str() != "step").map(|(k, v)| (k.clone(), v.clone())));
        }
        cx.out.info(&format!("{}: {}", rb.name, s.id()));
        let applied = tokio::select! {
            r = async { s.apply(cx, &mut log).await?; s.verify(cx).await } => r,
            _ = cx.cancel.cancelled() => {
                // Dropping the step's future kills its children (kill_on_drop) and abandons its
                // partial output, which is never listed and is removed by the next run.
                let sig = cx.interrupted_by().unwrap_or(libc::SIGTERM);
                report.steps[i].duration_ms = t0.elapsed().as_millis() as u64;
                report.steps[i].state = StepState::Failed;
                report.steps[i].detail = "interrupted".into();
                return interrupted(writer, s.id(), sig).await.map(|_| false);
            }
            _ = lost.cancelled() => {
                let l = locks.iter().find(|l| l.lost.is_cancelled());
                report.steps[i].duration_ms = t0.elapsed().as_millis() as u64;
                report.steps[i].state = StepState::Failed;
                return Err(Error::LockLost {
                    target: l.map(|l| l.target.clone()).unwrap_or_default(),
                    why: l.and_then(|l| l.lost_reason()).unwrap_or_else(|| "renewal failed".into()),
                });
            }
        };
        report.steps[i].duration_ms = t0.elapsed().as_millis() as u64;
        report.steps[i].detail = log.summary.clone().unwrap_or_default();
        if let Err(e) = applied {
            report.steps[i].state = StepState::Failed;
            if !matches!(e, Error::LockLost { .. }) {
                // As far as it got (what it sent, what it found), not only the error's words.
                let mut details = log.details;
                details.insert("step".into(), s.id().into());
                details.insert("error".into(), e.to_string().into());
                let _ = writer.append("step-failed", Value::Object(details)).await;
            }
            return Err(e);
        }
        report.steps[i].state = StepState::Applied;
        let mut details = log.details;
        details.insert("step".into(), s.id().into());
        details.insert("duration_ms".into(), (report.steps[i].duration_ms).into());
        writer.append("step-done", Value::Object(details)).await?;
        failpoint(s.id());
    }
    Ok(all_done)
}

/// (6) The runbook's finally steps after `outcome`, each skipped when `is_done`, not interrupted
/// by a signal (the interruption is already journaled and is the run's outcome). A failure here
/// is the run's error only when the steps had succeeded; otherwise a warning.
async fn run_finally(
    cx: &Ctx,
    rb: &Runbook,
    report: &mut RunReport,
    writer: &JournalWriter,
    mut outcome: Result<bool>,
) -> Result<bool> {
    for (j, s) in rb.finally.iter().enumerate() {
        let i = rb.steps.len() + j;
        let t0 = Instant::now();
        let mut log = StepLog::new(writer.clone(), s.id());
        let ran = async {
            if s.is_done(cx).await? {
                return Ok(false);
            }
            cx.out.info(&format!("{}: {}", rb.name, s.id()));
            s.apply(cx, &mut log).await?;
            s.verify(cx).await?;
            Ok::<_, Error>(true)
        }
        .await;
        report.steps[i].duration_ms = t0.elapsed().as_millis() as u64;
        report.steps[i].detail = log.summary.clone().unwrap_or_default();
        let mut details = log.details;
        details.insert("step".into(), s.id().into());
        let failed = match ran {
            Ok(false) => {
                report.steps[i].state = StepState::Done;
                continue;
            }
            Ok(true) => {
                report.steps[i].state = StepState::Applied;
                if let Ok(all_done) = &mut outcome {
                    *all_done = false;
                }
                details.insert("duration_ms".into(), report.steps[i].duration_ms.into());
                writer.append("step-done", Value::Object(details)).await.err()
            }
            Err(e) => {
                report.steps[i].state = StepState::Failed;
                details.insert("error".into(), e.to_string().into());
                // A lost lock cannot journal; the error itself is what counts.
                let _ = writer.append("step-failed", Value::Object(details)).await;
                Some(e)
            }
        };
        if let Some(e) = failed {
            if outcome.is_ok() {
                outcome = Err(e);
            } else {
                cx.out.warn(&format!("{}: {}: {e}", rb.name, s.id()));
            }
        }
    }
    outcome
}

/// Test builds only: `DRCTL_TEST_KILL_AFTER=STEP` kills this process with SIGKILL right after
/// STEP's `step-done` is journaled, so the integration tests can crash a run at an exact step
/// boundary (as `kill -9` would) and prove the rerun resumes there.
fn failpoint(step: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("DRCTL_TEST_KILL_AFTER").is_ok_and(|s| s == step) {
        // SAFETY: kill(2) on our own pid.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    let _ = step;
}

/// The last `run-started` of `runbook` on `env` by another run, unless that run journaled
/// `run-done` or a later run journaled `run-abandoned` for it. Only the last start counts: a run
/// that resumed an older one speaks for both.
pub async fn unfinished_run(cx: &Ctx, runbook: &str, env: Option<&str>) -> Result<Option<Unfinished>> {
    let state = cx.journal.state().await?;
    Ok(state.last_start(runbook, env).filter(|s| !s.closed && s.run_id != cx.run_id).map(|s| Unfinished {
        run_id: s.run_id.clone(),
        args: s.args.clone(),
        time: s.time.clone(),
        sent: s.sent.clone(),
        finished: s.finished.clone(),
    }))
}

/// Re-check a step's guards just before it acts. Failing ones not waived by --accept refuse the
/// act (exit 3, journaled `guard-failed`); waived ones are journaled as accepted, with what they found.
async fn guard(cx: &Ctx, writer: &JournalWriter, s: &dyn Step, report: &mut RunReport) -> Result<()> {
    let mut checks = s.guard(cx).await;
    if checks.is_empty() {
        return Ok(());
    }
    for c in &mut checks {
        if !c.ok && step::waivable(&c.check) && cx.global.accept.iter().any(|a| a == &c.check) {
            c.accepted = true;
        }
    }
    let refused = checks.iter().any(|c| !c.ok && !c.accepted);
    let event = if refused { "guard-failed" } else { "guard-checked" };
    writer.append(event, json!({ "step": s.id(), "checks": checks_json(&checks) })).await?;
    // The report's preflight table shows what the act-time checks found too.
    for c in &checks {
        match report.preflight.iter_mut().find(|p| p.check == c.check) {
            Some(p) if !c.ok => *p = c.clone(),
            Some(_) => {}
            None => report.preflight.push(c.clone()),
        }
    }
    if refused {
        if let Err(e) = s.refused(cx).await {
            cx.out.warn(&format!("{}: cleaning up after the refusal: {e}", s.id()));
        }
        return Err(Error::preflight(&checks));
    }
    Ok(())
}

/// Each step `done` (already true) or `pending` (would run), as a dry run reports them.
async fn plan(cx: &Ctx, rb: &Runbook, report: &mut RunReport) -> Result<()> {
    for (i, s) in rb.steps.iter().enumerate() {
        let done = until_interrupted(cx, s.is_done(cx)).await?;
        report.steps[i].state = if done { StepState::Done } else { StepState::Pending };
    }
    Ok(())
}

async fn interrupted(writer: &JournalWriter, step: &str, sig: i32) -> Result<&'static str> {
    let name = if sig == libc::SIGINT { "SIGINT" } else { "SIGTERM" };
    let _ = writer.append("interrupted", json!({ "step": step, "signal": name })).await;
    Err(Error::Interrupted { signal: sig })
}

fn checks_json(checks: &[Check]) -> Value {
    Value::Array(
        checks
            .iter()
            .map(|c| json!({"check": c.check, "ok": c.ok, "detail": c.detail, "accepted": c.accepted}))
            .collect(),
    )
}

/// Outside a step, SIGINT / SIGTERM stop the run at once (a lock wait, a slow preflight check).
async fn until_interrupted<T>(cx: &Ctx, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        r = fut => r,
        _ = cx.cancel.cancelled() => Err(Error::Interrupted { signal: cx.interrupted_by().unwrap_or(libc::SIGTERM) }),
    }
}

/// Interrupted while holding locks but before any step: journal it (nothing was changed).
async fn interrupted_before_steps(
    cx: &Ctx,
    writer: &JournalWriter,
    locks: &[HeldLock],
    e: Error,
) -> Result<&'static str> {
    if let (Error::Interrupted { signal }, false) = (&e, locks.is_empty() || cx.global.dry_run) {
        return interrupted(writer, "preflight", *signal).await;
    }
    Err(e)
}

fn confirm(yes: bool, question: &str, env: &str) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::usage(format!("refusing to {question} without confirmation: stdin is not a TTY"))
            .with_hint("pass --yes to confirm from a script"));
    }
    #[expect(clippy::print_stderr, reason = "the prompt is part of the TTY conversation")]
    {
        eprint!("{question}\nType the env name `{env}` to proceed: ");
    }
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| Error::io("stdin", e))?;
    if line.trim() == env {
        Ok(())
    } else {
        Err(Error::usage(format!("confirmation did not match `{env}`: nothing was changed")))
    }
}
