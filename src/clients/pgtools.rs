//! pg_dump / pg_restore / pg_basebackup / pg_ctl as streamed child processes. STUB.

use std::path::{Path, PathBuf};

use crate::dburl::DbUrl;
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct PgTools {
    bin_dir: Option<PathBuf>,
}

/// A running child: its stdout to stream from, and its stderr drained concurrently.
pub struct Running {
    pub stdout: Option<tokio::process::ChildStdout>,
    pub stdin: Option<tokio::process::ChildStdin>,
    child: tokio::process::Child,
    tool: String,
    stderr: tokio::task::JoinHandle<String>,
}

impl PgTools {
    pub fn new(bin_dir: Option<&Path>) -> Self {
        PgTools { bin_dir: bin_dir.map(Path::to_path_buf) }
    }

    /// Path of `tool` (pg_bin/tool, else tool on PATH).
    pub fn path(&self, tool: &str) -> PathBuf {
        match &self.bin_dir {
            Some(d) => d.join(tool),
            None => PathBuf::from(tool),
        }
    }

    /// Major version of `tool` from `tool --version` (e.g. 15 from "pg_dump (PostgreSQL) 15.18").
    pub async fn major_version(&self, _tool: &str) -> Result<u32> {
        todo!()
    }

    /// Start `tool args…` connected to `url` through PG* env vars (password in PGPASSWORD, never in
    /// argv), stdin null unless `stdin_piped`, stdout piped, stderr drained, killed on drop and by
    /// the parent-death signal.
    pub fn spawn(&self, _tool: &str, _args: &[&str], _url: Option<&DbUrl>, _stdin_piped: bool) -> Result<Running> {
        todo!()
    }
}

impl Running {
    /// Wait for exit; a non-zero status is `Error::Step` naming the tool, status and stderr's tail.
    pub async fn wait(self) -> Result<String> {
        let _ = (&self.child, &self.tool, &self.stderr);
        todo!()
    }
}
