//! The state runs ask of history, folded from the journal's entries in seq order: committed and
//! pruned backups (with their last deep verification and drill), the last `sync-done` and the last
//! `drill-done` per env, chain anchors, the last start of each
//! (runbook, env) and whether it finished, the runs that may have left partial backup objects,
//! and the highest fence seen per lock target.
//!
//! `State::fold` is a pure function of the entries, so a checkpoint (the state folded up to some
//! seq, see `index.rs`) can be recomputed from the chain and compared by `verify-chain --journal`.
//! Anything a new drctl folds that an older one did not must bump `FOLD_VERSION`: a checkpoint of
//! another version is ignored (refolded), never half-trusted.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Entry;

/// The version of what `fold` computes; part of every checkpoint.
pub const FOLD_VERSION: u32 = 6;

/// Anchors kept per chain, newest last.
pub const ANCHORS_KEPT: usize = 64;

/// A run's resumes chain is cut here: a run resumed a hundred times is not a real history.
const MAX_RESUME_CHAIN: usize = 100;

/// The event prune journals once the objects of pruned backups are gone, so the fold can forget
/// them (otherwise the set of pruned ids would grow with history).
pub const BACKUPS_REMOVED: &str = "backup-removed";

/// The step that removes what dead runs left under `backups/<env>/`, and the details its
/// `step-done` carries: which env's backups it cleaned and which runs it found dead and cleaned.
pub const CLEAN_PARTIAL: &str = "clean-partial";
pub const CLEANED_ENV: &str = "backups_of";
pub const CLEANED_RUNS: &str = "checked_runs";

/// Cutovers kept, newest last: rollback undoes the newest (or one named by --run).
pub const CUTOVERS_KEPT: usize = 16;

/// What a step journals when it has sent a change it then waits for (`StepLog::sent`).
pub const STEP_SENT: &str = "step-sent";
const STEP_DONE: &str = "step-done";

/// The last entry folded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pos {
    pub seq: u64,
    pub hash: String,
}

/// A committed backup as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Committed {
    pub id: String,
    pub env: String,
    pub manifest_sha256: String,
    /// `logical` or `base` (the `backup-done` entry's `type`): retention keeps each type's own
    /// newest backups, so a newer dump never expires the base backup PITR starts from.
    #[serde(default = "logical")]
    pub kind: String,
    /// The `backup-done` entry's seq and time.
    pub seq: u64,
    pub time: String,
    /// The last `verify-chain --backups --deep` that re-hashed its objects: when, and whether
    /// they matched. None: never re-read since it was written.
    pub deep: Option<DeepCheck>,
    /// The last `drill` that restored it: when, and whether the copy verified. None: never drilled.
    #[serde(default)]
    pub drilled: Option<DeepCheck>,
}

fn logical() -> String {
    "logical".into()
}

/// One backup's result in a `backups-verified` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeepCheck {
    pub time: String,
    pub ok: bool,
}

/// The event `verify-chain --backups --deep` journals: every backup it re-read, ok or not.
pub const BACKUPS_VERIFIED: &str = "backups-verified";

/// The event a drill journals with its result, passed or failed.
pub const DRILL_DONE: &str = "drill-done";

/// The newest `drill-done` of an env.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillDone {
    pub run_id: String,
    pub backup_id: String,
    /// The restored copy verified (row counts, chains).
    pub ok: bool,
    /// The entry's time: when the drill finished.
    pub time: String,
    pub rto_ms: Option<u64>,
    pub rpo_s: Option<u64>,
    pub seq: u64,
}

/// The newest `sync-done` of an env.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncDone {
    pub run_id: String,
    /// When FROM's snapshot was taken: the standby's data age starts here.
    pub snapshot_time: String,
    pub seq: u64,
}

/// A `chain-anchor`: the head of an application table's chain as verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    pub seq: u64,
    pub key: String,
    pub hash: String,
    pub count: u64,
}

