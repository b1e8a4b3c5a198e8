//! The engine: steps, the run loop, locks.

pub mod lock;
pub mod step;
