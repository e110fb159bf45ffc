//! Hostile and misconfigured peers, on real processes: the peer port authenticates before
//! it reads any Raft message, refuses cheaply, and neither side floods its log or the
//! network when a peer keeps refusing.

#[path = "support/cluster.rs"]
mod cluster;

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{raw_exchange, Cluster, ClusterOptions, ELECTION_DEADLINE};
use raftkv::client::KvResult;

/// Lines of `text` that contain every one of `needles`.
fn lines_with(text: &str, needles: &[&str]) -> usize {
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// Node 3 has another cluster secret. The other two form the cluster and serve; node 3
/// never gets in, both sides say why, and say it once per interval, not per attempt.
#[test]
fn a_peer_with_the_wrong_secret_is_kept_out_without_a_log_flood() {
    let mut c = Cluster::prepare("wrong-secret", ClusterOptions::fast(3));
    let wrong = c.dir.join("other.secret");
    std::fs::write(&wrong, "not the cluster's secret at all").unwrap();
    c.set_secret_file(3, Some(wrong));
    c.launch();
    let (leader, term) = c.agreed_by_1_and_2();
    assert_ne!(leader, 3, "the outsider cannot lead");
    c.put_acked(leader, "k", b"v");
    std::thread::sleep(Duration::from_secs(4));
    // Node 3 heard nothing it could trust: no leader, no term, no data; and it did not
    // disturb the others.
    assert_eq!(c.agreed_by_1_and_2(), (leader, term));
    let outsider = c.status(3).unwrap();
    assert_eq!(
        (outsider.term, outsider.leader, outsider.last_applied),
        (0, None, 0)
    );
    for id in [1, 2] {
        let text = c.log_text(id);
        assert!(
            text.contains("could not prove the cluster secret")
                || text.contains("failed authentication")
                || text.contains("did not prove the cluster secret"),
            "node {} does not say why node 3 is kept out:\n{}",
            id,
            text
        );
        let about_3 = lines_with(&text, &["peer 3"]) + lines_with(&text, &["node 3 "]);
        assert!(
            about_3 <= 8,
            "node {} logged {} lines about node 3 in 4 s:\n{}",
            id,
            about_3,
            text
        );
    }
    let text = c.log_text(3);
    assert!(
        lines_with(&text, &["cannot connect to peer"]) <= 4,
        "node 3 floods its log:\n{}",
        text
    );
}

/// A peer address where something accepts the connection and closes it at once (a proxy,
/// another service, a half-dead node): the node backs off instead of reconnecting in a
/// tight loop.
#[test]
fn a_peer_that_accepts_and_closes_is_retried_with_back_off() {
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_addr = fake.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in fake.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let mut c = Cluster::prepare("accept-close", ClusterOptions::fast(3));
    c.route_peer(1, 3, fake_addr);
    // Every node serves (`launch` waits for that); who leads does not matter here (if node
    // 1 does, node 3 never hears from it).
    c.launch();
    // At first such closes are retried like an unreachable peer (a flaky link or a peer
    // that is restarting looks the same): back-off doubling to 250 ms, a few attempts a
    // second. After 3 s of them the back-off grows to 2 s, as for a refusal.
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let first = accepted.load(Ordering::SeqCst);
    assert!(first <= 20, "{} connections in the first 4 s", first);
    std::thread::sleep(Duration::from_secs(4));
    let later = accepted.load(Ordering::SeqCst) - first;
    assert!(
        later <= 4,
        "{} connections in the 4 s after {:?}",
        later,
        start.elapsed() - Duration::from_secs(4)
    );
    let text = c.log_text(1);
    assert!(
        lines_with(&text, &["cannot connect to peer 3"]) <= 2,
        "node 1 floods its log:\n{}",
        text
    );
}

/// Bytes that are not a handshake, and a handshake frame that claims 32 MiB, are refused
/// before the node allocates for them; the node keeps serving.
#[test]
fn oversized_and_garbage_handshakes_are_refused_cheaply() {
    let c = Cluster::start("hostile-handshake", 3);
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    let addr = c.raft_addr(leader);
    let mut flood = (32u32 * 1024 * 1024).to_le_bytes().to_vec();
    flood.extend(std::iter::repeat_n(0xabu8, 1024 * 1024));
    let (reply, closed) = raw_exchange(&addr, &flood, Duration::from_secs(5));
    assert!(
        closed && reply.is_empty(),
        "a 32 MiB handshake was not refused"
    );
    c.wait_for_log(
        leader,
        "exceeds the 4096-byte limit",
        Duration::from_secs(5),
    );
    // A client that connects and says nothing is dropped after the handshake timeout.
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 1];
    assert_eq!(
        idle.read(&mut b).unwrap_or(0),
        0,
        "an idle handshake was kept open"
    );
    c.put_acked(leader, "still", b"serving");
}