/// The newest `run-started` of one (runbook, env).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastStart {
    pub run_id: String,
    pub args: String,
    pub time: String,
    /// `run-done` of this run, or `run-abandoned` naming it, was journaled.
    pub closed: bool,
    /// The runs this one resumed, newest first (a resumed run speaks for the runs it continues).
    pub resumed: Vec<String>,
    /// When the first run of this resumes chain was invoked (`run-started`'s `invoked`, before
    /// its locks and preflight; this run's own when it resumed none): failover's RTO counts from it.
    #[serde(default)]
    pub since: String,
    /// Step id → what it journaled as sent (`step-sent`) with no `step-done` of it since, in this
    /// run or the runs it resumed: a change out there whose outcome a rerun waits for.
    #[serde(default)]
    pub sent: BTreeMap<String, Value>,
    /// Step id → what a step of this run or the runs it resumed sent and then saw take (its
    /// `step-sent`, then `step-done`): a rerun's later steps need it (the fenced primary's LSN).
    #[serde(default)]
    pub finished: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The last entry folded; None for an empty journal.
    pub head: Option<Pos>,
    /// env → id → committed, unpruned backup.
    pub backups: BTreeMap<String, BTreeMap<String, Committed>>,
    /// env → ids pruned whose objects may still be in the store.
    pub pruned: BTreeMap<String, BTreeSet<String>>,
    /// env → newest sync-done.
    pub syncs: BTreeMap<String, SyncDone>,
    /// env → newest drill-done.
    #[serde(default)]
    pub drills: BTreeMap<String, DrillDone>,
    /// env → chain → the newest ANCHORS_KEPT anchors, oldest first.
    pub anchors: BTreeMap<String, BTreeMap<String, Vec<Anchor>>>,
    /// `runbook` + ' ' + env (or `-`) → the newest start.
    pub runs: BTreeMap<String, LastStart>,
    /// Lock target → the highest fence any entry carried.
    pub fences: BTreeMap<String, u64>,
    /// env → runs that write under `backups/<env>/` (a backup of env, a sync from it), started
    /// and neither finished (`run-done`) nor found dead and cleaned by a `clean-partial` since:
    /// only their objects can be partial, so with none a clean-partial has nothing to list.
    #[serde(default)]
    pub unclean: BTreeMap<String, BTreeSet<String>>,
    /// Envs drctl promoted (promote-replica's `promote` step done), so a primary that declares
    /// `replica_of` is known to be one drctl made, not a misdeclared env.
    #[serde(default)]
    pub promoted: BTreeSet<String>,
    /// The newest CUTOVERS_KEPT dns-cutover / failover runs that moved (or began to move) traffic,
    /// oldest first, with what rollback needs to undo them.
    #[serde(default)]
    pub cutovers: Vec<Cutover>,
}

/// One dns-cutover or failover (all attempts of one resumes chain), as its entries journaled it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cutover {
    pub runbook: String,
    /// The env that took over.
    pub to: String,
    /// Every attempt's run id, the first first (`rollback --run` takes any of them).
    pub run_ids: Vec<String>,
    /// The time of its first cutover entry.
    pub time: String,
    /// point-record's `step-sent`: the exact record set replaced (`previous`, null when there
    /// was none), the one created (`new`) and the change id.
    pub change: Option<Value>,
    /// fence-primary's `step-sent` when it fenced the old primary (how, which database, data_dir).
    pub fenced: Option<Value>,
    /// mark-cutover's `step-done`: the taking-over env's LSN and row counters at the cutover.
    pub mark: Option<Value>,
    /// readiness's `step-done`: the failover finished (RTO, data age).
    pub ready: Option<Value>,
    /// The rollback run that restored the record (`restore-record` done).
    pub rolled_back_by: Option<String>,
}

pub const CUTOVER_RUNBOOKS: &[&str] = &["dns-cutover", "failover"];

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The env under whose `backups/` a run of `runbook` writes: a backup's own env, a sync's FROM
/// (its args are `--from FROM --to TO`).
fn writes_backups_of<'a>(runbook: &str, env: Option<&'a str>, args: &'a str) -> Option<&'a str> {
    match runbook {
        "backup" => env,
        "sync" => {
            let mut words = args.split_whitespace();
            words.find(|w| *w == "--from").and_then(|_| words.next())
        }
        _ => None,
    }
}

