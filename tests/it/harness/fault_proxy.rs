//! A fault-injecting HTTP/1.1 proxy in front of moto: every Nth request is not forwarded but
//! answered, in rotation, with 503 SlowDown, 500 InternalError, or a connection reset.
//!
//! Plain std threads and sockets, no HTTP crate. It listens on 127.0.0.1 only, on a port the
//! kernel picks (so no race for a free port), and lives exactly as long as its `FaultProxy`: drop
//! it and the listener, every client connection and every upstream connection are shut down and
//! their threads joined. It understands what the AWS SDK sends: keep-alive, `Content-Length` and
//! `Transfer-Encoding: chunked` bodies in both directions, `Expect: 100-continue` (answered by the
//! proxy itself: a request it fails is refused before its body is sent), HEAD and 204/304
//! responses without a body, and close-delimited responses.
//!
//! Each forwarded request goes to moto on a fresh connection with `Connection: close`, so a
//! connection moto closed between two requests can never turn into a fault the proxy did not
//! choose; the client side stays keep-alive.
//!
//! Faults come *before* forwarding, so moto never sees a failed request: a retried conditional
//! write (`PutObject If-None-Match: *`) cannot find its own first attempt there and answer 412.
//! A real S3 can fail after applying a request (a reset while the response is on its way); this
//! proxy does not model that.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A request that sends nothing for this long is a hung client: its connection is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Request or response heads larger than this are refused (S3's own limit is 8 KiB of headers).
const MAX_HEAD: usize = 64 << 10;

/// What a failed request got, in rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 503 with S3's `SlowDown` XML error body.
    SlowDown,
    /// 500 with S3's `InternalError` XML error body.
    InternalError,
    /// The connection is reset (RST, via SO_LINGER 0) after the request head was read.
    Reset,
}

const ROTATION: [Fault; 3] = [Fault::SlowDown, Fault::InternalError, Fault::Reset];

/// Counts of what the proxy has seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests whose head was read, forwarded or failed.
    pub total: u64,
    /// Requests answered with a fault instead of being forwarded.
    pub failed: u64,
    pub slow_down: u64,
    pub internal_error: u64,
    pub reset: u64,
    /// Requests forwarded to moto whose response reached the client.
    pub forwarded: u64,
    /// Requests per HTTP method (`PUT`, `GET`, …), failed ones included.
    pub by_method: BTreeMap<String, u64>,
    /// Failed requests per HTTP method.
    pub failed_by_method: BTreeMap<String, u64>,
    /// Requests that carried `Expect: 100-continue` / a chunked body.
    pub expect_continue: u64,
    pub chunked_requests: u64,
    /// Client connections accepted.
    pub connections: u64,
    /// Forwarding failures (moto unreachable or answering garbage): never expected in a test.
    pub upstream_errors: u64,
    /// Route 53 ChangeResourceRecordSets requests seen (forwarded or failed).
    pub route53_changes: u64,
    /// Route 53 GetChange requests the proxy answered PENDING itself.
    pub route53_pending_answers: u64,
    /// RDS PromoteReadReplica requests seen (with `simulate_rds`).
    pub rds_promotes: u64,
    /// RDS RestoreDBInstanceToPointInTime requests seen (with `simulate_rds` or
    /// `simulate_rds_restores`), and each one's form fields as sent, decoded.
    pub rds_restores: u64,
    pub rds_restore_requests: Vec<BTreeMap<String, String>>,
}

/// RDS's promotion as moto does not model it (moto promotes at once and keeps reporting the
/// replica's source): after PromoteReadReplica of an instance, DescribeDBInstances of it answers
/// `modifying` for `modifying_describes` calls, then `available` with no source instance.
/// `on_promote` runs once per instance, on the proxy's thread, when its first PromoteReadReplica
/// arrives: the test promotes the PostgreSQL replica that stands in for the instance.
pub struct RdsSim {
    pub modifying_describes: u32,
    pub on_promote: Box<dyn Fn(&str) + Send + Sync>,
}

struct RdsState {
    sim: RdsSim,
    /// Promoted instance → describes still answering `modifying`.
    remaining: HashMap<String, u32>,
}

