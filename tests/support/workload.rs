//! Simulated clients and a fault injector for the simulator, producing a history for the
//! linearizability checker.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use raftkv::kv::{ClientRequest, ClientResponse, KvOp, ReadConsistency};
use raftkv::raft::{MembershipChange, NodeId};

use crate::linearizability::{Op, Operation, Outcome};
use crate::sim::{sim_addrs, Sim};

/// What the clients do.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub clients: usize,
    pub keys: usize,
    pub duration: Duration,
    pub request_timeout: Duration,
}

fn outcome(r: &ClientResponse) -> Outcome {
    match r {
        ClientResponse::Written { .. } => Outcome::Done,
        ClientResponse::Value(v) => Outcome::Read(v.clone()),
        ClientResponse::Unavailable { .. }
        | ClientResponse::SessionExpired { .. }
        | ClientResponse::Overloaded { .. }
        | ClientResponse::Rejected { .. } => Outcome::Failed,
        ClientResponse::Unknown { .. } => Outcome::Unknown,
        // Not answers to key-value requests.
        ClientResponse::Members(_) | ClientResponse::LeaderIs { .. } => Outcome::Unknown,
    }
}

/// One client request through node `node`, recorded into `history`.
pub async fn recorded(
    sim: &Sim,
    history: &Rc<RefCell<Vec<Operation>>>,
    client: u64,
    node: NodeId,
    op: Op,
    timeout: Duration,
) {
    let request = match &op {
        Op::Put { key, value } => ClientRequest::Write {
            op: KvOp::Put {
                key: key.clone(),
                value: value.clone(),
            },
            session: None,
        },
        Op::Delete { key } => ClientRequest::Write {
            op: KvOp::Delete { key: key.clone() },
            session: None,
        },
        Op::Get { key } => ClientRequest::Read {
            key: key.clone(),
            consistency: ReadConsistency::Linearizable,
        },
    };
    let invoke = sim.now_ns();
    let response = sim.request(node, request, timeout).await;
    let complete = sim.now_ns();
    history.borrow_mut().push(Operation {
        client,
        op,
        invoke,
        complete,
        outcome: outcome(&response),
    });
}

