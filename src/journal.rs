//! The journal: an append-only, hash-chained sequence of entries in the store at
//! `journal/<seq as 20 zero-padded digits>.json` (contract "Journal").
//! STUB: to be implemented.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::store::Store;

pub const GENESIS_PREV_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds and `Z`.
    pub time: String,
    pub run_id: String,
    pub runbook: String,
    pub env: Option<String>,
    pub event: String,
    pub fences: BTreeMap<String, u64>,
    pub details: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// What a writer supplies; seq, time, prev_hash and hash are filled in by `append`.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub run_id: String,
    pub runbook: String,
    pub env: Option<String>,
    pub event: String,
    pub fences: BTreeMap<String, u64>,
    pub details: Value,
}

/// One stored entry as read back: its key, and the parsed entry or why it could not be parsed.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: String,
    pub entry: std::result::Result<Entry, String>,
}

/// The first break found by `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// 0-based position in key order.
    pub index: usize,
    /// The entry's key (`journal/000…07.json`).
    pub key: String,
    pub reason: String,
}

pub fn entry_key(seq: u64) -> String {
    format!("journal/{seq:020}.json")
}

/// RFC 8785 canonical bytes of `entry` without its `hash` field.
pub fn canonical_bytes(_entry: &Entry) -> Vec<u8> {
    todo!()
}

/// Lowercase hex sha256 of the canonical bytes.
pub fn compute_hash(_entry: &Entry) -> String {
    todo!()
}

/// Append one entry after the current head; retries on a lost race for the seq.
pub async fn append(_store: &dyn Store, _new: NewEntry) -> Result<Entry> {
    todo!()
}

/// Every entry in seq order (key order).
pub async fn read_all(_store: &dyn Store) -> Result<Vec<Stored>> {
    todo!()
}

/// Check seq continuity, prev_hash links and every hash; the first break, if any.
pub fn verify(_entries: &[Stored]) -> std::result::Result<usize, Break> {
    todo!()
}
