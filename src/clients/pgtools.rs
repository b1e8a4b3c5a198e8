//! pg_dump / pg_restore / pg_basebackup / pg_ctl as streamed child processes.
//!
//! Every child gets its connection through libpq's `PG*` environment variables (the password only
//! in `PGPASSWORD`, never in argv, where `ps` shows it), streams stdout to the caller, and has its
//! stderr drained concurrently into a bounded buffer, so a chatty child can never block on a full
//! pipe (ripgrep's crates/cli/src/process.rs does the same, synchronously). No child outlives
//! drctl: it is killed when its `Running` is dropped and, through the parent-death signal, when
//! drctl dies, even by SIGKILL.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::io::AsyncReadExt;

use crate::dburl::DbUrl;
use crate::error::{Error, Result};

/// How much of a child's stderr is kept: the end, where the fatal message is.
const STDERR_TAIL: usize = 8 * 1024;

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

    /// `pg_ctl stop -m fast -w` of the server in `data_dir` (on this host): sessions are ended,
    /// the WAL is flushed to the streaming replicas, and the server exits. pg_ctl refuses to run
    /// as root, so as root it runs as the data directory's owner (`runuser`), as an operator would.
    pub async fn stop_server(&self, data_dir: &Path) -> Result<()> {
        self.pg_ctl(data_dir, "stop", &["-m", "fast"]).await
    }

    /// `pg_ctl stop -m immediate`: for a scratch server whose data is thrown away next.
    pub async fn stop_server_immediate(&self, data_dir: &Path) -> Result<()> {
        self.pg_ctl(data_dir, "stop", &["-m", "immediate"]).await
    }

    /// `pg_ctl start -w` of the server in `data_dir`, its output appended to
    /// `data_dir/drctl-pg_ctl.log` (the server detaches into its own session and outlives drctl,
    /// as a server should): rollback restarts an old primary drctl stopped as its fence.
    pub async fn start_server(&self, data_dir: &Path) -> Result<()> {
        let log = data_dir.join("drctl-pg_ctl.log");
        let log = log.to_str().ok_or_else(|| Error::step("pg_ctl start", "the data_dir path is not UTF-8"))?;
        self.pg_ctl(data_dir, "start", &["-l", log]).await
    }

    /// `pg_ctl start -W`, the server's output to `log`: returns once the postmaster is launched,
    /// for a server whose start-up (a recovery) the caller watches itself.
    pub async fn start_server_detached(&self, data_dir: &Path, log: &Path) -> Result<()> {
        let log = log.to_str().ok_or_else(|| Error::step("pg_ctl start", "the log path is not UTF-8"))?;
        self.pg_ctl_with(data_dir, "start", &["-l", log, "-W"]).await
    }

    /// `pg_ctl status`: whether a postmaster runs in `data_dir`.
    pub async fn server_running(&self, data_dir: &Path) -> bool {
        data_dir.join("postmaster.pid").exists() && self.pg_ctl_with(data_dir, "status", &[]).await.is_ok()
    }

    async fn pg_ctl(&self, data_dir: &Path, action: &str, args: &[&str]) -> Result<()> {
        let mut all = args.to_vec();
        all.extend(["-w", "-t", "60"]);
        self.pg_ctl_with(data_dir, action, &all).await
    }

    async fn pg_ctl_with(&self, data_dir: &Path, action: &str, args: &[&str]) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let what = format!("pg_ctl {action}");
        let pg_ctl = self.path("pg_ctl");
        let meta = std::fs::metadata(data_dir).map_err(|e| Error::io(data_dir.display(), e))?;
        let mut cmd = if unsafe { libc::geteuid() } == 0 {
            let owner = user_name(meta.uid()).ok_or_else(|| {
                Error::step(&what, format!("{}: its owner (uid {}) has no user name", data_dir.display(), meta.uid()))
            })?;
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", &owner, "--"]).arg(&pg_ctl);
            c
        } else {
            tokio::process::Command::new(&pg_ctl)
        };
        cmd.arg(action).args(args).arg("-D").arg(data_dir);
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("PG")) {
                cmd.env_remove(key);
            }
        }
        let out =
            cmd.stdin(Stdio::null()).kill_on_drop(true).output().await.map_err(|e| Error::io(pg_ctl.display(), e))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        Err(Error::step(&what, format!("{} {action} -D {}: {}", pg_ctl.display(), data_dir.display(), err.trim())))
    }

    /// Major version of `tool` from `tool --version` (e.g. 15 from "pg_dump (PostgreSQL) 15.18").
    pub async fn major_version(&self, tool: &str) -> Result<u32> {
        let mut run = self.spawn(tool, &["--version"], None, false)?;
        let mut out = String::new();
        if let Some(mut stdout) = run.stdout.take() {
            stdout.read_to_string(&mut out).await.map_err(|e| Error::io(self.path(tool).display(), e))?;
        }
        run.wait().await?;
        parse_major(&out).ok_or_else(|| {
            Error::step(tool, format!("{} --version printed no version: `{}`", self.path(tool).display(), out.trim()))
        })
    }

    /// Start `tool args…` connected to `url` through PG* env vars (password in PGPASSWORD, never in
    /// argv), stdin null unless `stdin_piped`, stdout piped, stderr drained, killed on drop and by
    /// the parent-death signal.
    ///
    /// Call it from an async task on the runtime, never from `spawn_blocking`: the parent-death
    /// signal fires when the *thread* that spawned the child exits, and tokio's worker threads live
    /// as long as the run while its blocking-pool threads exit after a few idle seconds.
    pub fn spawn(&self, tool: &str, args: &[&str], url: Option<&DbUrl>, stdin_piped: bool) -> Result<Running> {
        self.spawn_inner(tool, args, url, stdin_piped, None)
    }

    /// `spawn`, with the file `fd` (opened close-on-exec by this process) left open in the child,
    /// so that the child can read it as `/dev/fd/FD`: sync hands pg_restore the archive's table of
    /// contents that way, from memory.
    pub fn spawn_passing(&self, tool: &str, args: &[&str], url: Option<&DbUrl>, fd: RawFd) -> Result<Running> {
        self.spawn_inner(tool, args, url, false, Some(fd))
    }

    fn spawn_inner(
        &self,
        tool: &str,
        args: &[&str],
        url: Option<&DbUrl>,
        stdin_piped: bool,
        pass: Option<RawFd>,
    ) -> Result<Running> {
        let path = self.path(tool);
        let mut cmd = tokio::process::Command::new(&path);
        cmd.args(args);
        // The operator's shell may carry PGHOST, PGSERVICE, PGPORT (which even the server reads as its
        // default port) …: the run must do what drctl.toml says, whatever the shell holds.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("PG")) {
                cmd.env_remove(key);
            }
        }
        if let Some(url) = url {
            cmd.envs(url.libpq_env());
        }
        cmd.stdin(if stdin_piped { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid, fcntl) between fork and exec, no
        // allocation.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = pass
                    && libc::fcntl(fd, libc::F_SETFD, 0) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // drctl may have died between fork and prctl; then no signal will ever come.
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| Error::io(path.display(), e))?;
        if let Some(out) = &child.stdout {
            // pg_dump writes its stdout in 4 KiB pieces; with the default 64 KiB pipe the reader
            // wakes ~120k times per 500 MB. A 1 MiB pipe lets it read in large chunks. Best effort:
            // an unprivileged process may be capped by /proc/sys/fs/pipe-max-size.
            use std::os::fd::AsRawFd;
            // SAFETY: fcntl on a pipe fd this process owns.
            unsafe { libc::fcntl(out.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        }
        let stderr = child.stderr.take().map(drain_tail);
        Ok(Running {
            stdout: child.stdout.take(),
            stdin: child.stdin.take(),
            tool: tool.to_string(),
            stderr: stderr.unwrap_or_else(|| tokio::spawn(async { String::new() })),
            child,
        })
    }
}

