//! One moto_server per test process: the S3 (and Route 53, RDS) endpoint of every integration test.
//!
//! Its life is tied to the test process like the PostgreSQL clusters': a watcher shell kills it
//! when the pipe on its stdin closes. Requests here are raw HTTP over a std `TcpStream`: moto does
//! not check signatures, and the harness needs no HTTP client crate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::{free_port, tail, wait_until};

include!("moto_version.rs");

/// Runs before `main`, so before the first test: with an old moto the run stops with one line
/// saying what to install, instead of failing later inside a multipart upload with the SDK's XML
/// error. (libtest has no setup hook; an `.init_array` entry is how the `ctor` crate does it.)
#[used]
#[unsafe(link_section = ".init_array")]
static CHECK_MOTO_BEFORE_ANY_TEST: extern "C" fn() = {
    extern "C" fn check() {
        if let Err(line) = moto_version_check() {
            eprintln!("{line}");
            std::process::exit(1);
        }
    }
    check
};

pub struct Moto {
    pub port: u16,
    /// Held, never used: dropping it (at process exit) stops moto_server.
    _watcher: Mutex<Child>,
    log: tempfile::NamedTempFile,
}

impl Moto {
    pub fn shared() -> &'static Moto {
        static SHARED: OnceLock<Moto> = OnceLock::new();
        SHARED.get_or_init(Moto::start)
    }

    fn start() -> Moto {
        let found = Command::new("sh")
            .args(["-c", "command -v moto_server"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "moto_server is not on PATH: install moto: pip install 'moto[server]==5.2.5'");
        let log = tempfile::Builder::new().prefix("drctl-it-moto-").suffix(".log").tempfile().expect("log");
        for _attempt in 0..5 {
            let port = free_port();
            let script = format!(
                "moto_server -H 127.0.0.1 -p {port} >>{log} 2>&1 & pid=$!; read _; kill $pid; wait $pid; rm -f {log}",
                log = log.path().display()
            );
            let mut watcher = Command::new("sh")
                .args(["-c", &script])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn the moto_server watcher shell");
            let up = wait_until(Duration::from_secs(30), || {
                http(port, "GET", "/").is_ok_and(|r| r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"))
                    || port_taken(log.path())
            });
            if up && !port_taken(log.path()) {
                return Moto { port, _watcher: Mutex::new(watcher), log };
            }
            let _ = watcher.kill();
            let _ = watcher.wait();
            assert!(
                up,
                "moto_server did not answer on port {port} within 30 s; log {}:\n{}",
                log.path().display(),
                tail(log.path(), 30)
            );
        }
        panic!("moto_server could not bind a free port in 5 attempts:\n{}", tail(log.path(), 30))
    }

    /// `http://127.0.0.1:PORT`, for `[aws].endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Create bucket `name` (us-east-1); panics unless moto answers 200.
    pub fn create_bucket(&self, name: &str) {
        let response = http(self.port, "PUT", &format!("/{name}"))
            .unwrap_or_else(|e| panic!("PUT /{name} to moto on port {}: {e}", self.port));
        assert!(
            response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
            "moto refused to create bucket {name}:\n{response}\nlog:\n{}",
            tail(self.log.path(), 20)
        );
    }

    /// A raw request to moto (no body, no signature); the whole response text.
    pub fn request(&self, method: &str, path: &str) -> String {
        http(self.port, method, path).unwrap_or_else(|e| panic!("{method} {path} to moto on port {}: {e}", self.port))
    }

    /// A bucket name no other test of this process gets: S3 names allow no `_`.
    pub fn unique_bucket(prefix: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let prefix = prefix.to_ascii_lowercase().replace('_', "-");
        format!("t-{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

fn port_taken(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|t| t.contains("Address already in use"))
}

/// One HTTP/1.1 request without a body; the whole response (status line, headers, body).
fn http(port: u16, method: &str, path: &str) -> std::io::Result<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}