/// Runs `w.clients` concurrent clients against random live nodes; returns the history.
pub async fn run_clients(sim: &Sim, w: Workload) -> Rc<RefCell<Vec<Operation>>> {
    let history = Rc::new(RefCell::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..w.clients as u64 {
        let sim = sim.clone();
        let history = history.clone();
        tasks.push(actix::spawn(async move {
            let end = sim.now_ms() + w.duration.as_millis() as u64;
            let mut n = 0u64;
            while sim.now_ms() < end {
                let live = sim.live_nodes();
                if live.is_empty() {
                    sim.sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let node = live[sim.rand_range(0, live.len() as u64 - 1) as usize];
                let key = format!("k{}", sim.rand_range(0, w.keys as u64 - 1));
                n += 1;
                let op = match sim.rand_range(0, 9) {
                    0..=4 => Op::Get { key },
                    5..=8 => Op::Put {
                        key,
                        value: format!("c{}-{}", c, n).into_bytes(),
                    },
                    _ => Op::Delete { key },
                };
                recorded(&sim, &history, c, node, op, w.request_timeout).await;
                sim.sleep(Duration::from_millis(sim.rand_range(0, 10)))
                    .await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    history
}

/// Which faults the injector may use.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub crashes: bool,
    pub partitions: bool,
    /// Remove voters, add them back, transfer leadership.
    pub membership: bool,
}

/// The members (id, is voter) as some live node's leader reports them.
async fn members(sim: &Sim) -> Option<Vec<(NodeId, bool)>> {
    for id in sim.live_nodes() {
        let r = sim
            .request(id, ClientRequest::Members, Duration::from_millis(500))
            .await;
        if let ClientResponse::Members(m) = r {
            return Some(m.into_iter().map(|m| (m.id, m.role == "voter")).collect());
        }
    }
    None
}

/// One membership fault: remove a voter (while all are voters), add back a removed node,
/// or hand leadership over.
async fn membership_fault(sim: &Sim) {
    let Some(m) = members(sim).await else {
        return;
    };
    let via = sim.live_nodes();
    if via.is_empty() {
        return;
    }
    let via = via[sim.rand_range(0, via.len() as u64 - 1) as usize];
    let missing: Vec<NodeId> = sim
        .ids
        .iter()
        .copied()
        .filter(|id| !m.iter().any(|(x, _)| x == id))
        .collect();
    let request = match sim.rand_range(0, 2) {
        0 if missing.is_empty() && m.iter().all(|(_, v)| *v) => {
            let id = m[sim.rand_range(0, m.len() as u64 - 1) as usize].0;
            ClientRequest::ChangeMembership(MembershipChange::Remove { id })
        }
        0 | 1 if !missing.is_empty() => {
            ClientRequest::ChangeMembership(MembershipChange::AddLearner {
                id: missing[0],
                addrs: sim_addrs(missing[0]),
            })
        }
        _ => ClientRequest::TransferLeader(None),
    };
    let _ = sim.request(via, request, Duration::from_secs(1)).await;
}

/// Brings every node of the simulation back into the configuration, as a voter.
pub async fn restore_members(sim: &Sim, timeout: Duration) -> bool {
    let end = sim.now_ms() + timeout.as_millis() as u64;
    while sim.now_ms() < end {
        if let Some(m) = members(sim).await {
            if m.len() == sim.ids.len() && m.iter().all(|(_, v)| *v) {
                return true;
            }
            if let Some(id) = sim
                .ids
                .iter()
                .copied()
                .find(|id| !m.iter().any(|(x, _)| x == id))
            {
                // Through a member: a removed node knows no leader to forward to.
                let add = MembershipChange::AddLearner {
                    id,
                    addrs: sim_addrs(id),
                };
                for (via, _) in &m {
                    let r = sim
                        .request(
                            *via,
                            ClientRequest::ChangeMembership(add.clone()),
                            Duration::from_secs(1),
                        )
                        .await;
                    if !matches!(r, ClientResponse::Unavailable { .. }) {
                        break;
                    }
                }
            }
        }
        sim.sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Injects random faults for `duration`, then heals the network (nodes stay as they are).
pub async fn chaos(sim: &Sim, duration: Duration, faults: Faults) {
    let end = sim.now_ms() + duration.as_millis() as u64;
    let n = sim.ids.len() as u64;
    while sim.now_ms() < end {
        sim.sleep(Duration::from_millis(sim.rand_range(100, 700)))
            .await;
        match sim.rand_range(0, 9) {
            0 | 1 if faults.crashes => {
                let victim = sim.rand_range(1, n);
                sim.crash(victim);
            }
            2 | 3 if faults.crashes => {
                let victim = sim.rand_range(1, n);
                sim.restart(victim);
            }
            4 if faults.partitions => {
                // Isolate (or "pause") whoever leads now, while it still believes it leads.
                if let Some((l, _)) = sim.leader().await {
                    sim.isolate(l);
                }
            }
            5 if faults.partitions => {
                let a: Vec<NodeId> = sim
                    .ids
                    .iter()
                    .copied()
                    .filter(|_| sim.rand_bool(0.5))
                    .collect();
                let b: Vec<NodeId> = sim.ids.iter().copied().filter(|x| !a.contains(x)).collect();
                sim.partition(&[&a, &b]);
            }
            6 if faults.partitions => {
                let from = sim.rand_range(1, n);
                let to = sim.rand_range(1, n);
                if from != to {
                    sim.cut_one_way(from, to);
                }
            }
            7..=9 if faults.membership => membership_fault(sim).await,
            _ => sim.heal(),
        }
    }
    sim.heal();
}