impl Running {
    /// Wait for exit; a non-zero status is `Error::Step` naming the tool, status and stderr's tail.
    /// On success, stderr is returned (warnings worth passing on).
    ///
    /// Any stdin or stdout still held here is closed first, so a child waiting for input or
    /// blocked writing output that nobody reads ends instead of hanging the wait.
    pub async fn wait(mut self) -> Result<String> {
        drop(self.stdin.take());
        drop(self.stdout.take());
        let status = self.child.wait().await.map_err(|e| Error::step(&self.tool, e))?;
        let stderr = self.stderr.await.unwrap_or_default();
        finish(&self.tool, status, stderr)
    }

    /// Stop the child at once (SIGKILL) and reap it: for cancellation, where its partial output is
    /// thrown away anyway.
    pub async fn kill(&mut self) -> Result<()> {
        self.child.kill().await.map_err(|e| Error::step(&self.tool, format!("could not kill: {e}")))
    }

    /// The child's pid, until it has been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

fn finish(tool: &str, status: ExitStatus, stderr: String) -> Result<String> {
    if status.success() {
        Ok(stderr)
    } else {
        let tail = stderr.trim();
        let problem = if tail.is_empty() {
            format!("{tool} exited with {status} and printed nothing on stderr")
        } else {
            format!("{tool} exited with {status}: {tail}")
        };
        Err(Error::step(tool, problem))
    }
}

/// Read `stderr` to its end on a task, keeping only the last `STDERR_TAIL` bytes.
fn drain_tail(mut stderr: tokio::process::ChildStderr) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut kept: Vec<u8> = Vec::with_capacity(4096);
        let mut cut = false;
        let mut buf = vec![0u8; 8192];
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    // Trim in batches so a stream of small writes is not quadratic.
                    if kept.len() > 2 * STDERR_TAIL {
                        kept.drain(..kept.len() - STDERR_TAIL);
                        cut = true;
                    }
                }
            }
        }
        if kept.len() > STDERR_TAIL {
            kept.drain(..kept.len() - STDERR_TAIL);
            cut = true;
        }
        let text = String::from_utf8_lossy(&kept).into_owned();
        if cut { format!("…{text}") } else { text }
    })
}

