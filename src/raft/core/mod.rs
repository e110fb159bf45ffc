//! The consensus core as a pure state machine (the decisions of Figure 2).
//!
//! Inputs are method calls (`on_message`, `on_election_timeout`, `propose`, `read`,
//! `on_persisted`, `on_replicated`); outputs are [`Effect`]s. The actor that owns a
//! `RaftCore` carries them out. Messages that depend on state not yet durable are held in an
//! outbox until the LogStore reports the batch fsync'd, which makes "persist before you
//! answer" a property of this file rather than of every call site.

use log::{debug, error, info, warn};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use super::log::RaftLog;
use super::membership::MembershipChange;
use super::message::{Message, RejectHint};
use super::quorum::quorum_value;
use super::types::{
    Entry, HardState, LogIndex, LogPoint, MemberAddrs, Membership, NodeId, Payload, Term,
};

mod election;
mod membership;
mod persist;
mod read_index;
mod replication;
mod snapshot;

pub use membership::MemberProgress;

/// Identifies one pending linearizable read.
pub type ReadId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    Candidate,
    Leader,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        })
    }
}

/// Changes to make durable together, in this order: the compaction, the hard state, the
/// truncation, then the appended entries (one fsync for all of them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistBatch {
    pub seq: u64,
    /// The log now starts after this point: entries up to it are dropped (entries after it
    /// are kept only if the log holds it with the same term, Figure 13 step 6). The state
    /// machine's store holds everything up to it durably.
    pub compact_to: Option<LogPoint>,
    pub hard_state: Option<HardState>,
    /// Remove every durable entry with index >= this before appending.
    pub truncate_from: Option<LogIndex>,
    pub entries: Vec<Entry>,
    /// The log's last index once this batch is applied.
    pub last_index: LogIndex,
}

impl PersistBatch {
    fn is_empty(&self) -> bool {
        self.compact_to.is_none()
            && self.hard_state.is_none()
            && self.truncate_from.is_none()
            && self.entries.is_empty()
    }
}

/// What the core asks its actors to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Make this batch durable, then call `on_persisted(batch.seq)`.
    Persist(PersistBatch),
    /// Send a message to a peer (already cleared by persistence).
    Send { to: NodeId, msg: Message },
    /// Restart the randomized election timeout.
    ResetElectionTimer,
    /// This node won the election for `term`: start a Replicator per peer at `next_index`.
    BecameLeader { term: Term, next_index: LogIndex },
    /// This node stopped leading: stop the Replicators.
    SteppedDown,
    /// New entries to ship: wake the Replicators.
    ReplicateNow,
    /// An AppendEntries answer for the Replicator of `peer`.
    ToReplicator { peer: NodeId, msg: Message },
    /// Committed entries to apply, in index order, each exactly once.
    Apply(Vec<Entry>),
    /// The read is confirmed: answer it once the state machine has applied `read_index`.
    ReadReady { id: ReadId, read_index: LogIndex },
    /// The read cannot be confirmed (leadership lost).
    ReadFailed { id: ReadId },
    /// Send a heartbeat to every peer now, tagged with this read round.
    BroadcastHeartbeat { read_seq: u64 },
    /// Hand a chunk of the leader's snapshot to the state machine, which answers with how
    /// much it has stored and whether the snapshot is installed (`on_snapshot_chunk`).
    InstallChunk {
        from: NodeId,
        snapshot: LogPoint,
        offset: u64,
        data: Vec<u8>,
        done: bool,
        read_seq: u64,
        stream: u64,
    },
    /// The configuration in force changed (appended, truncated away, or installed with a
    /// snapshot): reach its members, and while leading replicate to exactly them.
    MembershipChanged(Membership),
    /// A leadership transfer to `target` did not complete within an election timeout.
    TransferAborted { target: NodeId },
}

