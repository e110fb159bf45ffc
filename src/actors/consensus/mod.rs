//! The consensus actor: owns the pure [`RaftCore`] and turns its [`Effect`]s into messages
//! to the other actors and to peers. It is also where client requests enter the protocol:
//! proposals, linearizable reads and forwarding to the leader.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use log::{debug, error, info, warn};
use tokio::sync::oneshot;

mod handlers;
mod options;
mod shedding;

pub use options::{LogClock, RaftOptions};
pub use shedding::Shedding;

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
use crate::kv::{ApplyResult, ClientRequest, ClientResponse, Command, MemberInfo, ReadConsistency};
use crate::metrics::Metrics;
use crate::net::{Inbound, Transport};
use crate::raft::{
    ChangeError, Effect, Entry, LogIndex, Membership, Message, NodeId, Payload, ProposeError,
    RaftCore, ReadId, Role, Term,
};

/// How many forwarded request ids the leader remembers for duplicate detection.
const MAX_SEEN_FORWARDS: usize = 100_000;

/// A client request entering at this node (`forwarded` when another node sent it here).
/// The reply is the channel the answer will arrive on: whoever answers (the StateMachine
/// for a write or a read, this actor for a refusal) sends straight to the caller's thread,
/// with no second hop through this actor's.
#[derive(actix::Message)]
#[rtype(result = "oneshot::Receiver<ClientResponse>")]
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

/// A request forwarded to the leader, waiting for its answer.
struct Forwarded {
    /// The leader it went to.
    to: NodeId,
    /// The transport's loss count for that leader when it was sent.
    losses: u64,
    tx: oneshot::Sender<ClientResponse>,
}

pub struct Consensus {
    core: RaftCore,
    /// On while the core refuses proposals for overload: the gateway refuses writes itself.
    shedding: Shedding,
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
    /// Forwarded requests by id.
    forwards: HashMap<u64, Forwarded>,
    /// The leader as of the last event, to notice changes.
    known_leader: Option<NodeId>,
    /// Forwarded leadership transfers: request id -> the target asked for. A change of
    /// leader is their success, not a reason to give up on them.
    forwarded_transfers: HashMap<u64, Option<NodeId>>,
    /// Forwarded requests already taken in, so a duplicated Forward is not proposed twice.
    seen_forwards: HashSet<(NodeId, u64)>,
    seen_order: VecDeque<(NodeId, u64)>,
    /// Clients waiting for the outcome of this leader's entries that are not yet handed to
    /// the state machine (they go with the `Apply` that carries their entry, or are
    /// answered at commit when the outcome is known without applying: see `Proposed`).
    waiters: BTreeMap<LogIndex, Proposed>,
    applied: AppliedGauge,
    /// Stamps proposals with log time (client sessions expire by it).
    clock: LogClock,
    store_durable: LogIndex,
    transfers: BTreeMap<NodeId, SnapshotTransfer>,
    metrics: Arc<Metrics>,
    events: VecDeque<ClusterEvent>,
    /// Role and term as of the last event, to notice changes.
    last_role: Option<(Role, Term)>,
    /// Leader: peers that answered since the last timer tick, and those that had answered
    /// by the tick before (for "peer lost" / "peer found" events).
    heard: std::collections::BTreeSet<NodeId>,
    reachable: Option<std::collections::BTreeSet<NodeId>>,
    /// When this leader proposed each of its entries still in flight (commit latency).
    proposed_at: VecDeque<(LogIndex, std::time::Instant)>,
    /// Every member's peer address seen by this process: a leader that has just removed
    /// itself is still answered until another one leads.
    address_book: BTreeMap<NodeId, String>,
    /// Callers waiting for a leadership transfer to `target` to complete.
    leader_transfers: Vec<(NodeId, oneshot::Sender<ClientResponse>)>,
    stopped: bool,
}

