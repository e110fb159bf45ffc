//! The consensus actor: owns the pure [`RaftCore`] and turns its [`Effect`]s into messages
//! to the other actors and to peers. It is also where client requests enter the protocol:
//! proposals, linearizable reads and forwarding to the leader.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use log::{debug, error, info, warn};
use tokio::sync::oneshot;

use super::election_timer::{ElectionTimeout, ElectionTimer, ResetTimer, StopTimer};
use super::log_store::{LogStore, PersistCmd, StopLogStore};
use super::replicator::{
    CoreLink, HeartbeatNow, PeerResponse, ReadLog, Replicated, ReplicationLimits, Replicator,
    StopReplicator, Wake,
};
use super::state_machine::{
    AppliedGauge, Apply, ChunkStored, InstallChunk, ReadAt, ReadLocal, StateMachine,
    StateMachineRef, StopStateMachine, StoreDurable, Waiter,
};
use crate::codec;
use crate::kv::{ClientRequest, ClientResponse, Command, ReadConsistency};
use crate::net::{Inbound, Transport};
use crate::raft::{
    Effect, LogIndex, LogLimits, Message, NodeId, Payload, ProposeError, RaftCore, ReadId, Role,
    Term,
};

/// How many forwarded request ids the leader remembers for duplicate detection.
const MAX_SEEN_FORWARDS: usize = 100_000;

/// A client request entering at this node (`forwarded` when another node sent it here).
#[derive(actix::Message)]
#[rtype(result = "ClientResponse")]
pub struct ClientCall {
    pub request: ClientRequest,
    pub forwarded: bool,
}

/// The node's state for `/status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub role: String,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit_index: LogIndex,
    pub last_applied: LogIndex,
    pub last_log_index: LogIndex,
    pub snapshot_index: LogIndex,
    pub voted_for: Option<NodeId>,
    /// Highest index the state machine's store holds durably.
    pub store_durable_index: LogIndex,
    /// Snapshots this leader is streaming to followers.
    pub snapshot_transfers: Vec<SnapshotTransfer>,
}

/// A snapshot being streamed to a follower, for `/status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotTransfer {
    pub peer: NodeId,
    pub index: LogIndex,
    /// Bytes the follower has stored so far.
    pub bytes_stored: u64,
}

#[derive(actix::Message)]
#[rtype(result = "NodeStatus")]
pub struct GetStatus;

/// Stop this node's actors (shutdown, or a simulated crash).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Timing and batching knobs of the protocol.
#[derive(Clone, Copy, Debug)]
pub struct RaftOptions {
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub heartbeat_interval: Duration,
    pub max_entries_per_append: usize,
    pub max_bytes_per_append: usize,
    pub max_inflight: usize,
    /// Simulated fsync time (in-memory storage only).
    pub sim_fsync_latency: Duration,
    /// The store syncs (a durable commit) once this many entries were applied since the
    /// last sync...
    pub store_sync_entries: u64,
    /// ... or about this many bytes of entries ...
    pub store_sync_bytes: u64,
    /// ... or this much time passed with entries applied.
    pub store_sync_interval: Duration,
    /// Log entries kept below the store's durable index, for followers that lag a little
    /// (a follower further behind gets a snapshot).
    pub log_tail_entries: u64,
    /// Size of one InstallSnapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// InstallSnapshot chunks in flight to one follower.
    pub snapshot_window: usize,
    /// Bounds on the uncommitted entries a leader accepts and the tail it keeps.
    pub log_limits: LogLimits,
    /// Linearizable reads waiting for confirmation, and requests forwarded to the leader,
    /// at most (each): past it, requests are refused as overloaded.
    pub max_pending_requests: usize,
}

impl Default for RaftOptions {
    fn default() -> Self {
        RaftOptions {
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            heartbeat_interval: Duration::from_millis(50),
            max_entries_per_append: 1024,
            max_bytes_per_append: 1024 * 1024,
            max_inflight: 8,
            sim_fsync_latency: Duration::from_millis(1),
            store_sync_entries: 500,
            store_sync_bytes: 16 * 1024 * 1024,
            store_sync_interval: Duration::from_secs(1),
            log_tail_entries: 100_000,
            snapshot_chunk_bytes: 1024 * 1024,
            snapshot_window: 8,
            log_limits: LogLimits::default(),
            max_pending_requests: 10_000,
        }
    }
}

