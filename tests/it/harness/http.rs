//! A health endpoint a test controls: answers every request with the status it is set to (and,
//! when set, an `Access-Control-Allow-Origin`), on a free loopback port, until dropped. And a
//! webhook receiver (`Webhook`) that records what was POSTed to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

pub struct Health {
    pub port: u16,
    shared: Arc<Shared>,
}

struct Shared {
    status: AtomicU16,
    allow_origin: Mutex<Option<String>>,
    requests: AtomicUsize,
    stop: AtomicBool,
}

impl Health {
    pub fn start() -> Health {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            status: AtomicU16::new(200),
            allow_origin: Mutex::new(None),
            requests: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let s = s.clone();
                    thread::spawn(move || answer(c, &s));
                }
            }
        });
        Health { port, shared }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/health", self.port)
    }

    pub fn set_status(&self, code: u16) {
        self.shared.status.store(code, Ordering::SeqCst);
    }

    pub fn allow_origin(&self, origin: Option<&str>) {
        *self.shared.allow_origin.lock().unwrap() = origin.map(str::to_string);
    }

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and the port is closed.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn answer(c: TcpStream, s: &Shared) {
    let mut reader = BufReader::new(match c.try_clone() {
        Ok(r) => r,
        Err(_) => return,
    });
    let mut line = String::new();
    // The request line and headers; the body (none for GET) is not read.
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    s.requests.fetch_add(1, Ordering::SeqCst);
    let code = s.status.load(Ordering::SeqCst);
    let cors = s.allow_origin.lock().unwrap().clone().map(|o| format!("Access-Control-Allow-Origin: {o}\r\n"));
    let body = if code < 300 { "ok" } else { "unhealthy" };
    let _ = (&c).write_all(
        format!(
            "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n{body}",
            body.len(),
            cors.unwrap_or_default()
        )
        .as_bytes(),
    );
}

/// A Slack-style incoming webhook a test controls: records each request's method, path and body,
/// answers with the status it is set to (200 by default), on a free loopback port, until dropped.
/// Its URL carries a token (`token()`), as Slack's do, for tests that check it is never printed.
pub struct Webhook {
    pub port: u16,
    token: String,
    shared: Arc<WebhookShared>,
}

/// One request as the webhook received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: String,
}

struct WebhookShared {
    status: AtomicU16,
    requests: Mutex<Vec<Request>>,
    stop: AtomicBool,
}

impl Webhook {
    pub fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(WebhookShared {
            status: AtomicU16::new(200),
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let s = s.clone();
                    thread::spawn(move || receive(c, &s));
                }
            }
        });
        Webhook { port, token: format!("SECRETTOKEN{}", super::random_hex(6)), shared }
    }

    /// `http://127.0.0.1:PORT/services/T000/B000/TOKEN`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/services/T000/B000/{}", self.port, self.token)
    }

    /// The secret part of `url()`: what must appear in no output, log, journal or store file.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The status every later request is answered with.
    pub fn set_status(&self, code: u16) {
        self.shared.status.store(code, Ordering::SeqCst);
    }

    /// Every request so far, in the order received. A request is recorded before it is
    /// answered, so once drctl has exited, what it sent is here.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The bodies of every request so far.
    pub fn bodies(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.body).collect()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and the port is closed.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Read one request (a body of Content-Length bytes; drctl's reqwest sends no chunked bodies),
/// record it, answer with the set status.
fn receive(c: TcpStream, s: &WebhookShared) {
    let mut reader = BufReader::new(match c.try_clone() {
        Ok(r) => r,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut length = 0usize;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {
                if let Some((name, value)) = line.split_once(':')
                    && name.trim().eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    s.requests.lock().unwrap().push(Request { method, path, body });
    let code = s.status.load(Ordering::SeqCst);
    let answer = if code < 300 { "ok" } else { "invalid_token" };
    let _ = (&c).write_all(
        format!("HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}", answer.len())
            .as_bytes(),
    );
}

/// A throwaway PKI made with openssl in `dir`: a CA and a server certificate it signed for
/// `names` (DNS SANs). Returns (ca.pem, server.crt, server.key).
pub fn test_pki(dir: &std::path::Path, names: &[&str]) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-days", "2", "-subj", "/CN=drctl-test-ca", "-keyout", "ca.key", "-out", "ca.pem"],
    ]
    .concat());
    run(&[&["req"][..], &ec, &["-subj", "/CN=drctl-test-server", "-keyout", "server.key", "-out", "server.csr"]]
        .concat());
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(dir.join("ext"), format!("subjectAltName={}\n", sans.join(","))).unwrap();
    run(&["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"]
        .iter()
        .copied()
        .chain(["-extfile", "ext", "-out", "server.crt"])
        .collect::<Vec<_>>());
    (dir.join("ca.pem"), dir.join("server.crt"), dir.join("server.key"))
}

/// An https health endpoint (always 200) with `cert`/`key`, on a free loopback port, until the
/// process ends (its thread blocks in accept; the port is the test's alone).
pub fn start_https(cert: &std::path::Path, key: &std::path::Path) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let config = config.clone();
            thread::spawn(move || {
                let Ok(tls) = rustls::ServerConnection::new(config) else { return };
                let mut s = rustls::StreamOwned::new(tls, conn);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match std::io::Read::read(&mut s, &mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                let _ = s.flush();
                s.conn.send_close_notify();
                let _ = s.flush();
            });
        }
    });
    port
}
