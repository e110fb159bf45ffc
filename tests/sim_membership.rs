//! Membership churn on the deterministic simulator: members added, promoted and removed,
//! leadership transferred, mixed with crashes, partitions and a lossy network. The
//! simulator's invariants (at most one leader per term, no committed entry lost or
//! changed, state machines agree) are checked throughout, across configurations.

#[path = "support/sim.rs"]
mod sim;

use std::time::Duration;

use raftkv::kv::{ClientRequest, ClientResponse};
use raftkv::raft::{MembershipChange, NodeId};
use sim::{seeds, sim_addrs, simulate, NetConfig, Sim};

const SECOND: Duration = Duration::from_secs(1);

async fn members(sim: &Sim, nodes: &[NodeId]) -> Option<Vec<(NodeId, String)>> {
    for &id in nodes {
        if let ClientResponse::Members(m) = sim.request(id, ClientRequest::Members, SECOND).await {
            return Some(m.into_iter().map(|m| (m.id, m.role)).collect());
        }
    }
    None
}

/// A write through the members `ids` in turn until one is acknowledged.
async fn put_until_ok(sim: &Sim, ids: &[NodeId], key: &str, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut i = 0;
    while tokio::time::Instant::now() < deadline {
        if matches!(
            sim.put(ids[i % ids.len()], key, "v").await,
            ClientResponse::Written { .. }
        ) {
            return true;
        }
        i += 1;
        sim.sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Every node of `ids` holds the same applied state (after one more write commits).
async fn converge(sim: &Sim, ids: &[NodeId], timeout: Duration) -> bool {
    for &id in ids {
        if !sim.is_alive(id) {
            sim.restart(id);
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let _ = put_until_ok(sim, ids, "__converge", timeout).await;
    while tokio::time::Instant::now() < deadline {
        let mut dumps = Vec::new();
        for &id in ids {
            dumps.push(sim.dump(id).await);
        }
        let first = dumps.first().cloned().flatten();
        if first.is_some() && dumps.iter().all(|d| *d == first) {
            return true;
        }
        sim.sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn change(sim: &Sim, via: NodeId, c: MembershipChange) -> ClientResponse {
    sim.request(via, ClientRequest::ChangeMembership(c), 2 * SECOND)
        .await
}

#[test]
fn membership_churn_with_faults() {
    for seed in seeds(7000, 4) {
        simulate(3, seed, NetConfig::unreliable(), |sim| async move {
            let mut nodes: Vec<NodeId> = vec![1, 2, 3];
            let mut next: NodeId = 4;
            assert!(sim.wait_leader(&[1, 2, 3], 10 * SECOND).await.is_some());
            for round in 0..10u64 {
                let via = nodes[sim.rand_range(0, nodes.len() as u64 - 1) as usize];
                match sim.rand_range(0, 5) {
                    0 | 1 => {
                        // A new node joins and is added as a learner.
                        let id = next;
                        next += 1;
                        sim.add_node(id);
                        nodes.push(id);
                        let _ = change(
                            &sim,
                            via,
                            MembershipChange::AddLearner {
                                id,
                                addrs: sim_addrs(id),
                            },
                        )
                        .await;
                    }
                    2 => {
                        // A voter leaves, while at least three remain.
                        if let Some(m) = members(&sim, &nodes).await {
                            let voters: Vec<NodeId> = m
                                .iter()
                                .filter(|(_, r)| r == "voter")
                                .map(|(id, _)| *id)
                                .collect();
                            if voters.len() > 3 {
                                let id =
                                    voters[sim.rand_range(0, voters.len() as u64 - 1) as usize];
                                let _ = change(&sim, via, MembershipChange::Remove { id }).await;
                            }
                        }
                    }
                    3 => {
                        let _ = sim
                            .request(via, ClientRequest::TransferLeader(None), 2 * SECOND)
                            .await;
                    }
                    4 => {
                        let id = nodes[sim.rand_range(0, nodes.len() as u64 - 1) as usize];
                        sim.crash(id);
                        sim.sleep(Duration::from_millis(sim.rand_range(100, 800)))
                            .await;
                        sim.restart(id);
                    }
                    _ => {
                        let id = nodes[sim.rand_range(0, nodes.len() as u64 - 1) as usize];
                        sim.isolate(id);
                        sim.sleep(Duration::from_millis(sim.rand_range(200, 1500)))
                            .await;
                        sim.heal();
                    }
                }
                // Writes keep flowing through whoever answers.
                for i in 0..3 {
                    let via = nodes[sim.rand_range(0, nodes.len() as u64 - 1) as usize];
                    let _ = sim.put(via, &format!("r{}-{}", round, i), "v").await;
                }
                sim.sleep(Duration::from_millis(sim.rand_range(50, 400)))
                    .await;
            }
            // Calm: the network heals and every current member ends up with the same data.
            sim.heal();
            sim.set_net(NetConfig::reliable());
            let final_members = loop {
                if let Some(m) = members(&sim, &nodes).await {
                    break m;
                }
                sim.sleep(Duration::from_millis(100)).await;
            };
            let ids: Vec<NodeId> = final_members.iter().map(|(id, _)| *id).collect();
            assert!(
                put_until_ok(&sim, &ids, "final", 20 * SECOND).await,
                "seed {}: no write succeeded after the churn ({:?})",
                seed,
                final_members
            );
            assert!(
                converge(&sim, &ids, 20 * SECOND).await,
                "seed {}: members {:?} did not converge",
                seed,
                ids
            );
        });
    }
}