/// The wall clock as this node's proposals see it: the Unix time (ms) at `origin`, plus
/// tokio's monotonic time since (so the simulator's virtual time drives it, and a wall
/// clock stepped backwards while the node runs does not move it).
#[derive(Clone, Copy, Debug)]
pub struct LogClock {
    origin_ms: u64,
    origin: tokio::time::Instant,
}

impl LogClock {
    /// Starting at `origin_ms` now.
    pub fn starting_at(origin_ms: u64) -> Self {
        LogClock {
            origin_ms,
            origin: tokio::time::Instant::now(),
        }
    }

    /// Starting at the system's wall clock now.
    pub fn system() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self::starting_at(ms)
    }

    pub fn now_ms(&self) -> u64 {
        self.origin_ms
            .saturating_add(self.origin.elapsed().as_millis() as u64)
    }
}

pub struct Consensus {
    core: RaftCore,
    options: RaftOptions,
    transport: Arc<dyn Transport>,
    timer: Addr<ElectionTimer>,
    timer_generation: u64,
    log_store: Addr<LogStore>,
    state_machine: Addr<StateMachine>,
    replicators: BTreeMap<NodeId, Addr<Replicator>>,
    next_read_id: ReadId,
    reads: HashMap<ReadId, (String, oneshot::Sender<ClientResponse>)>,
    /// Ids of forwarded requests start at a per-boot random value, so a reply meant for a
    /// previous incarnation of this node can never answer a new request.
    next_forward_id: u64,
    /// Forwarded requests: id -> (the leader it went to, the waiting caller).
    forwards: HashMap<u64, (NodeId, oneshot::Sender<ClientResponse>)>,
    /// The leader as of the last event, to notice changes.
    known_leader: Option<NodeId>,
    /// Forwarded requests already taken in, so a duplicated Forward is not proposed twice.
    seen_forwards: HashSet<(NodeId, u64)>,
    seen_order: VecDeque<(NodeId, u64)>,
    /// Clients waiting for the outcome of this leader's entries that are not yet handed to
    /// the state machine (they go with the `Apply` that carries their entry).
    waiters: BTreeMap<LogIndex, (Term, oneshot::Sender<ClientResponse>)>,
    applied: AppliedGauge,
    /// Stamps proposals with log time (client sessions expire by it).
    clock: LogClock,
    store_durable: LogIndex,
    transfers: BTreeMap<NodeId, SnapshotTransfer>,
    stopped: bool,
}

/// The node's other actors, as the consensus actor drives them.
pub struct ConsensusLinks {
    pub timer: Addr<ElectionTimer>,
    pub log_store: Addr<LogStore>,
    pub state_machine: StateMachineRef,
}

impl Consensus {
    pub fn new(
        core: RaftCore,
        options: RaftOptions,
        transport: Arc<dyn Transport>,
        links: ConsensusLinks,
        clock: LogClock,
        seed: u64,
    ) -> Self {
        let ConsensusLinks {
            timer,
            log_store,
            state_machine:
                StateMachineRef {
                    addr: state_machine,
                    applied,
                },
        } = links;
        // On start the commit index is what the state machine has applied.
        let core_snapshot_index = core.commit_index();
        Consensus {
            core,
            options,
            transport,
            timer,
            timer_generation: 0,
            log_store,
            state_machine,
            replicators: BTreeMap::new(),
            next_read_id: 1,
            reads: HashMap::new(),
            next_forward_id: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            forwards: HashMap::new(),
            known_leader: None,
            seen_forwards: HashSet::new(),
            seen_order: VecDeque::new(),
            waiters: BTreeMap::new(),
            applied,
            clock,
            store_durable: core_snapshot_index,
            transfers: BTreeMap::new(),
            stopped: false,
        }
    }

