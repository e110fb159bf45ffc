//! A write (and optionally read) benchmark for raftkv and, as a baseline, etcd 3.4:
//!
//! ```text
//! cargo run --release --example bench -- [--target raftkv|etcd] [--nodes a,b,c]
//!     [--connections N] [--value-bytes N] [--keys fresh|N] [--duration S] [--total-keys N]
//!     [--window S] [--read-fraction F] [--json]
//! ```
//!
//! Each connection is a thread with one persistent HTTP/1.1 (keep-alive) connection to the
//! leader. The leader is found by asking every node (`GET /status` on raftkv,
//! `POST /v3/maintenance/status` on etcd), and found again every `--poll-ms` (500 ms),
//! after a 503/504 or a connection error, and at the end of every window. Leader changes
//! are those that these polls see (a follower forwards writes, so a change need not cause
//! errors); the term shows how many elections there were. Writes are `PUT /kv/{key}` on raftkv and `POST /v3/kv/put` with
//! `{"key": base64, "value": base64}` (etcd's JSON gateway) on etcd; with `--read-fraction`
//! some operations are linearizable reads (`GET /kv/{key}`, `POST /v3/kv/range`) of keys
//! the same connection wrote before. `--keys fresh` gives every write a key never written
//! before (the prefix holds the start time, so runs do not overwrite each other either).
//!
//! One line is printed per window (`--window`, 10 s), then a summary. Latencies are those
//! of successful operations, from sending the request (connecting first if needed) to
//! reading the whole response; failed operations only count as errors. With `--json` the
//! window lines and the summary go to stderr and stdout gets the summary as one JSON line.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use raftkv::client::{encode_key, http_request};
use rand::{Rng, RngCore};
use serde_json::{json, Value};

/// Longest accepted response head (status line and headers).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest accepted response body.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// How long the benchmark waits for a leader before it starts.
const STARTUP_LEADER_WAIT: Duration = Duration::from_secs(10);
/// Pause after a failed operation, so that an unavailable cluster is not hammered.
const ERROR_BACKOFF: Duration = Duration::from_millis(20);
/// How long --verify keeps trying to read back the acknowledged writes.
const VERIFY_DEADLINE: Duration = Duration::from_secs(120);
/// How many connections read back at once.
const VERIFY_CONNECTIONS: usize = 16;

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Write/read load over persistent HTTP/1.1 connections to the leader of a raftkv or etcd cluster"
)]
struct Args {
    /// The system under test.
    #[arg(long, value_enum, default_value_t = Target::Raftkv)]
    target: Target,
    /// Comma-separated client addresses (host:port) of the nodes.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"
    )]
    nodes: Vec<String>,
    /// Concurrent connections, one thread each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Size of every written value, in bytes.
    #[arg(long, default_value_t = 1024)]
    value_bytes: usize,
    /// `fresh`: every write creates a key never written before; a number N: writes
    /// overwrite random keys out of N.
    #[arg(long, default_value = "fresh")]
    keys: KeySpace,
    /// Stop after this many seconds (default 60, or no time limit with --total-keys).
    #[arg(long)]
    duration: Option<u64>,
    /// Stop after exactly this many successful (200) writes; with --duration, whichever
    /// comes first. A write that failed with a 504 or a lost connection may have been
    /// applied too, so the store can hold a few more keys.
    #[arg(long)]
    total_keys: Option<u64>,
    /// Seconds per report line.
    #[arg(long, default_value_t = 10)]
    window: u64,
    /// Fraction (0 to <1) of operations that are linearizable reads of keys written before.
    #[arg(long, default_value_t = 0.0)]
    read_fraction: f64,
    /// Prefix of every key (default: `bench-` and the start time in hex, then `-`).
    #[arg(long)]
    key_prefix: Option<String>,
    /// Timeout of one request (connect, send, and each read), in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// How often to poll the nodes' status for the leader, in milliseconds (0: only at
    /// the end of each window and after errors).
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// Print the summary as one JSON line on stdout (report lines go to stderr).
    #[arg(long)]
    json: bool,
    /// After the load, read back every acknowledged write (a linearizable GET through the
    /// leader) and count those missing or different. raftkv with fresh keys only.
    #[arg(long)]
    verify: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    Raftkv,
    Etcd,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Raftkv => "raftkv",
            Target::Etcd => "etcd",
        }
    }
}

/// Which keys the writes go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeySpace {
    /// A new key for every write.
    Fresh,
    /// Random keys out of this many.
    Fixed(u64),
}

impl FromStr for KeySpace {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "fresh" {
            return Ok(KeySpace::Fresh);
        }
        match s.parse::<u64>() {
            Ok(n) if n > 0 => Ok(KeySpace::Fixed(n)),
            _ => Err(format!(
                "expected `fresh` or a positive number of keys, got {:?}",
                s
            )),
        }
    }
}

impl std::fmt::Display for KeySpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySpace::Fresh => write!(f, "fresh"),
            KeySpace::Fixed(n) => write!(f, "{}", n),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ------------------------------------------------------------------ base64 ---

/// Standard base64 with padding (RFC 4648 §4), as etcd's JSON gateway wants for bytes.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let byte = |i: usize| chunk.get(i).copied().unwrap_or(0) as u32;
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        let sextet = |shift: u32| ALPHABET[((n >> shift) & 63) as usize] as char;
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

// ------------------------------------------------------------- HTTP client ---

/// A response read off a persistent connection.
#[derive(Debug)]
struct Response {
    status: u16,
    body: Vec<u8>,
    /// False when the server closes the connection after this response.
    keep_alive: bool,
}