/// What the log may hold in memory: bounds that keep a node's memory independent of the
/// load and of the size of the values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// A leader refuses proposals while its uncommitted entries take this many bytes.
    pub max_uncommitted_bytes: u64,
    /// ... or number this many.
    pub max_uncommitted_entries: u64,
    /// A leader refuses proposals while its entries not yet applied by the state machine
    /// (committed or not) take this many bytes: when the store falls behind (a slow disk),
    /// clients get a prompt 503 instead of waiting for their timeout.
    pub max_unapplied_bytes: u64,
    /// ... or number this many.
    pub max_unapplied_entries: u64,
    /// The tail kept in memory below the store's durable index holds at most this many
    /// bytes.
    pub log_tail_bytes: u64,
    /// The durable log keeps about this many bytes below the store's durable index (at
    /// least the memory tail), read from disk for followers that lag further.
    pub disk_tail_bytes: u64,
    /// ... and at most this many entries.
    pub disk_tail_entries: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_uncommitted_bytes: 32 * 1024 * 1024,
            max_uncommitted_entries: 10_000,
            max_unapplied_bytes: 64 * 1024 * 1024,
            max_unapplied_entries: 20_000,
            log_tail_bytes: 32 * 1024 * 1024,
            disk_tail_bytes: 160 * 1024 * 1024,
            disk_tail_entries: 1_000_000,
        }
    }
}

/// Why a proposal was not appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    NotLeader,
    /// Too much is waiting to commit (`LogLimits`): the client should back off.
    Overloaded {
        entries: u64,
        bytes: u64,
    },
    /// Too much is waiting for the state machine to apply it (`LogLimits`).
    ApplyBehind {
        entries: u64,
        bytes: u64,
    },
    /// Leadership is being handed to another node: retry there shortly.
    Transferring {
        target: NodeId,
    },
}

/// Why a membership change or a leadership transfer was not started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeError {
    NotLeader,
    /// Not now (another change is in flight, this leader is too new, a transfer runs):
    /// retry shortly.
    Busy(String),
    /// Not ever, as asked (the node is already a member, is not a voter, ...).
    Invalid(String),
}

/// When a leader promotes a learner: once its log is within `max_lag` entries of the
/// leader's for `rounds` consecutive replication rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromotionPolicy {
    pub max_lag: u64,
    pub rounds: u32,
}

impl Default for PromotionPolicy {
    fn default() -> Self {
        PromotionPolicy {
            max_lag: 1000,
            rounds: 10,
        }
    }
}

/// A leadership transfer in progress (thesis §3.10).
#[derive(Clone, Copy, Debug)]
struct Transfer {
    target: NodeId,
    /// TimeoutNow has been sent (the target's log matched ours).
    sent: bool,
}

/// A snapshot of the core for `/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit_index: LogIndex,
    pub last_log_index: LogIndex,
    pub snapshot_index: LogIndex,
}

/// What a Replicator gets when it asks for entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogSlice {
    Entries {
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
    },
    /// The entries from `from` on are no longer in memory but still in the durable log:
    /// read them there (they are committed, so they cannot change). `prev` is the point
    /// before `from` when it is known here; otherwise read from `from - 1` to learn its
    /// term. Entries after `through` are in memory.
    OnDisk {
        from: LogIndex,
        prev: Option<LogPoint>,
        through: LogIndex,
        leader_commit: LogIndex,
    },
    /// The entries before `next_index` are compacted: the follower needs a snapshot of
    /// the state machine.
    NeedSnapshot,
    /// This node no longer leads in the asking Replicator's term.
    NotLeader,
}

#[derive(Clone, Debug)]
struct PendingRead {
    id: ReadId,
    /// The heartbeat round that must be acknowledged by a majority.
    seq: u64,
    read_index: LogIndex,
}