pub fn run_key(runbook: &str, env: Option<&str>) -> String {
    format!("{runbook} {}", env.unwrap_or("-"))
}

impl State {
    /// Fold one entry in. Entries must come in seq order; what an entry lacks is skipped, as
    /// `verify-chain --journal` is where damaged entries are reported.
    pub fn fold(&mut self, e: &Entry) {
        self.head = Some(Pos { seq: e.seq, hash: e.hash.clone() });
        for (target, &fence) in &e.fences {
            let seen = self.fences.entry(target.clone()).or_insert(0);
            *seen = (*seen).max(fence);
        }
        let env = e.env.as_deref();
        let d = &e.details;
        self.fold_cutover(e);
        match (e.event.as_str(), env) {
            ("backup-done", Some(env)) => {
                let (Some(id), Some(sha)) = (str_of(d, "id"), str_of(d, "manifest_sha256")) else { return };
                if self.pruned.get(env).is_some_and(|p| p.contains(id)) {
                    return;
                }
                let c = Committed {
                    id: id.to_string(),
                    env: env.to_string(),
                    manifest_sha256: sha.to_string(),
                    kind: str_of(d, "type").unwrap_or("logical").to_string(),
                    seq: e.seq,
                    time: e.time.clone(),
                    deep: None,
                    drilled: None,
                };
                self.backups.entry(env.to_string()).or_default().insert(id.to_string(), c);
            }
            ("backup-pruned", Some(env)) => {
                let Some(id) = str_of(d, "id") else { return };
                if let Some(b) = self.backups.get_mut(env) {
                    b.remove(id);
                }
                self.pruned.entry(env.to_string()).or_default().insert(id.to_string());
            }
            (BACKUPS_REMOVED, Some(env)) => {
                let Some(ids) = d.get("ids").and_then(Value::as_array) else { return };
                if let Some(p) = self.pruned.get_mut(env) {
                    for id in ids.iter().filter_map(Value::as_str) {
                        p.remove(id);
                    }
                    if p.is_empty() {
                        self.pruned.remove(env);
                    }
                }
            }
            (BACKUPS_VERIFIED, _) => {
                for r in d.get("results").and_then(Value::as_array).into_iter().flatten() {
                    let (Some(env), Some(id), Some(ok)) =
                        (str_of(r, "env"), str_of(r, "id"), r.get("ok").and_then(Value::as_bool))
                    else {
                        continue;
                    };
                    if let Some(c) = self.backups.get_mut(env).and_then(|b| b.get_mut(id)) {
                        c.deep = Some(DeepCheck { time: e.time.clone(), ok });
                    }
                }
            }
            (DRILL_DONE, Some(env)) => {
                let (Some(id), Some(ok)) = (str_of(d, "backup_id"), d.get("ok").and_then(Value::as_bool)) else {
                    return;
                };
                if let Some(c) = self.backups.get_mut(env).and_then(|b| b.get_mut(id)) {
                    c.drilled = Some(DeepCheck { time: e.time.clone(), ok });
                }
                let drill = DrillDone {
                    run_id: e.run_id.clone(),
                    backup_id: id.to_string(),
                    ok,
                    time: e.time.clone(),
                    rto_ms: d.get("rto_ms").and_then(Value::as_u64),
                    rpo_s: d.get("rpo_s").and_then(Value::as_u64),
                    seq: e.seq,
                };
                self.drills.insert(env.to_string(), drill);
            }
            ("sync-done", Some(env)) => {
                let Some(snapshot_time) = str_of(d, "snapshot_time") else { return };
                let s = SyncDone { run_id: e.run_id.clone(), snapshot_time: snapshot_time.to_string(), seq: e.seq };
                self.syncs.insert(env.to_string(), s);
            }
            ("chain-anchor", Some(env)) => {
                let (Some(chain), Some(key), Some(hash), Some(count)) =
                    (str_of(d, "chain"), str_of(d, "key"), str_of(d, "hash"), d.get("count").and_then(Value::as_u64))
                else {
                    return;
                };
                let a = Anchor { seq: e.seq, key: key.to_string(), hash: hash.to_string(), count };
                let kept = self.anchors.entry(env.to_string()).or_default().entry(chain.to_string()).or_default();
                kept.push(a);
                // An hourly verify-chain anchors ~9,000 heads a year. The newest anchors dominate
                // the older ones (a truncation or a consistent rewrite before an old anchor also
                // moves or removes every newer one), so a bounded tail keeps the state flat.
                if kept.len() > ANCHORS_KEPT {
                    kept.drain(..kept.len() - ANCHORS_KEPT);
                }
            }
            ("run-started", _) => {
                let key = run_key(&e.runbook, env);
                let mut resumed = Vec::new();
                let mut sent = BTreeMap::new();
                let mut finished = BTreeMap::new();
                // Since the first attempt was invoked (before its locks and preflight).
                let mut since = str_of(d, "invoked").unwrap_or(&e.time).to_string();
                if let Some(old) = str_of(d, "resumes") {
                    resumed.push(old.to_string());
                    if let Some(prev) = self.runs.get(&key).filter(|p| p.run_id == old) {
                        resumed.extend(prev.resumed.iter().take(MAX_RESUME_CHAIN - 1).cloned());
                        sent = prev.sent.clone();
                        finished = prev.finished.clone();
                        if !prev.since.is_empty() {
                            since = prev.since.clone();
                        }
                    }
                }
                let args = str_of(d, "args").unwrap_or_default();
                if let Some(of) = writes_backups_of(&e.runbook, env, args) {
                    self.unclean.entry(of.to_string()).or_default().insert(e.run_id.clone());
                }
                let start = LastStart {
                    run_id: e.run_id.clone(),
                    args: args.to_string(),
                    time: e.time.clone(),
                    closed: false,
                    resumed,
                    since,
                    sent,
                    finished,
                };
                self.runs.insert(key, start);
            }
            (STEP_SENT, _) => {
                let Some(step) = str_of(d, "step") else { return };
                if let Some(s) = self.runs.get_mut(&run_key(&e.runbook, env)).filter(|s| s.run_id == e.run_id) {
                    s.sent.insert(step.to_string(), d.clone());
                }
            }
            ("run-done", _) => {
                if let Some(s) = self.runs.get_mut(&run_key(&e.runbook, env)).filter(|s| s.run_id == e.run_id) {
                    s.closed = true;
                }
                // A run that finished committed what it wrote (or removed it).
                self.unclean.retain(|_, runs| {
                    runs.remove(&e.run_id);
                    !runs.is_empty()
                });
            }
            ("step-done", _) if str_of(d, "step") != Some(CLEAN_PARTIAL) => {
                let Some(step) = str_of(d, "step") else { return };
                if let ("promote", Some(env)) = (step, str_of(d, "promoted")) {
                    self.promoted.insert(env.to_string());
                }
                if let Some(s) = self.runs.get_mut(&run_key(&e.runbook, env)).filter(|s| s.run_id == e.run_id)
                    && let Some(v) = s.sent.remove(step)
                {
                    s.finished.insert(step.to_string(), v);
                }
            }
            ("step-done", _) => {
                let (Some(of), Some(runs)) = (str_of(d, CLEANED_ENV), d.get(CLEANED_RUNS).and_then(Value::as_array))
                else {
                    return;
                };
                if let Some(u) = self.unclean.get_mut(of) {
                    for id in runs.iter().filter_map(Value::as_str) {
                        u.remove(id);
                    }
                    if u.is_empty() {
                        self.unclean.remove(of);
                    }
                }
            }
            ("run-abandoned", _) => {
                let Some(id) = str_of(d, "run_id") else { return };
                for s in self.runs.values_mut().filter(|s| s.run_id == id) {
                    s.closed = true;
                }
            }
            _ => {}
        }
    }

