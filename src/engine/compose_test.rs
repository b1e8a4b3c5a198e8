//! The engine's composition and sent-then-wait, end to end over an in-memory store: two small
//! runbooks run as one, the second's step sends a change and waits; the run is killed (its future
//! dropped mid-wait, as kill -9 leaves it) and the rerun resumes by waiting, never sending again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::report::StepState;
use super::run::{Runbook, execute};
use super::runctx::wait_for;
use super::step::{Check, Step, StepLog};
use crate::ctx::{Ctx, for_test};
use crate::error::{Result, exit};
use crate::journal::test_store::MemStore;
use crate::journal::{entries, read_all};

/// The outside system: counts what it was sent, and takes `pending` polls to apply a change.
#[derive(Default)]
struct World {
    marks: std::sync::Mutex<Vec<&'static str>>,
    sends: AtomicU32,
    polls: AtomicU32,
    pending: AtomicU32,
    applied: AtomicU32,
}

struct Mark(&'static str, Arc<World>);

#[async_trait]
impl Step for Mark {
    fn id(&self) -> &'static str {
        self.0
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        Ok(self.1.marks.lock().unwrap().contains(&self.0))
    }
    async fn apply(&self, _cx: &Ctx, _log: &mut StepLog) -> Result<()> {
        self.1.marks.lock().unwrap().push(self.0);
        Ok(())
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        assert!(self.is_done(cx).await?);
        Ok(())
    }
}

struct Send(Arc<World>, Duration);

#[async_trait]
impl Step for Send {
    fn id(&self) -> &'static str {
        "send"
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        Ok(self.0.applied.load(Ordering::SeqCst) > 0)
    }
    async fn apply(&self, cx: &Ctx, log: &mut StepLog) -> Result<()> {
        let w = &self.0;
        let change = match cx.run.sent(self.id()) {
            Some(sent) => sent["change"].as_str().unwrap().to_string(),
            None => {
                let n = w.sends.fetch_add(1, Ordering::SeqCst) + 1;
                let change = format!("C{n}");
                let mut d = Map::new();
                d.insert("change".into(), change.clone().into());
                log.sent(d).await?;
                change
            }
        };
        cx.run.report("change", change.clone());
        wait_for(&format!("change {change}"), self.1, Duration::from_millis(2), || async {
            let polls = w.polls.fetch_add(1, Ordering::SeqCst) + 1;
            Ok((polls > w.pending.load(Ordering::SeqCst)).then_some(()))
        })
        .await?;
        w.applied.store(1, Ordering::SeqCst);
        Ok(())
    }
    async fn verify(&self, cx: &Ctx) -> Result<()> {
        assert!(self.is_done(cx).await?);
        Ok(())
    }
}

fn composed(w: &Arc<World>, wait: Duration) -> Runbook {
    let first = Runbook::new("first", Some("x"), "--env x".into())
        .resumable()
        .lock("env:x".into())
        .step(Mark("a1", w.clone()))
        .step(Mark("a2", w.clone()));
    let second = Runbook::new("second", Some("x"), String::new()).lock("dns".into()).step(Send(w.clone(), wait));
    first.then(second)
}