/// RDS's restore as moto does not model it (moto's restored instance is `available` at once):
/// after RestoreDBInstanceToPointInTime, DescribeDBInstances of the new instance answers
/// `creating` without an endpoint for `creating_describes` calls (the last of them
/// `backing-up`), then moto's own answer.
struct RestoreState {
    creating_describes: u32,
    /// Restored instance → describes still answering `creating`.
    remaining: HashMap<String, u32>,
}

struct Shared {
    upstream: SocketAddr,
    /// Fail every `every`th request; 0 never fails one (a pass-through, for captures).
    every: u64,
    /// Answer Route 53 GetChange with PENDING instead of moto's immediate INSYNC.
    route53_pending: AtomicBool,
    rds: Mutex<Option<RdsState>>,
    restores: Mutex<Option<RestoreState>>,
    /// While set, every request whose path contains this is reset (see `unreachable_for`).
    unreachable: Mutex<Option<String>>,
    seen: AtomicU64,
    stats: Mutex<Stats>,
    /// One line per request, for a failing test's message.
    log: Mutex<Vec<String>>,
    stopping: AtomicBool,
    /// Every open socket, so `Drop` can shut them down and unblock their threads.
    sockets: Mutex<HashMap<u64, TcpStream>>,
    next_socket: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy to `127.0.0.1:upstream_port` failing every `every`th request (0: none).
    pub fn start(upstream_port: u16, every: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy on 127.0.0.1:0");
        let addr = listener.local_addr().expect("fault proxy local addr");
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            every,
            route53_pending: AtomicBool::new(false),
            rds: Mutex::new(None),
            restores: Mutex::new(None),
            unreachable: Mutex::new(None),
            seen: AtomicU64::new(0),
            stats: Mutex::new(Stats::default()),
            log: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            sockets: Mutex::new(HashMap::new()),
            next_socket: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("fault-proxy-accept".into())
            .spawn(move || accept_loop(&listener, &s))
            .expect("spawn the fault proxy's accept thread");
        FaultProxy { addr, shared, acceptor: Some(acceptor) }
    }

    /// `http://127.0.0.1:PORT`, for `[aws].endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// While on, every Route 53 GetChange is answered PENDING by the proxy (moto says INSYNC at
    /// once): a change that never finishes propagating, for exit 6 and resume-by-waiting tests.
    pub fn route53_pending(&self, on: bool) {
        self.shared.route53_pending.store(on, Ordering::SeqCst);
    }

    /// While `Some(part)`, every request whose path contains `part` has its connection reset, as
    /// if the store could no longer be reached for those keys only (the WAL objects a recovery
    /// fetches, while drctl's own reads of the journal still pass).
    pub fn unreachable_for(&self, part: Option<&str>) {
        *lock(&self.shared.unreachable) = part.map(str::to_string);
    }

    /// Model RDS's promotion states in front of moto (see `RdsSim`).
    pub fn simulate_rds(&self, sim: RdsSim) {
        *lock(&self.shared.rds) = Some(RdsState { sim, remaining: HashMap::new() });
    }

    /// Model RDS's restore states in front of moto (see `RestoreState`), and count and record
    /// every RestoreDBInstanceToPointInTime (`Stats::rds_restores`, `rds_restore_requests`).
    pub fn simulate_rds_restores(&self, creating_describes: u32) {
        *lock(&self.shared.restores) = Some(RestoreState { creating_describes, remaining: HashMap::new() });
    }

    /// Every restore in progress finishes after `describes` more describes of its instance.
    pub fn rds_finish_restores_after(&self, describes: u32) {
        if let Some(st) = lock(&self.shared.restores).as_mut() {
            st.remaining.values_mut().for_each(|n| *n = describes);
        }
    }

    /// Every promotion in progress finishes: the next describe shows it available, no source.
    pub fn rds_finish_promotions(&self) {
        if let Some(st) = lock(&self.shared.rds).as_mut() {
            st.remaining.values_mut().for_each(|n| *n = 0);
        }
    }