/// The node's other actors, as the consensus actor drives them.
pub struct ConsensusLinks {
    pub timer: Addr<ElectionTimer>,
    pub log_store: Addr<LogStore>,
    pub state_machine: StateMachineRef,
    pub metrics: Arc<Metrics>,
    /// Switched on while the core refuses proposals for overload (the gateway reads it).
    pub shedding: Shedding,
}

/// Something an operator wants on the timeline: a role or term change, a new leader, a
/// membership change, a snapshot. Kept in a bounded ring (`GET /cluster/events`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterEvent {
    /// Wall-clock time, ms since the Unix epoch.
    pub at_ms: u64,
    pub term: Term,
    /// "role", "leader", "membership" or "snapshot".
    pub kind: String,
    /// The new role, the new leader's id, the new membership, the snapshot's index.
    pub detail: String,
}

/// How many events a node keeps.
pub const MAX_EVENTS: usize = 1000;

/// This node's recent events, oldest first.
#[derive(actix::Message)]
#[rtype(result = "Vec<ClusterEvent>")]
pub struct GetEvents;

/// The members (id, http address) of the configuration in force, for the cluster page.
#[derive(actix::Message)]
#[rtype(result = "Vec<(NodeId, String)>")]
pub struct GetMemberAddrs;

/// A client waiting for the entry this leader proposed for it.
#[derive(Debug)]
pub struct Proposed {
    /// The term the entry was proposed in: the entry committed at its index is this
    /// client's only if it has this term.
    term: Term,
    tx: oneshot::Sender<ClientResponse>,
    /// The outcome, when it does not depend on the state the entry is applied to (a put
    /// without a session): the client is answered as soon as the entry commits. Whatever
    /// reads it afterwards with a linearizable read waits until the store has applied it.
    known: Option<ApplyResult>,
}