/// A flood of connections to the peer port from one host: beyond 32 at once they are
/// closed straight away, and the cluster keeps serving.
#[test]
fn connections_per_host_are_limited() {
    let c = Cluster::start("peer-conn-flood", 3);
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    let addr = c.raft_addr(leader);
    let conns: Vec<std::net::TcpStream> = (0..48)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let closed = conns
        .iter()
        .filter(|s| {
            let mut s = (*s).try_clone().unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut b = [0u8; 1];
            matches!(s.read(&mut b), Ok(0))
        })
        .count();
    // Its two peers hold two of the 32; the 16 beyond the limit, at least, are closed.
    assert!(
        closed >= 16,
        "only {} of 48 connections were refused",
        closed
    );
    c.wait_for_log(
        leader,
        "peer connections from this host are open already",
        Duration::from_secs(5),
    );
    drop(conns);
    c.put_acked(leader, "after-flood", b"fine");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", pid))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

/// A follower that stops reading (SIGSTOP) while writes go on: the leader keeps serving
/// with the other follower, its memory does not grow with what the paused one misses, and
/// the follower catches up once it runs again.
#[test]
fn a_paused_follower_does_not_grow_the_leader_and_catches_up() {
    let c = Cluster::start("paused-follower", 3);
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    let paused = c.followers_of(leader)[0];
    let pid = c.pid(paused).unwrap();
    let value = "v".repeat(4096);
    let batch = |from: usize| -> Vec<(String, String)> {
        (from..from + 500)
            .map(|i| (format!("paused-{:05}", i), value.clone()))
            .collect()
    };
    c.put_all_acked("warm", &batch(0));
    let before = rss_kib(c.pid(leader).unwrap());
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    // 4 x 2 MiB written while it is stopped, through the leader (a request sent to the
    // stopped node would just wait for its timeout).
    for round in 1..=4 {
        let mut client = c.client(&[leader], &format!("while-paused-{}", round));
        for (k, v) in batch(round * 500) {
            let r = client.put(&k, v.as_bytes());
            assert!(matches!(r, KvResult::Ok(_)), "PUT {}: {:?}", k, r);
        }
    }
    let during = rss_kib(c.pid(leader).unwrap());
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    assert!(
        during < before + 64 * 1024,
        "leader RSS grew from {} to {} KiB while a follower was paused",
        before,
        during
    );
    let target = c.status(leader).unwrap().commit_index;
    c.wait_applied(paused, target, Duration::from_secs(20));
    assert_eq!(
        c.get_via(paused, "paused-02499").map(|v| v.len()),
        Some(4096)
    );
}

/// A peer that holds the secret (a compromised or buggy member) floods the leader with
/// 32 MiB frames over 16 connections at once, posing as one of the followers. Every frame
/// is a valid message (a snapshot chunk of term 0, which the leader refuses), so the
/// connections stay open and keep sending. The leader holds at most that peer's inbound
/// budget of them, keeps leading, and keeps acknowledging writes; its consensus thread,
/// which sends the heartbeats, is never kept busy by the flood.
#[test]
fn a_peer_flooding_32_mib_frames_does_not_grow_the_leader() {
    flood_with_32_mib_frames(true);
}

/// The same flood against a follower, posing as the other follower: it keeps following
/// in the same term (no election of its own), stays bounded, and is caught up at the end.
#[test]
fn a_peer_flooding_32_mib_frames_does_not_grow_a_follower() {
    flood_with_32_mib_frames(false);
}

fn flood_with_32_mib_frames(at_leader: bool) {
    use raftkv::net::auth::ClusterSecret;
    use raftkv::net::frame::{encode_frame, MAX_FRAME_BYTES};
    use raftkv::net::tcp::dial;
    use raftkv::raft::Message;
    use std::sync::atomic::AtomicBool;
    use tokio::io::AsyncWriteExt;

    let name = if at_leader {
        "flood-leader"
    } else {
        "flood-follower"
    };
    let c = Cluster::start_with(name, ClusterOptions::defaults(3));
    let (leader, term) = c.wait_for_leader(ELECTION_DEADLINE);
    let followers = c.followers_of(leader);
    let (target, posing_as) = if at_leader {
        (leader, followers[0])
    } else {
        (followers[0], followers[1])
    };
    c.put_acked(leader, "before", b"v");
    let secret_text = std::fs::read_to_string(c.dir.join("cluster.secret")).unwrap();
    let secret = ClusterSecret::from_text(&secret_text).unwrap();
    let addr = c.raft_addr(target);
    let pid = c.pid(target).unwrap();
    let before = rss_kib(pid);

    let mut frame = Vec::new();
    let chunk = Message::InstallSnapshot {
        term: 0,
        leader_id: posing_as,
        last_included_index: 1,
        last_included_term: 0,
        offset: 0,
        data: vec![0xab; MAX_FRAME_BYTES - 4096],
        done: false,
        read_seq: 0,
        stream: 1,
    };
    encode_frame(&mut frame, &chunk).unwrap();
    let frame = Arc::new(frame);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for _ in 0..16 {
        let (frame, stop, sent) = (frame.clone(), stop.clone(), sent.clone());
        let (secret, addr) = (secret.clone(), addr.clone());
        rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) =
                    dial(posing_as, target, &addr, "raftkv", secret.clone(), None).await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                while !stop.load(Ordering::Relaxed) {
                    if s.write_all(&frame).await.is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    // Writes keep being acknowledged while the flood goes on; the leader's memory is
    // sampled between them.
    let until = std::time::Instant::now() + Duration::from_secs(6);
    let mut peak = before;
    let mut written = 0;
    while std::time::Instant::now() < until {
        c.put_acked(leader, &format!("during-{}", written), b"v");
        written += 1;
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    rt.shutdown_timeout(Duration::from_secs(1));
    let sent = sent.load(Ordering::Relaxed);
    let role = if at_leader { "leader" } else { "follower" };
    eprintln!(
        "flood: {} frames of 32 MiB sent; {} RSS {} MiB before, peak {} MiB; {} writes acknowledged meanwhile",
        sent,
        role,
        before / 1024,
        peak / 1024,
        written
    );
    assert!(sent >= 8, "the flood did not get through: {} frames", sent);
    assert!(
        peak < before + 128 * 1024,
        "{} RSS grew from {} to {} MiB under the flood",
        role,
        before / 1024,
        peak / 1024
    );
    for (id, role) in [(leader, "leader"), (target, role)] {
        let now = c.status(id).unwrap();
        assert_eq!(
            (now.role.as_str(), now.term),
            (role, term),
            "node {} lost its role or term under the flood",
            id
        );
    }
    // The frames are read, decoded and freed off the consensus thread, so its watchdog
    // never finds it busy for 100 ms (it did, in every run, when that thread read them).
    let busy: Vec<String> = c
        .log_text(target)
        .lines()
        .filter(|l| l.contains("stalled") && l.contains("busy with its own work"))
        .map(str::to_string)
        .collect();
    assert!(
        busy.is_empty(),
        "the flood kept the {}'s consensus thread busy:\n{}",
        role,
        busy.join("\n")
    );
    if !at_leader {
        let commit = c.status(leader).unwrap().commit_index;
        c.wait_applied(target, commit, Duration::from_secs(10));
    }
}
