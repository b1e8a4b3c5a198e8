//! drctl: disaster-recovery runbooks for PostgreSQL on AWS, as idempotent, preflight-checked steps.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod cli;
pub mod clients;
pub mod config;
pub mod ctx;
pub mod dburl;
pub mod engine;
pub mod error;
pub mod journal;
pub mod output;
pub mod runbooks;
pub mod store;
