//! Starts one node's actors and wires their addresses together. What the node runs on
//! (disk or memory, TCP or a simulated network) comes in through [`NodeDeps`].

use std::sync::Arc;

use actix::prelude::*;

use crate::actors::consensus::{Consensus, ConsensusLinks, LogClock, RaftOptions, Shedding};
use crate::actors::election_timer::ElectionTimer;
use crate::actors::log_store::LogStore;
use crate::actors::state_machine::{
    AppliedEntries, AppliedGauge, SnapshotLimits, StateMachine, StateMachineLinks, StateMachineRef,
    SyncPolicy,
};
use crate::kv::KvStore;
use crate::metrics::Metrics;
use crate::net::Transport;
use crate::raft::{LogPoint, Membership, NodeId, RaftCore, RaftLog};
use crate::storage::{compact_log, InitialState, Storage};

/// What a node is built from: the seams the simulator replaces.
pub struct NodeDeps {
    pub transport: Arc<dyn Transport>,
    pub storage: Box<dyn Storage>,
    /// What the log held at start.
    pub initial: InitialState,
    /// The state machine's store, opened.
    pub store: KvStore,
    /// What the store has applied (durably).
    pub applied: LogPoint,
    /// Run the state machine on a thread of its own (production); the simulator keeps
    /// every actor on its one thread.
    pub threaded: bool,
    /// Seeds the election timer's randomness.
    pub seed: u64,
    /// Stamps proposals with log time.
    pub clock: LogClock,
    /// Receives every applied entry (simulator invariant checks); `None` in production.
    pub observer: Option<Recipient<AppliedEntries>>,
}

/// Where a node's first membership comes from when nothing is recorded yet.
#[derive(Clone, Debug)]
pub enum Bootstrap {
    /// A new cluster: these members, all voters (the config files).
    Members(Membership),
    /// A new member of a running cluster: no configuration until the leader sends one.
    Join,
}

/// Addresses of a running node's actors.
#[derive(Clone)]
pub struct NodeHandle {
    pub id: NodeId,
    pub consensus: Addr<Consensus>,
    pub state_machine: Addr<StateMachine>,
    pub metrics: Arc<Metrics>,
    /// On while the leader refuses writes for overload: the gateway refuses them itself.
    pub shedding: Shedding,
}

/// Makes the log agree with the store it restarts with. The store is the snapshot: the log
/// must reach back to it (it is only ever compacted up to what the store holds durably),
/// and if the store is ahead of the log (a snapshot was installed, or the store synced
/// entries the log had not yet), the log starts after the store's point, keeping the
/// entries after it only if it holds that point with the same term (Figure 13, 6-7).
pub fn reconcile(initial: &mut InitialState, applied: LogPoint) -> Result<(), String> {
    if applied.index < initial.start.index {
        return Err(format!(
            "the state machine store has applied up to index {} but the log starts after index \
             {}: the store is older than the log (was store.redb replaced or removed?). Start the \
             node with an empty data directory; it catches up from the leader",
            applied.index, initial.start.index
        ));
    }
    let holds = applied.index == initial.start.index
        || initial
            .entries
            .iter()
            .any(|e| e.index == applied.index && e.term == applied.term);
    if !holds {
        compact_log(initial, applied);
        // What the disk holds before that disagrees with the store: never serve it.
        initial.disk_start = initial.start;
    }
    Ok(())
}

/// Starts the actors of node `id` on the current actix System.
pub fn start_node(
    id: NodeId,
    bootstrap: Bootstrap,
    options: RaftOptions,
    deps: NodeDeps,
) -> Result<NodeHandle, String> {
    let NodeDeps {
        transport,
        storage,
        mut initial,
        mut store,
        applied,
        threaded,
        seed,
        clock,
        observer,
    } = deps;
    reconcile(&mut initial, applied)?;
    let disk_start = initial.disk_start.min(initial.start);
    let log = RaftLog::new(initial.start.index, initial.start.term, initial.entries);
    let recorded = store.membership().map_err(|e| e.to_string())?;
    let core = RaftCore::new(id, Vec::new(), initial.hard_state, log, applied.index)
        .with_disk_start(disk_start)
        .with_log_tail(options.log_tail_entries)
        .with_limits(options.log_limits)
        .with_promotion(options.promotion);
    let core = match (recorded, &bootstrap) {
        (Some((index, m)), _) => core.with_membership(index, m, false),
        (None, Bootstrap::Members(m)) => core.with_membership(0, m.clone(), true),
        (None, Bootstrap::Join) => core.with_membership(0, Membership::default(), false),
    };
    if core.membership_index() > 0 {
        let ids = |m: &Membership| -> Vec<NodeId> { m.others(0) };
        match &bootstrap {
            Bootstrap::Members(file) if ids(file) != ids(core.membership()) => log::info!(
                "[node {}] the config file lists {} but the cluster recorded {} at index {}: \
                 following the recorded membership",
                id,
                file,
                core.membership(),
                core.membership_index()
            ),
            _ => {}
        }
    }
    log::info!(
        "[node {}] membership at start: {} (recorded at index {})",
        id,
        core.membership(),
        core.membership_index()
    );
    let metrics = Arc::new(Metrics::new(id));
    let log_store = LogStore::new(storage, options.sim_fsync_latency, metrics.clone()).start();
    let sync = SyncPolicy {
        every_entries: options.store_sync_entries,
        every_bytes: options.store_sync_bytes,
        interval: options.store_sync_interval,
    };
    let snapshots = SnapshotLimits {
        chunk_bytes: options.snapshot_chunk_bytes,
        window: options.snapshot_window,
        threaded,
    };
    let mut state_machine = None;
    let shedding = Shedding::default();
    let applied_gauge = AppliedGauge::new(applied.index);
    let consensus = Consensus::create(|ctx| {
        let links = StateMachineLinks {
            durable: ctx.address().recipient(),
            chunks: ctx.address().recipient(),
            applied: applied_gauge.clone(),
            metrics: metrics.clone(),
        };
        let sm = StateMachine::new(id, store, applied, Some(links))
            .with_observer(observer)
            .with_policies(sync, snapshots);
        let sm = if threaded {
            let arbiter = Arbiter::new();
            let sm = sm.on_own_arbiter();
            StateMachine::start_in_arbiter(&arbiter.handle(), move |_| sm)
        } else {
            sm.start()
        };
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
            ConsensusLinks {
                timer,
                log_store,
                state_machine: StateMachineRef {
                    addr: sm,
                    applied: applied_gauge,
                },
                metrics: metrics.clone(),
                shedding: shedding.clone(),
            },
            clock,
            seed ^ 0x5eed,
        )
    });
    // `create` runs the closure before returning, so this is always set.
    let state_machine = state_machine.ok_or("state machine did not start")?;
    Ok(NodeHandle {
        id,
        consensus,
        state_machine,
        metrics,
        shedding,
    })
}