    /// Cutover and rollback entries: what `rollback` needs to find and undo a cutover.
    fn fold_cutover(&mut self, e: &Entry) {
        let d = &e.details;
        let step = str_of(d, "step");
        if e.runbook == "rollback" {
            if let (STEP_DONE, Some("restore-record"), Some(of)) = (e.event.as_str(), step, str_of(d, "rolls_back"))
                && let Some(c) = self.cutovers.iter_mut().find(|c| c.run_ids.iter().any(|r| r == of))
            {
                c.rolled_back_by = Some(e.run_id.clone());
            }
            return;
        }
        let (Some(env), true) = (e.env.as_deref(), CUTOVER_RUNBOOKS.contains(&e.runbook.as_str())) else { return };
        let field = match (e.event.as_str(), step) {
            (STEP_SENT, Some("point-record")) => "change",
            (STEP_SENT, Some("fence-primary")) if d.get("fenced") == Some(&Value::Bool(true)) => "fenced",
            (STEP_DONE, Some("mark-cutover")) => "mark",
            (STEP_DONE, Some("readiness")) => "ready",
            _ => return,
        };
        // Runs of these runbooks hold the `dns` lock, so only the newest cutover can be this
        // run's: its own, or one a run this one resumes began.
        let resumed: Vec<String> = self
            .runs
            .get(&run_key(&e.runbook, Some(env)))
            .filter(|s| s.run_id == e.run_id)
            .map(|s| s.resumed.clone())
            .unwrap_or_default();
        let mine = self.cutovers.last().is_some_and(|c| {
            c.runbook == e.runbook
                && c.to == env
                && (c.run_ids.contains(&e.run_id) || c.run_ids.iter().any(|r| resumed.contains(r)))
        });
        if !mine {
            self.cutovers.push(Cutover {
                runbook: e.runbook.clone(),
                to: env.to_string(),
                time: e.time.clone(),
                ..Cutover::default()
            });
            if self.cutovers.len() > CUTOVERS_KEPT {
                self.cutovers.remove(0);
            }
        }
        let c = self.cutovers.last_mut().expect("just ensured");
        if !c.run_ids.contains(&e.run_id) {
            c.run_ids.push(e.run_id.clone());
        }
        let v = Some(d.clone());
        match field {
            "change" => c.change = v,
            "fenced" => c.fenced = v,
            "mark" => c.mark = v,
            _ => c.ready = v,
        }
    }

