//! The journal's index: checkpoints beside the append-only log, so that a run reads the newest
//! checkpoint plus the entries after it instead of the whole journal (as pgBackRest keeps
//! backup.info beside its archive, restic index files beside its packs, git packed-refs).
//!
//! A checkpoint `journal-index/checkpoint-<seq>.json` holds the `State` folded from entries
//! 0..=seq, that entry's hash, and the sha256 of the state's canonical bytes. It is a cache, never
//! an authority: a run uses the newest checkpoint that parses, has this drctl's `FOLD_VERSION`,
//! matches its own sha256 and names an entry that exists with that hash; anything else is skipped
//! for the next older one, and with none the state is folded from seq 0 (slower, still correct).
//! `journal-index/latest.json` names the checkpoints, so a run finds the newest one with one GET
//! instead of a listing; the entries after it are then read by seq, a few concurrent GETs at a
//! time, until the first seq that is absent (the head is the entry before it). The pointer is a
//! hint like the checkpoints: a missing, unreadable or stale one costs a listing of the index and
//! of the entries after the checkpoint (the path taken when there is no pointer at all), never a
//! wrong head, because the head is whatever the journal holds before its first absent seq. `verify-chain --journal` refolds the whole
//! chain, compares every checkpoint it passes (exit 4 on a disagreement) and then writes a
//! `verified-<seq>.json` checkpoint, from which `--since-checkpoint` resumes.
//!
//! Safety: entries are still created one object each with `If-None-Match: *`, so two writers never
//! share a seq. A checkpoint is written (create-if-absent) only after the entry it names exists,
//! so a crash between an append and a checkpoint leaves an older checkpoint and a longer tail:
//! the next run reads a little more. Losing every checkpoint costs one full read.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::fold::{FOLD_VERSION, State};
use super::{Break, Entry, NewEntry, PREFIX, Stored, Verifier, compute_hash, entry_key, key_seq, parse_entry};
use crate::error::{Error, Result, Transience};
use crate::store::Store;

pub const INDEX_PREFIX: &str = "journal-index/";

/// A run that appends writes a checkpoint once this many entries follow the newest one, so no run
/// reads more than about this many entries besides its own.
pub const CHECKPOINT_EVERY: u64 = 64;

/// Checkpoints of each kind kept; older ones are deleted when a new one is written.
const KEEP: usize = 2;

/// Entry reads in flight at once.
const IN_FLIGHT: usize = 32;

/// Entry reads in flight in the full walk. S3 answers a small GET in ~15-30 ms and serves 5,500
/// GETs/s per prefix, so 5,000 entries/s needs about a hundred in flight (Little's law); entries
/// are ~1 KiB, so this is still bounded memory.
const WALK_IN_FLIGHT: usize = 128;

/// The pointer to the index's checkpoints.
pub const LATEST_KEY: &str = "journal-index/latest.json";

/// Seqs probed at once after the newest checkpoint (doubling up to IN_FLIGHT): a checkpoint is
/// written every CHECKPOINT_EVERY entries, so a tail is usually shorter than 8 + 16 + 32 + 32.
const PROBE_LOAD: usize = 8;
/// Seqs probed at once when a run catches up with its own cached head: usually nothing is new.
const PROBE_REFRESH: usize = 2;

const APPEND_TRIES: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub version: u32,
    /// The last entry folded in, and its hash.
    pub seq: u64,
    pub hash: String,
    /// When and by which run it was written (not part of what is compared).
    pub written: String,
    pub run_id: String,
    /// sha256 of the RFC 8785 bytes of `state`: catches a damaged or hand-edited checkpoint.
    pub state_sha256: String,
    pub state: State,
}

/// `journal-index/latest.json`: the checkpoints its writer knew of when it wrote one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latest {
    /// (seq, verified), oldest first.
    pub checkpoints: Vec<(u64, bool)>,
    pub written: String,
}

/// Point the index at `checkpoints`. Unconditional (last writer wins): a pointer that another
/// writer's older knowledge overwrote names older checkpoints, which costs a longer tail read and
/// is corrected by the next checkpoint written.
pub async fn publish(store: &dyn Store, checkpoints: &[(u64, bool)]) -> Result<()> {
    let mut cps = checkpoints.to_vec();
    cps.sort_unstable();
    cps.dedup();
    let latest = Latest {
        checkpoints: cps,
        written: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    };
    store.put(LATEST_KEY, Bytes::from(serde_json::to_vec(&latest).expect("a Latest always serialises"))).await
}

pub fn checkpoint_key(seq: u64, verified: bool) -> String {
    format!("{INDEX_PREFIX}{}-{seq:020}.json", if verified { "verified" } else { "checkpoint" })
}

/// (seq, verified) of a checkpoint key.
fn checkpoint_of(key: &str) -> Option<(u64, bool)> {
    let name = key.strip_prefix(INDEX_PREFIX)?.strip_suffix(".json")?;
    let (kind, digits) = name.split_once('-')?;
    let verified = match kind {
        "checkpoint" => false,
        "verified" => true,
        _ => return None,
    };
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, verified))
}

pub fn state_sha256(state: &State) -> String {
    let v = serde_json::to_value(state).expect("a State always serialises");
    let mut out = Vec::new();
    super::write_canonical(&v, &mut out);
    hex::encode(Sha256::digest(out))
}

fn store_error(store: &dyn Store, problem: impl Into<String>) -> Error {
    Error::Store { url: store.url().to_owned(), problem: problem.into(), transience: Transience::Temporary }
}