fn bad(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Reads one line into `buf` without its line ending; fails on EOF and on over-long lines.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    let n = r
        .by_ref()
        .take(MAX_HEAD_BYTES as u64)
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed by the server",
        ));
    }
    if buf.last() != Some(&b'\n') {
        return Err(bad("response line too long or cut short"));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(())
}

/// Reads a `Transfer-Encoding: chunked` body (trailers are skipped).
fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = Vec::new();
    loop {
        read_line(r, &mut line)?;
        let size = {
            let text = String::from_utf8_lossy(&line);
            let hex = text.split(';').next().unwrap_or("").trim();
            usize::from_str_radix(hex, 16).map_err(|_| bad("bad chunk size"))?
        };
        if size == 0 {
            loop {
                read_line(r, &mut line)?;
                if line.is_empty() {
                    return Ok(body);
                }
            }
        }
        if size > MAX_BODY_BYTES - body.len() {
            return Err(bad("response body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        read_line(r, &mut line)?;
        if !line.is_empty() {
            return Err(bad("chunk not followed by CRLF"));
        }
    }
}

/// Reads one response (skipping 1xx interim ones): `Content-Length`, chunked, or
/// delimited by the server closing the connection.
fn read_response(r: &mut impl BufRead) -> io::Result<Response> {
    loop {
        let response = read_one_response(r)?;
        if !(100..200).contains(&response.status) {
            return Ok(response);
        }
    }
}

fn read_one_response(r: &mut impl BufRead) -> io::Result<Response> {
    let mut line = Vec::new();
    read_line(r, &mut line)?;
    let status_line = String::from_utf8_lossy(&line).into_owned();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| bad(format!("bad status line {:?}", status_line)))?;
    let mut keep_alive = version != "HTTP/1.0";
    let mut content_length = None;
    let mut chunked = false;
    let mut head_bytes = line.len();
    loop {
        read_line(r, &mut line)?;
        if line.is_empty() {
            break;
        }
        head_bytes += line.len();
        if head_bytes > MAX_HEAD_BYTES {
            return Err(bad("response head too large"));
        }
        let text = String::from_utf8_lossy(&line);
        let Some((name, value)) = text.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            let len = value
                .parse::<usize>()
                .map_err(|_| bad(format!("bad Content-Length {:?}", value)))?;
            content_length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        Vec::new()
    } else if chunked {
        read_chunked(r)?
    } else if let Some(len) = content_length {
        if len > MAX_BODY_BYTES {
            return Err(bad(format!("response body of {} bytes is too large", len)));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        body
    } else {
        keep_alive = false;
        let mut body = Vec::new();
        r.take(MAX_BODY_BYTES as u64 + 1).read_to_end(&mut body)?;
        if body.len() > MAX_BODY_BYTES {
            return Err(bad("response body too large"));
        }
        body
    };
    Ok(Response {
        status,
        body,
        keep_alive,
    })
}

/// One persistent HTTP/1.1 connection to node `node` (an index into `--nodes`).
struct Conn {
    node: usize,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(node: usize, addr: &str, timeout: Duration) -> io::Result<Conn> {
        let sock: SocketAddr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other(format!("cannot resolve {}", addr)))?;
        let stream = TcpStream::connect_timeout(&sock, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            node,
            reader: BufReader::with_capacity(64 * 1024, stream),
        })
    }

    /// Sends `request` and reads the answer. A large body goes out in pieces, and before
    /// each piece the client looks whether the server has answered already, as curl and
    /// hyper do: a node refusing a 1 MiB PUT (its body budget full) answers before it reads
    /// the body, and a client that listens sees the refusal then, not after uploading the
    /// rest to a busy server. The body was cut short, so the connection is not reused.
    fn round_trip(&mut self, request: &[u8]) -> io::Result<Response> {
        const PIECE: usize = 64 * 1024;
        if request.len() <= PIECE {
            self.reader.get_mut().write_all(request)?;
            return read_response(&mut self.reader);
        }
        for piece in request.chunks(PIECE) {
            if self.answered()? {
                return self.early_response();
            }
            if let Err(e) = self.reader.get_mut().write_all(piece) {
                // The server may have answered and stopped reading: its answer is still
                // in our receive buffer.
                return self.early_response().map_err(|_| e);
            }
        }
        read_response(&mut self.reader)
    }

    /// Whether the server has sent something (or closed the connection) yet.
    fn answered(&self) -> io::Result<bool> {
        if !self.reader.buffer().is_empty() {
            return Ok(true);
        }
        let stream = self.reader.get_ref();
        stream.set_nonblocking(true)?;
        let mut byte = [0u8; 1];
        let peeked = stream.peek(&mut byte);
        stream.set_nonblocking(false)?;
        match peeked {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn early_response(&mut self) -> io::Result<Response> {
        let mut response = read_response(&mut self.reader)?;
        response.keep_alive = false;
        Ok(response)
    }
}

/// Sends `request` over `conn` (opening one to `node` first if there is none) and reads
/// the response. The connection is kept only if it can carry the next request.
fn send(
    conn: &mut Option<Conn>,
    node: usize,
    addr: &str,
    request: &[u8],
    timeout: Duration,
) -> io::Result<Response> {
    let mut c = match conn.take() {
        Some(c) if c.node == node => c,
        _ => Conn::open(node, addr, timeout)?,
    };
    let response = c.round_trip(request)?;
    if response.keep_alive {
        *conn = Some(c);
    }
    Ok(response)
}

/// The bytes of one request.
fn build_request(method: &str, addr: &str, path: &str, json_body: bool, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 160);
    out.extend_from_slice(format!("{} {} HTTP/1.1\r\nHost: {}\r\n", method, path, addr).as_bytes());
    if json_body {
        out.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    if method != "GET" || !body.is_empty() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

// ------------------------------------------------------------------ leader ---

/// The leader as one discovery saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Leader {
    /// Index into `--nodes` of its client address.
    node: usize,
    /// raftkv: its node id; etcd: its member id in hex.
    id: String,
    term: u64,
}

struct LeaderState {
    /// The last leader found (kept while an election leaves none).
    current: Option<Leader>,
    /// Times a discovery found a leader with another id than the one before.
    changes: u64,
    /// Highest term a discovery saw a leader in.
    max_term: u64,
}

/// What one round of `/status` calls found.
struct Probe {
    leader: Option<Leader>,
    /// Nodes that answered.
    answered: usize,
    /// Why the others did not, one entry per node.
    problems: Vec<String>,
}

/// Finds the leader and shares it with the workers.
struct Cluster {
    target: Target,
    nodes: Vec<String>,
    probe_timeout: Duration,
    /// Held during a discovery, so that there is one at a time.
    probing: Mutex<()>,
    state: Mutex<LeaderState>,
    /// Bumped by every discovery, so that workers notice and pick up `state.current`.
    epoch: AtomicU64,
}

/// A number that etcd's gateway may render as a JSON string (64-bit values are).
fn json_u64(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

impl Cluster {
    fn new(target: Target, nodes: Vec<String>, timeout: Duration) -> Self {
        Cluster {
            target,
            nodes,
            probe_timeout: timeout.min(Duration::from_secs(2)),
            probing: Mutex::new(()),
            state: Mutex::new(LeaderState {
                current: None,
                changes: 0,
                max_term: 0,
            }),
            epoch: AtomicU64::new(0),
        }
    }

    /// The status of node `i`: `Ok(Some((id, term)))` if it says it leads.
    fn probe_node(&self, i: usize) -> Result<Option<(String, u64)>, String> {
        let addr = &self.nodes[i];
        let (method, path, body): (&str, &str, &[u8]) = match self.target {
            Target::Raftkv => ("GET", "/status", b""),
            Target::Etcd => ("POST", "/v3/maintenance/status", b"{}"),
        };
        let r = http_request(addr, method, path, &[], body, self.probe_timeout)
            .map_err(|e| format!("{}: {}", addr, e))?;
        if r.status != 200 {
            return Err(format!("{}: status {}: {}", addr, r.status, r.body_text()));
        }
        let v: Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("{}: bad status JSON: {}", addr, e))?;
        let parsed = match self.target {
            Target::Raftkv => (
                v["role"] == "leader",
                json_u64(&v["id"]),
                json_u64(&v["term"]),
            ),
            Target::Etcd => {
                let me = json_u64(&v["header"]["member_id"]);
                let leads = me.is_some() && me == json_u64(&v["leader"]);
                (leads, me, json_u64(&v["raftTerm"]))
            }
        };
        match parsed {
            (false, _, _) => Ok(None),
            (true, Some(id), Some(term)) => Ok(Some(match self.target {
                Target::Raftkv => (id.to_string(), term),
                Target::Etcd => (format!("{:x}", id), term),
            })),
            _ => Err(format!("{}: unexpected status JSON {}", addr, v)),
        }
    }

    /// Asks every node; the leader is the one claiming to lead with the highest term.
    fn probe(&self) -> Probe {
        let mut p = Probe {
            leader: None,
            answered: 0,
            problems: Vec::new(),
        };
        for i in 0..self.nodes.len() {
            match self.probe_node(i) {
                Ok(claim) => {
                    p.answered += 1;
                    if let Some((id, term)) = claim {
                        if p.leader.as_ref().is_none_or(|b| term > b.term) {
                            p.leader = Some(Leader { node: i, id, term });
                        }
                    }
                }
                Err(e) => p.problems.push(e),
            }
        }
        p
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The current epoch and leader.
    fn current(&self) -> (u64, Option<Leader>) {
        let s = lock(&self.state);
        (self.epoch(), s.current.clone())
    }

    /// Leader changes and the highest term seen so far.
    fn changes(&self) -> (u64, u64) {
        let s = lock(&self.state);
        (s.changes, s.max_term)
    }

    /// Records the result of a discovery (`found` is None when no leader was found).
    fn install(&self, found: Option<Leader>) {
        let mut s = lock(&self.state);
        if let Some(new) = found {
            if s.current.as_ref().is_some_and(|old| old.id != new.id) {
                s.changes += 1;
            }
            s.max_term = s.max_term.max(new.term);
            s.current = Some(new);
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Discovers the leader again after a failure seen in epoch `seen`, unless a discovery
    /// has happened since (then its result is returned).
    fn rediscover(&self, seen: u64) -> (u64, Option<Leader>) {
        {
            let _one_at_a_time = lock(&self.probing);
            if self.epoch() == seen {
                self.install(self.probe().leader);
            }
        }
        self.current()
    }

    /// Discovers the leader now and returns what was found.
    fn refresh(&self) -> Probe {
        let _one_at_a_time = lock(&self.probing);
        let p = self.probe();
        self.install(p.leader.clone());
        p
    }
}

/// Polls the nodes' status every `every` until `stop`, so that leader changes are seen
/// (and followed) even when no request fails: a follower forwards writes to the leader.
fn poll_leader(shared: Arc<Shared>, every: Duration) {
    let mut next = Instant::now() + every;
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next {
            shared.cluster.refresh();
            next = Instant::now() + every;
        } else {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
        }
    }
}

// ----------------------------------------------------------------- workers ---

/// Failed operations by kind.
#[derive(Clone, Copy, Default)]
struct Errors {
    /// 503: not applied (no leader, lost leadership...).
    unavailable: u64,
    /// 504: outcome unknown (timed out on the server).
    timeout: u64,
    /// Connection refused, reset, timed out, or a malformed response.
    connection: u64,
    /// A read of a key this connection wrote found nothing.
    read_missing: u64,
    /// Any other status.
    other: u64,
}

impl Errors {
    fn total(&self) -> u64 {
        self.unavailable + self.timeout + self.connection + self.read_missing + self.other
    }

    fn add(&mut self, o: &Errors) {
        self.unavailable += o.unavailable;
        self.timeout += o.timeout;
        self.connection += o.connection;
        self.read_missing += o.read_missing;
        self.other += o.other;
    }
}

/// What happened in the current window: latencies in microseconds, and errors.
#[derive(Default)]
struct Tally {
    writes: Vec<u32>,
    reads: Vec<u32>,
    /// Latency of the 503 answers (an overloaded node should refuse fast).
    refused: Vec<u32>,
    errors: Errors,
}

/// Everything the workers and the reporter share.
struct Shared {
    args: Args,
    prefix: String,
    cluster: Cluster,
    stop: AtomicBool,
    /// Successful writes so far.
    written: AtomicU64,
    /// Writes counted against `--total-keys`: in flight or done (a failed one gives its
    /// slot back), so that exactly that many succeed.
    claimed: AtomicU64,
    /// The next fresh key number.
    next_key: AtomicU64,
    tally: Mutex<Tally>,
    /// With --verify: acknowledged writes read back intact, missing or different, and not
    /// checked (no answer within VERIFY_DEADLINE).
    verified: AtomicU64,
    lost: AtomicU64,
    unchecked: AtomicU64,
    /// Connections still allowed to start reading back (at most VERIFY_CONNECTIONS at once,
    /// so that the read-back does not become a load of its own).
    verify_slots: (Mutex<usize>, std::sync::Condvar),
}

enum Op {
    Write,
    Read,
}

enum Outcome {
    Ok,
    Unavailable,
    Timeout,
    Connection,
    ReadMissing,
    Other,
}

fn classify(target: Target, op: &Op, result: &io::Result<Response>) -> Outcome {
    let r = match result {
        Ok(r) => r,
        Err(_) => return Outcome::Connection,
    };
    match (r.status, op) {
        (200, Op::Read) if target == Target::Etcd => {
            // A range that found nothing has no "kvs" field.
            let found = serde_json::from_slice::<Value>(&r.body)
                .map(|v| v["kvs"].as_array().is_some_and(|a| !a.is_empty()))
                .unwrap_or(false);
            if found {
                Outcome::Ok
            } else {
                Outcome::ReadMissing
            }
        }
        (200, _) => Outcome::Ok,
        (404, Op::Read) => Outcome::ReadMissing,
        (503, _) => Outcome::Unavailable,
        (504, _) => Outcome::Timeout,
        _ => Outcome::Other,
    }
}

/// Claims one write against `--total-keys`: `Some(true)` to go ahead, `Some(false)` to
/// wait (writes in flight may still fail and give their slot back), None when done.
fn claim_write(shared: &Shared) -> Option<bool> {
    let Some(limit) = shared.args.total_keys else {
        return Some(true);
    };
    if shared.claimed.fetch_add(1, Ordering::SeqCst) < limit {
        return Some(true);
    }
    shared.claimed.fetch_sub(1, Ordering::SeqCst);
    if shared.written.load(Ordering::SeqCst) >= limit {
        None
    } else {
        Some(false)
    }
}

/// One connection's loop: an operation at a time until told to stop.
fn worker(shared: Arc<Shared>) {
    let args = &shared.args;
    let target = args.target;
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut rng = rand::thread_rng();
    let mut value = vec![0u8; args.value_bytes];
    rng.fill_bytes(&mut value);
    let value_b64 = match target {
        Target::Etcd => base64(&value),
        Target::Raftkv => String::new(),
    };
    let mut conn: Option<Conn> = None;
    let (mut epoch, mut leader) = shared.cluster.current();
    // Key numbers this connection wrote, for reads and for --verify.
    let mut mine: Vec<u64> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        if shared.cluster.epoch() != epoch {
            (epoch, leader) = shared.cluster.current();
        }
        let Some(node) = leader.as_ref().map(|l| l.node) else {
            (epoch, leader) = shared.cluster.rediscover(epoch);
            if leader.is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            continue;
        };
        let read =
            args.read_fraction > 0.0 && !mine.is_empty() && rng.gen::<f64>() < args.read_fraction;
        let (op, key_no) = if read {
            (Op::Read, mine[rng.gen_range(0..mine.len())])
        } else {
            match claim_write(&shared) {
                None => break,
                Some(false) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Some(true) => {}
            }
            let n = match args.keys {
                KeySpace::Fresh => shared.next_key.fetch_add(1, Ordering::Relaxed),
                KeySpace::Fixed(n) => rng.gen_range(0..n),
            };
            (Op::Write, n)
        };
        let key = format!("{}{:010}", shared.prefix, key_no);
        let addr = &shared.cluster.nodes[node];
        let request = match (target, &op) {
            (Target::Raftkv, Op::Write) => build_request(
                "PUT",
                addr,
                &format!("/kv/{}", encode_key(&key)),
                false,
                &value,
            ),
            (Target::Raftkv, Op::Read) => build_request(
                "GET",
                addr,
                &format!("/kv/{}", encode_key(&key)),
                false,
                b"",
            ),
            (Target::Etcd, Op::Write) => {
                let body = format!(
                    r#"{{"key":"{}","value":"{}"}}"#,
                    base64(key.as_bytes()),
                    value_b64
                );
                build_request("POST", addr, "/v3/kv/put", true, body.as_bytes())
            }
            (Target::Etcd, Op::Read) => {
                let body = format!(r#"{{"key":"{}"}}"#, base64(key.as_bytes()));
                build_request("POST", addr, "/v3/kv/range", true, body.as_bytes())
            }
        };
        let t0 = Instant::now();
        let result = send(&mut conn, node, addr, &request, timeout);
        let micros = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
        let outcome = classify(target, &op, &result);
        if matches!(op, Op::Write) {
            if matches!(outcome, Outcome::Ok) {
                shared.written.fetch_add(1, Ordering::SeqCst);
                if args.read_fraction > 0.0 || args.verify {
                    mine.push(key_no);
                }
            } else if args.total_keys.is_some() {
                shared.claimed.fetch_sub(1, Ordering::SeqCst);
            }
        }
        {
            let mut t = lock(&shared.tally);
            match (&outcome, &op) {
                (Outcome::Ok, Op::Write) => t.writes.push(micros),
                (Outcome::Ok, Op::Read) => t.reads.push(micros),
                (Outcome::Unavailable, _) => {
                    t.errors.unavailable += 1;
                    t.refused.push(micros);
                }
                (Outcome::Timeout, _) => t.errors.timeout += 1,
                (Outcome::Connection, _) => t.errors.connection += 1,
                (Outcome::ReadMissing, _) => t.errors.read_missing += 1,
                (Outcome::Other, _) => t.errors.other += 1,
            }
        }
        match outcome {
            Outcome::Ok | Outcome::ReadMissing => {}
            Outcome::Unavailable | Outcome::Timeout | Outcome::Connection => {
                // Maybe the leader moved: look again (once per failure epoch across
                // threads), then back off a little.
                conn = None;
                (epoch, leader) = shared.cluster.rediscover(epoch);
                std::thread::sleep(ERROR_BACKOFF);
            }
            Outcome::Other => std::thread::sleep(ERROR_BACKOFF),
        }
    }
    if args.verify {
        let (slots, freed) = &shared.verify_slots;
        let mut free = lock(slots);
        while *free == 0 {
            free = freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        drop(free);
        verify(&shared, &mine, &value);
        *lock(slots) += 1;
        freed.notify_one();
    }
}

/// Reads back every key in `keys` (this connection's acknowledged writes, all of `value`)
/// through the leader, retrying refusals and failovers until VERIFY_DEADLINE.
fn verify(shared: &Shared, keys: &[u64], value: &[u8]) {
    let timeout = Duration::from_millis(shared.args.timeout_ms);
    let deadline = Instant::now() + VERIFY_DEADLINE;
    let mut conn: Option<Conn> = None;
    let (mut epoch, mut leader) = shared.cluster.current();
    for (i, key_no) in keys.iter().enumerate() {
        let key = format!("{}{:010}", shared.prefix, key_no);
        loop {
            if Instant::now() >= deadline {
                shared
                    .unchecked
                    .fetch_add((keys.len() - i) as u64, Ordering::SeqCst);
                return;
            }
            let Some(node) = leader.as_ref().map(|l| l.node) else {
                (epoch, leader) = shared.cluster.rediscover(epoch);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            let addr = &shared.cluster.nodes[node];
            let request = build_request(
                "GET",
                addr,
                &format!("/kv/{}", encode_key(&key)),
                false,
                b"",
            );
            match send(&mut conn, node, addr, &request, timeout) {
                Ok(r) if r.status == 200 && r.body == value => {
                    shared.verified.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Ok(r) if r.status == 200 || r.status == 404 => {
                    eprintln!(
                        "bench: acknowledged write of {} reads back as {} ({} bytes)",
                        key,
                        r.status,
                        r.body.len()
                    );
                    shared.lost.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                _ => {
                    conn = None;
                    (epoch, leader) = shared.cluster.rediscover(epoch);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

// ---------------------------------------------------------------- reporting ---

/// Nearest-rank percentile of sorted microseconds, in milliseconds (0 when empty).
fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn max_ms(sorted: &[u32]) -> f64 {
    sorted.last().map_or(0.0, |&m| m as f64 / 1000.0)
}

/// Rounds to 3 decimals, for JSON.
fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

struct WindowReport {
    index: usize,
    /// Seconds since the start, at the end of the window.
    elapsed: f64,
    /// Length of the window in seconds (the last one may be shorter or longer).
    secs: f64,
    writes: usize,
    write_p50: f64,
    write_p99: f64,
    write_max: f64,
    reads: usize,
    read_p50: f64,
    read_p99: f64,
    errors: u64,
    total_keys: u64,
    leader: Option<Leader>,
    /// Nodes that answered the status call at the end of the window.
    answered: usize,
    leader_changes: u64,
}

impl WindowReport {
    fn writes_per_s(&self) -> f64 {
        self.writes as f64 / self.secs.max(1e-9)
    }

    fn reads_per_s(&self) -> f64 {
        self.reads as f64 / self.secs.max(1e-9)
    }

    /// The report line; `previous` is the leader reported before, `nodes` the node count.
    fn line(&self, with_reads: bool, previous: Option<&Leader>, nodes: usize) -> String {
        let mut s = format!(
            "{:>4} {:>8.1} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>11}",
            self.index,
            self.elapsed,
            self.writes_per_s(),
            self.write_p50,
            self.write_p99,
            self.write_max,
            self.errors,
            self.total_keys
        );
        if with_reads {
            s.push_str(&format!(
                " {:>9.1} {:>8.2} {:>8.2}",
                self.reads_per_s(),
                self.read_p50,
                self.read_p99
            ));
        }
        match &self.leader {
            Some(l) => s.push_str(&format!("  {} (term {})", l.id, l.term)),
            None => s.push_str(&format!(
                "  none found ({} of {} nodes answered)",
                self.answered, nodes
            )),
        }
        if self.leader_changes > 0 {
            let was = previous.map_or("?".to_string(), |p| p.id.clone());
            s.push_str(&format!(
                "  LEADER CHANGED x{} (was {})",
                self.leader_changes, was
            ));
        } else if let (Some(l), Some(p)) = (&self.leader, previous) {
            if l.term != p.term {
                s.push_str(&format!("  NEW TERM (was {})", p.term));
            }
        }
        s
    }

    fn json(&self) -> Value {
        json!({
            "window": self.index,
            "elapsed_s": r3(self.elapsed),
            "secs": r3(self.secs),
            "writes": self.writes,
            "writes_per_s": r3(self.writes_per_s()),
            "p50_ms": r3(self.write_p50),
            "p99_ms": r3(self.write_p99),
            "max_ms": r3(self.write_max),
            "reads": self.reads,
            "reads_per_s": r3(self.reads_per_s()),
            "read_p50_ms": r3(self.read_p50),
            "read_p99_ms": r3(self.read_p99),
            "errors": self.errors,
            "total_keys": self.total_keys,
            "leader": self.leader.as_ref().map(|l| l.id.clone()),
            "term": self.leader.as_ref().map(|l| l.term),
            "nodes_answering": self.answered,
            "leader_changes": self.leader_changes,
        })
    }
}

fn validate(args: &Args) -> Result<(), String> {
    if args.nodes.iter().all(|n| n.trim().is_empty()) {
        return Err("--nodes is empty".into());
    }
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if args.window == 0 {
        return Err("--window must be at least 1 second".into());
    }
    if args.duration == Some(0) || args.total_keys == Some(0) {
        return Err("--duration and --total-keys must be positive".into());
    }
    if !(0.0..1.0).contains(&args.read_fraction) {
        return Err("--read-fraction must be in [0, 1)".into());
    }
    if args.timeout_ms == 0 {
        return Err("--timeout-ms must be positive".into());
    }
    if args.verify && (args.target != Target::Raftkv || args.keys != KeySpace::Fresh) {
        return Err("--verify needs --target raftkv and --keys fresh".into());
    }
    Ok(())
}

/// Every member's HTTP address, learned from the first node of `given` that answers
/// `/cluster/overview` (so a 5-node cluster is used whole whatever `--nodes` lists); the
/// given list when none answers or the advertised addresses are not reachable from here.
fn discover_members(given: &[String]) -> Vec<String> {
    for node in given {
        let Ok(r) = http_request(
            node,
            "GET",
            "/cluster/overview",
            &[],
            b"",
            Duration::from_secs(2),
        ) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) else {
            continue;
        };
        let found: Vec<String> = v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["http_addr"].as_str().map(str::to_string))
            .filter(|a| !a.is_empty())
            .collect();
        // Names a node advertises may not resolve from here (containers): use them only
        // if every one answers.
        let reachable = |a: &String| {
            http_request(a, "GET", "/status", &[], b"", Duration::from_secs(2))
                .is_ok_and(|r| r.status == 200)
        };
        if !found.is_empty() && found.iter().all(reachable) {
            return found;
        }
    }
    given.to_vec()
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Err(e) = validate(&args) {
        eprintln!("bench: error: {}", e);
        return ExitCode::from(2);
    }
    args.nodes = args
        .nodes
        .iter()
        .map(|n| n.trim().trim_start_matches("http://").to_string())
        .filter(|n| !n.is_empty())
        .collect();
    if args.target == Target::Raftkv {
        args.nodes = discover_members(&args.nodes);
    }
    let json_out = args.json;
    let say = |line: &str| {
        if json_out {
            eprintln!("{}", line);
        } else {
            println!("{}", line);
        }
    };
    let prefix = args.key_prefix.clone().unwrap_or_else(|| {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("bench-{:x}-", secs)
    });
    let timeout = Duration::from_millis(args.timeout_ms);
    let cluster = Cluster::new(args.target, args.nodes.clone(), timeout);

    let wait_start = Instant::now();
    let first = loop {
        let p = cluster.probe();
        if let Some(leader) = p.leader {
            break leader;
        }
        if wait_start.elapsed() >= STARTUP_LEADER_WAIT {
            eprintln!(
                "bench: error: no {} leader among {} after {} s: {}",
                args.target.name(),
                args.nodes.join(","),
                STARTUP_LEADER_WAIT.as_secs(),
                if p.problems.is_empty() {
                    "no node says it leads".to_string()
                } else {
                    p.problems.join("; ")
                }
            );
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    cluster.install(Some(first.clone()));

    let run_for = match (args.duration, args.total_keys) {
        (Some(d), _) => Some(Duration::from_secs(d)),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(60)),
    };
    let window = Duration::from_secs(args.window);
    let with_reads = args.read_fraction > 0.0;
    say(&format!(
        "bench: {} leader {} at {} (term {}); {} connections, {} B values, keys {} (prefix {}), {}{}, window {} s{}",
        args.target.name(),
        first.id,
        args.nodes[first.node],
        first.term,
        args.connections,
        args.value_bytes,
        args.keys,
        prefix,
        run_for.map_or(String::new(), |d| format!("for {} s", d.as_secs())),
        match (run_for, args.total_keys) {
            (Some(_), Some(n)) => format!(" or until {} writes", n),
            (None, Some(n)) => format!("until {} writes", n),
            _ => String::new(),
        },
        args.window,
        if with_reads {
            format!(", read fraction {}", args.read_fraction)
        } else {
            String::new()
        }
    ));
    let mut header = format!(
        "{:>4} {:>8} {:>10} {:>8} {:>8} {:>8} {:>7} {:>11}",
        "win", "elapsed", "writes/s", "p50 ms", "p99 ms", "max ms", "errors", "total keys"
    );
    if with_reads {
        header.push_str(&format!(
            " {:>9} {:>8} {:>8}",
            "reads/s", "r50 ms", "r99 ms"
        ));
    }
    header.push_str("  leader (term)");
    say(&header);

    let shared = Arc::new(Shared {
        args,
        prefix,
        cluster,
        stop: AtomicBool::new(false),
        written: AtomicU64::new(0),
        claimed: AtomicU64::new(0),
        next_key: AtomicU64::new(0),
        tally: Mutex::new(Tally::default()),
        verified: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        unchecked: AtomicU64::new(0),
        verify_slots: (Mutex::new(VERIFY_CONNECTIONS), std::sync::Condvar::new()),
    });
    let start = Instant::now();
    let mut handles: Vec<JoinHandle<()>> = (0..shared.args.connections)
        .map(|_| {
            let shared = shared.clone();
            std::thread::spawn(move || worker(shared))
        })
        .collect();
    let mut poller = (shared.args.poll_ms > 0).then(|| {
        let shared = shared.clone();
        let every = Duration::from_millis(shared.args.poll_ms);
        std::thread::spawn(move || poll_leader(shared, every))
    });

    let mut windows: Vec<WindowReport> = Vec::new();
    let mut all_writes: Vec<u32> = Vec::new();
    let mut all_refused: Vec<u32> = Vec::new();
    let mut all_reads: Vec<u32> = Vec::new();
    let mut errors = Errors::default();
    let mut window_start = start;
    let first_term = first.term;
    let mut last_leader = Some(first);
    let mut changes_before = 0;
    let mut max_term = first_term;
    for index in 1.. {
        let window_end = start + window * index as u32;
        let finished = loop {
            let now = Instant::now();
            if run_for.is_some_and(|d| now >= start + d) {
                break true;
            }
            if shared
                .args
                .total_keys
                .is_some_and(|n| shared.written.load(Ordering::SeqCst) >= n)
            {
                break true;
            }
            if handles.iter().all(|h| h.is_finished()) {
                break true;
            }
            if now >= window_end {
                break false;
            }
            std::thread::sleep((window_end - now).min(Duration::from_millis(50)));
        };
        // The load ends here; with --verify the workers then read their writes back.
        let now = Instant::now();
        if finished {
            shared.stop.store(true, Ordering::SeqCst);
            for h in handles.drain(..) {
                if h.join().is_err() {
                    eprintln!("bench: a worker thread panicked");
                }
            }
        }
        if finished {
            if let Some(h) = poller.take() {
                if h.join().is_err() {
                    eprintln!("bench: the leader poller panicked");
                }
            }
        }
        let mut tally = std::mem::take(&mut *lock(&shared.tally));
        let probe = shared.cluster.refresh();
        let leader = probe.leader;
        let changes;
        (changes, max_term) = shared.cluster.changes();
        tally.writes.sort_unstable();
        tally.reads.sort_unstable();
        let report = WindowReport {
            index,
            elapsed: (now - start).as_secs_f64(),
            secs: (now - window_start).as_secs_f64(),
            writes: tally.writes.len(),
            write_p50: percentile_ms(&tally.writes, 0.50),
            write_p99: percentile_ms(&tally.writes, 0.99),
            write_max: max_ms(&tally.writes),
            reads: tally.reads.len(),
            read_p50: percentile_ms(&tally.reads, 0.50),
            read_p99: percentile_ms(&tally.reads, 0.99),
            errors: tally.errors.total(),
            total_keys: shared.written.load(Ordering::SeqCst),
            leader: leader.clone(),
            answered: probe.answered,
            leader_changes: changes - changes_before,
        };
        say(&report.line(with_reads, last_leader.as_ref(), shared.args.nodes.len()));
        changes_before = changes;
        if leader.is_some() {
            last_leader = leader;
        }
        errors.add(&tally.errors);
        all_writes.extend_from_slice(&tally.writes);
        all_reads.extend_from_slice(&tally.reads);
        all_refused.extend_from_slice(&tally.refused);
        windows.push(report);
        window_start = now;
        if finished {
            break;
        }
    }

    let elapsed = (window_start - start).as_secs_f64();
    all_writes.sort_unstable();
    all_reads.sort_unstable();
    all_refused.sort_unstable();
    // Window-to-window comparisons use complete windows only (the last one is usually
    // cut short), unless there are none.
    let complete: Vec<&WindowReport> = windows
        .iter()
        .filter(|w| w.secs >= window.as_secs_f64() * 0.99)
        .collect();
    let compared: Vec<&WindowReport> = if complete.is_empty() {
        windows.iter().collect()
    } else {
        complete
    };
    let first_wps = compared.first().map_or(0.0, |w| w.writes_per_s());
    let min_wps = compared
        .iter()
        .map(|w| w.writes_per_s())
        .fold(f64::INFINITY, f64::min);
    let min_over_first = (first_wps > 0.0).then(|| min_wps / first_wps);
    let max_window_p99 = compared.iter().map(|w| w.write_p99).fold(0.0, f64::max);
    let writes = all_writes.len();
    let wps = writes as f64 / elapsed.max(1e-9);
    let leader_changes = changes_before;

    say(&format!(
        "summary: {} writes in {:.1} s = {:.1} writes/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        writes,
        elapsed,
        wps,
        percentile_ms(&all_writes, 0.50),
        percentile_ms(&all_writes, 0.99),
        max_ms(&all_writes)
    ));
    if with_reads {
        say(&format!(
            "         {} reads = {:.1} reads/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            all_reads.len(),
            all_reads.len() as f64 / elapsed.max(1e-9),
            percentile_ms(&all_reads, 0.50),
            percentile_ms(&all_reads, 0.99),
            max_ms(&all_reads)
        ));
    }
    say(&format!(
        "         errors {} (503: {}, 504: {}, connection: {}, read missing: {}, other: {}); leader changes {}, term {} -> {}",
        errors.total(),
        errors.unavailable,
        errors.timeout,
        errors.connection,
        errors.read_missing,
        errors.other,
        leader_changes,
        first_term,
        max_term
    ));
    say(&format!(
        "         min window / first window throughput {}; max window p99 {:.2} ms",
        min_over_first.map_or("n/a".to_string(), |r| format!("{:.3}", r)),
        max_window_p99
    ));
    let (verified, lost, unchecked) = (
        shared.verified.load(Ordering::SeqCst),
        shared.lost.load(Ordering::SeqCst),
        shared.unchecked.load(Ordering::SeqCst),
    );
    if shared.args.verify {
        say(&format!(
            "         read back: {} acknowledged writes intact, {} missing or different, {} not checked",
            verified, lost, unchecked
        ));
    }
    if json_out {
        let args = &shared.args;
        let summary = json!({
            "target": args.target.name(),
            "nodes": args.nodes,
            "connections": args.connections,
            "value_bytes": args.value_bytes,
            "keys": args.keys.to_string(),
            "read_fraction": args.read_fraction,
            "window_s": args.window,
            "elapsed_s": r3(elapsed),
            "writes": writes,
            "writes_per_s": r3(wps),
            "p50_ms": r3(percentile_ms(&all_writes, 0.50)),
            "p99_ms": r3(percentile_ms(&all_writes, 0.99)),
            "max_ms": r3(max_ms(&all_writes)),
            "reads": all_reads.len(),
            "reads_per_s": r3(all_reads.len() as f64 / elapsed.max(1e-9)),
            "read_p50_ms": r3(percentile_ms(&all_reads, 0.50)),
            "read_p99_ms": r3(percentile_ms(&all_reads, 0.99)),
            "refused_p99_ms": r3(percentile_ms(&all_refused, 0.99)),
            "refused_max_ms": r3(max_ms(&all_refused)),
            "errors": errors.total(),
            "errors_by_kind": {
                "unavailable_503": errors.unavailable,
                "timeout_504": errors.timeout,
                "connection": errors.connection,
                "read_missing": errors.read_missing,
                "other": errors.other,
            },
            "leader_changes": leader_changes,
            "first_term": first_term,
            "max_term": max_term,
            "poll_ms": args.poll_ms,
            "final_leader": last_leader.as_ref().map(|l| l.id.clone()),
            "final_term": last_leader.as_ref().map(|l| l.term),
            "min_over_first_window_throughput": min_over_first.map(r3),
            "max_window_p99_ms": r3(max_window_p99),
            "windows": windows.iter().map(WindowReport::json).collect::<Vec<_>>(),
            "verified": args.verify.then_some(verified),
            "lost": args.verify.then_some(lost),
            "unchecked": args.verify.then_some(unchecked),
        });
        println!("{}", summary);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn reads_back_to_back_responses() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let mut r = BufReader::new(&raw[..]);
        let a = read_response(&mut r).unwrap();
        assert_eq!(
            (a.status, a.body.as_slice(), a.keep_alive),
            (200, &b"hello"[..], true)
        );
        let b = read_response(&mut r).unwrap();
        assert_eq!(
            (b.status, b.body.as_slice(), b.keep_alive),
            (503, &b"abcde"[..], true)
        );
        let c = read_response(&mut r).unwrap();
        assert_eq!((c.status, c.body.len(), c.keep_alive), (200, 0, false));
        assert!(read_response(&mut r).is_err());
    }

    #[test]
    fn rejects_malformed_responses() {
        for raw in [
            &b"garbage\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        ] {
            assert!(read_response(&mut BufReader::new(raw)).is_err());
        }
    }

    #[test]
    fn key_space_parses() {
        assert_eq!("fresh".parse::<KeySpace>(), Ok(KeySpace::Fresh));
        assert_eq!("1000".parse::<KeySpace>(), Ok(KeySpace::Fixed(1000)));
        assert!("0".parse::<KeySpace>().is_err());
        assert!("many".parse::<KeySpace>().is_err());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.50), 50.0);
        assert_eq!(percentile_ms(&v, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.99), 0.0);
    }
}