    /// The last `n` request lines (`#seq METHOD path -> outcome`).
    pub fn recent(&self, n: usize) -> String {
        let log = lock(&self.shared.log);
        log[log.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for s in lock(&self.shared.sockets).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else {
            // EMFILE and the like: do not spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        lock(&shared.stats).connections += 1;
        let s = Arc::clone(shared);
        let handle = std::thread::Builder::new().name("fault-proxy-conn".into()).spawn(move || {
            let id = s.register(&conn);
            let _ = serve(&s, conn);
            s.unregister(id);
        });
        if let Ok(h) = handle {
            let mut threads = lock(&shared.threads);
            // Keep the list short on a long run: finished threads need no join.
            threads.retain(|t| !t.is_finished());
            threads.push(h);
        }
    }
}

impl Shared {
    fn register(&self, s: &TcpStream) -> u64 {
        let id = self.next_socket.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = s.try_clone() {
            lock(&self.sockets).insert(id, clone);
        }
        // Registered after `stopping` was set: Drop may already have shut the others down.
        if self.stopping.load(Ordering::SeqCst) {
            let _ = s.shutdown(Shutdown::Both);
        }
        id
    }

    fn unregister(&self, id: u64) {
        lock(&self.sockets).remove(&id);
    }

    fn note(&self, line: String) {
        let mut log = lock(&self.log);
        if log.len() >= 10_000 {
            log.drain(..5_000);
        }
        log.push(line);
    }
}

/// One parsed message head (request or response).
struct Head {
    /// The start line, without CRLF.
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    fn chunked(&self) -> bool {
        self.has_token("transfer-encoding", "chunked")
    }

    fn content_length(&self) -> io::Result<Option<u64>> {
        match self.get("content-length") {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| bad(format!("bad Content-Length {v:?}"))),
        }
    }

    /// The head as bytes, without the headers named in `drop`, plus `extra` lines.
    fn encode(&self, drop: &[&str], extra: &[&str]) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (k, v) in &self.headers {
            if !drop.iter().any(|d| k.eq_ignore_ascii_case(d)) {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        for e in extra {
            out.push_str(e);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads one head; `Ok(None)` on a clean EOF before its first byte (the client closed an idle
/// keep-alive connection).
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut lines = Vec::new();
    let mut size = 0;
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line)?;
        if n == 0 {
            return if lines.is_empty() && size == 0 {
                Ok(None)
            } else {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF inside a message head"))
            };
        }
        size += n;
        if size > MAX_HEAD {
            return Err(bad("message head too large".into()));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            // Tolerate stray CRLFs between messages (RFC 9112 §2.2).
            if lines.is_empty() {
                continue;
            }
            break;
        }
        lines.push(line);
    }
    let start = lines.remove(0);
    let headers = lines
        .into_iter()
        .map(|l| match l.split_once(':') {
            Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
            None => Err(bad(format!("malformed header line {l:?}"))),
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Some(Head { start, headers }))
}

/// Copies exactly `n` bytes from `r` to `w` (when given; otherwise discards them).
fn copy_exact(r: &mut impl Read, w: &mut Option<&mut dyn Write>, n: u64) -> io::Result<()> {
    let mut left = n;
    let mut buf = [0u8; 64 << 10];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let got = r.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF inside a body"));
        }
        if let Some(w) = w.as_mut() {
            w.write_all(&buf[..got])?;
        }
        left -= got as u64;
    }
    Ok(())
}

/// Copies a chunked body verbatim (sizes, extensions, data, trailers) up to its final CRLF.
fn copy_chunked(r: &mut impl BufRead, w: &mut Option<&mut dyn Write>) -> io::Result<()> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF inside a chunked body"));
        }
        if let Some(w) = w.as_mut() {
            w.write_all(line.as_bytes())?;
        }
        let size_text = line.trim_end_matches(['\r', '\n']);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_text, 16).map_err(|_| bad(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF inside chunked trailers"));
                }
                if let Some(w) = w.as_mut() {
                    w.write_all(t.as_bytes())?;
                }
                if t == "\r\n" || t == "\n" {
                    return Ok(());
                }
            }
        }
        // The data and its CRLF.
        copy_exact(r, w, size + 2)?;
    }
}

fn copy_body(r: &mut impl BufRead, w: &mut Option<&mut dyn Write>, head: &Head) -> io::Result<()> {
    if head.chunked() { copy_chunked(r, w) } else { copy_exact(r, w, head.content_length()?.unwrap_or(0)) }
}

