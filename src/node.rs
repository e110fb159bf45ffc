//! Starts one node's actors and wires their addresses together. What the node runs on
//! (disk or memory, TCP or a simulated network) comes in through [`NodeDeps`].

use std::sync::Arc;

use actix::prelude::*;

use crate::actors::consensus::{Consensus, RaftOptions};
use crate::actors::election_timer::ElectionTimer;
use crate::actors::log_store::LogStore;
use crate::actors::state_machine::{AppliedEntries, SnapshotPolicy, StateMachine};
use crate::kv::KvStore;
use crate::net::Transport;
use crate::raft::{NodeId, RaftCore, RaftLog};
use crate::storage::{InitialState, Storage};

/// What a node is built from: the seams the simulator replaces.
pub struct NodeDeps {
    pub transport: Arc<dyn Transport>,
    pub storage: Box<dyn Storage>,
    /// What the storage held at start.
    pub initial: InitialState,
    /// Seeds the election timer's randomness.
    pub seed: u64,
    /// Receives every applied entry (simulator invariant checks); `None` in production.
    pub observer: Option<Recipient<AppliedEntries>>,
}

/// Addresses of a running node's actors.
#[derive(Clone)]
pub struct NodeHandle {
    pub id: NodeId,
    pub consensus: Addr<Consensus>,
    pub state_machine: Addr<StateMachine>,
}

/// Starts the actors of node `id` on the current actix System.
pub fn start_node(
    id: NodeId,
    peers: Vec<NodeId>,
    options: RaftOptions,
    deps: NodeDeps,
) -> NodeHandle {
    let InitialState {
        hard_state,
        snapshot,
        entries,
    } = deps.initial;
    let (snap_index, snap_term, kv) = match &snapshot {
        Some(s) => (s.index, s.term, s.kv.clone()),
        None => (0, 0, KvStore::default()),
    };
    let log = RaftLog::new(snap_index, snap_term, entries);
    let mut members = peers.clone();
    members.push(id);
    members.sort_unstable();
    members.dedup();
    let policy = SnapshotPolicy {
        max_entries: options.snapshot_threshold_entries,
        max_bytes: options.snapshot_threshold_bytes,
    };
    let core = RaftCore::new(id, peers, hard_state, log, snapshot);
    let log_store = LogStore::new(deps.storage, options.sim_fsync_latency).start();
    let mut state_machine = None;
    let transport = deps.transport;
    let seed = deps.seed;
    let observer = deps.observer;
    let consensus = Consensus::create(|ctx| {
        let sm = StateMachine::new(id, kv, snap_index, Some(ctx.address().recipient()))
            .with_observer(observer)
            .with_snapshots(policy, members, snap_term)
            .start();
        state_machine = Some(sm.clone());
        let timer = ElectionTimer::new(
            options.election_timeout_min,
            options.election_timeout_max,
            seed,
            ctx.address().recipient(),
        )
        .start();
        Consensus::new(
            core,
            options,
            transport,
            timer,
            log_store,
            sm,
            seed ^ 0x5eed,
        )
    });
    NodeHandle {
        id,
        consensus,
        // `create` runs the closure before returning, so this is always set.
        state_machine: state_machine
            .unwrap_or_else(|| StateMachine::new(id, KvStore::default(), 0, None).start()),
    }
}