/// Role, term, vote, commit index and the in-memory log of one server.
pub struct RaftCore {
    id: NodeId,
    /// Every configuration in the log, oldest first, after the one the log starts with
    /// (from a snapshot, the store, or the config files: index 0). The last one is in force.
    configs: Vec<(LogIndex, Membership)>,
    /// A leader records a configuration that only the config files hold (index 0) in the
    /// log, so it is in snapshots and outlives the files.
    record_bootstrap: bool,
    promotion: PromotionPolicy,
    /// Leader: consecutive rounds each learner has been caught up.
    learner_rounds: BTreeMap<NodeId, u32>,
    transfer: Option<Transfer>,
    /// Logged once: this node is not a voter, so it does not campaign.
    told_not_voter: bool,
    current_term: Term,
    voted_for: Option<NodeId>,
    role: Role,
    leader_id: Option<NodeId>,
    log: RaftLog,
    commit_index: LogIndex,
    /// Highest index handed to the state machine.
    applied_sent: LogIndex,
    /// Highest index the state machine reported applied (`note_applied`).
    applied: LogIndex,

    votes: BTreeSet<NodeId>,
    /// Pre-votes gathered for term `current_term + 1`; `Some` while pre-campaigning.
    prevotes: Option<BTreeSet<NodeId>>,
    /// Voters that answered the pre-vote or election in progress, either way: the others
    /// are asked again on the next tick (`retry_vote_requests`).
    answered: BTreeSet<NodeId>,
    // Leader state (Figure 2, "volatile state on leaders"; next_index lives in Replicators).
    peer_match: BTreeMap<NodeId, LogIndex>,
    recent_active: BTreeSet<NodeId>,
    noop_index: LogIndex,
    read_seq: u64,
    round_inflight: bool,
    peer_read_ack: BTreeMap<NodeId, u64>,
    pending_reads: VecDeque<PendingRead>,

    // Persistence pipeline: at most one batch in flight, the next one accumulating.
    last_assigned_seq: u64,
    durable_seq: u64,
    inflight: Option<u64>,
    inflight_last_index: LogIndex,
    pending: Option<PersistBatch>,
    durable_last_index: LogIndex,
    /// Lowest index the pending batch cuts the durable log back to, if it does.
    pending_floor: Option<LogIndex>,
    outbox: VecDeque<(u64, NodeId, Message)>,

    // Compaction: the state machine's store is the snapshot. The log keeps `log_tail`
    // entries (and at most `limits.log_tail_bytes`) below what the store holds durably,
    // for followers that lag a little.
    log_tail: u64,
    limits: LogLimits,
    /// Highest index the state machine's store holds durably.
    store_durable: LogIndex,
    /// Snapshots being streamed to peers (leader only): the log is not compacted past
    /// their index, so the follower can continue from the log once it has installed one.
    snapshot_pins: BTreeMap<NodeId, LogIndex>,
    /// The durable log starts after this point: it keeps a longer tail than memory does
    /// (`limits.disk_tail_bytes`), read back for followers that lag further.
    disk_start: LogPoint,
    /// Points the memory log was compacted to since `disk_start`, with the running byte
    /// total there: where the durable log may later be compacted to.
    disk_marks: VecDeque<(LogPoint, u64)>,

    effects: Vec<Effect>,
}

