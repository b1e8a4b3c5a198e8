//! Throwaway PostgreSQL 15 clusters: one shared primary per test process, plus clusters and
//! streaming replicas owned by the tests that promote, fence or stop them.
//!
//! Each cluster lives in /tmp/drctl-it-<pid>-<n> (data/, postgres.log, the TLS files) and listens
//! on 127.0.0.1 only, with scram-sha-256 for TCP (so the password path is exercised) and TLS
//! offered with a server certificate for `localhost` signed by a test CA (`ca_file()`). As root,
//! everything runs as `postgres` through runuser, since the server refuses to run as root.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::{free_port, random_hex, tail, wait_until};

pub struct Cluster {
    pub port: u16,
    pub data_dir: PathBuf,
    /// The cluster's temp root: data/, postgres.log, ca.pem.
    pub dir: PathBuf,
    bin: PathBuf,
    password: String,
    /// The watcher shell (through runuser as root); its stdin is the pipe whose closing stops
    /// the server and removes `dir`.
    watcher: Mutex<Option<Child>>,
    shared: bool,
}

impl Cluster {
    /// The process-wide primary. Never stopped by a test: tests that change a server's role or
    /// availability use `start_new()`.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut c = Cluster::start_new();
            c.shared = true;
            c
        })
    }

    /// A fresh primary owned by the caller, stopped and removed on drop.
    pub fn start_new() -> Cluster {
        Cluster::start_new_with("")
    }

    /// A fresh primary whose postgresql.conf ends with `extra_conf` before the first start (for
    /// settings that need a restart, such as archive_mode).
    pub fn start_new_with(extra_conf: &str) -> Cluster {
        let bin = bin_dir();
        let dir = new_dir();
        let password = random_hex(16);
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).expect("write pwfile");
        chown_to_postgres(&dir);
        let data_dir = dir.join("data");
        run_ok(as_postgres(&bin.join("initdb"), &dir).args([
            "-D".as_ref(),
            data_dir.as_os_str(),
            "-U".as_ref(),
            "postgres".as_ref(),
            "--auth-local=trust".as_ref(),
            "--auth-host=scram-sha-256".as_ref(),
            format!("--pwfile={}", pwfile.display()).as_ref(),
            "--encoding=UTF8".as_ref(),
            "--locale=C".as_ref(),
            // Tests only: initdb's final fsync of every file costs seconds on a busy disk.
            "--no-sync".as_ref(),
        ]));
        std::fs::remove_file(&pwfile).expect("remove pwfile");
        std::fs::write(
            data_dir.join("pg_hba.conf"),
            "local all all trust\n\
             local replication all trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n\
             host replication all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        append(
            &data_dir.join("postgresql.conf"),
            "\n# drctl integration tests\n\
             listen_addresses = '127.0.0.1'\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             wal_keep_size = '256MB'\n\
             fsync = off\n\
             shared_buffers = '128MB'\n\
             ssl = on\n\
             ssl_cert_file = 'server.crt'\n\
             ssl_key_file = 'server.key'\n",
        );
        append(&data_dir.join("postgresql.conf"), &format!("{extra_conf}\n"));
        Cluster::launch(bin, dir, data_dir, password)
    }

    /// A streaming replica of `primary` (pg_basebackup -R), on its own port, owned by the caller.
    pub fn start_replica(primary: &Cluster) -> Cluster {
        let bin = bin_dir();
        let dir = new_dir();
        chown_to_postgres(&dir);
        let data_dir = dir.join("data");
        run_ok(
            as_postgres(&bin.join("pg_basebackup"), &dir)
                .args(["-D".as_ref(), data_dir.as_os_str()])
                .args(["-R", "-X", "stream", "-c", "fast", "-h", "127.0.0.1", "-U", "postgres"])
                .args(["-p", &primary.port.to_string()])
                .env("PGPASSWORD", &primary.password)
                .env("PGSSLMODE", "disable"),
        );
        // Explicit, whatever -R chose to write: the replica must reach its primary on its own.
        append(
            &data_dir.join("postgresql.auto.conf"),
            &format!(
                "primary_conninfo = 'host=127.0.0.1 port={} user=postgres password={} sslmode=disable application_name=drctl_it_replica'\n",
                primary.port, primary.password
            ),
        );
        Cluster::launch(bin, dir, data_dir, primary.password.clone())
    }

    /// Start the server under its watcher on a free port, retrying on another port when one was
    /// taken between `free_port()` and the bind.
    fn launch(bin: PathBuf, dir: PathBuf, data_dir: PathBuf, password: String) -> Cluster {
        install_tls(&dir, &data_dir);
        let log = dir.join("postgres.log");
        for _attempt in 0..5 {
            let port = free_port();
            // Later settings win: each attempt appends its port.
            append(
                &data_dir.join("postgresql.conf"),
                &format!("port = {port}\nunix_socket_directories = '{}'\n", dir.display()),
            );
            chown_to_postgres(&dir);
            let log_start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            let script = format!(
                "{postgres} -D {data} >>{log} 2>&1 & pid=$!; read _; kill -INT $pid 2>/dev/null; wait $pid; rm -rf {dir}",
                postgres = bin.join("postgres").display(),
                data = data_dir.display(),
                log = log.display(),
                dir = dir.display(),
            );
            let mut watcher = as_postgres(Path::new("sh"), &dir)
                .args(["-c", &script])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn the postgres watcher shell");
            let mut outcome = Startup::TimedOut;
            wait_until(Duration::from_secs(30), || {
                outcome = startup_state(&bin, port, &log, log_start);
                outcome != Startup::Starting
            });
            match outcome {
                Startup::Ready => {
                    return Cluster {
                        port,
                        data_dir,
                        dir,
                        bin,
                        password,
                        watcher: Mutex::new(Some(watcher)),
                        shared: false,
                    };
                }
                Startup::PortTaken => {
                    // The server is gone; kill the shell without letting it remove the directory.
                    let _ = watcher.kill();
                    let _ = watcher.wait();
                }
                Startup::Failed | Startup::Starting | Startup::TimedOut => {
                    let _ = watcher.kill();
                    let _ = watcher.wait();
                    panic!(
                        "PostgreSQL did not start on port {port} within 30 s; log {}:\n{}",
                        log.display(),
                        tail(&log, 30)
                    );
                }
            }
        }
        panic!("PostgreSQL could not bind a free port in 5 attempts; log {}:\n{}", log.display(), tail(&log, 30))
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgres://postgres:PW@127.0.0.1:PORT/db?sslmode=disable`.
    pub fn superuser_url(&self, db: &str) -> String {
        format!("postgres://postgres:{}@127.0.0.1:{}/{db}?sslmode=disable", self.password, self.port)
    }

    /// The test CA that signed the server's certificate (valid for `localhost`, not 127.0.0.1).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Directory of the PostgreSQL binaries the cluster runs (for `pg_bin` in configs).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// Run `sql` with psql as postgres in `db`; panics with psql's stderr on any error. Returns
    /// trimmed unaligned tuples-only output (`|` between columns, a line per row).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql).unwrap_or_else(|e| panic!("psql on port {} db {db}: {e}\nSQL: {sql}", self.port))
    }

    /// `psql` that returns the error instead of panicking (polling a server that may not be ready).
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        psql_on(&self.bin, self.port, &self.password, db, sql)
    }

    /// A fresh, empty database `name` (dropped first, with its sessions, if it exists).
    pub fn create_db(&self, name: &str) {
        let ident = format!("\"{}\"", name.replace('"', "\"\""));
        self.psql("postgres", &format!("DROP DATABASE IF EXISTS {ident} WITH (FORCE)"));
        self.psql("postgres", &format!("CREATE DATABASE {ident}"));
    }

    /// Stop the server now (immediate mode: tests never need its shutdown checkpoint).
    pub fn stop(&self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"), &self.dir)
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.shared {
            return;
        }
        self.stop();
        let watcher = self.watcher.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut watcher) = watcher {
            // Closing the pipe lets the watcher finish: its kill finds nothing, then it removes dir.
            drop(watcher.stdin.take());
            let _ = watcher.wait();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Startup {
    Starting,
    Ready,
    PortTaken,
    Failed,
    TimedOut,
}

fn startup_state(bin: &Path, port: u16, log: &Path, log_start: u64) -> Startup {
    let ready = Command::new(bin.join("pg_isready"))
        .args(["-q", "-h", "127.0.0.1", "-t", "1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ready {
        return Startup::Ready;
    }
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(log_start as usize..).unwrap_or_default());
    if text.contains("could not create any TCP/IP sockets") {
        return Startup::PortTaken;
    }
    // Refused probes while starting log FATALs of their own; anything else means it died.
    let fatal = text.lines().any(|l| {
        (l.contains("FATAL:") || l.contains("PANIC:"))
            && !l.contains("starting up")
            && !l.contains("not yet accepting connections")
    });
    if fatal { Startup::Failed } else { Startup::Starting }
}

fn bin_dir() -> PathBuf {
    let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
    if debian.join("postgres").exists() {
        return debian;
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .expect("PostgreSQL 15 not found in /usr/lib/postgresql/15/bin and no pg_config on PATH");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `program` run as postgres when we are root, in `cwd` (postgres cannot enter root's home).
fn as_postgres(program: &Path, cwd: &Path) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    scrub_pg_env(&mut cmd);
    cmd.current_dir(cwd);
    cmd
}

/// The caller's PGHOST, PGPORT (read by the server too), PGDATA… must not leak into the fixtures.
fn scrub_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(key);
        }
    }
}

