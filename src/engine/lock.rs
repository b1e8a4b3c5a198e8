//! Per-target locks in the store (contract "Retention, notification, locking").
//!
//! Each target (`env:prod`, `dns`) has one small object `locks/<target>.json` that is never deleted,
//! so its fence only ever grows. This module owns acquiring it (create, or compare-and-swap takeover
//! of a released, expired or dead-local one), renewing it in the background, noticing when it was
//! taken over, and releasing it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::store::Store;

/// How often a waiting `acquire` looks again at a held lock.
const WAIT_POLL: Duration = Duration::from_secs(1);

/// The lock object `locks/<target>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub holder: String,
    pub host: String,
    pub boot_id: String,
    pub pid: u32,
    pub pid_start: u64,
    pub run_id: String,
    pub since: String,
    pub expires: String,
    pub fence: u64,
    pub released: bool,
}

pub fn lock_key(target: &str) -> String {
    format!("locks/{target}.json")
}

/// Who is asking for the lock.
#[derive(Debug, Clone)]
pub struct Requester {
    /// e.g. `backup --env prod`
    pub holder: String,
    pub run_id: String,
    pub ttl: Duration,
    /// `--lock-wait`: how long to wait for a live holder; None = fail at once.
    pub wait: Option<Duration>,
}

/// The previous holder of a lock this run took over before it was released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    pub previous: LockInfo,
    /// e.g. `it expired at 2024-05-01T12:00:00.000Z`, for the journal.
    pub why: String,
}

/// What the renewal task and the handle share.
struct Shared {
    /// The version we last wrote or confirmed as ours; None after a write whose result we could not
    /// read back, until the next read settles it.
    etag: Option<String>,
    /// Our object as last written (the expiry moves on each renewal).
    info: LockInfo,
    lost_reason: Option<String>,
}

/// A lock this run holds. A background task renews it every ttl/3 until `release`; when a renewal
/// fails (taken over), `lost` is cancelled with the reason available from `lost_reason`.
pub struct HeldLock {
    pub target: String,
    pub fence: u64,
    pub lost: CancellationToken,
    /// Set when this run took the lock from a holder that had not released it.
    pub took_over: Option<Takeover>,
    store: Arc<dyn Store>,
    key: String,
    shared: Arc<Mutex<Shared>>,
    stop: CancellationToken,
    renewer: Mutex<Option<JoinHandle<()>>>,
}

impl HeldLock {
    /// Read the lock object again and fail with `Error::LockLost` unless this run still holds it.
    pub async fn confirm(&self) -> Result<()> {
        if let Some(why) = self.lost_reason() {
            return Err(self.lost_error(why));
        }
        let ours = self.shared.lock().unwrap().info.clone();
        let current = read_versioned(self.store.as_ref(), &self.key).await?;
        match not_ours(current.as_ref().map(|(info, _)| info), &ours) {
            None => Ok(()),
            Some(why) => Err(self.lost_error(why)),
        }
    }

    pub fn lost_reason(&self) -> Option<String> {
        self.shared.lock().unwrap().lost_reason.clone()
    }

    /// Mark released (If-Match) and stop renewing. Calling it again does nothing more.
    pub async fn release(&self) -> Result<()> {
        self.stop.cancel();
        let renewer = self.renewer.lock().unwrap().take();
        if let Some(handle) = renewer {
            // Wait out a renewal in flight, so the etag we write against is the latest one.
            let _ = handle.await;
        }
        let ours = self.shared.lock().unwrap().info.clone();
        loop {
            let Some((current, etag)) = read_versioned(self.store.as_ref(), &self.key).await? else {
                return Ok(());
            };
            if not_ours(Some(&current), &ours).is_some() {
                // Released already, or someone else's now: nothing of ours to release.
                return Ok(());
            }
            let released = LockInfo { released: true, ..current };
            if self.store.put_if_match(&self.key, to_bytes(&released), &etag).await? {
                return Ok(());
            }
            // Changed under us (a renewal's write landing late): look again.
        }
    }

    fn lost_error(&self, why: String) -> Error {
        Error::LockLost { target: self.target.clone(), why }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        // A handle dropped without `release` stops renewing, so the lock expires instead of being
        // kept alive by an orphaned task.
        self.stop.cancel();
    }
}

/// Take `target` (`env:prod`, `dns`): create, or take over a released / expired / dead-local one.
pub async fn acquire(store: Arc<dyn Store>, target: &str, who: &Requester) -> Result<HeldLock> {
    acquire_over(store, target, who, |_| false).await
}

