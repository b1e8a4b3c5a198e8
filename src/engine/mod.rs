//! The engine: steps, the run loop, locks. It never prints: reports go back to `output`.

pub mod event;
pub mod lock;
pub mod report;
pub mod run;
pub mod runctx;
pub mod step;

#[cfg(test)]
mod compose_test;