fn serve(shared: &Shared, client: TcpStream) -> io::Result<()> {
    client.set_read_timeout(Some(IDLE_TIMEOUT))?;
    client.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(64 << 10, client.try_clone()?);
    let mut writer = client.try_clone()?;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(req) = read_head(&mut reader)? else {
            return Ok(());
        };
        let method = req.start.split(' ').next().unwrap_or("?").to_string();
        let path = req.start.split(' ').nth(1).unwrap_or("?").to_string();
        let expect = req.has_token("expect", "100-continue");
        let seq = shared.seen.fetch_add(1, Ordering::SeqCst) + 1;
        if method == "POST" && path.starts_with("/2013-04-01/hostedzone/") && path.contains("/rrset") {
            lock(&shared.stats).route53_changes += 1;
        }
        if method == "GET" && path.starts_with("/2013-04-01/change/") && shared.route53_pending.load(Ordering::SeqCst) {
            lock(&shared.stats).route53_pending_answers += 1;
            shared.note(format!("#{seq} {method} {path} -> PENDING"));
            copy_body(&mut reader, &mut None, &req)?;
            let id = path.trim_start_matches("/2013-04-01/change/");
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<GetChangeResponse \
                 xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><ChangeInfo><Id>/change/{id}</Id>\
                 <Status>PENDING</Status><SubmittedAt>2026-01-01T00:00:00.000Z</SubmittedAt></ChangeInfo>\
                 </GetChangeResponse>"
            );
            write!(
                writer,
                "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nx-amzn-RequestId: PENDING{seq:012}\r\n\r\n{body}",
                body.len()
            )?;
            writer.flush()?;
            continue;
        }
        if method == "POST"
            && (path == "/" || path.starts_with("/?"))
            && (lock(&shared.rds).is_some() || lock(&shared.restores).is_some())
        {
            rds_exchange(shared, &req, &mut reader, &mut writer)?;
            lock(&shared.stats).forwarded += 1;
            shared.note(format!("#{seq} {method} {path} -> RDS (simulated states)"));
            continue;
        }
        let blocked = lock(&shared.unreachable).as_deref().is_some_and(|part| path.contains(part));
        let fault = if blocked {
            Some(Fault::Reset)
        } else {
            (shared.every > 0 && seq.is_multiple_of(shared.every))
                .then(|| ROTATION[((seq / shared.every - 1) % ROTATION.len() as u64) as usize])
        };
        {
            let mut st = lock(&shared.stats);
            st.total += 1;
            *st.by_method.entry(method.clone()).or_default() += 1;
            st.expect_continue += u64::from(expect);
            st.chunked_requests += u64::from(req.chunked());
            if fault.is_some() {
                st.failed += 1;
                *st.failed_by_method.entry(method.clone()).or_default() += 1;
            }
            match fault {
                Some(Fault::SlowDown) => st.slow_down += 1,
                Some(Fault::InternalError) => st.internal_error += 1,
                Some(Fault::Reset) => st.reset += 1,
                None => {}
            }
        }
        if let Some(f) = fault {
            shared.note(format!("#{seq} {method} {path} -> {f:?}"));
            if f == Fault::Reset {
                reset(&client);
                return Ok(());
            }
            // With `Expect: 100-continue` the client waits for our go-ahead before sending the
            // body: answer now and close, as S3 does for a request it refuses early. Otherwise
            // read the body first, so the connection stays in step for the next request.
            if !expect {
                copy_body(&mut reader, &mut None, &req)?;
            }
            let (status, code, message) = match f {
                Fault::SlowDown => ("503 Slow Down", "SlowDown", "Please reduce your request rate."),
                _ => (
                    "500 Internal Server Error",
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                ),
            };
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
                 <RequestId>FAULT{seq:012}</RequestId><HostId>fault-proxy</HostId></Error>"
            );
            let close = if expect { "Connection: close\r\n" } else { "" };
            write!(
                writer,
                "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                 x-amz-request-id: FAULT{seq:012}\r\n{close}\r\n{body}",
                body.len()
            )?;
            writer.flush()?;
            if expect || req.has_token("connection", "close") {
                return Ok(());
            }
            continue;
        }
        match forward(shared, &req, expect, &mut reader, &mut writer) {
            Ok(keep_alive) => {
                lock(&shared.stats).forwarded += 1;
                shared.note(format!("#{seq} {method} {path} -> forwarded"));
                if !keep_alive || req.has_token("connection", "close") {
                    return Ok(());
                }
            }
            Err(e) => {
                lock(&shared.stats).upstream_errors += 1;
                shared.note(format!("#{seq} {method} {path} -> proxy error: {e}"));
                return Err(e);
            }
        }
    }
}