    fn id(&self) -> NodeId {
        self.core.id()
    }

    /// Carries out what the core decided, in order.
    fn run(&mut self, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        self.execute(effects, ctx);
        let leader = self.core.leader_id();
        if leader != self.known_leader {
            self.known_leader = leader;
            self.abandon_forwards(leader);
        }
    }

    /// The leader changed: requests forwarded to another node may never be answered, so
    /// their callers learn now (outcome unknown) instead of at their timeout.
    fn abandon_forwards(&mut self, leader: Option<NodeId>) {
        let stale: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(_, (to, _))| Some(*to) != leader)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some((to, tx)) = self.forwards.remove(&id) {
                let _ = tx.send(ClientResponse::Unknown {
                    reason: format!(
                        "leader node {} lost its role while handling the request",
                        to
                    ),
                    leader,
                });
            }
        }
    }

    fn execute(&mut self, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        for effect in effects {
            match effect {
                Effect::Persist(batch) => {
                    let seq = batch.seq;
                    let write = self.log_store.send(PersistCmd(batch));
                    ctx.spawn(fut::wrap_future::<_, Self>(write).map(
                        move |res, act, ctx| match res {
                            Ok(Ok(())) => {
                                let effects = act.core.on_persisted(seq);
                                act.run(effects, ctx);
                            }
                            Ok(Err(e)) => act.fatal(&format!("storage write failed: {}", e), ctx),
                            Err(_) => act.fatal("log store stopped", ctx),
                        },
                    ));
                }
                Effect::Send { to, msg } => self.transport.send(to, msg),
                Effect::ResetElectionTimer => {
                    self.timer_generation += 1;
                    self.timer.do_send(ResetTimer {
                        generation: self.timer_generation,
                    });
                }
                Effect::BecameLeader { term, next_index } => {
                    self.stop_replicators();
                    self.transfers.clear();
                    let limits = ReplicationLimits {
                        snapshot_window: self.options.snapshot_window,
                        heartbeat: self.options.heartbeat_interval,
                        max_entries: self.options.max_entries_per_append,
                        max_bytes: self.options.max_bytes_per_append,
                        max_inflight: self.options.max_inflight,
                    };
                    for &peer in self.core.peers() {
                        let r = Replicator::new(
                            self.id(),
                            peer,
                            term,
                            next_index,
                            CoreLink {
                                log: ctx.address().recipient(),
                                progress: ctx.address().recipient(),
                                snapshots: self.state_machine.clone().recipient(),
                            },
                            self.transport.clone(),
                            limits,
                        )
                        .start();
                        self.replicators.insert(peer, r);
                    }
                }
                Effect::SteppedDown => {
                    self.stop_replicators();
                    self.abandon_waiters();
                }
                Effect::ReplicateNow => {
                    for r in self.replicators.values() {
                        r.do_send(Wake);
                    }
                }
                Effect::ToReplicator { peer, msg } => {
                    if let Some(r) = self.replicators.get(&peer) {
                        r.do_send(PeerResponse(msg));
                    }
                }
                Effect::Apply(entries) => {
                    let last = entries.last().map_or(0, |e| e.index);
                    let later = self.waiters.split_off(&(last + 1));
                    let waiters = std::mem::replace(&mut self.waiters, later)
                        .into_iter()
                        .map(|(index, (term, tx))| Waiter { index, term, tx })
                        .collect();
                    self.state_machine.do_send(Apply { entries, waiters });
                }
                Effect::ReadReady { id, read_index } => {
                    if let Some((key, tx)) = self.reads.remove(&id) {
                        self.state_machine.do_send(ReadAt {
                            key,
                            read_index,
                            tx,
                        });
                    }
                }
                Effect::ReadFailed { id } => {
                    if let Some((_, tx)) = self.reads.remove(&id) {
                        let _ = tx.send(ClientResponse::Unavailable {
                            reason: "leadership lost before the read was confirmed".into(),
                            leader: self.core.leader_id(),
                        });
                    }
                }
                Effect::InstallChunk {
                    from,
                    snapshot,
                    offset,
                    data,
                    done,
                    read_seq,
                    stream,
                } => self.state_machine.do_send(InstallChunk {
                    from,
                    snapshot,
                    offset,
                    data,
                    done,
                    read_seq,
                    stream,
                }),
                Effect::BroadcastHeartbeat { read_seq } => {
                    for r in self.replicators.values() {
                        r.do_send(HeartbeatNow { read_seq });
                    }
                }
            }
        }
    }

    /// This node stopped leading: nothing tells it any more whether its uncommitted
    /// entries commit, so their clients learn now (outcome unknown, 504) instead of at
    /// their timeout. A retry with the same session is safe: it is never applied twice.
    fn abandon_waiters(&mut self) {
        let waiting = std::mem::take(&mut self.waiters);
        if !waiting.is_empty() {
            info!(
                "[node {} term {}] stopped leading with {} writes in flight: answered 504 \
                 (they may still commit)",
                self.id(),
                self.core.current_term(),
                waiting.len()
            );
        }
        for (_, (_, tx)) in waiting {
            let _ = tx.send(ClientResponse::Unknown {
                reason: "the leader stepped down before the write was known to commit; it may \
                         still be applied (a retry with the same X-Client-Id and X-Request-Seq \
                         is applied at most once)"
                    .into(),
                leader: None,
            });
        }
    }

    fn stop_replicators(&mut self) {
        self.transfers.clear();
        for (_, r) in std::mem::take(&mut self.replicators) {
            r.do_send(StopReplicator);
        }
    }

    fn fatal(&mut self, why: &str, ctx: &mut Context<Self>) {
        error!(
            "[node {} term {}] fatal: {}; stopping the node",
            self.id(),
            self.core.current_term(),
            why
        );
        self.shutdown(ctx);
        System::current().stop_with_code(1);
    }

    fn shutdown(&mut self, ctx: &mut Context<Self>) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.stop_replicators();
        self.timer.do_send(StopTimer);
        self.log_store.do_send(StopLogStore);
        self.state_machine.do_send(StopStateMachine);
        ctx.stop();
    }

    /// Starts serving `request`; the answer arrives on the returned channel.
    fn start_request(
        &mut self,
        request: ClientRequest,
        forwarded: bool,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<ClientResponse> {
        let (tx, rx) = oneshot::channel();
        match request {
            ClientRequest::Read {
                key,
                consistency: ReadConsistency::Stale,
            } => {
                let read = self.state_machine.send(ReadLocal(key));
                actix::spawn(async move {
                    let response = match read.await {
                        Ok(r) => r,
                        Err(_) => ClientResponse::Unavailable {
                            reason: "node is shutting down".into(),
                            leader: None,
                        },
                    };
                    let _ = tx.send(response);
                });
            }
            ClientRequest::Write { op, session } if self.core.role() == Role::Leader => {
                let command = Command {
                    op,
                    session,
                    stamp_ms: self.clock.now_ms(),
                };
                let command = match codec::encode(&command) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        let _ = tx.send(ClientResponse::Unavailable {
                            reason: format!("cannot encode the command: {}", e),
                            leader: None,
                        });
                        return rx;
                    }
                };
                let (accepted, effects) = self.core.propose(Payload::Command(command));
                match accepted {
                    Ok((index, term)) => {
                        // Registered before any Apply for this index can be sent.
                        self.waiters.insert(index, (term, tx));
                    }
                    Err(ProposeError::NotLeader) => {
                        let _ = tx.send(self.unavailable());
                    }
                    Err(ProposeError::Overloaded { entries, bytes }) => {
                        let _ = tx.send(ClientResponse::Overloaded {
                            reason: format!(
                                "overloaded: {} entries ({} KiB) are waiting to commit; not \
                                 applied, retry later",
                                entries,
                                bytes / 1024
                            ),
                        });
                    }
                }
                self.run(effects, ctx);
            }
            ClientRequest::Read { .. } | ClientRequest::Write { .. }
                if self.reads.len() + self.forwards.len() >= self.options.max_pending_requests =>
            {
                let _ = tx.send(ClientResponse::Overloaded {
                    reason: format!(
                        "overloaded: {} reads and forwarded requests are waiting; retry later",
                        self.reads.len() + self.forwards.len()
                    ),
                });
            }
            ClientRequest::Read { key, .. } if self.core.role() == Role::Leader => {
                let id = self.next_read_id;
                self.next_read_id += 1;
                self.reads.insert(id, (key, tx));
                let (_, effects) = self.core.read(id);
                self.run(effects, ctx);
            }
            request => match self.core.leader_id() {
                Some(leader) if !forwarded && leader != self.id() => {
                    let request = match codec::encode(&request) {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            let _ = tx.send(ClientResponse::Unavailable {
                                reason: format!("cannot encode the request: {}", e),
                                leader: None,
                            });
                            return rx;
                        }
                    };
                    let req_id = self.next_forward_id;
                    self.next_forward_id = self.next_forward_id.wrapping_add(1);
                    self.forwards.insert(req_id, (leader, tx));
                    debug!(
                        "[node {} term {}] forwards request {} to leader {}",
                        self.id(),
                        self.core.current_term(),
                        req_id,
                        leader
                    );
                    self.transport
                        .send(leader, Message::Forward { req_id, request });
                }
                _ => {
                    let _ = tx.send(self.unavailable());
                }
            },
        }
        rx
    }

    fn unavailable(&self) -> ClientResponse {
        let leader = self.core.leader_id();
        ClientResponse::Unavailable {
            reason: match leader {
                Some(l) if l != self.id() => format!("not the leader; node {} leads", l),
                Some(_) => "leadership is changing".into(),
                None => "no leader known; the cluster may be electing or lack a majority".into(),
            },
            leader: leader.filter(|l| *l != self.id()),
        }
    }
}