/// `acquire`, also taking over a live holder that `may_take` accepts (failover over its target's
/// sync). The takeover is reported in `HeldLock::took_over` for the journal.
pub async fn acquire_over(
    store: Arc<dyn Store>,
    target: &str,
    who: &Requester,
    may_take: impl Fn(&LockInfo) -> bool,
) -> Result<HeldLock> {
    let key = lock_key(target);
    let me = Process::current();
    let deadline = who.wait.map(|w| Instant::now() + w);
    loop {
        let now = store.now().await?;
        let fresh = |fence: u64| LockInfo {
            holder: who.holder.clone(),
            host: me.host.clone(),
            boot_id: me.boot_id.clone(),
            pid: me.pid,
            pid_start: me.pid_start,
            run_id: who.run_id.clone(),
            since: fmt_time(now),
            expires: fmt_time(now + who.ttl),
            fence,
            released: false,
        };
        let (info, took_over) = match read_versioned(store.as_ref(), &key).await? {
            None => {
                let info = fresh(1);
                if !store.put_if_absent(&key, to_bytes(&info)).await? {
                    continue;
                }
                (info, None)
            }
            // Our own write whose reply was lost (the retried conditional request then failed):
            // the lock is this run's already.
            Some((current, _)) if current.run_id == who.run_id && !current.released && current.pid == me.pid => {
                (current, None)
            }
            Some((current, etag)) => {
                let why = match free_because(&current, now, &me, &key)? {
                    Some(why) => Some(why),
                    None if may_take(&current) => Some(format!("{} may be taken over", current.holder)),
                    None => None,
                };
                let Some(why) = why else {
                    let remaining = deadline.and_then(|d| d.checked_duration_since(Instant::now()));
                    match remaining.filter(|r| !r.is_zero()) {
                        Some(r) => {
                            tokio::time::sleep(r.min(WAIT_POLL)).await;
                            continue;
                        }
                        None => {
                            return Err(Error::Locked {
                                target: target.to_owned(),
                                holder: current.holder,
                                host: current.host,
                                pid: current.pid,
                                since: current.since,
                            });
                        }
                    }
                };
                let info = fresh(current.fence + 1);
                if !store.put_if_match(&key, to_bytes(&info), &etag).await? {
                    continue;
                }
                let took_over = (!current.released).then_some(Takeover { previous: current, why });
                (info, took_over)
            }
        };
        // put_if_* does not return the new version; read it back, and make sure it is still ours.
        let etag = match read_versioned(store.as_ref(), &key).await? {
            Some((current, etag)) if not_ours(Some(&current), &info).is_none() => etag,
            _ => continue,
        };
        return Ok(start(store, target, key, info, etag, who.ttl, took_over));
    }
}

/// Read a lock without taking it (for cleanup decisions and `status`).
pub async fn read(store: &dyn Store, target: &str) -> Result<Option<LockInfo>> {
    Ok(read_versioned(store, &lock_key(target)).await?.map(|(info, _)| info))
}

async fn read_versioned(store: &dyn Store, key: &str) -> Result<Option<(LockInfo, String)>> {
    let Some(obj) = store.get(key).await? else {
        return Ok(None);
    };
    let info = serde_json::from_slice(&obj.data)
        .map_err(|e| Error::integrity("locks", key, format!("not a lock object: {e}")))?;
    Ok(Some((info, obj.etag)))
}

fn to_bytes(info: &LockInfo) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(info).expect("a LockInfo always serialises"))
}

fn fmt_time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Why `current` is not (or no longer) the lock `ours` describes; None when it is ours and held.
fn not_ours(current: Option<&LockInfo>, ours: &LockInfo) -> Option<String> {
    let Some(c) = current else {
        return Some("the lock object is gone".to_owned());
    };
    if c.run_id != ours.run_id || c.fence != ours.fence {
        Some(format!(
            "taken over by {} on {} (pid {}, run {}, fence {}) since {}",
            c.holder, c.host, c.pid, c.run_id, c.fence, c.since
        ))
    } else if c.released {
        Some("it was released".to_owned())
    } else {
        None
    }
}