/// Closes `s` with an RST instead of a FIN: SO_LINGER on with a zero timeout.
fn reset(s: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a descriptor we own, with a correctly sized `linger`.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    // No shutdown(): that would send a FIN. The RST goes out when the last descriptor of the
    // socket closes: the caller's reader and writer as it returns, the registered clone on
    // unregister.
}

/// Sends one request to moto and its response to the client; `Ok(true)` when the client
/// connection can carry another request.
fn forward(
    shared: &Shared,
    req: &Head,
    expect: bool,
    client_r: &mut BufReader<TcpStream>,
    client_w: &mut TcpStream,
) -> io::Result<bool> {
    let up = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5))?;
    up.set_read_timeout(Some(IDLE_TIMEOUT))?;
    up.set_nodelay(true)?;
    let id = shared.register(&up);
    let result = exchange(&up, req, expect, client_r, client_w);
    shared.unregister(id);
    let _ = up.shutdown(Shutdown::Both);
    result
}

/// `forward`'s request and response, on the fresh upstream connection `up`.
fn exchange(
    up: &TcpStream,
    req: &Head,
    expect: bool,
    client_r: &mut BufReader<TcpStream>,
    client_w: &mut TcpStream,
) -> io::Result<bool> {
    let mut up_w = up.try_clone()?;
    let mut up_r = BufReader::with_capacity(64 << 10, up.try_clone()?);
    // The proxy answers 100-continue itself, so moto gets a plain request.
    if expect {
        client_w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        client_w.flush()?;
    }
    let head = req.encode(&["connection", "keep-alive", "expect", "proxy-connection"], &["Connection: close"]);
    up_w.write_all(&head)?;
    {
        let mut sink: Option<&mut dyn Write> = Some(&mut up_w);
        copy_body(client_r, &mut sink, req)?;
    }
    up_w.flush()?;
    let is_head = req.start.starts_with("HEAD ");
    loop {
        let resp = read_head(&mut up_r)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "moto closed without a response"))?;
        let status: u16 = resp.start.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        if (100..200).contains(&status) {
            // Interim responses (a 100 we did not ask for) are passed through.
            client_w.write_all(&resp.encode(&[], &[]))?;
            continue;
        }
        let no_body = is_head || status == 204 || status == 304;
        let framed = no_body || resp.chunked() || resp.content_length()?.is_some();
        // moto was told to close; the client's connection stays open when the body is framed.
        let head = if framed {
            resp.encode(&["connection", "keep-alive"], &[])
        } else {
            resp.encode(&["connection", "keep-alive"], &["Connection: close"])
        };
        client_w.write_all(&head)?;
        if framed && !no_body {
            let mut sink: Option<&mut dyn Write> = Some(&mut *client_w);
            copy_body(&mut up_r, &mut sink, &resp)?;
        } else if !framed {
            io::copy(&mut up_r, client_w)?;
        }
        client_w.flush()?;
        return Ok(framed);
    }
}