impl Actor for Consensus {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(
            "[node {} term {}] starts as follower (log {}..={}, commit {}, vote {:?})",
            self.id(),
            self.core.current_term(),
            self.core.log().snapshot_index() + 1,
            self.core.log().last_index(),
            self.core.commit_index(),
            self.core.voted_for()
        );
        self.run(vec![Effect::ResetElectionTimer], ctx);
        // Forwarded requests whose caller gave up are forgotten.
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            act.forwards.retain(|_, (_, tx)| !tx.is_closed());
            act.waiters.retain(|_, (_, tx)| !tx.is_closed());
            act.reads.retain(|_, (_, tx)| !tx.is_closed());
        });
    }
}

impl Handler<Inbound> for Consensus {
    type Result = ();

    fn handle(&mut self, Inbound { from, msg }: Inbound, ctx: &mut Context<Self>) {
        match msg {
            Message::Forward { req_id, request } => {
                let Ok(request) = codec::decode::<ClientRequest>(&request) else {
                    warn!(
                        "[node {} term {}] forwarded request {} from node {} does not decode: ignored",
                        self.id(),
                        self.core.current_term(),
                        req_id,
                        from
                    );
                    return;
                };
                if !self.seen_forwards.insert((from, req_id)) {
                    debug!(
                        "[node {} term {}] duplicate forwarded request {} from node {} ignored",
                        self.id(),
                        self.core.current_term(),
                        req_id,
                        from
                    );
                    return;
                }
                self.seen_order.push_back((from, req_id));
                if self.seen_order.len() > MAX_SEEN_FORWARDS {
                    if let Some(old) = self.seen_order.pop_front() {
                        self.seen_forwards.remove(&old);
                    }
                }
                let rx = self.start_request(request, true, ctx);
                let transport = self.transport.clone();
                actix::spawn(async move {
                    let response = rx.await.unwrap_or(ClientResponse::Unknown {
                        reason: "leader dropped the request".into(),
                        leader: None,
                    });
                    match codec::encode(&response) {
                        Ok(response) => {
                            transport.send(from, Message::ForwardReply { req_id, response })
                        }
                        Err(e) => log::error!("cannot encode a forwarded reply: {}", e),
                    }
                });
            }
            Message::ForwardReply { req_id, response } => {
                let response = codec::decode::<ClientResponse>(&response).unwrap_or_else(|e| {
                    ClientResponse::Unknown {
                        reason: format!("the leader's answer does not decode: {}", e),
                        leader: Some(from),
                    }
                });
                // Only the node the request went to may answer it.
                if self
                    .forwards
                    .get(&req_id)
                    .is_some_and(|(to, _)| *to == from)
                {
                    if let Some((_, tx)) = self.forwards.remove(&req_id) {
                        let _ = tx.send(response);
                    }
                }
            }
            msg => {
                let effects = self.core.on_message(from, msg);
                self.run(effects, ctx);
            }
        }
    }
}