/// Read the entries at `seqs`, IN_FLIGHT at a time, in order. A missing one is `Stored` with an
/// error, so callers decide what a gap means.
pub async fn read_seqs(store: &dyn Store, seqs: impl IntoIterator<Item = u64>) -> Result<Vec<Stored>> {
    stream::iter(seqs)
        .map(|seq| read_one(store, entry_key(seq)))
        .buffered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

async fn read_one(store: &dyn Store, key: String) -> Result<Stored> {
    let entry = match store.get(&key).await? {
        Some(v) => parse_entry(&v.data),
        None => Err("missing".to_owned()),
    };
    Ok(Stored { key, entry })
}

/// A checkpoint that passes every cheap check, and the entry it names; `Err(why)` otherwise.
async fn read_checkpoint(
    store: &dyn Store,
    key: &str,
    seq: u64,
) -> Result<std::result::Result<(Checkpoint, Entry), String>> {
    let Some(obj) = store.get(key).await? else { return Ok(Err(format!("{key} is gone"))) };
    let cp: Checkpoint = match serde_json::from_slice(&obj.data) {
        Ok(cp) => cp,
        Err(e) => return Ok(Err(format!("{key} is not a checkpoint: {e}"))),
    };
    if cp.version != FOLD_VERSION {
        return Ok(Err(format!("{key} is of fold version {}, this drctl folds version {FOLD_VERSION}", cp.version)));
    }
    if let Some(why) = self_check(&cp, seq) {
        return Ok(Err(format!("{key}: {why}")));
    }
    let stored = read_one(store, entry_key(seq)).await?;
    match stored.entry {
        Ok(e) if e.hash == cp.hash && compute_hash(&e) == e.hash && e.seq == seq => Ok(Ok((cp, e))),
        Ok(_) => Ok(Err(format!("{key} names entry {seq} with hash {}, which the journal does not hold", cp.hash))),
        Err(why) => Ok(Err(format!("{key} names entry {seq}, which is {why}"))),
    }
}

/// What is wrong with a checkpoint on its own (its sha256, the seq it claims), if anything.
fn self_check(cp: &Checkpoint, seq: u64) -> Option<String> {
    if state_sha256(&cp.state) != cp.state_sha256 {
        return Some("its state does not match its sha256: it was damaged or edited".into());
    }
    let head = cp.state.head.as_ref();
    if cp.seq != seq || head.map(|h| (h.seq, h.hash.as_str())) != Some((seq, cp.hash.as_str())) {
        return Some(format!(
            "it claims seq {} and folds up to {:?}, its name says {seq}",
            cp.seq,
            head.map(|h| h.seq)
        ));
    }
    None
}

/// The journal as a run sees it: loaded once (newest good checkpoint + the entries after it),
/// shared by every step through `Ctx`, and kept current by this run's own appends.
pub struct Journal {
    store: Arc<dyn Store>,
    run_id: String,
    loaded: tokio::sync::Mutex<Option<Loaded>>,
}

struct Loaded {
    state: Arc<State>,
    /// The last entry, whole, to chain onto; None for an empty journal or a damaged head.
    head: Option<Entry>,
    /// The key of the last entry seen, intact or not: where the next listing starts.
    last_key: Option<String>,
    /// Why the head cannot be chained onto (key, reason): appends are refused (exit 4).
    head_problem: Option<(String, String)>,
    /// The checkpoints in the index: (seq, verified).
    checkpoints: Vec<(u64, bool)>,
    /// Why checkpoints were passed over, for `-v`.
    notes: Vec<String>,
    /// Loaded from this checkpoint without a usable pointer: the first append publishes one.
    unpublished: Option<(u64, bool)>,
}

impl Loaded {
    fn newest_checkpoint(&self) -> Option<u64> {
        self.checkpoints.iter().map(|(s, _)| *s).max()
    }
}

impl Journal {
    pub fn new(store: Arc<dyn Store>, run_id: &str) -> Journal {
        Journal { store, run_id: run_id.to_string(), loaded: tokio::sync::Mutex::new(None) }
    }

    /// The folded state, read from the store on first use only.
    pub async fn state(&self) -> Result<Arc<State>> {
        let mut g = self.loaded.lock().await;
        Ok(self.ensure(&mut g).await?.state.clone())
    }

    /// The state after reading whatever other runs appended since it was loaded (one listing).
    pub async fn refresh(&self) -> Result<Arc<State>> {
        let mut g = self.loaded.lock().await;
        let l = self.ensure(&mut g).await?;
        catch_up(&*self.store, l).await?;
        Ok(l.state.clone())
    }

    /// Why checkpoints were skipped while loading (damaged, stale, another version).
    pub async fn notes(&self) -> Vec<String> {
        self.loaded.lock().await.as_ref().map(|l| l.notes.clone()).unwrap_or_default()
    }

    /// The checkpoints in the index, (seq, verified), as loaded.
    pub async fn checkpoints(&self) -> Result<Vec<(u64, bool)>> {
        let mut g = self.loaded.lock().await;
        Ok(self.ensure(&mut g).await?.checkpoints.clone())
    }

    async fn ensure<'a>(&self, g: &'a mut Option<Loaded>) -> Result<&'a mut Loaded> {
        if g.is_none() {
            *g = Some(load(&*self.store).await?);
        }
        Ok(g.as_mut().expect("just loaded"))
    }

    /// Append one entry after the head; retries on a lost race for the seq, catching up with what
    /// the winner wrote. Writes a checkpoint when enough entries follow the newest one.
    pub async fn append(&self, new: NewEntry) -> Result<Entry> {
        super::check_details(&new.details, "details").map_err(|why| Error::step("journal append", why))?;
        let store = &*self.store;
        let mut g = self.loaded.lock().await;
        let l = self.ensure(&mut g).await?;
        for attempt in 0..APPEND_TRIES {
            if let Some((key, why)) = &l.head_problem {
                return Err(Error::integrity("journal", key, why));
            }
            super::check_fences(store, &l.state.fences, &new).await?;
            let (seq, prev_hash) = match &l.head {
                Some(h) => (h.seq + 1, h.hash.clone()),
                None => (0, super::GENESIS_PREV_HASH.to_owned()),
            };
            // The store's clock, as for lock expiry, so entries from different hosts read in seq order.
            let time = humantime::format_rfc3339_millis(store.now().await?).to_string();
            let mut entry = Entry {
                seq,
                time,
                run_id: new.run_id.clone(),
                runbook: new.runbook.clone(),
                env: new.env.clone(),
                event: new.event.clone(),
                fences: new.fences.clone(),
                details: new.details.clone(),
                prev_hash,
                hash: String::new(),
            };
            entry.hash = compute_hash(&entry);
            let bytes = Bytes::from(serde_json::to_vec_pretty(&entry).expect("an Entry always serialises"));
            let key = entry_key(seq);
            let won = store.put_if_absent(&key, bytes.clone()).await?
                // A create whose reply was lost is retried and then finds its own bytes there.
                || store.get(&key).await?.is_some_and(|v| v.data == bytes);
            if won {
                Arc::make_mut(&mut l.state).fold(&entry);
                l.head = Some(entry.clone());
                l.last_key = Some(key);
                self.maybe_checkpoint(l).await;
                return Ok(entry);
            }
            // Another writer took this seq: read what it (and any others) appended, then retry.
            catch_up(store, l).await?;
            tokio::time::sleep(super::backoff(attempt)).await;
        }
        Err(store_error(store, format!("gave up appending to the journal after losing the race {APPEND_TRIES} times")))
    }

    /// Write a checkpoint at the head once CHECKPOINT_EVERY entries follow the newest one. A
    /// checkpoint is a cache: failing to write one costs later runs time, never correctness, so
    /// errors here are not the run's.
    async fn maybe_checkpoint(&self, l: &mut Loaded) {
        let Some(head) = l.state.head.clone() else { return };
        let due = l.newest_checkpoint().map_or(head.seq + 1 >= CHECKPOINT_EVERY, |s| head.seq >= s + CHECKPOINT_EVERY);
        if !due {
            if let Some(good) = l.unpublished {
                // The checkpoint this run loaded from, which passed the cheap checks.
                match publish(&*self.store, &[good]).await {
                    Ok(()) => l.unpublished = None,
                    Err(e) => l.notes.push(format!("could not update {LATEST_KEY}: {e}")),
                }
            }
            return;
        }
        if let Err(e) = write_checkpoint(&*self.store, &l.state, &self.run_id, false).await {
            l.notes.push(format!("could not write a journal checkpoint: {e}"));
            return;
        }
        l.checkpoints.push((head.seq, false));
        prune_checkpoints(&*self.store, &mut l.checkpoints).await;
        match publish(&*self.store, &l.checkpoints).await {
            Ok(()) => l.unpublished = None,
            Err(e) => l.notes.push(format!("could not update {LATEST_KEY}: {e}")),
        }
    }
}

