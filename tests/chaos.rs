//! The real binary under real faults: three processes, a TCP fault proxy on every directed
//! peer link, concurrent HTTP clients, and a nemesis that kills -9 and restarts nodes,
//! SIGSTOPs and resumes the leader, cuts or silently stalls links, removes a member and adds
//! it back, and transfers leadership. The history is
//! checked for linearizability and every node must converge to the same data.
//!
//! `RAFTKV_CHAOS_SECS` sets how long the faults last (default 15); `RAFTKV_CHAOS_SEED` picks
//! the nemesis's random choices.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/fault_proxy.rs"]
mod fault_proxy;
#[path = "support/linearizability.rs"]
mod linearizability;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::{wait_for, Cluster, ClusterOptions};
use fault_proxy::{proxied_cluster, LinkMode};
use linearizability::{check, CheckResult, Op, Operation, Outcome};
use raftkv::client::{encode_key, http_request};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: u64 = 3;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// One HTTP request, recorded with its outcome as the checker needs it.
fn client_op(addrs: &[String], rng: &mut StdRng, client: u64, n: u64, epoch: Instant) -> Operation {
    let addr = &addrs[rng.gen_range(0..addrs.len())];
    let key = format!("k{}", rng.gen_range(0..KEYS));
    let op = match rng.gen_range(0..10) {
        0..=4 => Op::Get { key },
        5..=8 => Op::Put {
            key,
            value: format!("c{}-{}", client, n).into_bytes(),
        },
        _ => Op::Delete { key },
    };
    let (method, body): (&str, Vec<u8>) = match &op {
        Op::Get { .. } => ("GET", Vec::new()),
        Op::Put { value, .. } => ("PUT", value.clone()),
        Op::Delete { .. } => ("DELETE", Vec::new()),
    };
    let path = format!("/kv/{}", encode_key(op.key()));
    let invoke = epoch.elapsed().as_nanos() as u64;
    let result = http_request(addr, method, &path, &[], &body, Duration::from_secs(4));
    let complete = epoch.elapsed().as_nanos() as u64;
    let is_get = matches!(op, Op::Get { .. });
    let outcome = match result {
        Ok(r) if r.status == 200 && is_get => Outcome::Read(Some(r.body)),
        Ok(r) if r.status == 404 && is_get => Outcome::Read(None),
        Ok(r) if r.status == 200 => Outcome::Done,
        Ok(r) if r.status == 503 => Outcome::Failed,
        Ok(r) if r.status == 504 => Outcome::Unknown,
        Ok(r) => panic!(
            "unexpected status {} for {:?}: {}",
            r.status,
            op,
            r.body_text()
        ),
        // The request may have been sent before the connection broke.
        Err(_) => Outcome::Unknown,
    };
    Operation {
        client,
        op,
        invoke,
        complete,
        outcome,
    }
}

/// An operator's request through node `via`; true on 200.
fn admin(c: &Cluster, via: u64, method: &str, path: &str, body: &str) -> bool {
    c.pid(via).is_some() && c.request(via, method, path, &[], body.as_bytes()).0 == 200
}

fn add_body(c: &Cluster, id: u64) -> String {
    format!(
        r#"{{"id": {}, "raft_addr": "{}", "http_addr": "{}"}}"#,
        id,
        c.raft_addr(id),
        c.http_addr(id)
    )
}