    /// The cutover an attempt of run `run_id` made.
    pub fn cutover_by_run(&self, run_id: &str) -> Option<&Cutover> {
        self.cutovers.iter().rev().find(|c| c.run_ids.iter().any(|r| r == run_id))
    }

    /// Committed, unpruned backups (of `env`, or all), oldest first.
    pub fn committed(&self, env: Option<&str>) -> Vec<Committed> {
        let mut out: Vec<Committed> = self
            .backups
            .iter()
            .filter(|(e, _)| env.is_none_or(|want| want == e.as_str()))
            .flat_map(|(_, b)| b.values().cloned())
            .collect();
        out.sort_by_key(|c| c.seq);
        out
    }

    /// Ids of backups of `env` that were pruned and whose objects may still be there.
    pub fn pruned_ids(&self, env: &str) -> BTreeSet<String> {
        self.pruned.get(env).cloned().unwrap_or_default()
    }

    /// Runs that may have left partial objects under `backups/<env>/` (see `unclean`).
    pub fn unclean_runs(&self, env: &str) -> BTreeSet<String> {
        self.unclean.get(env).cloned().unwrap_or_default()
    }

    pub fn anchors(&self, env: &str, chain: &str) -> &[Anchor] {
        self.anchors.get(env).and_then(|c| c.get(chain)).map_or(&[], Vec::as_slice)
    }

    pub fn last_start(&self, runbook: &str, env: Option<&str>) -> Option<&LastStart> {
        self.runs.get(&run_key(runbook, env))
    }