/// After a walk that verified the chain: write the verified checkpoint of its state, keep the
/// newest KEEP of each kind among what the walk listed (orphans of racing writers included), and
/// point the index at them.
pub async fn record_verified(store: &dyn Store, w: &Walked, run_id: &str) -> Result<()> {
    let Some(head) = &w.state.head else { return Ok(()) };
    write_checkpoint(store, &w.state, run_id, true).await?;
    let mut cps = w.checkpoints.clone();
    cps.push((head.seq, true));
    prune_checkpoints(store, &mut cps).await;
    publish(store, &cps).await
}

/// Write the checkpoint of `state` (create-if-absent: the same seq folds to the same state).
pub async fn write_checkpoint(store: &dyn Store, state: &State, run_id: &str, verified: bool) -> Result<()> {
    let Some(head) = &state.head else { return Ok(()) };
    let cp = Checkpoint {
        version: FOLD_VERSION,
        seq: head.seq,
        hash: head.hash.clone(),
        written: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        run_id: run_id.to_string(),
        state_sha256: state_sha256(state),
        state: state.clone(),
    };
    let data = serde_json::to_vec(&cp).expect("a Checkpoint always serialises");
    store.put_if_absent(&checkpoint_key(head.seq, verified), Bytes::from(data)).await?;
    Ok(())
}

/// Keep the newest KEEP checkpoints of each kind.
async fn prune_checkpoints(store: &dyn Store, cps: &mut Vec<(u64, bool)>) {
    cps.sort_unstable();
    cps.dedup();
    for verified in [false, true] {
        let mine: Vec<u64> = cps.iter().filter(|(_, v)| *v == verified).map(|(s, _)| *s).collect();
        for &seq in mine.iter().take(mine.len().saturating_sub(KEEP)) {
            if store.delete(&checkpoint_key(seq, verified)).await.is_ok() {
                cps.retain(|c| *c != (seq, verified));
            }
        }
    }
}

/// The checkpoints listed in the index, (seq, verified, key).
pub async fn list_checkpoints(store: &dyn Store) -> Result<Vec<(u64, bool, String)>> {
    let mut cps: Vec<(u64, bool, String)> = store
        .list(INDEX_PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| checkpoint_of(&o.key).map(|(s, v)| (s, v, o.key)))
        .collect();
    cps.sort();
    Ok(cps)
}

