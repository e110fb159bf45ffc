//! Membership changes and leadership transfer on real processes: a node replaced while
//! clients write, and a rolling restart in which each leader hands over before it stops.

#[path = "support/cluster.rs"]
mod cluster;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cluster::{wait_for, Cluster, ClusterOptions};
use raftkv::client::KvResult;

/// What the writers saw: acknowledged keys (with when), and failed writes.
#[derive(Default)]
struct Writes {
    acked: Vec<(String, Instant)>,
    failed: Vec<String>,
}

/// Clients writing fresh keys through every node of `via` until `stop` is set.
fn start_writers(
    c: &Cluster,
    via: &[u64],
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> (Arc<Mutex<Writes>>, Vec<thread::JoinHandle<()>>) {
    let writes = Arc::new(Mutex::new(Writes::default()));
    let mut handles = Vec::new();
    for t in 0..clients {
        let mut client = c.client(via, &c.unique_client_id(&format!("writer{}", t)));
        client.deadline = Duration::from_secs(10);
        let (stop, writes) = (stop.clone(), writes.clone());
        handles.push(thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{}-{}", t, i);
                i += 1;
                let r = client.put(&key, key.as_bytes());
                let mut w = writes.lock().unwrap();
                match r {
                    KvResult::Ok(_) => w.acked.push((key, Instant::now())),
                    other => w.failed.push(format!("{}: {:?}", key, other)),
                }
            }
        }));
    }
    (writes, handles)
}

fn stop_writers(stop: &Arc<AtomicBool>, handles: Vec<thread::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("writer panicked");
    }
}

/// The members as node `via` reports them: (id, role) pairs.
fn members(c: &Cluster, via: u64) -> Option<Vec<(u64, String)>> {
    let (status, body) = c.request(via, "GET", "/cluster/members", &[], b"");
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    Some(
        v["members"]
            .as_array()?
            .iter()
            .map(|m| {
                (
                    m["id"].as_u64().unwrap_or(0),
                    m["role"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
    )
}

/// The longest time between consecutive acknowledgements.
fn longest_gap(w: &Writes) -> Duration {
    let mut times: Vec<Instant> = w.acked.iter().map(|(_, t)| *t).collect();
    times.sort();
    times
        .windows(2)
        .map(|p| p[1] - p[0])
        .max()
        .unwrap_or_default()
}

#[test]
fn replace_a_member_while_clients_write() {
    let mut c = Cluster::start_with("replace", ClusterOptions::fast(3));
    c.wait_for_leader(Duration::from_secs(10));
    let stop = Arc::new(AtomicBool::new(false));
    let (writes, handles) = start_writers(&c, &[1, 2], 3, &stop);
    thread::sleep(Duration::from_millis(500));

    // A fresh node joins: it waits, is added as a learner, and is promoted once caught up.
    let new = c.start_joining();
    c.wait_for_log(new, "waiting to be added", Duration::from_secs(10));
    let body = format!(
        r#"{{"id": {}, "raft_addr": "{}", "http_addr": "{}"}}"#,
        new,
        c.raft_addr(new),
        c.http_addr(new)
    );
    let (status, answer) = c.request(1, "POST", "/cluster/members", &[], body.as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let promoted = wait_for(Duration::from_secs(20), || {
        members(&c, 1).filter(|m| m.contains(&(new, "voter".to_string())))
    });
    assert!(promoted.is_some(), "node {} was not promoted", new);

    // The leader leaves: the hard case (it leads until its removal commits, counting the
    // other voters only, then steps down). Asked through another node.
    let (gone, _) = c.wait_for_leader(Duration::from_secs(5));
    let via = if gone == 1 { 2 } else { 1 };
    let (status, answer) = c.request(
        via,
        "DELETE",
        &format!("/cluster/members/{}", gone),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    c.kill(gone);
    thread::sleep(Duration::from_millis(800));
    stop_writers(&stop, handles);

    let w = writes.lock().unwrap();
    assert!(w.failed.is_empty(), "writes failed: {:?}", w.failed);
    assert!(
        w.acked.len() > 20,
        "only {} writes acknowledged",
        w.acked.len()
    );
    let stay: Vec<u64> = [1, 2, 3, new]
        .into_iter()
        .filter(|id| *id != gone)
        .collect();
    let m = wait_for(Duration::from_secs(5), || members(&c, stay[0])).expect("members");
    assert_eq!(
        m,
        stay.iter()
            .map(|id| (*id, "voter".to_string()))
            .collect::<Vec<_>>()
    );
    // Every acknowledged write is on the new member, read linearizably through it.
    for (key, _) in w.acked.iter().step_by(7) {
        assert_eq!(
            c.get_via(new, key).as_deref(),
            Some(key.as_str()),
            "{}",
            key
        );
    }
    println!(
        "replace: {} writes acknowledged, 0 failed, longest gap {:?}",
        w.acked.len(),
        longest_gap(&w)
    );
    // The removed node, restarted, cannot disturb the cluster (§4.2.3): whether or not it
    // learned of its removal, its vote requests are ignored and no term changes.
    let view = |c: &Cluster| -> Vec<(Option<u64>, u64)> {
        stay.iter()
            .map(|&id| {
                let s = c.status(id).expect("status");
                (s.leader, s.term)
            })
            .collect()
    };
    let before = view(&c);
    c.restart(gone);
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(view(&c), before, "the removed node disturbed the cluster");
    assert_ne!(c.status(gone).expect("status").role, "leader");
}

#[test]
fn rolling_restart_hands_leadership_over() {
    let mut c = Cluster::start_with("rolling", ClusterOptions::fast(3));
    c.wait_for_leader(Duration::from_secs(10));
    let stop = Arc::new(AtomicBool::new(false));
    let (writes, handles) = start_writers(&c, &[1, 2, 3], 4, &stop);
    thread::sleep(Duration::from_millis(500));
    // Restart the followers first and the leader last, one at a time, as an operator does.
    let (leader, _) = c.wait_for_leader(Duration::from_secs(5));
    let mut order = c.followers_of(leader);
    order.push(leader);
    for id in order {
        let (now_leader, _) = c.wait_for_leader(Duration::from_secs(5));
        c.terminate(id, Duration::from_secs(10));
        if id == now_leader {
            let log = c.log_text(id);
            assert!(
                log.contains("leads now; stopping"),
                "leader {} did not hand over before stopping",
                id
            );
        }
        c.restart(id);
        thread::sleep(Duration::from_millis(500));
    }
    stop_writers(&stop, handles);
    let w = writes.lock().unwrap();
    assert!(w.failed.is_empty(), "writes failed: {:?}", w.failed);
    let gap = longest_gap(&w);
    println!(
        "rolling restart: {} writes acknowledged, 0 failed, longest gap {:?}",
        w.acked.len(),
        gap
    );
    // No election timeout's worth of silence: the hand-over is a round trip or two.
    assert!(gap < Duration::from_secs(2), "longest gap {:?}", gap);
}