#[test]
fn linearizable_and_convergent_under_process_and_network_faults() {
    let secs = env_u64("RAFTKV_CHAOS_SECS", 15);
    let seed = env_u64("RAFTKV_CHAOS_SEED", 7);
    eprintln!(
        "chaos: {} s of faults, seed {} (RAFTKV_CHAOS_SEED)",
        secs, seed
    );
    let mut rng = StdRng::seed_from_u64(seed);

    let opts = ClusterOptions::fast(3).request_timeout_ms(1500);
    let (mut c, proxies) = proxied_cluster("chaos", opts);
    let ids = c.ids();
    c.wait_for_leader(Duration::from_secs(10));

    let epoch = Instant::now();
    let addrs: Vec<String> = ids.iter().map(|&id| c.http_addr(id)).collect();
    let history = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..4u64 {
        let (addrs, history, stop) = (addrs.clone(), history.clone(), stop.clone());
        let mut crng = StdRng::seed_from_u64(seed * 100 + client);
        clients.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let op = client_op(&addrs, &mut crng, client, n, epoch);
                history.lock().expect("history").push(op);
                std::thread::sleep(Duration::from_millis(crng.gen_range(0..20)));
            }
        }));
    }

    // The nemesis runs on this thread (the harness spawns nodes from the test thread).
    let mut stopped: Option<u32> = None;
    // A node taken out of the membership by the nemesis, to be added back.
    let mut removed: Option<u64> = None;
    let mut actions = BTreeMap::<&str, u32>::new();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1200)));
        // Undo a pause before the next fault, so faults do not pile up forever.
        if let Some(pid) = stopped.take() {
            unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        }
        let action = rng.gen_range(0..8);
        match action {
            0 => {
                let victim = ids[rng.gen_range(0..ids.len())];
                if c.pid(victim).is_some() {
                    c.kill(victim);
                    *actions.entry("kill -9").or_default() += 1;
                }
            }
            1 => {
                for id in ids.clone() {
                    if c.pid(id).is_none() {
                        c.restart(id);
                        *actions.entry("restart").or_default() += 1;
                    }
                }
            }
            2 => {
                let leader = c
                    .live_ids()
                    .into_iter()
                    .find(|&id| c.status(id).map(|s| s.role == "leader").unwrap_or(false));
                if let Some(pid) = leader.and_then(|l| c.pid(l)) {
                    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
                    stopped = Some(pid);
                    *actions.entry("SIGSTOP leader").or_default() += 1;
                }
            }
            3 | 4 => {
                let a = ids[rng.gen_range(0..ids.len())];
                let b = ids[rng.gen_range(0..ids.len())];
                if a != b {
                    let mode = if action == 3 {
                        LinkMode::Cut
                    } else {
                        LinkMode::Stall
                    };
                    proxies[&(a, b)].set_mode(mode);
                    proxies[&(b, a)].set_mode(mode);
                    *actions
                        .entry(if action == 3 {
                            "cut link"
                        } else {
                            "stall link"
                        })
                        .or_default() += 1;
                }
            }
            6 => {
                // Membership: take a node out, or add the one taken out back (as a learner,
                // promoted once caught up). Asked through another node.
                let victim = removed.unwrap_or_else(|| ids[rng.gen_range(0..ids.len())]);
                let via = ids
                    .iter()
                    .copied()
                    .find(|&i| i != victim)
                    .expect("another node");
                let ok = match removed {
                    None => admin(
                        &c,
                        via,
                        "DELETE",
                        &format!("/cluster/members/{}", victim),
                        "",
                    ),
                    Some(_) => admin(&c, via, "POST", "/cluster/members", &add_body(&c, victim)),
                };
                if ok {
                    let what = if removed.is_some() {
                        "add back"
                    } else {
                        "remove member"
                    };
                    removed = if removed.is_some() {
                        None
                    } else {
                        Some(victim)
                    };
                    *actions.entry(what).or_default() += 1;
                }
            }
            7 => {
                let via = ids[rng.gen_range(0..ids.len())];
                if admin(&c, via, "POST", "/cluster/leader", "") {
                    *actions.entry("transfer leadership").or_default() += 1;
                }
            }
            _ => {
                for p in proxies.values() {
                    p.set_mode(LinkMode::Pass);
                }
                *actions.entry("heal links").or_default() += 1;
            }
        }
    }
    if let Some(pid) = stopped.take() {
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    }
    for p in proxies.values() {
        p.set_mode(LinkMode::Pass);
    }
    for id in ids.clone() {
        if c.pid(id).is_none() {
            c.restart(id);
        }
    }
    if let Some(victim) = removed.take() {
        // Back into the cluster, and promoted, before the end.
        let back = wait_for(Duration::from_secs(30), || {
            let via = ids.iter().copied().find(|&i| i != victim)?;
            admin(&c, via, "POST", "/cluster/members", &add_body(&c, victim));
            let (status, body) = c.request(via, "GET", "/cluster/members", &[], b"");
            let text = String::from_utf8_lossy(&body).into_owned();
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            let voters = v["members"]
                .as_array()?
                .iter()
                .filter(|m| m["role"] == "voter")
                .count();
            (status == 200 && voters == ids.len()).then_some(())
        });
        assert!(back.is_some(), "node {} could not be added back", victim);
    }
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.join().expect("client thread");
    }
    eprintln!("chaos: nemesis did {:?}", actions);
    {
        // Reported, not asserted: faults here overlap (a node killed while the link between
        // the other two is cut leaves no majority, and no write can be acknowledged).
        let h = history.lock().expect("history");
        let mut acked: Vec<u64> = h
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Done))
            .map(|o| o.complete)
            .collect();
        acked.sort_unstable();
        let gap = acked.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        eprintln!(
            "chaos: {} writes acknowledged; longest gap between two of them {} ms",
            acked.len(),
            gap / 1_000_000
        );
    }

    // Everyone converges: same applied index and the same data on every node.
    let (leader, _) = c.wait_for_leader(Duration::from_secs(15));
    c.put_acked(leader, "__final", b"x");
    let target = c.status(leader).expect("leader status").commit_index;
    for &id in &ids {
        c.wait_applied(id, target, Duration::from_secs(15));
    }
    let converged = wait_for(Duration::from_secs(10), || {
        let views: Vec<Vec<(u16, String)>> = ids
            .iter()
            .map(|&id| {
                (0..KEYS)
                    .map(|k| c.get_stale(id, &format!("k{}", k)))
                    .collect()
            })
            .collect();
        views.iter().all(|v| *v == views[0]).then_some(())
    });
    assert!(
        converged.is_some(),
        "nodes hold different data after healing"
    );

    let mut history = history.lock().expect("history").clone();
    for k in 0..KEYS {
        // A final linearizable read of every key through the leader.
        let key = format!("k{}", k);
        let invoke = epoch.elapsed().as_nanos() as u64;
        let (status, body) = c.get(leader, &key);
        let complete = epoch.elapsed().as_nanos() as u64;
        history.push(Operation {
            client: 99,
            op: Op::Get { key },
            invoke,
            complete,
            outcome: match status {
                200 => Outcome::Read(Some(body.into_bytes())),
                404 => Outcome::Read(None),
                _ => Outcome::Unknown,
            },
        });
    }
    let done = history
        .iter()
        .filter(|o| o.outcome == Outcome::Done)
        .count();
    eprintln!(
        "chaos: {} operations, {} acknowledged writes",
        history.len(),
        done
    );
    assert!(done > 10, "only {} writes were acknowledged", done);
    match check(&history, Duration::from_secs(60)) {
        CheckResult::Ok => {}
        CheckResult::Violation { key, explanation } => {
            panic!("not linearizable on {}:\n{}", key, explanation)
        }
        CheckResult::TimedOut { key } => panic!("checker ran out of time on {}", key),
    }
}