impl Handler<ElectionTimeout> for Consensus {
    type Result = ();

    fn handle(&mut self, msg: ElectionTimeout, ctx: &mut Context<Self>) {
        if msg.generation != self.timer_generation {
            return; // raced with a newer reset
        }
        let effects = self.core.on_election_timeout();
        self.run(effects, ctx);
    }
}

impl Handler<ClientCall> for Consensus {
    type Result = ResponseFuture<ClientResponse>;

    fn handle(&mut self, msg: ClientCall, ctx: &mut Context<Self>) -> Self::Result {
        let rx = self.start_request(msg.request, msg.forwarded, ctx);
        Box::pin(async move {
            rx.await.unwrap_or(ClientResponse::Unknown {
                reason: "request dropped".into(),
                leader: None,
            })
        })
    }
}

impl Handler<ReadLog> for Consensus {
    type Result = MessageResult<ReadLog>;

    fn handle(&mut self, msg: ReadLog, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.core
                .log_slice(msg.term, msg.next_index, msg.max_entries, msg.max_bytes),
        )
    }
}

impl Handler<Replicated> for Consensus {
    type Result = ();

    fn handle(&mut self, msg: Replicated, ctx: &mut Context<Self>) {
        if self.core.role() == Role::Leader && msg.term == self.core.current_term() {
            match msg.snapshot {
                Some((index, bytes_stored)) => {
                    self.transfers.insert(
                        msg.peer,
                        SnapshotTransfer {
                            peer: msg.peer,
                            index,
                            bytes_stored,
                        },
                    );
                }
                None => {
                    self.transfers.remove(&msg.peer);
                }
            }
        }
        let effects = self.core.on_replicated(
            msg.term,
            msg.peer,
            msg.match_index,
            msg.read_seq,
            msg.snapshot.map(|s| s.0),
        );
        self.run(effects, ctx);
    }
}

