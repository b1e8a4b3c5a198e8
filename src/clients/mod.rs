//! Clients of the outside world, built once per process and shared through `Ctx`.

pub mod aws;
pub mod dns;
pub mod pg;
pub mod pgtools;
pub mod rds;
