//! Shared fixtures for every integration test: one PostgreSQL primary (`pg::Cluster::shared`),
//! one moto_server (`moto::Moto::shared`), a runner for the real binary (`drctl::Drctl`) and
//! temporary directories with a generated drctl.toml (`TestDir`).
//!
//! Statics are never dropped, so every server started here is tied to the test process through
//! a pipe its watcher shell reads: when the process exits, however it exits, the pipe closes and
//! the watcher stops the server and removes its files.

#![allow(dead_code, reason = "each test file uses a different part of the harness")]

pub mod archiving;
pub mod drctl;
pub mod fault_proxy;
pub mod http;
pub mod moto;
pub mod pg;
pub mod s3;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A temporary directory for one test: its working directory, config file and local store.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir { dir: tempfile::Builder::new().prefix("drctl-it-").tempdir().expect("create a temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write `drctl.toml` in the directory and return its path.
    pub fn write_config(&self, toml_text: &str) -> PathBuf {
        self.write("drctl.toml", toml_text)
    }

    /// Write `name` (relative to the directory, parents created) and return its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

/// `t_<prefix>_<pid>_<n>`: a database, table or store prefix no concurrent test can also get.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("t_{prefix}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A loopback port free right now. Another process may take it before we bind it, so servers
/// started on it retry with a new one when the bind fails.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Random lowercase hex, for per-run passwords.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("getrandom");
    hex::encode(buf)
}

/// The last `n` lines of a log file, for panic messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Poll `ready` every 50 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: std::time::Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Run `cmd` (a shell command line) with a pseudo-terminal for its stdin and stderr, as an
/// operator's shell would give it (`script`), with `envs` added; after `wait`, call `before` (what
/// must hold while the prompt waits) and type `answer`. Returns the exit code and the whole screen.
pub fn on_tty(
    cmd: &str,
    envs: &[(&str, &str)],
    wait: std::time::Duration,
    answer: &[u8],
    before: impl FnOnce(),
) -> (Option<i32>, String) {
    use std::io::{Read, Write};
    let mut child = std::process::Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn script");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(wait);
    before();
    let _ = stdin.write_all(answer);
    let _ = stdin.flush();
    let status = child.wait().unwrap();
    drop(stdin);
    (status.code(), reader.join().unwrap())
}
