//! How long writes stop under one network fault at a time, with the node's default timeouts
//! (elections 300–600 ms): the leader cut off from both followers, the leader's links
//! silently stalled, every link slow (stalled in bursts shorter than an election timeout),
//! every link flaky (cut and restored at random), and a follower cut off.
//!
//! Three real processes; every directed peer link runs through a fault proxy. One client
//! writes a fresh key at a time (1 s timeout) through the nodes the fault spares, moving to
//! the next node after any failure. The test prints, per fault, the longest gap between two
//! acknowledged writes and how it compares with issue 9's target (2× the maximum election
//! timeout, 1.2 s); docs/PERFORMANCE.md records the figures. It fails only when writes do
//! not resume at all within a generous bound (a liveness bug, not a slow machine), or when
//! an acknowledged write does not read back.
//!
//! `cargo test --release --test fault_gaps -- --nocapture`; `RAFTKV_FAULT_SEED` picks the
//! flaky links' random choices, `RAFTKV_FAULT_ONLY=flaky` (say) runs only the faults whose
//! name contains it.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/fault_proxy.rs"]
mod fault_proxy;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::{Cluster, ClusterOptions};
use fault_proxy::{proxied_cluster, LinkMode};
use raftkv::client::http_request;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How long each fault lasts.
const FAULT: Duration = Duration::from_secs(3);
/// Quiet time after a fault heals, before the next (the gap measured spans both).
const SETTLE: Duration = Duration::from_secs(2);
/// Issue 9's target: 2× the default maximum election timeout.
const TARGET: Duration = Duration::from_millis(1200);
/// Past this, writes did not resume at all: a liveness bug, whatever the machine.
const LIVENESS_BOUND: Duration = Duration::from_secs(8);

/// What the writer shares with the test thread.
struct Writer {
    /// Nodes the writer may use (those the current fault spares).
    via: Mutex<Vec<u64>>,
    /// When each acknowledged write was acknowledged, with its key.
    acked: Mutex<Vec<(Instant, String)>>,
    /// Failed attempts: when each ended, and how, for the report.
    failed: Mutex<Vec<(Instant, u64, String)>>,
    stop: AtomicBool,
}

