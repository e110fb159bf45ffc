//! Starts one node's actors and wires their addresses together; also the production entry
//! point that adds the disk, the TCP transport and the HTTP gateway.

use std::collections::BTreeSet;
use std::sync::Arc;

use actix::prelude::*;
use log::info;

use crate::actors::consensus::{Consensus, RaftOptions};
use crate::actors::election_timer::ElectionTimer;
use crate::actors::log_store::LogStore;
use crate::actors::state_machine::{AppliedEntries, SnapshotPolicy, StateMachine};
use crate::config::Config;
use crate::kv::KvStore;
use crate::net::tcp::{serve_inbound, TcpTransport};
use crate::net::Transport;
use crate::raft::{NodeId, RaftCore, RaftLog};
use crate::storage::{FileStorage, InitialState, Storage};

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

/// Runs a production node until it is asked to stop. Returns a message on a startup error.
pub async fn serve(config: Config) -> Result<(), String> {
    let (storage, initial) = FileStorage::open(&config.data_dir).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(&config.raft_addr)
        .await
        .map_err(|e| {
            format!(
                "cannot listen for peers on raft_addr {}: {}",
                config.raft_addr, e
            )
        })?;
    let peers: Vec<(NodeId, String)> = config
        .peers
        .iter()
        .map(|p| (p.id, p.raft_addr.clone()))
        .collect();
    let transport = TcpTransport::start(config.id, config.cluster_id(), &peers);
    let node = start_node(
        config.id,
        peers.iter().map(|p| p.0).collect(),
        config.raft_options(),
        NodeDeps {
            transport,
            storage: Box::new(storage),
            initial,
            seed: rand::random(),
            observer: None,
        },
    );
    let peer_ids: BTreeSet<NodeId> = peers.iter().map(|p| p.0).collect();
    actix::spawn(serve_inbound(
        listener,
        config.id,
        config.cluster_id().to_string(),
        peer_ids,
        node.consensus.clone().recipient(),
    ));
    info!(
        "[node {}] listening: clients on http://{}, peers on {}",
        config.id, config.http_addr, config.raft_addr
    );
    let result = crate::http::serve(&config, node.clone()).await;
    node.consensus.do_send(crate::actors::consensus::Shutdown);
    info!("[node {}] stopped", config.id);
    result
}