/// 15 from "pg_dump (PostgreSQL) 15.18" or "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)";
/// 16 from "16beta1". The first token that starts with a digit holds the version.
fn parse_major(version_output: &str) -> Option<u32> {
    let token = version_output.split_whitespace().find(|t| t.starts_with(|c: char| c.is_ascii_digit()))?;
    let digits: String = token.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The user name of `uid` (getpwuid_r), for running a tool as a data directory's owner.
fn user_name(uid: u32) -> Option<String> {
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes only into `pwd` and `buf`, whose sizes it is given.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points at a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A fake tool: a shell script named `name` in a fresh bin dir.
    fn fake_tool(name: &str, body: &str) -> (tempfile::TempDir, PgTools) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tools = PgTools::new(Some(dir.path()));
        (dir, tools)
    }

    async fn stdout_of(run: &mut Running) -> String {
        let mut out = String::new();
        run.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
        out
    }

    #[test]
    fn parses_major_versions() {
        assert_eq!(parse_major("pg_dump (PostgreSQL) 15.18\n"), Some(15));
        assert_eq!(parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"), Some(15));
        assert_eq!(parse_major("pg_restore (PostgreSQL) 16beta1"), Some(16));
        assert_eq!(parse_major("no version here"), None);
    }

    #[tokio::test]
    async fn major_version_runs_the_tool_in_pg_bin() {
        let (_dir, tools) = fake_tool("pg_dump", "echo 'pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)'");
        assert_eq!(tools.major_version("pg_dump").await.unwrap(), 15);
    }

    #[tokio::test]
    async fn a_tool_that_cannot_run_is_named_by_path() {
        let tools = PgTools::new(Some(Path::new("/nonexistent/pg/bin")));
        let e = tools.major_version("pg_dump").await.unwrap_err();
        assert!(e.to_string().contains("/nonexistent/pg/bin/pg_dump"), "{e}");
    }

    #[tokio::test]
    async fn password_travels_in_the_environment_never_in_argv() {
        let (_dir, tools) = fake_tool("pg_dump", r#"echo "argv: $*"; env | grep '^PG' | sort"#);
        let url = DbUrl::parse("postgres://app:s3cret-pw@db.internal:6432/shop?sslmode=disable").unwrap();
        let mut run = tools.spawn("pg_dump", &["-Fc", "--no-owner"], Some(&url), false).unwrap();
        let out = stdout_of(&mut run).await;
        run.wait().await.unwrap();
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("argv: -Fc --no-owner"));
        // Exactly the URL's settings: nothing inherited from the shell (PGSERVICE, PGPORT…) survives.
        let mut want: Vec<String> = url.libpq_env().iter().map(|(k, v)| format!("{k}={v}")).collect();
        want.sort();
        assert_eq!(lines.collect::<Vec<_>>(), want);
        assert!(want.contains(&"PGPASSWORD=s3cret-pw".to_string()));
    }

    #[tokio::test]
    async fn a_failure_reports_status_and_stderr() {
        let (_dir, tools) = fake_tool("pg_restore", "echo 'pg_restore: error: could not connect' >&2; exit 3");
        let e = tools.spawn("pg_restore", &[], None, false).unwrap().wait().await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::Step { ref step, .. } if step == "pg_restore"), "{text}");
        assert!(text.contains("exit status: 3") && text.contains("could not connect"), "{text}");
    }

    #[tokio::test]
    async fn success_returns_stderr_warnings() {
        let (_dir, tools) = fake_tool("pg_dump", "echo 'pg_dump: warning: old server' >&2");
        let warnings = tools.spawn("pg_dump", &[], None, false).unwrap().wait().await.unwrap();
        assert_eq!(warnings.trim(), "pg_dump: warning: old server");
    }

    #[tokio::test]
    async fn a_megabyte_of_stderr_neither_blocks_nor_is_kept_whole() {
        let (_dir, tools) =
            fake_tool("pg_dump", "head -c 1048576 /dev/zero | tr '\\0' x >&2; echo END >&2; echo done; exit 1");
        let mut run = tools.spawn("pg_dump", &[], None, false).unwrap();
        let out = tokio::time::timeout(std::time::Duration::from_secs(20), stdout_of(&mut run)).await.unwrap();
        assert_eq!(out, "done\n");
        let e = run.wait().await.unwrap_err().to_string();
        assert!(e.ends_with("END"), "{}", &e[e.len() - 40..]);
        assert!(e.len() < STDERR_TAIL + 200, "{}", e.len());
    }

    #[tokio::test]
    async fn stdin_is_piped_only_when_asked() {
        let (_dir, tools) = fake_tool("psql", "cat");
        let mut run = tools.spawn("psql", &[], None, true).unwrap();
        use tokio::io::AsyncWriteExt;
        let mut stdin = run.stdin.take().unwrap();
        stdin.write_all(b"select 1;\n").await.unwrap();
        drop(stdin);
        assert_eq!(stdout_of(&mut run).await, "select 1;\n");
        run.wait().await.unwrap();
        // With stdin null, `cat` ends at once instead of waiting for input.
        let mut run = tools.spawn("psql", &[], None, false).unwrap();
        assert!(run.stdin.is_none());
        assert_eq!(stdout_of(&mut run).await, "");
        run.wait().await.unwrap();
    }

    #[tokio::test]
    async fn kill_stops_a_running_child() {
        let (_dir, tools) = fake_tool("pg_basebackup", "exec sleep 60");
        let mut run = tools.spawn("pg_basebackup", &[], None, false).unwrap();
        let pid = run.pid().unwrap();
        run.kill().await.unwrap();
        assert!(run.pid().is_none());
        // SAFETY: kill with signal 0 only probes whether the pid exists.
        assert_ne!(unsafe { libc::kill(pid as libc::pid_t, 0) }, 0, "pid {pid} still alive");
    }

    #[test]
    fn a_child_dies_with_the_thread_that_spawned_it() {
        // The parent-death signal is what stops children when drctl is SIGKILLed; it fires when the
        // spawning thread exits, which is observable without killing the test process.
        let (_dir, tools) = fake_tool("pg_dump", "exec sleep 60");
        let pid = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let run = tools.spawn("pg_dump", &[], None, false).unwrap();
                let pid = run.pid().unwrap();
                // Leak it: neither kill_on_drop nor a wait may be what stops the child.
                std::mem::forget(run);
                pid
            })
        })
        .join()
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child, with a valid out-pointer.
            let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
            if r == pid as libc::pid_t {
                break;
            }
            assert!(r == 0 && std::time::Instant::now() < deadline, "child {pid} outlived its thread");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL, "status {status}");
    }
}