impl RaftCore {
    /// A server restarting from its durable `hard_state` and `log` (empty on first start),
    /// with a state machine that has applied everything up to `applied` (at or after the
    /// log's start, at most its last index).
    pub fn new(
        id: NodeId,
        peers: Vec<NodeId>,
        hard_state: HardState,
        log: RaftLog,
        applied: LogIndex,
    ) -> Self {
        // Applied entries were committed; the store holds them durably.
        let snapshot_index = log.snapshot_index().max(applied.min(log.last_index()));
        let log_start = LogPoint {
            index: log.snapshot_index(),
            term: log.snapshot_term(),
        };
        let last = log.last_index();
        let bootstrap = Membership::with_voters(
            peers
                .into_iter()
                .chain([id])
                .map(|p| (p, MemberAddrs::default())),
        );
        RaftCore {
            id,
            configs: vec![(0, bootstrap)],
            record_bootstrap: false,
            promotion: PromotionPolicy::default(),
            learner_rounds: BTreeMap::new(),
            transfer: None,
            told_not_voter: false,
            current_term: hard_state.current_term,
            voted_for: hard_state.voted_for,
            role: Role::Follower,
            leader_id: None,
            log,
            commit_index: snapshot_index,
            applied_sent: snapshot_index,
            applied: snapshot_index,
            votes: BTreeSet::new(),
            prevotes: None,
            answered: BTreeSet::new(),
            peer_match: BTreeMap::new(),
            recent_active: BTreeSet::new(),
            noop_index: 0,
            read_seq: 0,
            round_inflight: false,
            peer_read_ack: BTreeMap::new(),
            pending_reads: VecDeque::new(),
            last_assigned_seq: 0,
            durable_seq: 0,
            inflight: None,
            inflight_last_index: 0,
            pending: None,
            durable_last_index: last,
            pending_floor: None,
            outbox: VecDeque::new(),
            log_tail: 10_000,
            limits: LogLimits::default(),
            store_durable: snapshot_index,
            snapshot_pins: BTreeMap::new(),
            disk_start: log_start,
            disk_marks: VecDeque::new(),
            effects: Vec::new(),
        }
    }

    /// The durable log starts after `point`, before the log held in memory: entries in
    /// between are read from disk for followers that need them.
    pub fn with_disk_start(mut self, point: LogPoint) -> Self {
        if point.index <= self.log.snapshot_index() {
            self.disk_start = point;
        }
        self
    }

    /// Keep this many entries below the store's durable index when compacting.
    pub fn with_log_tail(mut self, entries: u64) -> Self {
        self.log_tail = entries;
        self
    }

    /// Bounds on the log a leader accepts and keeps in memory.
    pub fn with_limits(mut self, limits: LogLimits) -> Self {
        self.limits = limits;
        self
    }