fn events(store: &MemStore) -> Vec<(String, Value)> {
    let rt = tokio::runtime::Handle::current();
    let all = tokio::task::block_in_place(|| rt.block_on(read_all(store))).unwrap();
    entries(&all).map(|e| (e.event.clone(), e.details.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composed_run_killed_while_waiting_resumes_by_waiting_and_never_sends_again() {
    let store = Arc::new(MemStore::new());
    let w = Arc::new(World::default());
    w.pending.store(u32::MAX, Ordering::SeqCst);

    // Killed mid-wait: the future is dropped, nothing after `step-sent` is journaled.
    let cx = for_test(store.clone(), &["--yes"]);
    let rb = composed(&w, Duration::from_secs(3600));
    assert_eq!(rb.lock_order(), ["dns", "env:x"], "both runbooks' locks, in one global order");
    assert!(tokio::time::timeout(Duration::from_millis(300), execute(&cx, rb)).await.is_err());
    assert_eq!(w.sends.load(Ordering::SeqCst), 1);
    let ev = events(&store);
    let sent = ev.iter().find(|(e, _)| e == "step-sent").expect("step-sent journaled before the wait");
    assert_eq!(sent.1, json!({"step": "send", "change": "C1"}));
    assert!(!ev.iter().any(|(e, _)| e == "run-done"));
    // The killed run's locks are still held (no release ran); this process's pid holds them, so
    // the rerun, as after a kill -9 on this host, takes them over. Here: release by hand.
    for target in ["dns", "env:x"] {
        let mut l: Value = serde_json::from_slice(
            &crate::store::Store::get(&*store, &format!("locks/{target}.json")).await.unwrap().unwrap().data,
        )
        .unwrap();
        l["released"] = true.into();
        crate::store::Store::put(&*store, &format!("locks/{target}.json"), serde_json::to_vec(&l).unwrap().into())
            .await
            .unwrap();
    }

    // Still pending past the deadline: exit 6, and the failure journals what was sent.
    let cx = for_test(store.clone(), &["--yes"]);
    let out = execute(&cx, composed(&w, Duration::from_millis(20))).await;
    let e = out.error.expect("outcome unknown");
    assert_eq!(e.exit_code(), exit::UNKNOWN_OUTCOME, "{e}");
    assert_eq!(w.sends.load(Ordering::SeqCst), 1, "a rerun waits on the change it finds journaled");
    let ev = events(&store);
    let failed = ev.iter().rev().find(|(e, _)| e == "step-failed").unwrap();
    assert_eq!(failed.1["change"], "C1", "{}", failed.1);
    assert_eq!(out.report.steps.iter().map(|s| s.step.as_str()).collect::<Vec<_>>(), ["a1", "a2", "send"]);

    // The change takes: the third run resumes the same run chain, skips a1 and a2, waits, ends.
    w.pending.store(0, Ordering::SeqCst);
    let cx = for_test(store.clone(), &["--yes"]);
    let out = execute(&cx, composed(&w, Duration::from_secs(5))).await;
    assert!(out.error.is_none(), "{:?}", out.error.map(|e| e.to_string()));
    assert_eq!(w.sends.load(Ordering::SeqCst), 1, "sent once in three runs");
    assert_eq!(*w.marks.lock().unwrap(), ["a1", "a2"], "the first runbook's steps ran once");
    assert_eq!(out.report.extra["change"], "C1");
    let ev = events(&store);
    let starts: Vec<&Value> = ev.iter().filter(|(e, _)| e == "run-started").map(|(_, d)| d).collect();
    assert_eq!(starts.len(), 3);
    assert!(starts[1]["resumes"].is_string() && starts[2]["resumes"].is_string(), "{starts:?}");
    assert!(ev.iter().any(|(e, d)| e == "step-done" && d["step"] == "send" && d["change"] == "C1"));
}

struct Guarded(Arc<World>);

#[async_trait]
impl Step for Guarded {
    fn id(&self) -> &'static str {
        "act"
    }
    fn check_ids(&self) -> &'static [&'static str] {
        &["still-safe"]
    }
    async fn guard(&self, _cx: &Ctx) -> Vec<Check> {
        vec![Check::fail("still-safe", "the world moved since preflight")]
    }
    async fn refused(&self, _cx: &Ctx) -> Result<()> {
        self.0.marks.lock().unwrap().push("cleaned");
        Ok(())
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        Ok(false)
    }
    async fn apply(&self, _cx: &Ctx, _log: &mut StepLog) -> Result<()> {
        self.0.marks.lock().unwrap().push("acted");
        Ok(())
    }
    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_refuses_the_act_at_exit_3_unless_accepted_and_the_waiver_is_journaled() {
    let store = Arc::new(MemStore::new());
    let w = Arc::new(World::default());
    let rb = || Runbook::new("guarded", Some("x"), String::new()).step(Guarded(w.clone()));
    let out = execute(&for_test(store.clone(), &["--yes"]), rb()).await;
    assert_eq!(out.error.unwrap().exit_code(), exit::PREFLIGHT);
    assert_eq!(*w.marks.lock().unwrap(), ["cleaned"], "refused: cleaned up, never acted");
    assert!(events(&store).iter().any(|(e, d)| e == "guard-failed" && d["checks"][0]["check"] == "still-safe"));

    let out = execute(&for_test(store.clone(), &["--yes", "--accept", "still-safe"]), rb()).await;
    assert!(out.error.is_none());
    assert_eq!(*w.marks.lock().unwrap(), ["cleaned", "acted"]);
    let ev = events(&store);
    let (_, d) = ev.iter().rev().find(|(e, _)| e == "guard-checked").unwrap();
    assert_eq!(
        (d["checks"][0]["accepted"].clone(), d["checks"][0]["detail"].clone()),
        (json!(true), json!("the world moved since preflight"))
    );
}

#[test]
#[should_panic(expected = "two steps have the id `a1`")]
fn step_ids_are_unique_within_a_run() {
    let w = Arc::new(World::default());
    let _ = Runbook::new("one", None, String::new())
        .step(Mark("a1", w.clone()))
        .then(Runbook::new("two", None, String::new()).step(Mark("a1", w)));
}

/// A step that fails, or (with `hang`) waits until the run is interrupted.
struct Trouble {
    hang: bool,
}

#[async_trait]
impl Step for Trouble {
    fn id(&self) -> &'static str {
        "trouble"
    }
    async fn is_done(&self, _cx: &Ctx) -> Result<bool> {
        Ok(false)
    }
    async fn apply(&self, _cx: &Ctx, _log: &mut StepLog) -> Result<()> {
        if self.hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Err(crate::error::Error::step("trouble", "it broke"))
    }
    async fn verify(&self, _cx: &Ctx) -> Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finally_steps_run_after_success_failure_and_interruption_but_not_in_a_dry_run() {
    let store = Arc::new(MemStore::new());
    let w = Arc::new(World::default());
    let marks = |w: &World| w.marks.lock().unwrap().clone();

    let ok =
        Runbook::new("tidy", Some("x"), String::new()).step(Mark("a1", w.clone())).finally(Mark("clean", w.clone()));
    let out = execute(&for_test(store.clone(), &["--yes"]), ok).await;
    assert!(out.error.is_none(), "{:?}", out.error.map(|e| e.to_string()));
    assert_eq!(marks(&w), ["a1", "clean"]);
    let states: Vec<_> = out.report.steps.iter().map(|s| (s.step.as_str(), s.state)).collect();
    assert_eq!(states, [("a1", StepState::Applied), ("clean", StepState::Applied)]);
    let ev = events(&store);
    let done = ev.iter().position(|(e, d)| e == "step-done" && d["step"] == "clean").expect("journaled");
    assert!(ev.iter().position(|(e, _)| e == "run-done").unwrap() > done, "run-done comes after the finally step");

    w.marks.lock().unwrap().clear();
    let failing =
        Runbook::new("tidy", Some("x"), String::new()).step(Trouble { hang: false }).finally(Mark("clean", w.clone()));
    let out = execute(&for_test(store.clone(), &["--yes"]), failing).await;
    assert_eq!(out.error.unwrap().exit_code(), exit::STEP_FAILED, "the step's error is the outcome");
    assert_eq!(marks(&w), ["clean"]);

    w.marks.lock().unwrap().clear();
    let cx = for_test(store.clone(), &["--yes"]);
    let (cancel, signal) = (cx.cancel.clone(), cx.signal.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        signal.store(libc::SIGINT, Ordering::SeqCst);
        cancel.cancel();
    });
    let hanging =
        Runbook::new("tidy", Some("x"), String::new()).step(Trouble { hang: true }).finally(Mark("clean", w.clone()));
    let out = execute(&cx, hanging).await;
    assert_eq!(out.error.unwrap().exit_code(), exit::SIGINT);
    assert_eq!(marks(&w), ["clean"], "cleaned up after the interruption");
    let ev = events(&store);
    let interrupted = ev.iter().rposition(|(e, _)| e == "interrupted").unwrap();
    assert!(ev.iter().rposition(|(e, d)| e == "step-done" && d["step"] == "clean").unwrap() > interrupted);

    w.marks.lock().unwrap().clear();
    let dry =
        Runbook::new("tidy", Some("x"), String::new()).step(Mark("a1", w.clone())).finally(Mark("clean", w.clone()));
    let out = execute(&for_test(store.clone(), &["--dry-run"]), dry).await;
    assert!(out.error.is_none());
    assert!(marks(&w).is_empty(), "a dry run changes nothing");
    assert_eq!(out.report.steps[1].state, StepState::Pending);
}
