//! A health endpoint a test controls: answers every request with the status it is set to (and,
//! when set, an `Access-Control-Allow-Origin`), on a free loopback port, until dropped.

use std::io::{BufRead, BufReader, Write};
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