/// The newest checkpoint (of either kind, or only verified ones) that passes the cheap checks.
pub async fn newest_good(
    store: &dyn Store,
    cps: &[(u64, bool, String)],
    verified_only: bool,
    notes: &mut Vec<String>,
) -> Result<Option<(Checkpoint, Entry)>> {
    for (seq, verified, key) in cps.iter().rev() {
        if verified_only && !verified {
            continue;
        }
        match read_checkpoint(store, key, *seq).await? {
            Ok(found) => return Ok(Some(found)),
            Err(why) => notes.push(format!("journal checkpoint skipped: {why}")),
        }
    }
    Ok(None)
}

async fn load(store: &dyn Store) -> Result<Loaded> {
    let mut notes = Vec::new();
    if let Some(l) = load_from_latest(store, &mut notes).await? {
        return Ok(l);
    }
    let cps = list_checkpoints(store).await?;
    let (state, head) = match newest_good(store, &cps, false, &mut notes).await? {
        Some((cp, entry)) => (cp.state, Some(entry)),
        None => (State::default(), None),
    };
    let checkpoints: Vec<(u64, bool)> = cps.iter().map(|(s, v, _)| (*s, *v)).collect();
    let last_key = head.as_ref().map(|h| entry_key(h.seq));
    let unpublished =
        head.as_ref().and_then(|h| cps.iter().rev().find(|(s, _, _)| *s == h.seq).map(|(s, v, _)| (*s, *v)));
    let mut l = Loaded { state: Arc::new(state), head, last_key, head_problem: None, checkpoints, notes, unpublished };
    list_tail(store, &mut l).await?;
    Ok(l)
}

/// Load from the checkpoint the pointer names, without a listing. None when there is no pointer
/// or none of the checkpoints it names passes the cheap checks (why goes to `notes`).
async fn load_from_latest(store: &dyn Store, notes: &mut Vec<String>) -> Result<Option<Loaded>> {
    let Some(obj) = store.get(LATEST_KEY).await? else { return Ok(None) };
    let latest: Latest = match serde_json::from_slice(&obj.data) {
        Ok(l) => l,
        Err(e) => {
            notes.push(format!("{LATEST_KEY} skipped: it is not a checkpoint pointer: {e}"));
            return Ok(None);
        }
    };
    let cps: Vec<(u64, bool, String)> = latest.checkpoints.iter().map(|&(s, v)| (s, v, checkpoint_key(s, v))).collect();
    let Some((cp, entry)) = newest_good(store, &cps, false, notes).await? else {
        notes.push(format!("{LATEST_KEY} names no usable checkpoint: listing the index instead"));
        return Ok(None);
    };
    let mut l = Loaded {
        state: Arc::new(cp.state),
        last_key: Some(entry_key(entry.seq)),
        head: Some(entry),
        head_problem: None,
        checkpoints: latest.checkpoints,
        notes: std::mem::take(notes),
        unpublished: None,
    };
    probe_tail(store, &mut l, PROBE_LOAD).await?;
    Ok(Some(l))
}

fn missing(s: &Stored) -> bool {
    matches!(&s.entry, Err(why) if why == "missing")
}

/// Catch up with what other runs appended since this run's head.
async fn catch_up(store: &dyn Store, l: &mut Loaded) -> Result<()> {
    probe_tail(store, l, PROBE_REFRESH).await
}

/// Fold in the entries after the loaded head by reading seq after seq, `first` at a time at first
/// (doubling up to IN_FLIGHT), until the first absent seq. Something present after an absent seq
/// in the same batch is a gap, or an append that landed between two of the reads: either way the
/// listing (`list_tail`) decides from there, as it did before there were pointers.
async fn probe_tail(store: &dyn Store, l: &mut Loaded, first: usize) -> Result<()> {
    let mut next = match l.last_key.as_deref() {
        Some(k) => match key_seq(k) {
            Some(seq) => seq + 1,
            None => return list_tail(store, l).await,
        },
        None => 0,
    };
    let mut batch = first.max(1) as u64;
    loop {
        let got = read_seqs(store, next..next + batch).await?;
        let present = got.iter().take_while(|s| !missing(s)).count();
        let gap = got[present..].iter().any(|s| !missing(s));
        let full = present as u64 == batch;
        absorb(l, got.into_iter().take(present).collect());
        if gap {
            return list_tail(store, l).await;
        }
        if !full {
            return Ok(());
        }
        next += batch;
        batch = (batch * 2).min(IN_FLIGHT as u64);
    }
}

/// Fold in every entry after the loaded head: one listing that starts after its key, then the
/// entries it names, read concurrently.
async fn list_tail(store: &dyn Store, l: &mut Loaded) -> Result<()> {
    let after = l.last_key.clone().unwrap_or_else(|| PREFIX.to_string());
    let keys: Vec<String> =
        store.list_after(PREFIX, &after).await?.into_iter().map(|o| o.key).filter(|k| key_seq(k).is_some()).collect();
    let read: Vec<Stored> = stream::iter(keys)
        .map(|k| read_one(store, k))
        .buffered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    if let Some(s) = read.iter().find(|s| missing(s)) {
        return Err(store_error(store, format!("{} was listed but could not be read", s.key)));
    }
    absorb(l, read);
    Ok(())
}