fn new_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(format!("/tmp/drctl-it-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    // A leftover from a crashed run with a recycled pid.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

fn chown_to_postgres(path: &Path) {
    if is_root() {
        run_ok(Command::new("chown").args(["-R", "postgres:postgres"]).arg(path));
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn append(path: &Path, text: &str) {
    let mut f =
        std::fs::OpenOptions::new().append(true).open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The server certificate (DNS:localhost only) and key in the data directory, the CA beside it.
fn install_tls(dir: &Path, data_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(dir.join("ca.pem"), TEST_CA).expect("write ca.pem");
    std::fs::write(data_dir.join("server.crt"), SERVER_CERT).expect("write server.crt");
    let key = data_dir.join("server.key");
    std::fs::write(&key, SERVER_KEY).expect("write server.key");
    // The server refuses a key readable by others.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod server.key");
    // ca.pem must be readable by drctl's tests whoever they run as.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod cluster dir");
}

// Test-only PKI, valid 2000-2100, the same as in src/clients/pg.rs's unit tests.
const TEST_CA: &str = include_str!("../../fixtures/tls/ca.pem");
const SERVER_CERT: &str = include_str!("../../fixtures/tls/server.crt");
const SERVER_KEY: &str = include_str!("../../fixtures/tls/server.key");

/// psql (from `bin`) as postgres with `password` on 127.0.0.1:`port`, db `db`: the trimmed
/// unaligned tuples-only output, or psql's stderr. For this harness's clusters and for servers
/// drctl started (pitr-restore, drill) from one of their backups.
pub fn psql_on(bin: &Path, port: u16, password: &str, db: &str, sql: &str) -> Result<String, String> {
    let mut cmd = Command::new(bin.join("psql"));
    scrub_pg_env(&mut cmd);
    let out = cmd
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &port.to_string(), "-d", db, "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGSSLMODE", "disable")
        .stdin(Stdio::null())
        .output()
        .expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}