    pub fn next_seq(&self) -> u64 {
        self.head.as_ref().map_or(0, |h| h.seq + 1)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::{STEP_SENT, State};
    use crate::journal::Entry;

    fn entry(seq: u64, run: &str, runbook: &str, env: &str, event: &str, details: Value) -> Entry {
        Entry {
            seq,
            time: format!("2026-01-01T00:00:{seq:02}.000Z"),
            run_id: run.into(),
            runbook: runbook.into(),
            env: Some(env.into()),
            event: event.into(),
            fences: BTreeMap::from([("env:prod".to_string(), seq)]),
            details,
            prev_hash: String::new(),
            hash: format!("h{seq}"),
        }
    }

    #[test]
    fn backups_prunes_removals_syncs_runs_and_fences_fold() {
        let es = [
            entry(0, "r1", "backup", "prod", "run-started", json!({"args": "--env prod"})),
            entry(1, "r1", "backup", "prod", "backup-done", json!({"id": "r1", "manifest_sha256": "m1"})),
            entry(2, "r1", "backup", "prod", "run-done", json!({})),
            entry(3, "r2", "backup", "prod", "run-started", json!({"args": "--env prod"})),
            entry(4, "r2", "backup", "prod", "backup-done", json!({"id": "r2", "manifest_sha256": "m2"})),
            entry(5, "r3", "backup prune", "prod", "backup-pruned", json!({"id": "r1"})),
            entry(6, "r4", "sync", "stg", "sync-done", json!({"snapshot_time": "t4"})),
            entry(7, "r5", "sync", "stg", "run-started", json!({"args": "--from prod --to stg"})),
            entry(8, "r6", "sync", "stg", "run-started", json!({"args": "--from prod --to stg", "resumes": "r5"})),
        ];
        let mut s = State::default();
        es.iter().for_each(|e| s.fold(e));
        assert_eq!(s.committed(Some("prod")).iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["r2"]);
        assert_eq!(s.pruned_ids("prod").into_iter().collect::<Vec<_>>(), ["r1"]);
        assert_eq!(s.syncs["stg"].snapshot_time, "t4");
        assert!(!s.last_start("backup", Some("prod")).unwrap().closed, "r2 never finished");
        let sync = s.last_start("sync", Some("stg")).unwrap();
        assert_eq!((sync.run_id.as_str(), sync.resumed.clone()), ("r6", vec!["r5".to_string()]));
        assert_eq!(s.fences["env:prod"], 8);
        assert_eq!(s.head.as_ref().unwrap().seq, 8);

        // A drill of r2: the env's last drill, and r2's; a failed one later replaces both.
        s.fold(&entry(
            50,
            "d1",
            "drill",
            "prod",
            super::DRILL_DONE,
            json!({"backup_id": "r2", "ok": true, "rto_ms": 1200, "rpo_s": 30}),
        ));
        assert_eq!(s.committed(Some("prod"))[0].drilled.as_ref().map(|d| d.ok), Some(true));
        assert_eq!((s.drills["prod"].rto_ms, s.drills["prod"].rpo_s), (Some(1200), Some(30)));
        s.fold(&entry(51, "d2", "drill", "prod", super::DRILL_DONE, json!({"backup_id": "r2", "ok": false})));
        assert_eq!(s.committed(Some("prod"))[0].drilled.as_ref().map(|d| d.ok), Some(false));
        assert_eq!((s.drills["prod"].run_id.as_str(), s.drills["prod"].ok), ("d2", false));
        s.fold(&entry(9, "r3", "backup prune", "prod", super::BACKUPS_REMOVED, json!({"ids": ["r1"]})));
        assert!(s.pruned.is_empty(), "removed objects are forgotten");
        s.fold(&entry(10, "r7", "sync", "stg", "run-abandoned", json!({"run_id": "r6"})));
        assert!(s.last_start("sync", Some("stg")).unwrap().closed);
        // Anchors: a bounded tail, newest last.
        for i in 0..(super::ANCHORS_KEPT as u64 + 10) {
            let d = json!({"chain": "events", "key": i.to_string(), "hash": "h", "count": i});
            s.fold(&entry(20 + i, "v", "verify-chain", "prod", "chain-anchor", d));
        }
        let kept = s.anchors("prod", "events");
        assert_eq!(kept.len(), super::ANCHORS_KEPT);
        assert_eq!((kept[0].count, kept.last().unwrap().count), (10, super::ANCHORS_KEPT as u64 + 9));
        // Runs that may have left partial backup objects: r2 (never finished) of prod, and the
        // syncs from prod, until a clean-partial of prod names them or they finish.
        assert_eq!(s.unclean_runs("prod").into_iter().collect::<Vec<_>>(), ["r2", "r5", "r6"]);
        assert!(s.unclean_runs("stg").is_empty(), "a sync writes backups of FROM, not TO");
        s.fold(&entry(
            200,
            "r8",
            "sync",
            "stg",
            "step-done",
            json!({"step": "clean-partial", "backups_of": "prod", "checked_runs": ["r2", "r5"]}),
        ));
        s.fold(&entry(201, "r6", "sync", "stg", "run-done", json!({})));
        assert!(s.unclean.is_empty(), "{:?}", s.unclean);
        // A state survives its own serialisation unchanged (it is what a checkpoint stores).
        let back: State = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn a_failover_resumed_after_a_crash_is_one_cutover_and_a_rollback_marks_it_rolled_back() {
        let mut s = State::default();
        let fo = |seq, run: &str, event: &str, d: Value| entry(seq, run, "failover", "replica", event, d);
        let es = [
            fo(1, "r1", "run-started", json!({"args": "--to replica"})),
            fo(
                2,
                "r1",
                STEP_SENT,
                json!({"step": "fence-primary", "fenced": true, "primary": "prod", "primary_lsn": "0/5"}),
            ),
            fo(3, "r1", "step-done", json!({"step": "fence-primary"})),
            // r1 dies; r2 resumes it.
            fo(4, "r2", "run-started", json!({"args": "--to replica", "resumes": "r1"})),
            fo(5, "r2", "step-done", json!({"step": "mark-cutover", "lsn": "0/9", "tables": {}})),
            fo(6, "r2", STEP_SENT, json!({"step": "point-record", "previous": {"name": "app."}, "new": {}})),
            fo(7, "r2", "step-done", json!({"step": "point-record"})),
            fo(8, "r2", "step-done", json!({"step": "readiness", "rto_ms": 5})),
            fo(9, "r2", "run-done", json!({"args": "--to replica"})),
        ];
        for e in &es {
            s.fold(e);
        }
        assert_eq!(s.cutovers.len(), 1, "{:?}", s.cutovers);
        let c = &s.cutovers[0];
        assert_eq!((c.runbook.as_str(), c.to.as_str()), ("failover", "replica"));
        assert_eq!(c.run_ids, ["r1", "r2"]);
        assert_eq!(c.fenced.as_ref().unwrap()["primary_lsn"], "0/5");
        assert_eq!(c.mark.as_ref().unwrap()["lsn"], "0/9");
        assert!(c.change.is_some() && c.ready.is_some());
        // The resumed run knows what its predecessor's fence found, and that it finished.
        let run = s.last_start("failover", Some("replica")).unwrap();
        assert_eq!(run.since, "2026-01-01T00:00:01.000Z", "the RTO counts from the first attempt");
        assert_eq!(run.finished["fence-primary"]["primary_lsn"], "0/5");
        assert!(run.sent.is_empty());
        assert_eq!(s.cutover_by_run("r1"), s.cutover_by_run("r2"));

        // A rollback of it, then a new failover: two cutovers, the first rolled back.
        s.fold(&entry(
            10,
            "r3",
            "rollback",
            "prod",
            "step-done",
            json!({"step": "restore-record", "rolls_back": "r1"}),
        ));
        assert_eq!(s.cutovers[0].rolled_back_by.as_deref(), Some("r3"));
        s.fold(&fo(11, "r4", "run-started", json!({"args": "--to replica"})));
        s.fold(&fo(12, "r4", "step-done", json!({"step": "mark-cutover", "lsn": "0/20"})));
        assert_eq!(s.cutovers.len(), 2);
        assert_eq!(s.cutovers[1].run_ids, ["r4"]);
        assert!(s.cutovers[1].rolled_back_by.is_none());
        let back: State = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
