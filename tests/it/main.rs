//! The one integration binary: every scenario drives the real `drctl` against a real PostgreSQL
//! and moto_server, started once per process by `harness`.

mod age;
mod audit;
mod backup;
mod base_backup;
mod check;
mod cli;
mod clients;
mod config;
mod dns_cutover;
mod docs;
mod drill;
mod failover;
mod faults;
mod harness;
mod journal;
mod notify;
mod pitr;
mod pitr_local;
mod promote_replica;
mod smoke;
mod store_private;
mod sync;
mod sync_parallel;
mod verify_chain;
mod wal;