/// `application/x-www-form-urlencoded` decoding of one value.
fn form_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 2 < b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()))
            .flatten();
        match (b[i], hex) {
            (_, Some(x)) => {
                out.push(x);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (c, None) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One RDS Query API request with `simulate_rds` on: read whole (the action is in the form body),
/// forwarded to moto, and its answer rewritten where moto does not model RDS's promotion states.
fn rds_exchange(
    shared: &Shared,
    req: &Head,
    client_r: &mut BufReader<TcpStream>,
    client_w: &mut TcpStream,
) -> io::Result<()> {
    let mut body = Vec::new();
    {
        let mut sink: Option<&mut dyn Write> = Some(&mut body);
        copy_body(client_r, &mut sink, req)?;
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let field = |name: &str| {
        text.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| form_decode(v)))
    };
    let (action, id) = (field("Action").unwrap_or_default(), field("DBInstanceIdentifier").unwrap_or_default());
    if action == "PromoteReadReplica" {
        lock(&shared.stats).rds_promotes += 1;
        let mut g = lock(&shared.rds);
        if let Some(st) = g.as_mut()
            && !st.remaining.contains_key(&id)
        {
            st.remaining.insert(id.clone(), st.sim.modifying_describes);
            (st.sim.on_promote)(&id);
        }
    }
    if action == "RestoreDBInstanceToPointInTime" {
        let fields: BTreeMap<String, String> = text
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (form_decode(k), form_decode(v)))
            .collect();
        {
            let mut stats = lock(&shared.stats);
            stats.rds_restores += 1;
            stats.rds_restore_requests.push(fields);
        }
        // RDS stores identifiers lowercased, and the describes ask by the lowercased one.
        let target = field("TargetDBInstanceIdentifier").unwrap_or_default().to_ascii_lowercase();
        if let Some(st) = lock(&shared.restores).as_mut() {
            let n = st.creating_describes;
            st.remaining.entry(target).or_insert(n);
        }
    }
    // To moto, on a fresh connection, with the body as read.
    let up = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5))?;
    up.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut up_w = up.try_clone()?;
    let mut up_r = BufReader::new(up.try_clone()?);
    let len = format!("Content-Length: {}", body.len());
    up_w.write_all(&req.encode(
        &["connection", "keep-alive", "expect", "content-length", "transfer-encoding"],
        &["Connection: close", &len],
    ))?;
    up_w.write_all(&body)?;
    up_w.flush()?;
    let resp = read_head(&mut up_r)?.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "moto closed"))?;
    let mut answer = Vec::new();
    match resp.content_length()? {
        Some(n) => {
            let mut sink: Option<&mut dyn Write> = Some(&mut answer);
            copy_exact(&mut up_r, &mut sink, n)?;
        }
        None => {
            up_r.read_to_end(&mut answer)?;
        }
    }
    let _ = up.shutdown(Shutdown::Both);
    if action == "DescribeDBInstances"
        && let Some(st) = lock(&shared.restores).as_mut()
        && let Some(left) = st.remaining.get_mut(&id.to_ascii_lowercase())
        && *left > 0
    {
        let mut xml = String::from_utf8_lossy(&answer).into_owned();
        let status = if *left == 1 { "backing-up" } else { "creating" };
        *left -= 1;
        xml = xml.replace(
            "<DBInstanceStatus>available</DBInstanceStatus>",
            &format!("<DBInstanceStatus>{status}</DBInstanceStatus>"),
        );
        // RDS shows no endpoint until the instance is available.
        if let (Some(a), Some(b)) = (xml.find("<Endpoint>"), xml.find("</Endpoint>")) {
            xml.replace_range(a..b + "</Endpoint>".len(), "");
        }
        answer = xml.into_bytes();
    }
    if action == "DescribeDBInstances"
        && let Some(st) = lock(&shared.rds).as_mut()
        && let Some(left) = st.remaining.get_mut(&id)
    {
        let mut xml = String::from_utf8_lossy(&answer).into_owned();
        if *left > 0 {
            *left -= 1;
            xml = xml.replace(
                "<DBInstanceStatus>available</DBInstanceStatus>",
                "<DBInstanceStatus>modifying</DBInstanceStatus>",
            );
        } else if let (Some(a), Some(b)) =
            (xml.find("<ReadReplicaSourceDBInstanceIdentifier>"), xml.find("</ReadReplicaSourceDBInstanceIdentifier>"))
        {
            xml.replace_range(a..b + "</ReadReplicaSourceDBInstanceIdentifier>".len(), "");
        }
        answer = xml.into_bytes();
    }
    let len = format!("Content-Length: {}", answer.len());
    client_w.write_all(&resp.encode(&["connection", "keep-alive", "content-length", "transfer-encoding"], &[&len]))?;
    client_w.write_all(&answer)?;
    client_w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny upstream that answers every request with its method, path and body length.
    fn echo_upstream() -> (u16, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { return };
                std::thread::spawn(move || {
                    let mut r = BufReader::new(c.try_clone().unwrap());
                    let mut w = c;
                    while let Ok(Some(req)) = read_head(&mut r) {
                        let mut body = Vec::new();
                        let mut sink: Option<&mut dyn Write> = Some(&mut body);
                        copy_body(&mut r, &mut sink, &req).unwrap();
                        let text = format!("{} {}", req.start, body.len());
                        let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len());
                        if req.has_token("connection", "close") {
                            return;
                        }
                    }
                });
            }
        });
        (port, h)
    }

    fn response(r: &mut BufReader<TcpStream>) -> io::Result<(u16, String)> {
        let head = read_head(r)?.ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let status = head.start.split(' ').nth(1).unwrap().parse().unwrap();
        let mut body = Vec::new();
        let mut sink: Option<&mut dyn Write> = Some(&mut body);
        copy_body(r, &mut sink, &head)?;
        Ok((status, String::from_utf8(body).unwrap()))
    }

    #[test]
    fn fails_every_third_request_in_rotation_and_forwards_the_rest_on_one_connection() {
        let (port, _upstream) = echo_upstream();
        let proxy = FaultProxy::start(port, 3);
        let connect = || {
            let s = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
            (BufReader::new(s.try_clone().unwrap()), s)
        };
        let (mut r, mut w) = connect();
        // 1, 2: forwarded, one with a Content-Length body and one chunked (passed on verbatim:
        // 20 bytes of chunk framing and data), on one connection.
        w.write_all(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!(response(&mut r).unwrap(), (200, "PUT /b/k HTTP/1.1 5".into()));
        w.write_all(
            b"POST /b/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(response(&mut r).unwrap(), (200, "POST /b/k HTTP/1.1 20".into()));
        // 3: SlowDown, the body drained, the connection still usable.
        w.write_all(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc").unwrap();
        let (status, body) = response(&mut r).unwrap();
        assert_eq!(status, 503);
        assert!(body.contains("<Code>SlowDown</Code>"), "{body}");
        // 4, 5: forwarded; 6: InternalError.
        for _ in 0..2 {
            w.write_all(b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            assert_eq!(response(&mut r).unwrap().0, 200);
        }
        w.write_all(b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (status, body) = response(&mut r).unwrap();
        assert_eq!(status, 500);
        assert!(body.contains("<Code>InternalError</Code>"), "{body}");
        // 7, 8 forwarded (8 with 100-continue); 9: a reset.
        w.write_all(b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(response(&mut r).unwrap().0, 200);
        w.write_all(b"PUT /b/e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n").unwrap();
        let interim = read_head(&mut r).unwrap().unwrap();
        assert!(interim.start.starts_with("HTTP/1.1 100"), "{}", interim.start);
        w.write_all(b"data").unwrap();
        assert_eq!(response(&mut r).unwrap(), (200, "PUT /b/e HTTP/1.1 4".into()));
        w.write_all(b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let err = response(&mut r).unwrap_err();
        assert!(
            matches!(err.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof),
            "wanted a reset: {err}"
        );
        let st = proxy.stats();
        assert_eq!((st.total, st.failed, st.forwarded), (9, 3, 6));
        assert_eq!((st.slow_down, st.internal_error, st.reset), (1, 1, 1));
        assert_eq!(st.by_method.get("GET"), Some(&5));
        assert_eq!(st.by_method.get("PUT"), Some(&3));
        assert_eq!((st.expect_continue, st.chunked_requests, st.connections), (1, 1, 1));
        // A failed request with 100-continue is refused before its body: no 100, then close.
        let (mut r, mut w) = connect();
        for _ in 0..2 {
            w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            assert_eq!(response(&mut r).unwrap().0, 200);
        }
        w.write_all(b"PUT /b/x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert_eq!(response(&mut r).unwrap().0, 503);
        assert_eq!(proxy.stats().upstream_errors, 0);
    }

    #[test]
    fn drop_stops_listening_and_closes_open_connections() {
        let (port, _upstream) = echo_upstream();
        let proxy = FaultProxy::start(port, 0);
        let addr = proxy.addr;
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        drop(proxy);
        // The idle keep-alive connection was shut down, and nothing listens any more.
        let mut buf = [0u8; 1];
        assert!(matches!((&s).read(&mut buf), Ok(0) | Err(_)));
        // Polled: a connect to a closed loopback port can, rarely, connect to itself (TCP
        // simultaneous open, when the kernel picks that very port as the source port).
        assert!(crate::harness::wait_until(Duration::from_secs(2), || TcpStream::connect(addr).is_err()));
    }
}