/// Why `current` may be taken now, or None while its holder is live.
fn free_because(current: &LockInfo, now: SystemTime, me: &Process, key: &str) -> Result<Option<String>> {
    if current.released {
        return Ok(Some("it was released".to_owned()));
    }
    let expires = humantime::parse_rfc3339(&current.expires).map_err(|e| {
        Error::integrity("locks", key, format!("expires `{}` is not an RFC 3339 time: {e}", current.expires))
    })?;
    if expires <= now {
        return Ok(Some(format!("it expired at {}", current.expires)));
    }
    // Same boot id = same host and same boot, so its pid space is ours to look at.
    if !me.boot_id.is_empty() && current.boot_id == me.boot_id {
        match pid_start(current.pid) {
            None => {
                return Ok(Some(format!("its holder, pid {} on this host, is gone", current.pid)));
            }
            Some(start) if start != current.pid_start => {
                return Ok(Some(format!(
                    "its holder, pid {} on this host, is gone (the pid now belongs to a later process)",
                    current.pid
                )));
            }
            Some(_) => {}
        }
    }
    Ok(None)
}

/// This process, as a lock records it.
struct Process {
    host: String,
    boot_id: String,
    pid: u32,
    pid_start: u64,
}

impl Process {
    fn current() -> Self {
        let pid = std::process::id();
        Process {
            host: hostname(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            pid,
            pid_start: pid_start(pid).unwrap_or(0),
        }
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, and gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".to_owned();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// Start time (clock ticks since boot, field 22 of /proc/PID/stat) of a running pid, or None.
fn pid_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; it ends at the last ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // after_comm starts at field 3 (state), so field 22 is the 20th.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

fn start(
    store: Arc<dyn Store>,
    target: &str,
    key: String,
    info: LockInfo,
    etag: String,
    ttl: Duration,
    took_over: Option<Takeover>,
) -> HeldLock {
    let fence = info.fence;
    let shared = Arc::new(Mutex::new(Shared { etag: Some(etag), info, lost_reason: None }));
    let lost = CancellationToken::new();
    let stop = CancellationToken::new();
    let renewal = Renewal {
        store: store.clone(),
        key: key.clone(),
        ttl,
        shared: shared.clone(),
        lost: lost.clone(),
        stop: stop.clone(),
    };
    let handle = tokio::spawn(renewal.run());
    HeldLock {
        target: target.to_owned(),
        fence,
        lost,
        took_over,
        store,
        key,
        shared,
        stop,
        renewer: Mutex::new(Some(handle)),
    }
}

struct Renewal {
    store: Arc<dyn Store>,
    key: String,
    ttl: Duration,
    shared: Arc<Mutex<Shared>>,
    lost: CancellationToken,
    stop: CancellationToken,
}

enum Renewed {
    Extended,
    /// The object is still ours but our write did not land (our own earlier write moved its etag).
    Retry,
    Lost(String),
}

impl Renewal {
    async fn run(self) {
        // By this host's clock: when renewals fail we cannot ask the store for its time.
        let mut valid_until = Instant::now() + self.ttl;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(self.ttl / 3) => {}
            }
            let mut outcome = self.renew_once().await;
            if matches!(outcome, Ok(Renewed::Retry)) {
                outcome = self.renew_once().await;
            }
            let lost = match outcome {
                Ok(Renewed::Extended) => {
                    valid_until = Instant::now() + self.ttl;
                    continue;
                }
                Ok(Renewed::Lost(why)) => why,
                Ok(Renewed::Retry) => "it changed under every renewal".to_owned(),
                // Transient, and the lock still has time: the next tick tries again.
                Err(_) if Instant::now() + self.ttl / 3 < valid_until => continue,
                Err(e) => format!("could not renew it before it expired: {e}"),
            };
            if self.stop.is_cancelled() {
                // `release` is running: what we saw is its doing or its concern, not a takeover.
                return;
            }
            self.shared.lock().unwrap().lost_reason = Some(lost);
            self.lost.cancel();
            return;
        }
    }

    async fn renew_once(&self) -> Result<Renewed> {
        let now = self.store.now().await?;
        let (ours, etag) = {
            let s = self.shared.lock().unwrap();
            (s.info.clone(), s.etag.clone())
        };
        let renewed = LockInfo { expires: fmt_time(now + self.ttl), ..ours.clone() };
        let wrote = match &etag {
            Some(etag) => self.store.put_if_match(&self.key, to_bytes(&renewed), etag).await?,
            None => false,
        };
        if wrote {
            let mut s = self.shared.lock().unwrap();
            s.info = renewed.clone();
            // Until the read below succeeds we do not know the new version.
            s.etag = None;
        }
        let current = read_versioned(self.store.as_ref(), &self.key).await?;
        if let Some(why) = not_ours(current.as_ref().map(|(info, _)| info), &ours) {
            return Ok(Renewed::Lost(why));
        }
        let (current, etag) = current.expect("not_ours returns a reason for a missing object");
        let mut s = self.shared.lock().unwrap();
        s.etag = Some(etag);
        s.info = current;
        Ok(if wrote { Renewed::Extended } else { Renewed::Retry })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::{LockInfo, Process, Requester, acquire, acquire_over, lock_key, pid_start, read};
    use crate::error::Error;
    use crate::journal::test_store::MemStore;
    use crate::store::Store;

    fn who(run_id: &str, ttl_ms: u64) -> Requester {
        Requester {
            holder: format!("backup --env prod ({run_id})"),
            run_id: run_id.to_owned(),
            ttl: Duration::from_millis(ttl_ms),
            wait: None,
        }
    }

    fn mem() -> (Arc<MemStore>, Arc<dyn Store>) {
        let mem = Arc::new(MemStore::new());
        let store: Arc<dyn Store> = mem.clone();
        (mem, store)
    }

    /// A lock written by "another run" on this host, as if its process were `pid` started at `start`.
    async fn plant(store: &dyn Store, target: &str, pid: u32, start: u64, fence: u64) {
        let me = Process::current();
        let now = store.now().await.unwrap();
        let info = LockInfo {
            holder: "sync --from prod --to dr".to_owned(),
            host: me.host,
            boot_id: me.boot_id,
            pid,
            pid_start: start,
            run_id: "r-planted".to_owned(),
            since: super::fmt_time(now),
            expires: super::fmt_time(now + Duration::from_secs(3600)),
            fence,
            released: false,
        };
        store.put(&lock_key(target), Bytes::from(serde_json::to_vec(&info).unwrap())).await.unwrap();
    }

    #[test]
    fn handle_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::HeldLock>();
    }

    #[test]
    fn own_process_identity_is_read_from_proc() {
        let me = Process::current();
        assert!(!me.host.is_empty());
        assert_eq!(me.boot_id.len(), 36, "a uuid: {}", me.boot_id);
        assert!(me.pid_start > 0);
        assert_eq!(pid_start(0x7fff_fff0), None);
    }

    #[tokio::test]
    async fn acquire_conflict_release_and_reacquire() {
        let (_, store) = mem();
        let a = acquire(store.clone(), "env:prod", &who("r-a", 3000)).await.unwrap();
        assert_eq!(a.fence, 1);
        assert!(a.took_over.is_none());
        let info = read(store.as_ref(), "env:prod").await.unwrap().unwrap();
        assert_eq!((info.run_id.as_str(), info.fence, info.released), ("r-a", 1, false));
        assert_eq!(info.pid, std::process::id());

        let err = acquire(store.clone(), "env:prod", &who("r-b", 3000)).await.err().unwrap();
        match &err {
            Error::Locked { target, holder, pid, .. } => {
                assert_eq!((target.as_str(), holder.as_str()), ("env:prod", "backup --env prod (r-a)"));
                assert_eq!(*pid, std::process::id());
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        assert_eq!(err.exit_code(), 5);
        a.confirm().await.unwrap();

        a.release().await.unwrap();
        a.release().await.unwrap();
        assert!(read(store.as_ref(), "env:prod").await.unwrap().unwrap().released);
        assert!(matches!(a.confirm().await, Err(Error::LockLost { .. })));

        let b = acquire(store.clone(), "env:prod", &who("r-b", 3000)).await.unwrap();
        assert_eq!(b.fence, 2);
        assert!(b.took_over.is_none(), "a released lock is not a takeover");
        // Another target is independent.
        let d = acquire(store.clone(), "dns", &who("r-a", 3000)).await.unwrap();
        assert_eq!(d.fence, 1);
        // Releasing the old handle again must not touch the new holder's lock.
        a.release().await.unwrap();
        b.confirm().await.unwrap();
        b.release().await.unwrap();
        d.release().await.unwrap();
    }

    #[tokio::test]
    async fn renewal_moves_the_expiry_forward() {
        let (_, store) = mem();
        let a = acquire(store.clone(), "env:prod", &who("r-a", 300)).await.unwrap();
        let first = read(store.as_ref(), "env:prod").await.unwrap().unwrap().expires;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let later = read(store.as_ref(), "env:prod").await.unwrap().unwrap();
        assert!(later.expires > first, "{} should be after {first}", later.expires);
        assert_eq!(later.fence, 1);
        assert!(!a.lost.is_cancelled());
        a.confirm().await.unwrap();
        // Still held long past the first ttl: another run is refused.
        assert!(matches!(acquire(store.clone(), "env:prod", &who("r-b", 300)).await, Err(Error::Locked { .. })));
        a.release().await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_lock_is_taken_over_and_the_old_holder_notices() {
        let (mem, store) = mem();
        // Renews every 500 ms: the takeover below happens well before the first renewal.
        let a = acquire(store.clone(), "env:prod", &who("r-a", 1500)).await.unwrap();
        mem.set_clock_offset(Duration::from_secs(10));
        let b = acquire(store.clone(), "env:prod", &who("r-b", 1500)).await.unwrap();
        assert_eq!(b.fence, 2);
        let took = b.took_over.clone().expect("the lock was not released: a takeover");
        assert_eq!(took.previous.run_id, "r-a");
        assert!(took.why.starts_with("it expired at "), "{}", took.why);

        tokio::time::timeout(Duration::from_secs(3), a.lost.cancelled()).await.expect("a notices the loss");
        let why = a.lost_reason().unwrap();
        assert!(why.contains("run r-b, fence 2"), "{why}");
        match a.confirm().await {
            Err(Error::LockLost { target, .. }) => assert_eq!(target, "env:prod"),
            other => panic!("expected LockLost, got {other:?}"),
        }
        // The loser's release leaves the winner's lock alone.
        a.release().await.unwrap();
        b.confirm().await.unwrap();
        b.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_dead_holder_on_this_host_is_taken_over_at_once() {
        let (_, store) = mem();
        // A pid above any pid_max: no such process.
        plant(store.as_ref(), "env:prod", 0x7fff_fff0, 12345, 4).await;
        let a = acquire(store.clone(), "env:prod", &who("r-a", 3000)).await.unwrap();
        assert_eq!(a.fence, 5);
        assert!(a.took_over.as_ref().unwrap().why.contains("is gone"));
        a.release().await.unwrap();

        // A child that ran and was reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        plant(store.as_ref(), "env:prod", pid, 1, 9).await;
        let b = acquire(store.clone(), "env:prod", &who("r-b", 3000)).await.unwrap();
        assert_eq!(b.fence, 10);
        b.release().await.unwrap();

        // A pid that is alive but started at another time: the holder died and its pid was reused.
        let me = Process::current();
        plant(store.as_ref(), "env:prod", me.pid, me.pid_start + 1, 11).await;
        let c = acquire(store.clone(), "env:prod", &who("r-c", 3000)).await.unwrap();
        assert_eq!(c.fence, 12);
        c.release().await.unwrap();

        // The same pid with its real start time is a live holder.
        plant(store.as_ref(), "env:prod", me.pid, me.pid_start, 13).await;
        let err = acquire(store.clone(), "env:prod", &who("r-d", 3000)).await.err().unwrap();
        assert!(matches!(err, Error::Locked { ref holder, .. } if holder == "sync --from prod --to dr"));

        // ...unless the requester may take it over (failover over its target's sync).
        let f = acquire_over(store.clone(), "env:prod", &who("r-f", 3000), |l| l.holder.starts_with("sync "))
            .await
            .unwrap();
        assert_eq!(f.fence, 14);
        assert_eq!(f.took_over.as_ref().unwrap().previous.run_id, "r-planted");
        f.release().await.unwrap();
    }

    #[tokio::test]
    async fn wait_succeeds_when_the_holder_releases() {
        let (_, store) = mem();
        let a = Arc::new(acquire(store.clone(), "env:prod", &who("r-a", 3000)).await.unwrap());
        let releaser = {
            let a = a.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                a.release().await.unwrap();
            })
        };
        let mut waiting = who("r-b", 3000);
        waiting.wait = Some(Duration::from_secs(3));
        let b = acquire(store.clone(), "env:prod", &waiting).await.unwrap();
        assert_eq!(b.fence, 2);
        releaser.await.unwrap();
        b.release().await.unwrap();
    }

    #[tokio::test]
    async fn wait_gives_up_at_its_deadline() {
        let (_, store) = mem();
        let a = acquire(store.clone(), "env:prod", &who("r-a", 3000)).await.unwrap();
        let mut waiting = who("r-b", 3000);
        waiting.wait = Some(Duration::from_millis(200));
        let err = acquire(store.clone(), "env:prod", &waiting).await.err().unwrap();
        assert!(matches!(err, Error::Locked { .. }), "{err:?}");
        a.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_garbage_lock_object_is_an_integrity_failure() {
        let (_, store) = mem();
        store.put(&lock_key("dns"), Bytes::from_static(b"{not json")).await.unwrap();
        let err = acquire(store.clone(), "dns", &who("r-a", 3000)).await.err().unwrap();
        assert!(matches!(&err, Error::Integrity { at, .. } if at == "locks/dns.json"), "{err:?}");
    }
}