/// Splits the clients of newly committed `entries` into those answered now (their
/// outcome is known and their entry committed) and those that wait for the state machine.
///
/// Figure 2 has a leader respond "after entry applied to state machine". For a command
/// whose outcome does not depend on the state (`Command::outcome_known_before_applying`)
/// answering at commit is the same answer, and no client can tell it was earlier: the
/// entry is committed (durable on a majority, in every future leader's log), the
/// StateMachine receives it before the client hears back, and a linearizable read waits
/// until its read index (at least this commit) is applied. Only a stale read may miss it.
fn answer_committed(
    entries: &[Entry],
    committed: BTreeMap<LogIndex, Proposed>,
) -> (
    Vec<(oneshot::Sender<ClientResponse>, ClientResponse)>,
    Vec<Waiter>,
) {
    let first = entries.first().map_or(0, |e| e.index);
    let mut answered = Vec::new();
    let mut waiters = Vec::new();
    for (index, p) in committed {
        let ours = index
            .checked_sub(first)
            .and_then(|i| entries.get(i as usize))
            .is_some_and(|e| e.index == index && e.term == p.term);
        match p.known {
            Some(result) if ours => {
                answered.push((p.tx, ClientResponse::Written { index, result }))
            }
            _ => waiters.push(Waiter {
                index,
                term: p.term,
                tx: p.tx,
            }),
        }
    }
    (answered, waiters)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
            metrics,
            shedding,
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
            forwarded_transfers: HashMap::new(),
            known_leader: None,
            seen_forwards: HashSet::new(),
            seen_order: VecDeque::new(),
            waiters: BTreeMap::new(),
            applied,
            clock,
            store_durable: core_snapshot_index,
            transfers: BTreeMap::new(),
            leader_transfers: Vec::new(),
            address_book: BTreeMap::new(),
            metrics,
            events: VecDeque::new(),
            last_role: None,
            heard: Default::default(),
            reachable: None,
            proposed_at: VecDeque::new(),
            stopped: false,
            shedding,
        }
        .reaching_members()
    }

    /// Points the transport at the members of the configuration in force (a joining node
    /// that knows none yet keeps the peers of its config file).
    fn reaching_members(mut self) -> Self {
        let m = self.core.membership().clone();
        self.set_transport_peers(&m);
        self
    }

    /// The transport reaches the members of `m`, plus the leader if it is not one of them
    /// (a leader that removed itself leads until the removal commits, and needs answers).
    fn set_transport_peers(&mut self, m: &Membership) {
        if m.voters.is_empty() {
            return;
        }
        for id in m.others(self.id()) {
            if let Some(a) = m.addrs(id).filter(|a| !a.raft_addr.is_empty()) {
                self.address_book.insert(id, a.raft_addr.clone());
            }
        }
        let me = self.id();
        let leader = self
            .core
            .leader_id()
            .filter(|l| *l != me && !m.contains(*l));
        let peers: Vec<(NodeId, String)> = m
            .others(me)
            .into_iter()
            .chain(leader)
            .filter_map(|id| self.address_book.get(&id).map(|a| (id, a.clone())))
            .collect();
        self.transport.set_peers(&peers);
    }

    fn id(&self) -> NodeId {
        self.core.id()
    }

    /// Carries out what the core decided, in order.
    fn run(&mut self, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        self.execute(effects, ctx);
        self.observe();
        if self.shedding.is_on() {
            self.core.note_applied(self.applied.get());
            if !matches!(
                self.core.admission(),
                Err(ProposeError::Overloaded { .. } | ProposeError::ApplyBehind { .. })
            ) {
                self.shedding.stop();
            }
        }
        let leader = self.core.leader_id();
        if leader != self.known_leader {
            self.known_leader = leader;
            if let Some(l) = leader {
                self.metrics.leader_changes.inc();
                self.event("leader", l.to_string());
            }
            self.abandon_forwards(leader);
            let m = self.core.membership().clone();
            self.set_transport_peers(&m);
            if let Some(new) = leader.filter(|l| *l != self.id()) {
                for (target, tx) in std::mem::take(&mut self.leader_transfers) {
                    let _ = tx.send(if new == target {
                        ClientResponse::LeaderIs { leader: new }
                    } else {
                        ClientResponse::Unknown {
                            reason: format!(
                                "node {} became leader instead of node {}",
                                new, target
                            ),
                            leader: Some(new),
                        }
                    });
                }
            }
        }
    }

    /// Records an event in the ring.
    fn event(&mut self, kind: &str, detail: String) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(ClusterEvent {
            at_ms: now_ms(),
            term: self.core.current_term(),
            kind: kind.to_string(),
            detail,
        });
    }

    /// A leader's timer tick: peers that stopped answering within an election timeout are
    /// lost, peers that answer again are found (events for the timeline).
    pub(super) fn note_peers_heard(&mut self) {
        if self.core.role() != Role::Leader {
            self.reachable = None;
            self.heard.clear();
            return;
        }
        let heard = std::mem::take(&mut self.heard);
        if let Some(before) = self.reachable.take() {
            for p in before.difference(&heard) {
                self.event(
                    "peer",
                    format!("node {} lost (no answer for an election timeout)", p),
                );
            }
            for p in heard.difference(&before) {
                self.event("peer", format!("node {} found", p));
            }
        }
        self.reachable = Some(heard);
    }

    /// Brings the metrics up to date with the core, and notes role and term changes.
    fn observe(&mut self) {
        let st = self.core.status();
        let m = &self.metrics;
        m.term.set(st.term as i64);
        m.leader_id.set(st.leader.unwrap_or(0) as i64);
        m.commit_index.set(st.commit_index as i64);
        m.last_log_index.set(st.last_log_index as i64);
        m.snapshot_index.set(st.snapshot_index as i64);
        m.applied_index.set(self.applied.get() as i64);
        m.pending_requests
            .set((self.waiters.len() + self.reads.len() + self.forwards.len()) as i64);
        if self.last_role != Some((st.role, st.term)) {
            let was = self.last_role.map(|(r, _)| r);
            match st.role {
                Role::Candidate => m.elections_started.inc(),
                Role::Leader if was != Some(Role::Leader) => m.elections_won.inc(),
                _ => {}
            }
            m.set_role(&st.role.to_string());
            self.last_role = Some((st.role, st.term));
            self.event("role", st.role.to_string());
        }
    }

    fn start_replicator(
        &mut self,
        peer: NodeId,
        term: Term,
        next_index: LogIndex,
        ctx: &mut Context<Self>,
    ) {
        let limits = ReplicationLimits {
            snapshot_window: self.options.snapshot_window,
            heartbeat: self.options.heartbeat_interval,
            max_entries: self.options.max_entries_per_append,
            max_bytes: self.options.max_bytes_per_append,
            max_inflight: self.options.max_inflight,
        };
        let r = Replicator::new(
            self.id(),
            peer,
            term,
            next_index,
            CoreLink {
                log: ctx.address().recipient(),
                progress: ctx.address().recipient(),
                snapshots: self.state_machine.clone().recipient(),
                disk: self.log_store.clone().recipient(),
                metrics: self.metrics.clone(),
            },
            self.transport.clone(),
            limits,
        )
        .start();
        self.replicators.insert(peer, r);
    }

    /// The configuration in force changed: reach its members, and while leading replicate
    /// to exactly them.
    fn membership_changed(&mut self, m: Membership, ctx: &mut Context<Self>) {
        self.set_transport_peers(&m);
        self.event("membership", m.to_string());
        if self.core.role() != Role::Leader {
            return;
        }
        let members = m.others(self.id());
        let gone: Vec<NodeId> = self
            .replicators
            .keys()
            .copied()
            .filter(|p| !members.contains(p))
            .collect();
        for peer in gone {
            if let Some(r) = self.replicators.remove(&peer) {
                r.do_send(StopReplicator);
            }
            self.transfers.remove(&peer);
        }
        let term = self.core.current_term();
        let next_index = self.core.log().last_index() + 1;
        for peer in members {
            if !self.replicators.contains_key(&peer) {
                self.start_replicator(peer, term, next_index, ctx);
            }
        }
    }

    /// The leader changed: requests forwarded to another node may never be answered, so
    /// their callers learn now (outcome unknown) instead of at their timeout.
    fn abandon_forwards(&mut self, leader: Option<NodeId>) {
        let stale: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(_, f)| Some(f.to) != leader)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(target) = self.forwarded_transfers.get(&id).copied() {
                // A transfer's outcome is the new leader: wait until one is known.
                let Some(new) = leader else {
                    continue;
                };
                self.forwarded_transfers.remove(&id);
                if let Some(Forwarded { tx, .. }) = self.forwards.remove(&id) {
                    let _ = tx.send(match target {
                        Some(t) if t != new => ClientResponse::Unknown {
                            reason: format!("node {} became leader instead of node {}", new, t),
                            leader: Some(new),
                        },
                        _ => ClientResponse::LeaderIs { leader: new },
                    });
                }
                continue;
            }
            if let Some(Forwarded { to, tx, .. }) = self.forwards.remove(&id) {
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

    /// Forwarded requests whose request or answer may have been lost on the way (the
    /// connection to or from their leader broke, or messages for it were dropped) are
    /// answered now: outcome unknown. Without this they would wait for the client to give
    /// up, however soon the link came back.
    fn answer_lost_forwards(&mut self) {
        let transport = &self.transport;
        let lost: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(id, f)| {
                !self.forwarded_transfers.contains_key(id) && transport.losses(f.to) != f.losses
            })
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            if let Some(Forwarded { to, tx, .. }) = self.forwards.remove(&id) {
                debug!(
                    "[node {} term {}] forwarded request {}: the link to leader {} broke",
                    self.id(),
                    self.core.current_term(),
                    id,
                    to
                );
                let _ = tx.send(ClientResponse::Unknown {
                    reason: format!(
                        "the connection to leader node {} broke while it had the request; it may \
                         still be applied (a retry with the same X-Client-Id and X-Request-Seq \
                         is applied at most once)",
                        to
                    ),
                    leader: Some(to),
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
                    for peer in self.core.peers() {
                        self.start_replicator(peer, term, next_index, ctx);
                    }
                }
                Effect::MembershipChanged(m) => self.membership_changed(m, ctx),
                Effect::TransferAborted { target } => {
                    for (t, tx) in std::mem::take(&mut self.leader_transfers) {
                        let _ = tx.send(ClientResponse::Unavailable {
                            reason: format!(
                                "leadership transfer to node {} did not complete within an \
                                 election timeout; node {} still leads",
                                t,
                                self.id()
                            ),
                            leader: Some(self.id()),
                        });
                    }
                    debug!("transfer to {} aborted", target);
                }
                Effect::SteppedDown => {
                    self.stop_replicators();
                    self.abandon_waiters();
                    self.proposed_at.clear();
                    self.metrics.peer_lag.reset();
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
                    while let Some((index, at)) = self.proposed_at.front() {
                        if *index > last {
                            break;
                        }
                        self.metrics
                            .commit_latency
                            .observe(at.elapsed().as_secs_f64());
                        self.proposed_at.pop_front();
                    }
                    let later = self.waiters.split_off(&(last + 1));
                    let committed = std::mem::replace(&mut self.waiters, later);
                    let (answered, waiters) = answer_committed(&entries, committed);
                    // The entries reach the state machine's mailbox before their clients
                    // hear of them, so whatever those clients send it next comes after.
                    self.state_machine.do_send(Apply { entries, waiters });
                    for (tx, response) in answered {
                        let _ = tx.send(response);
                    }
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
        for (_, Proposed { tx, .. }) in waiting {
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
                self.state_machine.do_send(ReadLocal { key, tx });
            }
            ClientRequest::Write { op, session } if self.core.role() == Role::Leader => {
                let command = Command {
                    op,
                    session,
                    stamp_ms: self.clock.now_ms(),
                };
                // Answered at commit when known (see `answer_committed`).
                let known = command.outcome_known_before_applying();
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
                self.core.note_applied(self.applied.get());
                let (accepted, effects) = self.core.propose(Payload::Command(command.into()));
                let result = match &accepted {
                    Ok(_) => "accepted",
                    Err(ProposeError::NotLeader) => "not_leader",
                    Err(
                        ProposeError::Overloaded { .. }
                        | ProposeError::ApplyBehind { .. }
                        | ProposeError::Transferring { .. },
                    ) => "overloaded",
                };
                self.metrics.proposals.with_label_values(&[result]).inc();
                match accepted {
                    Ok((index, term)) => {
                        // Registered before any Apply for this index can be sent.
                        self.waiters.insert(index, Proposed { term, tx, known });
                        if self.proposed_at.len() < 100_000 {
                            self.proposed_at
                                .push_back((index, std::time::Instant::now()));
                        }
                    }
                    Err(ProposeError::NotLeader) => {
                        let _ = tx.send(self.unavailable());
                    }
                    Err(ProposeError::Transferring { target }) => {
                        let _ = tx.send(ClientResponse::Overloaded {
                            reason: format!(
                                "leadership is being handed to node {}; not applied, retry \
                                 shortly",
                                target
                            ),
                        });
                    }
                    Err(ProposeError::Overloaded { entries, bytes }) => {
                        let reason = format!(
                            "overloaded: {} entries ({} KiB) are waiting to commit; not \
                             applied, retry later",
                            entries,
                            bytes / 1024
                        );
                        self.shedding.start(&reason);
                        let _ = tx.send(ClientResponse::Overloaded { reason });
                    }
                    Err(ProposeError::ApplyBehind { entries, bytes }) => {
                        let reason = format!(
                            "overloaded: {} entries ({} KiB) are waiting to be applied to the \
                             store (a slow disk); not applied, retry later",
                            entries,
                            bytes / 1024
                        );
                        self.shedding.start(&reason);
                        let _ = tx.send(ClientResponse::Overloaded { reason });
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
            ClientRequest::ChangeMembership(change) if self.core.role() == Role::Leader => {
                let (result, effects) = self.core.propose_change(&change);
                match result {
                    Ok((index, term)) => {
                        self.waiters.insert(
                            index,
                            Proposed {
                                term,
                                tx,
                                known: None,
                            },
                        );
                    }
                    Err(e) => {
                        let _ = tx.send(self.change_refused(e));
                    }
                }
                self.run(effects, ctx);
            }
            ClientRequest::TransferLeader(target) if self.core.role() == Role::Leader => {
                let (result, effects) = self.core.transfer_leadership(target);
                match result {
                    Ok(target) => self.leader_transfers.push((target, tx)),
                    Err(e) => {
                        let _ = tx.send(self.change_refused(e));
                    }
                }
                self.run(effects, ctx);
            }
            ClientRequest::Members if self.core.role() == Role::Leader => {
                let me = self.id();
                let members = self
                    .core
                    .member_progress()
                    .into_iter()
                    .map(|p| MemberInfo {
                        id: p.id,
                        raft_addr: p.addrs.raft_addr,
                        http_addr: p.addrs.http_addr,
                        role: if p.voter { "voter" } else { "learner" }.into(),
                        leader: p.id == me,
                        match_index: p.match_index,
                        caught_up: p.caught_up,
                    })
                    .collect();
                let _ = tx.send(ClientResponse::Members(members));
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
                    let transfer = match &request {
                        ClientRequest::TransferLeader(target) => Some(*target),
                        _ => None,
                    };
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
                    let losses = self.transport.losses(leader);
                    self.forwards.insert(
                        req_id,
                        Forwarded {
                            to: leader,
                            losses,
                            tx,
                        },
                    );
                    if let Some(target) = transfer {
                        self.forwarded_transfers.insert(req_id, target);
                    }
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

    fn change_refused(&self, e: ChangeError) -> ClientResponse {
        match e {
            ChangeError::NotLeader => self.unavailable(),
            ChangeError::Busy(reason) => ClientResponse::Overloaded {
                reason: format!("{}; nothing changed, retry shortly", reason),
            },
            ChangeError::Invalid(reason) => ClientResponse::Rejected { reason },
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: LogIndex, term: Term) -> Entry {
        Entry {
            term,
            index,
            payload: Payload::Noop,
        }
    }

    fn proposed(
        term: Term,
        known: Option<ApplyResult>,
    ) -> (Proposed, oneshot::Receiver<ClientResponse>) {
        let (tx, rx) = oneshot::channel();
        (Proposed { term, tx, known }, rx)
    }

    #[test]
    fn only_a_known_outcome_of_our_own_committed_entry_is_answered_at_commit() {
        let entries = vec![entry(5, 2), entry(6, 3), entry(7, 3)];
        let mut committed = BTreeMap::new();
        let mut rxs = Vec::new();
        // 4: before these entries (already handed over): the state machine decides.
        // 5: another leader's entry took the index: never ours, the state machine says so.
        // 6: ours, a put without a session: answered now.
        // 7: ours, but its outcome depends on the state (a delete, or a session).
        for (index, term, known) in [
            (4, 2, Some(ApplyResult::Put)),
            (5, 3, Some(ApplyResult::Put)),
            (6, 3, Some(ApplyResult::Put)),
            (7, 3, None),
        ] {
            let (p, rx) = proposed(term, known);
            committed.insert(index, p);
            rxs.push(rx);
        }
        let (answered, waiters) = answer_committed(&entries, committed);
        assert_eq!(answered.len(), 1);
        for (tx, response) in answered {
            let _ = tx.send(response);
        }
        let mut rx6 = rxs.remove(2);
        assert!(matches!(
            rx6.try_recv(),
            Ok(ClientResponse::Written {
                index: 6,
                result: ApplyResult::Put
            })
        ));
        let left: Vec<(LogIndex, Term)> = waiters.iter().map(|w| (w.index, w.term)).collect();
        assert_eq!(left, vec![(4, 2), (5, 3), (7, 3)]);
    }
}
