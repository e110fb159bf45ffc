//! Snapshots between real processes: a follower that lost its disk, or died in the middle
//! of receiving a snapshot, catches up from the leader's store while clients keep writing.
//! The log tail is kept small so that a follower that falls behind needs a snapshot.

#[path = "support/cluster.rs"]
mod cluster;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cluster::{Cluster, ClusterOptions, ELECTION_DEADLINE};
use raftkv::client::KvResult;

fn small_tail(nodes: usize) -> ClusterOptions {
    ClusterOptions::fast(nodes)
        .with("log_tail_entries", 20)
        .with("log_disk_tail_mb", 0)
        .with("store_sync_entries", 20)
}

/// Writes `n` keys of `value_bytes` each through `via`, all acknowledged.
fn fill(c: &Cluster, via: &[u64], prefix: &str, n: usize, value_bytes: usize) {
    let mut client = c.client(via, &c.unique_client_id(prefix));
    for i in 0..n {
        let value: Vec<u8> = format!("{}-{}-", prefix, i)
            .bytes()
            .cycle()
            .take(value_bytes)
            .collect();
        match client.put(&format!("{}-{:05}", prefix, i), &value) {
            KvResult::Ok(_) => {}
            r => panic!("fill write {} not acknowledged: {:?}", i, r),
        }
    }
}

/// A client writing in the background until stopped; counts acknowledged and failed writes.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(c: &Cluster, via: Vec<u64>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut client = c.client(&via, &c.unique_client_id("bg"));
        let (s, a, f) = (stop.clone(), acked.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                match client.put(&format!("bg-{:06}", i), b"written during catch-up") {
                    KvResult::Ok(_) => a.fetch_add(1, Ordering::Relaxed),
                    _ => f.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
            }
        });
        Writer {
            stop,
            acked,
            failed,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.acked.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Waits until `id` has applied what the leader has committed now, then compares a sample
/// of keys read locally on `id` with the leader's.
fn assert_caught_up(c: &Cluster, id: u64, keys: &[String]) {
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    let target = c.status(leader).unwrap().commit_index;
    c.wait_applied(id, target, Duration::from_secs(60));
    // A put is acknowledged once committed; the leader's store may apply it a moment later.
    c.wait_applied(leader, target, Duration::from_secs(60));
    for k in keys {
        let want = c.get_stale(leader, k);
        assert_eq!(want.0, 200, "{} missing on the leader", k);
        assert_eq!(c.get_stale(id, k), want, "{} differs on node {}", k, id);
    }
}

#[test]
fn follower_behind_the_memory_tail_catches_up_from_the_log_on_disk() {
    // A 20-entry tail in memory, the default (160 MiB) on disk, in 1 MiB segments: the
    // entries are read back across several.
    let opts = ClusterOptions::fast(3)
        .with("log_tail_entries", 20)
        .with("store_sync_entries", 20)
        .with("log_segment_mb", 1);
    let mut c = Cluster::start_with("disk-tail", opts);
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    let victim = c.followers_of(leader)[0];
    c.kill(victim);
    fill(&c, &[leader], "before", 1500, 2048);
    // The leader restarts too: its memory then starts at what its store holds, and the
    // older entries are read back from its segments.
    c.kill(leader);
    c.restart(leader);
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    fill(&c, &[leader], "after", 1500, 2048);
    c.restart(victim);
    let keys: Vec<String> = (0..1500)
        .step_by(97)
        .flat_map(|i| [format!("before-{:05}", i), format!("after-{:05}", i)])
        .collect();
    assert_caught_up(&c, victim, &keys);
    for id in 1..=3 {
        let log = c.log_text(id);
        assert!(
            !log.contains("sending snapshot") && !log.contains("receiving snapshot"),
            "node {} sent or received a snapshot",
            id
        );
    }
}

#[test]
fn wiped_follower_catches_up_by_snapshot_while_writes_continue() {
    let mut c = Cluster::start_with("wiped-follower", small_tail(3));
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    fill(&c, &[leader], "fill", 300, 2048);
    let victim = c.followers_of(leader)[0];
    c.kill(victim);
    // The disk is gone: the node comes back empty.
    std::fs::remove_dir_all(&c.node(victim).data_dir).unwrap();
    let writer = Writer::start(&c, vec![leader]);
    c.restart(victim);
    c.wait_for_log(victim, "installed", Duration::from_secs(30));
    let keys: Vec<String> = (0..300)
        .step_by(37)
        .map(|i| format!("fill-{:05}", i))
        .collect();
    assert_caught_up(&c, victim, &keys);
    let (acked, failed) = writer.finish();
    assert!(acked > 0, "no write was acknowledged during the catch-up");
    assert_eq!(failed, 0, "writes failed while a follower caught up");
    assert!(c.log_text(leader).contains("sending snapshot"));
}

#[test]
fn follower_killed_while_receiving_a_snapshot_recovers() {
    let mut c = Cluster::start_with("killed-mid-snapshot", small_tail(3));
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    let victim = c.followers_of(leader)[0];
    c.kill(victim);
    // About 24 MB the victim will need as a snapshot.
    fill(&c, &[leader], "big", 48, 512 * 1024);
    fill(&c, &[leader], "small", 100, 100);
    c.restart(victim);
    c.wait_for_log(victim, "receiving snapshot", Duration::from_secs(30));
    c.kill(victim);
    c.restart(victim);
    let keys: Vec<String> = (0..48)
        .step_by(7)
        .map(|i| format!("big-{:05}", i))
        .chain((0..100).step_by(13).map(|i| format!("small-{:05}", i)))
        .collect();
    assert_caught_up(&c, victim, &keys);
    // The half-built store of the killed install never became the node's state.
    assert!(!c
        .node(victim)
        .data_dir
        .join(raftkv::kv::STAGING_FILE)
        .exists());
}

#[test]
fn leader_killed_while_sending_a_snapshot_the_follower_still_catches_up() {
    let mut c = Cluster::start_with("leader-killed-mid-snapshot", small_tail(3));
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    let followers = c.followers_of(leader);
    let (victim, other) = (followers[0], followers[1]);
    c.kill(victim);
    fill(&c, &[leader], "big", 48, 512 * 1024);
    c.restart(victim);
    c.wait_for_log(victim, "receiving snapshot", Duration::from_secs(30));
    c.kill(leader);
    // The other follower becomes leader and the transfer starts over from its store.
    let (new_leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    assert!(new_leader == other || new_leader == victim);
    c.put_acked(new_leader, "after-failover", b"yes");
    let keys: Vec<String> = (0..48)
        .step_by(5)
        .map(|i| format!("big-{:05}", i))
        .chain(["after-failover".to_string()])
        .collect();
    assert_caught_up(&c, victim, &keys);
    c.restart(leader);
}

#[test]
fn wiped_follower_catches_up_when_the_leader_still_has_the_whole_log() {
    // The leader's log still reaches back past what the follower had acknowledged, so no
    // compaction forces a snapshot: the leader must notice that the follower's log is
    // shorter than what it acknowledged and send everything again.
    let mut c = Cluster::start("wiped-short-log", 3);
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    fill(&c, &[leader], "w", 100, 100);
    let victim = c.followers_of(leader)[0];
    let target = c.status(leader).unwrap().commit_index;
    c.wait_applied(victim, target, Duration::from_secs(10));
    c.kill(victim);
    std::fs::remove_dir_all(&c.node(victim).data_dir).unwrap();
    c.restart(victim);
    let keys: Vec<String> = (0..100).step_by(9).map(|i| format!("w-{:05}", i)).collect();
    assert_caught_up(&c, victim, &keys);
}