/// Fold `read` (the entries after the head, in order) in. The last one becomes the head, and
/// must be intact to be chained onto.
fn absorb(l: &mut Loaded, read: Vec<Stored>) {
    let Some(last) = read.last() else { return };
    let state = Arc::make_mut(&mut l.state);
    for s in &read {
        // What does not parse or sits under another seq's key is left to verify-chain to report.
        if let Ok(e) = &s.entry
            && entry_key(e.seq) == s.key
        {
            state.fold(e);
        }
    }
    l.last_key = Some(last.key.clone());
    let (head, problem): (Option<Entry>, Option<String>) = match &last.entry {
        Ok(e) if entry_key(e.seq) != last.key => (None, Some(format!("holds seq {}", e.seq))),
        Ok(e) if compute_hash(e) != e.hash => {
            (None, Some("hash does not match the entry's content: it was edited after it was written".to_string()))
        }
        Ok(e) => (Some(e.clone()), None),
        Err(why) => (None, Some(why.clone())),
    };
    l.head = head;
    l.head_problem = problem.map(|why| (last.key.clone(), why));
}

/// The outcome of `walk`: how far the chain verified, its first break, and the first checkpoint
/// that disagrees with the chain.
pub struct Walked {
    /// Entries verified (from `from_seq`).
    pub entries: u64,
    pub from_seq: u64,
    pub first_bad: Option<Break>,
    pub checkpoints_checked: u64,
    pub bad_checkpoint: Option<(String, String)>,
    /// The state folded from the verified chain (the whole chain when it verified).
    pub state: State,
    /// The checkpoints the index held when the walk listed it, (seq, verified).
    pub checkpoints: Vec<(u64, bool)>,
}

/// Verify the chain entry by entry, IN_FLIGHT reads ahead, in bounded memory: from seq 0, or
/// (`since_verified`) from the newest good `verified-` checkpoint. Every checkpoint passed on the
/// way is compared with the state refolded from the chain.
///
/// `end` is the seq after the head as the caller knows it (`State::next_seq`, found without a
/// listing): reads run ahead only that far, so a short journal is not answered by a hundred
/// absent seqs; what follows (appended meanwhile, or after a gap) is found by listing after the
/// last one. None: unknown, read ahead until a seq is absent.
pub async fn walk(
    store: &dyn Store,
    since_verified: bool,
    end: Option<u64>,
    mut progress: impl FnMut(u64),
) -> Result<Walked> {
    let cps = list_checkpoints(store).await?;
    let mut notes = Vec::new();
    let (mut state, mut verifier, from_seq) = match since_verified {
        true => match newest_good(store, &cps, true, &mut notes).await? {
            Some((cp, entry)) => {
                let from = cp.seq + 1;
                (cp.state, Verifier::after(entry), from)
            }
            None => (State::default(), Verifier::default(), 0),
        },
        false => (State::default(), Verifier::default(), 0),
    };
    let mut out = Walked {
        entries: 0,
        from_seq,
        first_bad: None,
        checkpoints_checked: 0,
        bad_checkpoint: None,
        state: State::default(),
        checkpoints: cps.iter().map(|(s, v, _)| (*s, *v)).collect(),
    };
    let known = from_seq..end.unwrap_or(u64::MAX).max(from_seq);
    let mut reads = stream::iter(known).map(|seq| read_one(store, entry_key(seq))).buffered(WALK_IN_FLIGHT);
    let mut last_seq: Option<u64> = None;
    loop {
        let stored = match reads.next().await {
            Some(s) => s?,
            // Past the known head: as if the next seq were absent, so the listing decides.
            None => Stored { key: entry_key(last_seq.map_or(from_seq, |l| l + 1)), entry: Err("missing".into()) },
        };
        let stored = if missing(&stored) {
            // The end, or a gap: anything listed after the missing key is the entry after the gap.
            let after = last_seq
                .map_or_else(|| if from_seq == 0 { PREFIX.to_string() } else { entry_key(from_seq - 1) }, entry_key);
            let next = store.list_after(PREFIX, &after).await?.into_iter().find(|o| key_seq(&o.key).is_some());
            match next {
                None => break,
                Some(o) => read_one(store, o.key).await?,
            }
        } else {
            stored
        };
        if let Err(b) = verifier.push(&stored) {
            out.first_bad = Some(b);
            break;
        }
        let e = stored.entry.as_ref().expect("a verified entry parsed");
        state.fold(e);
        last_seq = Some(e.seq);
        out.entries += 1;
        progress(out.entries);
        for (_, _, key) in cps.iter().filter(|(s, _, _)| *s == e.seq) {
            out.checkpoints_checked += 1;
            if let Some(why) = compare_checkpoint(store, key, e.seq, &state).await?
                && out.bad_checkpoint.is_none()
            {
                out.bad_checkpoint = Some((key.clone(), why));
            }
        }
    }
    // A checkpoint beyond the chain's end names entries that are not there.
    if out.first_bad.is_none()
        && let Some((_, _, key)) = cps.iter().find(|(s, _, _)| last_seq.is_none_or(|l| *s > l))
        && out.bad_checkpoint.is_none()
    {
        out.bad_checkpoint = Some((key.clone(), "it names an entry beyond the journal's last one".into()));
    }
    out.state = state;
    Ok(out)
}