fn write_loop(w: Arc<Writer>, addrs: BTreeMap<u64, String>) {
    let mut n = 0u64;
    let mut next = 0usize;
    while !w.stop.load(Ordering::Relaxed) {
        let via = w.via.lock().expect("via").clone();
        let id = via[next % via.len()];
        n += 1;
        let key = format!("gap-{}", n);
        let sent = Instant::now();
        let r = http_request(
            &addrs[&id],
            "PUT",
            &format!("/kv/{}", key),
            &[],
            key.as_bytes(),
            Duration::from_secs(1),
        );
        match r {
            Ok(r) if r.status == 200 => w.acked.lock().expect("acked").push((Instant::now(), key)),
            // A refusal or timeout: try the next node at once.
            other => {
                let why = match other {
                    Ok(r) => format!("{} {}", r.status, String::from_utf8_lossy(&r.body)),
                    Err(e) => e.to_string(),
                };
                let took = sent.elapsed();
                let why = if took < Duration::from_millis(10) {
                    why
                } else {
                    format!("{} (node {}, after {} ms)", why, id, took.as_millis())
                };
                w.failed
                    .lock()
                    .expect("failed")
                    .push((Instant::now(), id, why));
                next += 1;
                if took < Duration::from_millis(10) {
                    // No leader known yet: a real client pauses before it asks again.
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}

/// The longest time between two acknowledgements within `[from, to]` (the window's ends
/// count as acknowledgements, so a stop that lasts past `to` is measured up to `to`), and
/// when it began.
fn longest_gap(acked: &[(Instant, String)], from: Instant, to: Instant) -> (Duration, Instant) {
    let mut last = from;
    let mut longest = (Duration::ZERO, from);
    for &(t, _) in acked.iter().filter(|(t, _)| *t > from && *t <= to) {
        if t - last > longest.0 {
            longest = (t - last, last);
        }
        last = t;
    }
    if to.saturating_duration_since(last) > longest.0 {
        longest = (to - last, last);
    }
    longest
}

fn leader_of(c: &Cluster) -> u64 {
    c.wait_for_leader(Duration::from_secs(10)).0
}

#[test]
fn writes_resume_within_two_election_timeouts_under_each_network_fault() {
    let seed = std::env::var("RAFTKV_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let (c, proxies) = proxied_cluster("fault-gaps", ClusterOptions::defaults(3));
    let ids = c.ids();
    leader_of(&c);

    let w = Arc::new(Writer {
        via: Mutex::new(ids.clone()),
        acked: Mutex::new(Vec::new()),
        failed: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let addrs: BTreeMap<u64, String> = ids.iter().map(|&id| (id, c.http_addr(id))).collect();
    let writer = {
        let w = w.clone();
        std::thread::spawn(move || write_loop(w, addrs))
    };
    std::thread::sleep(SETTLE);

    let set_links = |of: Option<u64>, mode: LinkMode| {
        for (&(a, b), p) in &proxies {
            if of.is_none_or(|x| a == x || b == x) {
                p.set_mode(mode);
            }
        }
    };
    let mut results: Vec<(&str, Duration)> = Vec::new();
    let faults = [
        "leader cut off",
        "leader's links stalled",
        "every link slow",
        "every link flaky",
        "a follower cut off",
    ];
    // RAFTKV_FAULT_ONLY=flaky (say) runs only the faults whose name contains it.
    let only = std::env::var("RAFTKV_FAULT_ONLY").unwrap_or_default();
    for fault in faults.into_iter().filter(|f| f.contains(only.as_str())) {
        let leader = leader_of(&c);
        let victim = if fault == "a follower cut off" {
            *ids.iter().find(|&&id| id != leader).expect("a follower")
        } else {
            leader
        };
        // The client uses the nodes the fault spares (all of them when every link suffers).
        *w.via.lock().expect("via") = if fault.starts_with("every") {
            ids.clone()
        } else {
            ids.iter().copied().filter(|&id| id != victim).collect()
        };
        let start = Instant::now();
        match fault {
            "leader cut off" | "a follower cut off" => set_links(Some(victim), LinkMode::Cut),
            "leader's links stalled" => set_links(Some(victim), LinkMode::Stall),
            _ => {
                while start.elapsed() < FAULT {
                    if fault == "every link slow" {
                        // Bytes held for 150 ms, then 50 ms of flow: each message is late
                        // by up to half the minimum election timeout.
                        set_links(None, LinkMode::Stall);
                        std::thread::sleep(Duration::from_millis(150));
                        set_links(None, LinkMode::Pass);
                        std::thread::sleep(Duration::from_millis(50));
                    } else {
                        // Each link cut in a third of the 100 ms slots, at random.
                        for p in proxies.values() {
                            let cut = rng.gen_bool(1.0 / 3.0);
                            p.set_mode(if cut { LinkMode::Cut } else { LinkMode::Pass });
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
        std::thread::sleep(FAULT.saturating_sub(start.elapsed()));
        set_links(None, LinkMode::Pass);
        *w.via.lock().expect("via") = ids.clone();
        std::thread::sleep(SETTLE);
        let (gap, began) = longest_gap(&w.acked.lock().expect("acked"), start, Instant::now());
        eprintln!(
            "fault-gaps: {:<24} longest gap {:>5} ms ({} the {} ms target), from {} ms into the fault",
            fault,
            gap.as_millis(),
            if gap <= TARGET { "within" } else { "OVER" },
            TARGET.as_millis(),
            began.saturating_duration_since(start).as_millis(),
        );
        // The attempts that failed during the gap (by when they ended) say where the time
        // went; a run of answers of one kind is shown as one line.
        let failed = w.failed.lock().expect("failed");
        let mut runs: Vec<(Duration, Duration, usize, &str)> = Vec::new();
        for (ended, _, why) in failed
            .iter()
            .filter(|(t, _, _)| *t >= began && *t <= began + gap)
        {
            let at = *ended - began;
            match runs.last_mut() {
                Some(run) if run.3 == why.as_str() => {
                    run.1 = at;
                    run.2 += 1;
                }
                _ => runs.push((at, at, 1, why)),
            }
        }
        for (from, to, n, why) in runs {
            eprintln!(
                "fault-gaps:     +{}..{} ms: {} x {}",
                from.as_millis(),
                to.as_millis(),
                n,
                why
            );
        }
        drop(failed);
        results.push((fault, gap));
    }
    w.stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");

    // Every acknowledged write reads back, through the leader, linearizably.
    let leader = leader_of(&c);
    let acked = w.acked.lock().expect("acked").clone();
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    for (_, key) in &acked {
        let (status, body) = c.get(leader, key);
        assert_eq!(
            (status, body.as_str()),
            (200, key.as_str()),
            "acknowledged {}",
            key
        );
    }
    eprintln!(
        "fault-gaps: {} acknowledged writes read back (seed {})",
        acked.len(),
        seed
    );
    for (fault, gap) in results {
        assert!(
            gap < LIVENESS_BOUND,
            "{}: writes stopped for {:?}",
            fault,
            gap
        );
    }
}

/// A request a follower forwarded to the leader is lost when the link breaks under it. The
/// follower answers it (504, outcome unknown) once it learns of the break, not when the
/// request times out (8 s here) or the client gives up.
#[test]
fn a_forward_lost_with_its_link_is_answered_at_once() {
    let (c, proxies) = proxied_cluster(
        "lost-forward",
        ClusterOptions::fast(3).request_timeout_ms(8000),
    );
    let (leader, _) = c.wait_for_leader(Duration::from_secs(10));
    let follower = c.followers_of(leader)[0];
    c.put_acked(follower, "before", b"ok");
    // The follower's link to the leader holds what is sent on it; the forward goes in.
    let link = &proxies[&(follower, leader)];
    link.set_mode(LinkMode::Stall);
    let addr = c.http_addr(follower);
    let started = Instant::now();
    let write = std::thread::spawn(move || {
        let r = http_request(&addr, "PUT", "/kv/lost", &[], b"x", Duration::from_secs(20));
        (r.map(|r| r.status), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    // The link breaks with the forward in it, and comes back.
    link.set_mode(LinkMode::Cut);
    std::thread::sleep(Duration::from_millis(300));
    link.set_mode(LinkMode::Pass);
    let (status, took) = write.join().expect("writer");
    eprintln!("lost forward: answered {:?} after {:?}", status, took);
    assert!(
        took < Duration::from_secs(4),
        "the write waited {:?} (answer {:?}): the lost forward was not noticed",
        took,
        status
    );
    // Whatever the answer, the cluster serves and the follower forwards again.
    c.put_acked(follower, "after", b"ok");
}
