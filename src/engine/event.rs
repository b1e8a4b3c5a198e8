//! Log events the engine and runbooks emit while they run. The engine never prints: `Output`
//! renders these as log lines on stderr.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}
