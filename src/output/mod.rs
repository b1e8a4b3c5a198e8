//! The only code that writes to stdout and stderr: tables, the JSON document, log lines, progress.
//!
//! stdout carries the report (a comfy-table table, or exactly one JSON document with `-o json`).
//! stderr carries log lines and progress. Off a TTY (cron), log lines carry an RFC 3339 timestamp
//! and the run id, and informational lines appear only with `-v`. With `-q` a successful run prints
//! nothing at all, its report included (`lib.rs` render): cron mails whatever is printed, so a
//! healthy run is silent and a failing one is loud.

pub mod metrics;
pub mod progress;
pub mod table;

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use crate::cli::{Global, LogFormat, OutputFormat};
use crate::engine::event::Level;
use crate::error::Error;

pub struct Output {
    pub format: OutputFormat,
    log_format: LogFormat,
    max_level: Level,
    stderr_tty: bool,
    stdout_tty: bool,
    quiet: bool,
    progress: bool,
    run_id: Mutex<String>,
}

impl Output {
    pub fn new(g: &Global) -> Output {
        let stderr_tty = std::io::stderr().is_terminal();
        let max_level = if g.quiet {
            Level::Error
        } else {
            match (g.verbose, stderr_tty) {
                (0, true) => Level::Info,
                (0, false) => Level::Warn,
                (1, false) => Level::Info,
                _ => Level::Debug,
            }
        };
        Output {
            format: g.output,
            log_format: g.log_format,
            max_level,
            stderr_tty,
            stdout_tty: std::io::stdout().is_terminal(),
            quiet: g.quiet,
            progress: stderr_tty && !g.no_progress && !g.quiet,
            run_id: Mutex::new(String::new()),
        }
    }

    pub fn set_run_id(&self, id: &str) {
        *self.run_id.lock().expect("run id lock") = id.to_string();
    }

    pub fn json_mode(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// `-q`: a successful run prints no report; a failed one still does.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// Whether stdout is a terminal: off one, long listings are one plain line per entry.
    pub fn stdout_tty(&self) -> bool {
        self.stdout_tty
    }

    pub fn log(&self, level: Level, msg: &str) {
        if level > self.max_level {
            return;
        }
        let run_id = self.run_id.lock().expect("run id lock").clone();
        let label = match level {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
        };
        let line = match self.log_format {
            LogFormat::Json => serde_json::json!({
                "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                "level": label, "run_id": run_id, "msg": msg,
            })
            .to_string(),
            LogFormat::Text if self.stderr_tty => format!("{label}: {msg}"),
            LogFormat::Text => format!(
                "{} {} {label}: {msg}",
                humantime::format_rfc3339_millis(std::time::SystemTime::now()),
                if run_id.is_empty() { "-" } else { &run_id }
            ),
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    pub fn info(&self, msg: &str) {
        self.log(Level::Info, msg)
    }

    pub fn warn(&self, msg: &str) {
        self.log(Level::Warn, msg)
    }

    pub fn debug(&self, msg: &str) {
        self.log(Level::Debug, msg)
    }

    /// A byte or item counter: an indicatif bar on a TTY, nothing otherwise.
    pub fn progress(&self, label: &str, total: Option<u64>, bytes: bool) -> progress::Progress {
        progress::Progress::new(self.progress, label, total, bytes)
    }

    /// The one JSON document of a run.
    pub fn json(&self, doc: &serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer_pretty(&mut out, doc);
        let _ = writeln!(out);
    }

    /// Plain text on stdout (tables, completions, the man page).
    pub fn text(&self, s: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(s.as_bytes());
        if !s.ends_with('\n') {
            let _ = writeln!(out);
        }
    }

    pub fn bytes(&self, b: &[u8]) {
        let _ = std::io::stdout().lock().write_all(b);
    }

    /// The checks and the plan, on stderr before a confirmation prompt (stdout keeps the one
    /// report printed at the end).
    pub fn plan(&self, report_text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{report_text}");
    }

    /// `error: …` and `hint: …` on stderr, once, whatever the output format.
    pub fn error(&self, e: &Error) {
        self.error_hinted(e, e.hint())
    }

    /// The same, with a hint the caller knows better than the error (a runbook's own rerun advice).
    pub fn error_hinted(&self, e: &Error, hint: Option<String>) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "error: {e}");
        if let Some(h) = hint {
            let _ = writeln!(err, "hint: {h}");
        }
    }
}

/// `error: …` and `hint: …` on stderr, for a command line that failed before any `Output` could
/// be made from it.
pub fn error_line(e: &Error) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {e}");
    if let Some(h) = e.hint() {
        let _ = writeln!(err, "hint: {h}");
    }
}

/// From here on, a panic prints one `error: CONTEXT: …` line and `hint: HINT` instead of Rust's
/// panic message (for wal-fetch, whose every failure must read as one error line and exit 126).
pub fn panic_as_error(context: String, hint: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "error: {context}: drctl panicked (a bug: please report it): {what}{at}");
        let _ = writeln!(err, "hint: {hint}");
    }));
}
