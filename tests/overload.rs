//! Overload on real processes: a node holds a bounded amount of client data, and what it
//! cannot take is refused at once with 503, `Retry-After` and a JSON body, never left to
//! pile up in memory.

#[path = "support/cluster.rs"]
mod cluster;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cluster::{Cluster, ELECTION_DEADLINE};
use raftkv::http::MAX_BODY_BYTES_IN_FLIGHT;

/// Clients that announce 1 MiB bodies and then send them slowly fill the room for bodies in
/// flight (32 MiB). Every request beyond it is refused within a fraction of a second with
/// 503 overloaded; once the slow clients go away, writes work again.
#[test]
fn bodies_beyond_the_budget_are_refused_fast_with_retry_after() {
    let c = Cluster::start("overload-bodies", 3);
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    let addr = c.http_addr(leader);
    let mib = 1024 * 1024;
    let room = MAX_BODY_BYTES_IN_FLIGHT / mib;
    let extra = 8;
    let mut conns = Vec::new();
    for i in 0..room + extra {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let head = format!(
            "PUT /kv/slow-{} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\nv",
            i, mib
        );
        s.write_all(head.as_bytes()).unwrap();
        conns.push((s, Instant::now()));
    }
    // Exactly `extra` of them are answered (the others wait for their bodies): read all of
    // them at once, each on its own thread.
    let readers: Vec<_> = conns
        .iter()
        .map(|(s, sent)| {
            let mut s = s.try_clone().unwrap();
            let sent = *sent;
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                match s.read(&mut buf) {
                    Ok(n) if n > 0 => Some((
                        sent.elapsed(),
                        String::from_utf8_lossy(&buf[..n]).to_string(),
                    )),
                    _ => None, // still waiting for its body: it holds room
                }
            })
        })
        .collect();
    let mut refused = 0;
    for r in readers {
        let Some((took, text)) = r.join().unwrap() else {
            continue;
        };
        assert!(text.starts_with("HTTP/1.1 503"), "{}", text);
        assert!(text.to_lowercase().contains("retry-after: 1"), "{}", text);
        assert!(text.contains("\"error\":\"overloaded"), "{}", text);
        assert!(
            took < Duration::from_secs(2),
            "refused only after {:?}",
            took
        );
        refused += 1;
    }
    assert_eq!(
        refused, extra,
        "the room holds exactly {} MiB of bodies",
        room
    );
    drop(conns);
    // The room is free again.
    c.put_acked(leader, "after-overload", b"fine");
}