impl Handler<StoreDurable> for Consensus {
    type Result = ();

    fn handle(&mut self, msg: StoreDurable, ctx: &mut Context<Self>) {
        self.store_durable = self.store_durable.max(msg.durable);
        let effects = self.core.on_store_durable(msg.durable);
        self.run(effects, ctx);
    }
}

impl Handler<ChunkStored> for Consensus {
    type Result = ();

    fn handle(&mut self, msg: ChunkStored, ctx: &mut Context<Self>) {
        if msg.installed {
            self.store_durable = self.store_durable.max(msg.snapshot.index);
        }
        let effects = self.core.on_snapshot_chunk(
            msg.from,
            msg.snapshot,
            msg.next_offset,
            msg.installed,
            (msg.read_seq, msg.stream),
        );
        self.run(effects, ctx);
    }
}

impl Handler<GetStatus> for Consensus {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let s = self.core.status();
        MessageResult(NodeStatus {
            id: s.id,
            role: s.role.to_string(),
            term: s.term,
            leader: s.leader,
            commit_index: s.commit_index,
            last_applied: self.applied.get(),
            last_log_index: s.last_log_index,
            snapshot_index: s.snapshot_index,
            voted_for: self.core.voted_for(),
            store_durable_index: self.store_durable,
            snapshot_transfers: self.transfers.values().cloned().collect(),
        })
    }
}

impl Handler<Shutdown> for Consensus {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.shutdown(ctx);
    }
}
