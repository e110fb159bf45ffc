//! A small blocking HTTP/1.1 client for the raftkv API, used by the `raftkv` CLI and by the
//! tests. [`KvClient`] retries writes on 503/504/connection errors with the same
//! `X-Client-Id`/`X-Request-Seq`, so each write applies exactly once.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection (`Connection: close`). `addr` is `host:port`.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    let sock: SocketAddr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("cannot resolve {}", addr)))?;
    let mut stream = TcpStream::connect_timeout(&sock, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let _ = stream.set_nodelay(true);
    let mut req = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        method,
        path,
        addr,
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{}: {}\r\n", k, v));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("incomplete response head"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    } else if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        if body.len() < len {
            return Err(bad("truncated body"));
        }
        body.truncate(len);
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        // A size near usize::MAX from a hostile server must not overflow.
        if data.len() < size.checked_add(2)? {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Percent-encodes a key for use in a URL path.
pub fn encode_key(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{:02X}", b)),
        }
    }
    out
}

/// The outcome of a client call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvResult {
    /// 2xx: the body (value for GET, JSON for writes).
    Ok(Vec<u8>),
    /// 404 on GET.
    NotFound,
    /// Gave up: the last status (or 0 for a connection error) and message. For a write, a
    /// last error of 504 or a connection error means the outcome is unknown.
    Failed { status: u16, message: String },
}

/// A client that talks to any node of a cluster, retrying writes exactly-once.
pub struct KvClient {
    nodes: Vec<String>,
    client_id: String,
    next_seq: u64,
    /// Total time a call may take, retries included.
    pub deadline: Duration,
    /// Timeout of one HTTP attempt.
    pub attempt_timeout: Duration,
    preferred: usize,
    /// Retry after a 504 (safe for key-value calls: exactly-once sessions).
    retry_unknown: bool,
    /// Say on stderr, about once a second, that the call is still being retried and the
    /// most informative answer so far (the CLI sets it).
    pub progress: bool,
}

/// How informative a failed attempt is: an answer from a node beats a refused connection,
/// and "outcome unknown" (504) beats everything, since it means an earlier attempt may
/// have taken effect.
fn rank(r: &KvResult) -> u8 {
    match r {
        KvResult::Failed { status: 0, .. } => 0,
        KvResult::Failed { status: 504, .. } => 2,
        _ => 1,
    }
}

impl KvClient {
    pub fn new(nodes: Vec<String>, client_id: String) -> Self {
        KvClient {
            nodes,
            client_id,
            next_seq: 1,
            deadline: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(6),
            preferred: 0,
            retry_unknown: true,
            progress: false,
        }
    }

    /// The seq the next write will carry.
    pub fn set_next_seq(&mut self, seq: u64) {
        self.next_seq = seq;
    }

    pub fn put(&mut self, key: &str, value: &[u8]) -> KvResult {
        self.write("PUT", key, value)
    }

    pub fn delete(&mut self, key: &str) -> KvResult {
        self.write("DELETE", key, b"")
    }

    pub fn get(&mut self, key: &str, stale: bool) -> KvResult {
        let path = format!(
            "/kv/{}{}",
            encode_key(key),
            if stale { "?consistency=stale" } else { "" }
        );
        self.call("GET", &path, &[], b"")
    }

    /// A request to the operator's endpoints, tried on the nodes in turn while the answer
    /// says nothing was done (503, or no connection). These requests carry no session, so
    /// a 504 (outcome unknown) is final: repeating a leadership transfer or a membership
    /// change that may have happened could do it twice.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> KvResult {
        self.retry_unknown = false;
        let r = self.call(method, path, &[], body);
        self.retry_unknown = true;
        r
    }

    fn write(&mut self, method: &str, key: &str, body: &[u8]) -> KvResult {
        let seq = self.next_seq;
        self.next_seq += 1;
        let headers = [
            ("X-Client-Id", self.client_id.clone()),
            ("X-Request-Seq", seq.to_string()),
        ];
        let path = format!("/kv/{}", encode_key(key));
        self.call(method, &path, &headers, body)
    }

    /// Tries nodes in turn until one answers definitively or the deadline passes. Every
    /// attempt of one call carries the same headers, so a write retried after a lost
    /// answer is recognised by the state machine and not applied twice.
    fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> KvResult {
        let start = Instant::now();
        let mut best = KvResult::Failed {
            status: 0,
            message: "no attempt made".into(),
        };
        let mut attempt = 0u32;
        let mut told = Duration::ZERO;
        while start.elapsed() < self.deadline {
            let node = self.nodes[self.preferred % self.nodes.len()].clone();
            let last = match http_request(&node, method, path, headers, body, self.attempt_timeout)
            {
                Ok(r) if (200..300).contains(&r.status) => return KvResult::Ok(r.body),
                Ok(r) if r.status == 404 && method == "GET" => return KvResult::NotFound,
                Ok(r) if r.status == 503 || (r.status == 504 && self.retry_unknown) => {
                    KvResult::Failed {
                        status: r.status,
                        message: format!("{}: {}", node, r.body_text().trim()),
                    }
                }
                Ok(r) => {
                    return KvResult::Failed {
                        status: r.status,
                        message: r.body_text(),
                    }
                }
                Err(e) => KvResult::Failed {
                    status: 0,
                    message: format!("{}: {}", node, e),
                },
            };
            if rank(&last) >= rank(&best) {
                best = last;
            }
            let waited = start.elapsed();
            if self.progress
                && waited >= Duration::from_secs(1)
                && waited >= told + Duration::from_secs(1)
            {
                told = waited;
                if let KvResult::Failed { status, message } = &best {
                    eprintln!(
                        "raftkv: no definite answer after {:.1} s, still trying (best answer so far: {}{})",
                        waited.as_secs_f64(),
                        if *status == 0 { String::new() } else { format!("{} ", status) },
                        message
                    );
                }
            }
            self.preferred += 1;
            attempt += 1;
            std::thread::sleep(Duration::from_millis((50 * attempt as u64).min(500)));
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_size_near_usize_max_is_an_error_not_an_overflow() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\nabc\r\n0\r\n\r\n";
        assert!(parse_response(raw).is_err());
        assert_eq!(dechunk(b"fffffffffffffffe\r\nx\r\n"), None);
    }

    #[test]
    fn parses_fixed_and_chunked_bodies() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn keys_are_percent_encoded() {
        assert_eq!(encode_key("a b/c"), "a%20b%2Fc");
    }
}
