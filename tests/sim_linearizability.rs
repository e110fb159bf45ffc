//! Client-level linearizability on the simulator: concurrent clients put/get/delete through
//! the gateway's request path (forwarding included) while the simulator injects faults;
//! every history must pass the Wing & Gong checker.

#[path = "support/linearizability.rs"]
mod linearizability;
#[path = "support/sim.rs"]
mod sim;
#[path = "support/workload.rs"]
mod workload;

use std::time::Duration;

use linearizability::{check, CheckResult, Op};
use raftkv::actors::consensus::RaftOptions;
use sim::{seeds, simulate_with, NetConfig};
use workload::{chaos, recorded, restore_members, run_clients, Faults, Workload};

fn run(seed: u64, net: NetConfig, faults: Faults) {
    run_with(seed, net, faults, RaftOptions::default())
}

fn run_with(seed: u64, net: NetConfig, faults: Faults, options: RaftOptions) {
    simulate_with(5, seed, net, options, |sim| async move {
        let w = Workload {
            clients: 6,
            keys: 3,
            duration: Duration::from_secs(12),
            request_timeout: Duration::from_secs(1),
        };
        let chaos_sim = sim.clone();
        let injector = actix::spawn(async move {
            chaos(&chaos_sim, Duration::from_secs(10), faults).await;
        });
        let history = run_clients(&sim, w).await;
        let _ = injector.await;
        if faults.membership {
            sim.heal();
            for id in sim.ids.clone() {
                sim.restart(id);
            }
            assert!(
                restore_members(&sim, Duration::from_secs(30)).await,
                "seed {}: the removed nodes could not be added back",
                seed
            );
        }
        assert!(
            sim.converge(Duration::from_secs(30)).await,
            "seed {}: no convergence",
            seed
        );
        // Final reads of every key become part of the history.
        if let Some((l, _)) = sim.leader().await {
            for k in 0..w.keys {
                let op = Op::Get {
                    key: format!("k{}", k),
                };
                recorded(&sim, &history, 999, l, op, Duration::from_secs(2)).await;
            }
        }
        let history = history.borrow().clone();
        let acked = history
            .iter()
            .filter(|o| o.outcome == linearizability::Outcome::Done)
            .count();
        assert!(
            acked >= 5,
            "seed {}: only {} writes acknowledged",
            seed,
            acked
        );
        match check(&history, Duration::from_secs(30)) {
            CheckResult::Ok => {}
            CheckResult::Violation { key, explanation } => panic!(
                "seed {}: history of {} ops is not linearizable on key {}:\n{}",
                seed,
                history.len(),
                key,
                explanation
            ),
            CheckResult::TimedOut { key } => {
                panic!("seed {}: checker ran out of time on key {}", seed, key)
            }
        }
    });
}

#[test]
fn linearizable_with_crashes_and_partitions_reliable_net() {
    for seed in seeds(5000, 4) {
        run(
            seed,
            NetConfig::reliable(),
            Faults {
                crashes: true,
                partitions: true,
                membership: false,
            },
        );
    }
}

#[test]
fn linearizable_with_crashes_and_partitions_unreliable_net() {
    for seed in seeds(6000, 4) {
        run(
            seed,
            NetConfig::unreliable(),
            Faults {
                crashes: true,
                partitions: true,
                membership: false,
            },
        );
    }
}

#[test]
fn reads_stay_linearizable_when_the_leader_is_cut_off() {
    // Only partitions: the leader is repeatedly isolated while it still believes it leads,
    // and clients keep reading through it.
    for seed in seeds(7000, 4) {
        run(
            seed,
            NetConfig::reliable(),
            Faults {
                crashes: false,
                partitions: true,
                membership: false,
            },
        );
    }
}

#[test]
fn churn_every_acknowledged_write_survives() {
    for seed in seeds(8000, 4) {
        run(
            seed,
            NetConfig::unreliable(),
            Faults {
                crashes: true,
                partitions: false,
                membership: false,
            },
        );
    }
}

#[test]
fn linearizable_under_membership_churn() {
    // Voters removed and added back (as learners, then promoted), leadership transferred,
    // mixed with crashes on a lossy network.
    for seed in seeds(9500, 4) {
        run(
            seed,
            NetConfig::unreliable(),
            Faults {
                crashes: true,
                partitions: false,
                membership: true,
            },
        );
    }
}

#[test]
fn linearizable_with_frequent_snapshots_under_faults() {
    // Snapshots every 40 entries: lagging nodes catch up by InstallSnapshot mid-chaos.
    for seed in seeds(9000, 4) {
        run_with(
            seed,
            NetConfig::unreliable(),
            Faults {
                crashes: true,
                partitions: true,
                membership: false,
            },
            RaftOptions {
                store_sync_entries: 20,
                log_tail_entries: 20,
                snapshot_chunk_bytes: 256,
                // No longer tail on disk either: lagging nodes need snapshots.
                log_limits: raftkv::raft::LogLimits {
                    disk_tail_bytes: 0,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
    }
}
