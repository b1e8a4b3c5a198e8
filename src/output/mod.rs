//! The only code that writes to stdout and stderr: tables, the JSON document, log lines, progress.

pub struct Output {}
