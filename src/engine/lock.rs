//! Per-target locks in the store (contract "Retention, notification, locking").
//! STUB: to be implemented.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::store::Store;

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

/// A lock this run holds. A background task renews it every ttl/3 until `release`; when a renewal
/// fails (taken over), `lost` is cancelled with the reason available from `lost_reason`.
pub struct HeldLock {
    pub target: String,
    pub fence: u64,
    pub lost: CancellationToken,
    _store: Arc<dyn Store>,
}

impl HeldLock {
    /// Read the lock object again and fail with `Error::LockLost` unless this run still holds it.
    pub async fn confirm(&self) -> Result<()> {
        todo!()
    }
    pub fn lost_reason(&self) -> Option<String> {
        todo!()
    }
    /// Mark released (If-Match) and stop renewing.
    pub async fn release(&self) -> Result<()> {
        todo!()
    }
}

/// Take `target` (`env:prod`, `dns`): create, or take over a released / expired / dead-local one.
pub async fn acquire(_store: Arc<dyn Store>, _target: &str, _who: &Requester) -> Result<HeldLock> {
    todo!()
}

/// Read a lock without taking it (for cleanup decisions and `status`).
pub async fn read(_store: &dyn Store, _target: &str) -> Result<Option<LockInfo>> {
    todo!()
}