/// Why the checkpoint at `key` disagrees with `state` (the chain's fold at its seq), if it does.
async fn compare_checkpoint(store: &dyn Store, key: &str, seq: u64, state: &State) -> Result<Option<String>> {
    let Some(obj) = store.get(key).await? else { return Ok(None) };
    let cp: Checkpoint = match serde_json::from_slice(&obj.data) {
        Ok(cp) => cp,
        Err(e) => return Ok(Some(format!("not a checkpoint: {e}"))),
    };
    if cp.version != FOLD_VERSION {
        // Written by another drctl version, which folds differently: not comparable, not damage.
        return Ok(None);
    }
    if let Some(why) = self_check(&cp, seq) {
        return Ok(Some(why));
    }
    if &cp.state != state {
        return Ok(Some(format!(
            "its state differs from the one refolded from entries 0..={seq}: it was edited with a \
             recomputed sha256, or written from a different chain"
        )));
    }
    Ok(None)
}

/// Up to `n` entries counting back from `from` (inclusive), newest first.
pub async fn read_back(store: &dyn Store, from: u64, n: u64) -> Result<Vec<Stored>> {
    let lo = from.saturating_sub(n.saturating_sub(1));
    let mut v = read_seqs(store, lo..=from).await?;
    v.reverse();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use bytes::Bytes;
    use serde_json::{Value, json};

    use super::{CHECKPOINT_EVERY, Checkpoint, Journal, checkpoint_key, list_checkpoints, state_sha256, walk};
    use crate::journal::fold::State;
    use crate::journal::test_store::MemStore;
    use crate::journal::{NewEntry, entries, entry_key, read_all};
    use crate::store::Store;

    fn new_entry(run: &str, event: &str, details: Value) -> NewEntry {
        NewEntry {
            run_id: run.into(),
            runbook: "backup".into(),
            env: Some("prod".into()),
            event: event.into(),
            fences: BTreeMap::from([("env:prod".to_string(), 1)]),
            details,
        }
    }

    /// `n` entries of backup history appended by one writer (one run), checkpoints included.
    async fn history(store: &Arc<MemStore>, n: u64) {
        let j = Journal::new(store.clone(), "w");
        for i in 0..n {
            let id = format!("b{:04}", i / 3);
            let (event, details) = match i % 3 {
                0 => ("run-started", json!({"args": "--env prod"})),
                1 => ("backup-done", json!({"id": id, "manifest_sha256": format!("m{i}")})),
                _ => ("backup-pruned", json!({"id": format!("b{:04}", (i / 3).saturating_sub(2))})),
            };
            j.append(new_entry("w", event, details)).await.unwrap();
        }
    }

    /// The state folded from every entry, the slow way.
    async fn full_fold(store: &MemStore) -> State {
        let mut s = State::default();
        entries(&read_all(store).await.unwrap()).for_each(|e| s.fold(e));
        s
    }

    async fn loaded(store: &Arc<MemStore>) -> State {
        (*Journal::new(store.clone(), "r").state().await.unwrap()).clone()
    }

    async fn edit_checkpoint(store: &MemStore, key: &str, edit: impl FnOnce(&mut Checkpoint)) {
        let mut cp: Checkpoint = serde_json::from_slice(&store.get(key).await.unwrap().unwrap().data).unwrap();
        edit(&mut cp);
        store.put(key, Bytes::from(serde_json::to_vec(&cp).unwrap())).await.unwrap();
    }

    #[tokio::test]
    async fn a_run_reads_the_newest_checkpoint_and_the_tail_only() {
        let store = Arc::new(MemStore::new());
        history(&store, 3 * CHECKPOINT_EVERY + 5).await;
        let cps = list_checkpoints(&*store).await.unwrap();
        let seqs: Vec<u64> = cps.iter().map(|c| c.0).collect();
        assert_eq!(seqs, [2 * CHECKPOINT_EVERY - 1, 3 * CHECKPOINT_EVERY - 1], "every 64 entries, newest 2 kept");
        let (before, lists) = (store.requests(), store.lists());
        let state = loaded(&store).await;
        // The pointer, the checkpoint, its entry, then the 5 entries after it read by seq in a
        // batch of 8 (3 absent): no listing.
        assert_eq!(store.requests() - before, 3 + 8);
        assert_eq!(store.lists() - lists, 0, "found without listing");
        assert_eq!(state, full_fold(&store).await);
        assert_eq!(state.head.as_ref().unwrap().seq, 3 * CHECKPOINT_EVERY + 4);
        let w = walk(&*store, false, None, |_| {}).await.unwrap();
        assert!(w.first_bad.is_none() && w.bad_checkpoint.is_none());
        assert_eq!((w.entries, w.checkpoints_checked), (3 * CHECKPOINT_EVERY + 5, 2));
        assert_eq!(w.state, state);
        // Told where the head is, the walk reads no absent seqs: the index listing, every entry,
        // the two checkpoints, and one listing after the head for anything appended meanwhile.
        let before = store.requests();
        let w = walk(&*store, false, Some(state.next_seq()), |_| {}).await.unwrap();
        assert_eq!(w.entries, 3 * CHECKPOINT_EVERY + 5);
        assert_eq!(store.requests() - before, 1 + 3 * CHECKPOINT_EVERY as usize + 5 + 2 + 1);
    }

    #[tokio::test]
    async fn an_append_costs_the_same_requests_at_100_and_at_5000_entries() {
        let mut costs = Vec::new();
        for n in [100, 5000] {
            let store = Arc::new(MemStore::new());
            history(&store, n).await;
            let state = full_fold(&store).await;
            super::write_checkpoint(&*store, &state, "t", false).await.unwrap();
            super::publish(&*store, &[(state.head.unwrap().seq, false)]).await.unwrap();
            let before = store.requests();
            Journal::new(store.clone(), "a").append(new_entry("a", "step-done", json!({}))).await.unwrap();
            costs.push(store.requests() - before);
        }
        assert_eq!(costs[0], costs[1]);
        // The pointer, the checkpoint, its entry, 8 absent seqs after it, the lock object, the create.
        assert_eq!(costs[0], 3 + 8 + 2);
    }

    #[tokio::test]
    async fn a_damaged_checkpoint_is_skipped_and_reported_by_the_walk() {
        let store = Arc::new(MemStore::new());
        history(&store, 2 * CHECKPOINT_EVERY + 3).await;
        let truth = full_fold(&store).await;
        let newest = checkpoint_key(2 * CHECKPOINT_EVERY - 1, false);
        // Edited without fixing its sha256: a run passes over it to the older one, still right.
        edit_checkpoint(&store, &newest, |cp| {
            cp.state.backups.clear();
        })
        .await;
        let j = Journal::new(store.clone(), "r");
        assert_eq!(*j.state().await.unwrap(), truth);
        assert!(j.notes().await.iter().any(|n| n.contains("does not match its sha256")), "{:?}", j.notes().await);
        let w = walk(&*store, false, None, |_| {}).await.unwrap();
        assert!(w.first_bad.is_none());
        let (key, why) = w.bad_checkpoint.unwrap();
        assert_eq!(key, newest);
        assert!(why.contains("sha256"), "{why}");

        // Edited with the sha256 recomputed: only refolding the chain can tell, and the walk does.
        edit_checkpoint(&store, &newest, |cp| {
            assert!(cp.state.backups.is_empty(), "still the edit above");
            cp.state_sha256 = state_sha256(&cp.state);
        })
        .await;
        let (key, why) = walk(&*store, false, None, |_| {}).await.unwrap().bad_checkpoint.unwrap();
        assert_eq!(key, newest);
        assert!(why.contains("differs from the one refolded"), "{why}");

        // Garbage in a checkpoint is skipped like any damage.
        store.put(&newest, Bytes::from_static(b"{\"version\": 1, trunc")).await.unwrap();
        assert_eq!(loaded(&store).await, truth);
        assert!(walk(&*store, false, None, |_| {}).await.unwrap().bad_checkpoint.is_some());
    }

    #[tokio::test]
    async fn deleted_or_stale_checkpoints_cost_time_never_correctness() {
        let store = Arc::new(MemStore::new());
        history(&store, 2 * CHECKPOINT_EVERY + 7).await;
        let truth = full_fold(&store).await;
        // Deleted: the next older one, or with none, a fold from seq 0.
        store.delete(&checkpoint_key(2 * CHECKPOINT_EVERY - 1, false)).await.unwrap();
        assert_eq!(loaded(&store).await, truth);
        store.delete(&checkpoint_key(CHECKPOINT_EVERY - 1, false)).await.unwrap();
        assert_eq!(loaded(&store).await, truth);

        // Stale: a checkpoint naming an entry the journal no longer holds (the journal was
        // replaced by another one, e.g. a restored copy) is never trusted.
        let other = Arc::new(MemStore::new());
        history(&other, CHECKPOINT_EVERY + 1).await;
        let foreign = checkpoint_key(CHECKPOINT_EVERY - 1, false);
        store.put(&foreign, other.get(&foreign).await.unwrap().unwrap().data).await.unwrap();
        let j = Journal::new(store.clone(), "r");
        assert_eq!(*j.state().await.unwrap(), truth);
        assert!(j.notes().await.iter().any(|n| n.contains("which the journal does not hold")), "{:?}", j.notes().await);
        let (key, _) = walk(&*store, false, None, |_| {}).await.unwrap().bad_checkpoint.unwrap();
        assert_eq!(key, foreign);

        // A checkpoint beyond the head (the journal's newest entries were removed) is skipped
        // too, and the walk names it.
        let store = Arc::new(MemStore::new());
        history(&store, 2 * CHECKPOINT_EVERY + 7).await;
        for seq in (2 * CHECKPOINT_EVERY - 8)..(2 * CHECKPOINT_EVERY + 7) {
            store.delete(&entry_key(seq)).await.unwrap();
        }
        assert_eq!(loaded(&store).await, full_fold(&store).await);
        let (key, why) = walk(&*store, false, None, |_| {}).await.unwrap().bad_checkpoint.unwrap();
        assert_eq!(key, checkpoint_key(2 * CHECKPOINT_EVERY - 1, false));
        assert!(why.contains("beyond the journal's last one"), "{why}");
    }

    #[tokio::test]
    async fn appends_continue_the_chain_after_a_checkpoint_and_a_lost_race() {
        let store = Arc::new(MemStore::new());
        history(&store, CHECKPOINT_EVERY + 2).await;
        // Two runs loaded the same head; the second one's append loses the race and catches up.
        let a = Journal::new(store.clone(), "a");
        let b = Journal::new(store.clone(), "b");
        a.state().await.unwrap();
        b.state().await.unwrap();
        let ea = a.append(new_entry("a", "step-done", json!({}))).await.unwrap();
        let eb = b.append(new_entry("b", "step-done", json!({}))).await.unwrap();
        assert_eq!((ea.seq + 1, eb.prev_hash.clone()), (eb.seq, ea.hash.clone()));
        assert!(walk(&*store, false, None, |_| {}).await.unwrap().first_bad.is_none());
        assert_eq!(*b.state().await.unwrap(), full_fold(&store).await);
    }

    #[tokio::test]
    async fn since_checkpoint_walks_only_what_follows_the_verified_one() {
        let store = Arc::new(MemStore::new());
        history(&store, 100).await;
        let w = walk(&*store, false, None, |_| {}).await.unwrap();
        super::write_checkpoint(&*store, &w.state, "v", true).await.unwrap();
        history(&store, 10).await;
        let w2 = walk(&*store, true, None, |_| {}).await.unwrap();
        assert_eq!((w2.from_seq, w2.entries), (100, 10));
        assert!(w2.first_bad.is_none());
        assert_eq!(w2.state, full_fold(&store).await);
        // Nothing new since the verified checkpoint: nothing to walk, nothing broken.
        super::write_checkpoint(&*store, &w2.state, "v", true).await.unwrap();
        let w3 = walk(&*store, true, Some(110), |_| {}).await.unwrap();
        assert_eq!((w3.from_seq, w3.entries), (110, 0));
        assert!(w3.first_bad.is_none(), "{:?}", w3.first_bad.map(|b| b.reason));
        // An edit below the verified checkpoint is the full walk's to find.
        let key = entry_key(5);
        let mut v: Value = serde_json::from_slice(&store.get(&key).await.unwrap().unwrap().data).unwrap();
        v["details"]["args"] = json!("forged");
        store.put(&key, Bytes::from(serde_json::to_vec(&v).unwrap())).await.unwrap();
        assert!(walk(&*store, true, None, |_| {}).await.unwrap().first_bad.is_none());
        assert_eq!(walk(&*store, false, None, |_| {}).await.unwrap().first_bad.unwrap().index, 5);
    }

    /// What the pointer names, as written.
    async fn latest(store: &MemStore) -> Option<super::Latest> {
        store.get(super::LATEST_KEY).await.unwrap().map(|v| serde_json::from_slice(&v.data).unwrap())
    }

    #[tokio::test]
    async fn the_pointer_follows_the_checkpoints_and_a_lost_or_damaged_one_costs_a_listing() {
        let store = Arc::new(MemStore::new());
        history(&store, 2 * CHECKPOINT_EVERY + 5).await;
        let truth = full_fold(&store).await;
        let cps = latest(&store).await.unwrap().checkpoints;
        assert_eq!(cps, [(CHECKPOINT_EVERY - 1, false), (2 * CHECKPOINT_EVERY - 1, false)]);

        // Deleted: the index and the tail are listed, the state is the same.
        store.delete(super::LATEST_KEY).await.unwrap();
        let lists = store.lists();
        assert_eq!(loaded(&store).await, truth);
        assert_eq!(store.lists() - lists, 2, "the index, then the entries after its newest checkpoint");
        // The next appending run puts it back, naming the checkpoint it loaded from.
        let j = Journal::new(store.clone(), "w2");
        j.append(new_entry("w2", "step-done", json!({}))).await.unwrap();
        assert_eq!(latest(&store).await.unwrap().checkpoints, cps[1..]);

        // Damaged: skipped with a note, never trusted.
        store.put(super::LATEST_KEY, Bytes::from_static(b"{\"checkpoints\": [[99999, fals")).await.unwrap();
        let j = Journal::new(store.clone(), "r");
        assert_eq!(*j.state().await.unwrap(), full_fold(&store).await);
        assert!(j.notes().await.iter().any(|n| n.contains("not a checkpoint pointer")), "{:?}", j.notes().await);

        // Naming checkpoints that are gone or beyond the journal: listed instead.
        super::publish(&*store, &[(5 * CHECKPOINT_EVERY, false), (7, true)]).await.unwrap();
        let j = Journal::new(store.clone(), "r");
        assert_eq!(*j.state().await.unwrap(), full_fold(&store).await);
        assert!(j.notes().await.iter().any(|n| n.contains("names no usable checkpoint")), "{:?}", j.notes().await);
    }

    #[tokio::test]
    async fn a_stale_pointer_costs_a_longer_tail_never_a_wrong_head() {
        let store = Arc::new(MemStore::new());
        history(&store, 4 * CHECKPOINT_EVERY + 3).await;
        // A writer with older knowledge overwrote it: it names the older of the two kept only.
        super::publish(&*store, &[(3 * CHECKPOINT_EVERY - 1, false)]).await.unwrap();
        let truth = full_fold(&store).await;
        let (before, lists) = (store.requests(), store.lists());
        assert_eq!(loaded(&store).await, truth);
        let read = store.requests() - before;
        assert!(read as u64 > CHECKPOINT_EVERY + 3, "read the {} entries after it: {read}", CHECKPOINT_EVERY + 3);
        assert_eq!(store.lists() - lists, 0);
        // The next append finds a checkpoint overdue, writes it and corrects the pointer.
        Journal::new(store.clone(), "w").append(new_entry("w", "step-done", json!({}))).await.unwrap();
        let newest = latest(&store).await.unwrap().checkpoints.last().copied().unwrap();
        assert_eq!(newest, (4 * CHECKPOINT_EVERY + 3, false));
    }

    #[tokio::test]
    async fn an_entry_after_an_absent_seq_is_found_by_listing() {
        // A gap (an entry deleted) or an append landing between two probes: seq head+1 absent,
        // head+2 present. Probing alone would take head as the head; the listing finds the rest.
        let store = Arc::new(MemStore::new());
        history(&store, CHECKPOINT_EVERY + 4).await;
        store.delete(&entry_key(CHECKPOINT_EVERY + 1)).await.unwrap();
        let lists = store.lists();
        let state = loaded(&store).await;
        assert_eq!(state.head.as_ref().unwrap().seq, CHECKPOINT_EVERY + 3);
        assert_eq!(store.lists() - lists, 1);
        assert!(walk(&*store, false, None, |_| {}).await.unwrap().first_bad.is_some(), "and the walk reports the gap");
    }
}