    // ----- accessors -----

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn current_term(&self) -> Term {
        self.current_term
    }
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }
    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }
    pub fn log(&self) -> &RaftLog {
        &self.log
    }
    /// Every other member (voters and learners): whom a leader replicates to.
    pub fn peers(&self) -> Vec<NodeId> {
        self.membership().others(self.id)
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.current_term,
            leader: self.leader_id,
            commit_index: self.commit_index,
            last_log_index: self.log.last_index(),
            snapshot_index: self.log.snapshot_index(),
        }
    }

    fn hard_state(&self) -> HardState {
        HardState {
            current_term: self.current_term,
            voted_for: self.voted_for,
        }
    }

    fn finish(&mut self) -> Vec<Effect> {
        self.flush_persist();
        std::mem::take(&mut self.effects)
    }

    // ----- events -----

    /// The randomized election timeout fired (Figure 2, Followers rule 2 / Candidates).
    /// A leader uses the same clock to check that a majority still answers it.
    pub fn on_election_timeout(&mut self) -> Vec<Effect> {
        match self.role {
            Role::Leader => self.check_quorum(),
            Role::Follower | Role::Candidate => self.start_pre_vote(),
        }
        self.finish()
    }

    /// A heartbeat interval passed: a pre-vote or an election in progress asks again the
    /// voters that have not granted (§5.1, RPCs are retried).
    pub fn on_tick(&mut self) -> Vec<Effect> {
        self.retry_vote_requests();
        self.finish()
    }

    /// A message from peer `from`.
    pub fn on_message(&mut self, from: NodeId, msg: Message) -> Vec<Effect> {
        if !self.accepts_from(from, &msg) {
            debug!(
                "[node {} term {}] ignores {} from node {}: not a voter in {}",
                self.id,
                self.current_term,
                msg.kind(),
                from,
                self.membership()
            );
            return Vec::new();
        }
        if let Err(why) = msg.validate() {
            warn!(
                "[node {} term {}] ignores {} from node {}: {}",
                self.id,
                self.current_term,
                msg.kind(),
                from,
                why
            );
            return Vec::new();
        }
        // Figure 2, All Servers rule 2: a higher term in any message makes us a follower.
        if let Some(term) = msg.term() {
            if term > self.current_term {
                info!(
                    "[node {} term {}] sees term {} in {} from node {}: becomes follower",
                    self.id,
                    self.current_term,
                    term,
                    msg.kind(),
                    from
                );
                self.become_follower(term, None);
            }
        }
        match msg {
            Message::RequestVote {
                term,
                candidate_id,
                last_log_index,
                last_log_term,
            } => self.handle_request_vote(from, term, candidate_id, last_log_index, last_log_term),
            Message::RequestVoteResponse { term, vote_granted } => {
                self.handle_vote_response(from, term, vote_granted)
            }
            Message::PreVote {
                term,
                candidate_id,
                last_log_index,
                last_log_term,
            } => self.handle_pre_vote(from, term, candidate_id, last_log_index, last_log_term),
            Message::PreVoteResponse { term, vote_granted } => {
                self.handle_pre_vote_response(from, term, vote_granted)
            }
            Message::AppendEntries {
                term,
                leader_id,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_seq,
            } => self.handle_append_entries(
                from,
                term,
                leader_id,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_seq,
            ),
            Message::InstallSnapshot {
                term,
                leader_id,
                last_included_index,
                last_included_term,
                offset,
                data,
                done,
                read_seq,
                stream,
            } => self.handle_install_snapshot(
                from,
                term,
                leader_id,
                LogPoint {
                    index: last_included_index,
                    term: last_included_term,
                },
                (offset, data, done),
                (read_seq, stream),
            ),
            msg @ (Message::AppendEntriesResponse { term, .. }
            | Message::InstallSnapshotResponse { term, .. }) => {
                if self.role == Role::Leader && term == self.current_term {
                    self.recent_active.insert(from);
                    self.effects.push(Effect::ToReplicator { peer: from, msg });
                }
            }
            Message::TimeoutNow { term } => self.handle_timeout_now(from, term),
            Message::Forward { .. } | Message::ForwardReply { .. } => {}
        }
        self.finish()
    }

    /// The batch with `seq` is durable.
    pub fn on_persisted(&mut self, seq: u64) -> Vec<Effect> {
        if self.inflight != Some(seq) {
            error!(
                "[node {} term {}] persisted batch {} but {:?} was in flight",
                self.id, self.current_term, seq, self.inflight
            );
            return Vec::new();
        }
        self.inflight = None;
        self.durable_seq = seq;
        self.durable_last_index = self.inflight_last_index;
        // Changes still pending (a truncation, a snapshot that replaced the log) mean the
        // disk will soon hold less than this batch left there.
        if let Some(floor) = self.pending_floor {
            self.durable_last_index = self.durable_last_index.min(floor);
        }
        while let Some((req, _, _)) = self.outbox.front() {
            if *req > self.durable_seq {
                break;
            }
            if let Some((_, to, msg)) = self.outbox.pop_front() {
                self.effects.push(Effect::Send { to, msg });
            }
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
        self.finish()
    }

    /// The Replicator for `peer` (started in `term`) learned that the follower matches up to
    /// `match_index` and answered heartbeat round `read_seq`.
    pub fn on_replicated(
        &mut self,
        term: Term,
        peer: NodeId,
        match_index: LogIndex,
        read_seq: u64,
        sending_snapshot: Option<LogIndex>,
    ) -> Vec<Effect> {
        if self.role != Role::Leader || term != self.current_term {
            return Vec::new();
        }
        match sending_snapshot {
            Some(index) => self.snapshot_pins.insert(peer, index),
            None => self.snapshot_pins.remove(&peer),
        };
        let m = self.peer_match.entry(peer).or_insert(0);
        *m = (*m).max(match_index);
        let r = self.peer_read_ack.entry(peer).or_insert(0);
        *r = (*r).max(read_seq);
        self.maybe_commit();
        self.check_reads();
        self.maybe_promote(peer);
        self.maybe_send_timeout_now();
        self.finish()
    }

    /// The state machine has applied everything through `index` (it only moves forward).
    pub fn note_applied(&mut self, index: LogIndex) {
        self.applied = self.applied.max(index);
    }

    /// Whether a proposal would be appended now, or why not: this node does not lead, it
    /// is handing leadership over, or too much is already waiting to commit or to be
    /// applied (`LogLimits`).
    pub fn admission(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader);
        }
        if let Some(t) = self.transfer {
            return Err(ProposeError::Transferring { target: t.target });
        }
        let last = self.log.last_index();
        let entries = last - self.commit_index;
        let bytes = self.log.bytes_between(self.commit_index, last);
        if entries >= self.limits.max_uncommitted_entries
            || bytes >= self.limits.max_uncommitted_bytes
        {
            return Err(ProposeError::Overloaded { entries, bytes });
        }
        let applied = self.applied.min(self.commit_index);
        let (entries, bytes) = (last - applied, self.log.bytes_between(applied, last));
        if entries >= self.limits.max_unapplied_entries || bytes >= self.limits.max_unapplied_bytes
        {
            return Err(ProposeError::ApplyBehind { entries, bytes });
        }
        Ok(())
    }

    /// A client command: appended to the leader's log; returns its (index, term), or why
    /// not (`admission`).
    pub fn propose(
        &mut self,
        payload: Payload,
    ) -> (Result<(LogIndex, Term), ProposeError>, Vec<Effect>) {
        if let Err(e) = self.admission() {
            return (Err(e), Vec::new());
        }
        let index = self.append_own(payload);
        self.effects.push(Effect::ReplicateNow);
        if self.membership().voters.len() <= 1 {
            self.maybe_commit();
        }
        (Ok((index, self.current_term)), self.finish())
    }

    /// Starts a linearizable read (§6.4 of the thesis, "read index"). `false` when this node
    /// does not lead.
    pub fn read(&mut self, id: ReadId) -> (bool, Vec<Effect>) {
        if self.role != Role::Leader {
            return (false, Vec::new());
        }
        // Everything committed before the read began is at or below both the commit index
        // and this term's no-op (which commits all earlier entries).
        let read_index = self.commit_index.max(self.noop_index);
        self.pending_reads.push_back(PendingRead {
            id,
            seq: self.read_seq + 1,
            read_index,
        });
        if !self.round_inflight {
            self.start_read_round();
        }
        self.check_reads();
        (true, self.finish())
    }

    /// The state machine's store now holds everything up to `index` durably: the log
    /// below it (minus the tail) is no longer needed.
    pub fn on_store_durable(&mut self, index: LogIndex) -> Vec<Effect> {
        self.store_durable = self.store_durable.max(index);
        self.maybe_compact();
        self.finish()
    }

    /// What the Replicator of a leader in `term` should send from `next_index` on.
    pub fn log_slice(
        &self,
        term: Term,
        next_index: LogIndex,
        max_entries: usize,
        max_bytes: usize,
    ) -> LogSlice {
        if self.role != Role::Leader || term != self.current_term {
            return LogSlice::NotLeader;
        }
        let next_index = next_index.min(self.log.last_index() + 1).max(1);
        let prev_log_index = next_index - 1;
        match self.log.term_at(prev_log_index) {
            Some(prev_log_term) => LogSlice::Entries {
                prev_log_index,
                prev_log_term,
                entries: self.log.slice(next_index, max_entries, max_bytes),
                leader_commit: self.commit_index,
            },
            // Compacted from memory but not from disk (memory starts after it, so it is
            // below the commit index and final).
            None if prev_log_index >= self.disk_start.index
                && prev_log_index < self.log.snapshot_index() =>
            {
                LogSlice::OnDisk {
                    from: next_index,
                    prev: (prev_log_index == self.disk_start.index).then_some(self.disk_start),
                    through: self.log.snapshot_index(),
                    leader_commit: self.commit_index,
                }
            }
            None => LogSlice::NeedSnapshot,
        }
    }

    fn quorum(&self) -> usize {
        self.membership().quorum()
    }
}
