//! The consensus core as a pure state machine (the decisions of Figure 2).
//!
//! Inputs are method calls (`on_message`, `on_election_timeout`, `propose`, `read`,
//! `on_persisted`, `on_replicated`); outputs are [`Effect`]s. The actor that owns a
//! `RaftCore` carries them out. Messages that depend on state not yet durable are held in an
//! outbox until the LogStore reports the batch fsync'd, which makes "persist before you
//! answer" a property of this file rather than of every call site.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use log::{debug, error, info, warn};

use super::log::RaftLog;
use super::message::{Message, RejectHint};
use super::quorum::{quorum_size, quorum_value};
use super::types::{Entry, HardState, LogIndex, NodeId, Payload, Snapshot, Term};
use crate::codec;

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

/// Changes to make durable together, in this order: the snapshot (written, synced and
/// renamed into place before the log entries it covers are dropped), the hard state, the
/// truncation, then the appended entries (one fsync for all of them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistBatch {
    pub seq: u64,
    /// A snapshot to store; log entries up to its index are then dropped (entries after it
    /// are kept only if the log holds its last entry with the same term, Figure 13 step 6).
    pub snapshot: Option<Arc<Snapshot>>,
    pub hard_state: Option<HardState>,
    /// Remove every durable entry with index >= this before appending.
    pub truncate_from: Option<LogIndex>,
    pub entries: Vec<Entry>,
    /// The log's last index once this batch is applied.
    pub last_index: LogIndex,
}

impl PersistBatch {
    fn is_empty(&self) -> bool {
        self.snapshot.is_none()
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
    /// Replace the state machine with this snapshot (received from the leader).
    RestoreStateMachine(Arc<Snapshot>),
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
    /// The entries before `next_index` are compacted: the follower needs this snapshot.
    NeedSnapshot(Arc<Snapshot>),
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
    peers: Vec<NodeId>,
    current_term: Term,
    voted_for: Option<NodeId>,
    role: Role,
    leader_id: Option<NodeId>,
    log: RaftLog,
    commit_index: LogIndex,
    /// Highest index handed to the state machine.
    applied_sent: LogIndex,

    votes: BTreeSet<NodeId>,
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

    /// The newest durable snapshot (what a Replicator sends to a lagging follower).
    snapshot: Option<Arc<Snapshot>>,
    /// A local snapshot being persisted: compact the in-memory log once batch `.0` is durable.
    compact_on_persist: Option<(u64, Arc<Snapshot>)>,
    /// Chunks of a snapshot being received: (index, term, bytes so far).
    incoming: Option<(LogIndex, Term, Vec<u8>)>,

    effects: Vec<Effect>,
}

impl RaftCore {
    /// A server restarting from its durable `hard_state`, `log` and `snapshot` (all empty on
    /// first start). The log must start right after the snapshot.
    pub fn new(
        id: NodeId,
        peers: Vec<NodeId>,
        hard_state: HardState,
        log: RaftLog,
        snapshot: Option<Arc<Snapshot>>,
    ) -> Self {
        let snapshot_index = log.snapshot_index();
        let last = log.last_index();
        RaftCore {
            id,
            peers: peers.into_iter().filter(|p| *p != id).collect(),
            current_term: hard_state.current_term,
            voted_for: hard_state.voted_for,
            role: Role::Follower,
            leader_id: None,
            log,
            commit_index: snapshot_index,
            applied_sent: snapshot_index,
            votes: BTreeSet::new(),
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
            snapshot,
            compact_on_persist: None,
            incoming: None,
            effects: Vec::new(),
        }
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
    pub fn peers(&self) -> &[NodeId] {
        &self.peers
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
            Role::Follower | Role::Candidate => self.start_election(),
        }
        self.finish()
    }

    /// A message from peer `from`.
    pub fn on_message(&mut self, from: NodeId, msg: Message) -> Vec<Effect> {
        if !self.peers.contains(&from) {
            warn!(
                "[node {} term {}] ignores {} from unknown node {}",
                self.id,
                self.current_term,
                msg.kind(),
                from
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
            } => self.handle_install_snapshot(
                from,
                term,
                leader_id,
                (last_included_index, last_included_term),
                offset,
                data,
                done,
                read_seq,
            ),
            msg @ (Message::AppendEntriesResponse { term, .. }
            | Message::InstallSnapshotResponse { term, .. }) => {
                if self.role == Role::Leader && term == self.current_term {
                    self.recent_active.insert(from);
                    self.effects.push(Effect::ToReplicator { peer: from, msg });
                }
            }
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
        if let Some((at, snapshot)) = self.compact_on_persist.take() {
            if at == seq {
                if snapshot.index > self.log.snapshot_index() {
                    self.log.compact_to(snapshot.index, snapshot.term);
                    info!(
                        "[node {} term {}] snapshot at index {} is durable: log compacted, {} entries kept",
                        self.id,
                        self.current_term,
                        snapshot.index,
                        self.log.len()
                    );
                    self.snapshot = Some(snapshot);
                }
            } else {
                self.compact_on_persist = Some((at, snapshot));
            }
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
    ) -> Vec<Effect> {
        if self.role != Role::Leader || term != self.current_term {
            return Vec::new();
        }
        let m = self.peer_match.entry(peer).or_insert(0);
        *m = (*m).max(match_index);
        let r = self.peer_read_ack.entry(peer).or_insert(0);
        *r = (*r).max(read_seq);
        self.maybe_commit();
        self.check_reads();
        self.finish()
    }

    /// A client command: appended to the leader's log; returns its (index, term), or `None`
    /// when this node is not the leader.
    pub fn propose(&mut self, payload: Payload) -> (Option<(LogIndex, Term)>, Vec<Effect>) {
        if self.role != Role::Leader {
            return (None, Vec::new());
        }
        let index = self.append_own(payload);
        self.effects.push(Effect::ReplicateNow);
        if self.peers.is_empty() {
            self.maybe_commit();
        }
        (Some((index, self.current_term)), self.finish())
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

    /// The state machine took `snapshot` of everything applied up to its index: store it,
    /// then drop the log entries it covers. Returns false if it is not newer than the
    /// current one or another snapshot is still being stored.
    pub fn on_snapshot_taken(&mut self, snapshot: Snapshot) -> (bool, Vec<Effect>) {
        let newest = self
            .log
            .snapshot_index()
            .max(self.compact_on_persist.as_ref().map_or(0, |c| c.1.index));
        if snapshot.index <= newest
            || self.compact_on_persist.is_some()
            || snapshot.index > self.commit_index
            || self.log.term_at(snapshot.index) != Some(snapshot.term)
        {
            return (false, Vec::new());
        }
        info!(
            "[node {} term {}] taking snapshot at index {} (term {}, {} keys)",
            self.id,
            self.current_term,
            snapshot.index,
            snapshot.term,
            snapshot.kv.len()
        );
        let snapshot = Arc::new(snapshot);
        let batch = self.pending_batch();
        batch.snapshot = Some(snapshot.clone());
        let seq = batch.seq;
        self.compact_on_persist = Some((seq, snapshot));
        (true, self.finish())
    }

    /// The newest durable snapshot.
    pub fn snapshot(&self) -> Option<&Arc<Snapshot>> {
        self.snapshot.as_ref()
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
            None => match &self.snapshot {
                Some(s) => LogSlice::NeedSnapshot(s.clone()),
                None => LogSlice::NotLeader,
            },
        }
    }

    // ----- elections (§5.2) -----

    fn start_election(&mut self) {
        self.current_term += 1;
        self.role = Role::Candidate;
        self.leader_id = None;
        // Vote for self, persisted before any RequestVote leaves (outbox).
        self.voted_for = Some(self.id);
        self.votes.clear();
        self.votes.insert(self.id);
        self.persist_hard_state();
        self.effects.push(Effect::ResetElectionTimer);
        info!(
            "[node {} term {}] election timeout: becomes candidate (last log {}/{}), asks {} peers",
            self.id,
            self.current_term,
            self.log.last_index(),
            self.log.last_term(),
            self.peers.len()
        );
        if self.votes.len() >= self.quorum() {
            self.become_leader();
            return;
        }
        for peer in self.peers.clone() {
            self.send(
                peer,
                Message::RequestVote {
                    term: self.current_term,
                    candidate_id: self.id,
                    last_log_index: self.log.last_index(),
                    last_log_term: self.log.last_term(),
                },
            );
        }
    }

    fn handle_request_vote(
        &mut self,
        from: NodeId,
        term: Term,
        candidate: NodeId,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        // RequestVote rule 1: reply false if term < currentTerm.
        let granted = if term < self.current_term {
            info!(
                "[node {} term {}] denies vote to node {}: its term {} is stale",
                self.id, self.current_term, candidate, term
            );
            false
        } else if self.voted_for.is_some() && self.voted_for != Some(candidate) {
            // RequestVote rule 2a: at most one vote per term.
            info!(
                "[node {} term {}] denies vote to node {}: already voted for node {}",
                self.id,
                self.current_term,
                candidate,
                self.voted_for.unwrap_or_default()
            );
            false
        } else if !self
            .log
            .candidate_is_up_to_date(last_log_term, last_log_index)
        {
            // RequestVote rule 2b: only for a candidate whose log is at least as up to date.
            info!(
                "[node {} term {}] denies vote to node {}: its log {}/{} is behind ours {}/{}",
                self.id,
                self.current_term,
                candidate,
                last_log_index,
                last_log_term,
                self.log.last_index(),
                self.log.last_term()
            );
            false
        } else {
            info!(
                "[node {} term {}] grants vote to node {} (its log {}/{}, ours {}/{})",
                self.id,
                self.current_term,
                candidate,
                last_log_index,
                last_log_term,
                self.log.last_index(),
                self.log.last_term()
            );
            if self.voted_for != Some(candidate) {
                self.voted_for = Some(candidate);
                self.persist_hard_state();
            }
            // Followers rule 2: granting a vote resets the election timeout.
            self.effects.push(Effect::ResetElectionTimer);
            true
        };
        self.send(
            from,
            Message::RequestVoteResponse {
                term: self.current_term,
                vote_granted: granted,
            },
        );
    }

    fn handle_vote_response(&mut self, from: NodeId, term: Term, granted: bool) {
        if self.role != Role::Candidate || term != self.current_term {
            return;
        }
        if !granted {
            debug!(
                "[node {} term {}] vote denied by node {}",
                self.id, self.current_term, from
            );
            return;
        }
        self.votes.insert(from);
        info!(
            "[node {} term {}] vote from node {}: {}/{} needed",
            self.id,
            self.current_term,
            from,
            self.votes.len(),
            self.quorum()
        );
        // Candidates rule 2: votes from a majority make this node leader.
        if self.votes.len() >= self.quorum() {
            self.become_leader();
        }
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader_id = Some(self.id);
        self.votes.clear();
        self.peer_match.clear();
        self.peer_read_ack.clear();
        self.recent_active.clear();
        self.round_inflight = false;
        let next_index = self.log.last_index() + 1;
        // A new leader commits a no-op of its own term, which commits every earlier entry
        // (§5.4.2: earlier-term entries are never committed by counting replicas).
        self.noop_index = self.append_own(Payload::Noop);
        info!(
            "[node {} term {}] becomes leader (no-op at index {}, log {}..={})",
            self.id,
            self.current_term,
            self.noop_index,
            self.log.snapshot_index() + 1,
            self.log.last_index()
        );
        self.effects.push(Effect::BecameLeader {
            term: self.current_term,
            next_index,
        });
        self.effects.push(Effect::ResetElectionTimer);
        if self.peers.is_empty() {
            self.maybe_commit();
        }
    }

    /// A leader that has not heard from a majority within an election timeout steps down,
    /// so a partitioned leader stops accepting writes it can never commit.
    fn check_quorum(&mut self) {
        let active = self.recent_active.len() + 1;
        if active < self.quorum() {
            info!(
                "[node {} term {}] steps down: heard from {} of {} nodes within an election timeout",
                self.id,
                self.current_term,
                active,
                self.peers.len() + 1
            );
            let term = self.current_term;
            self.become_follower(term, None);
        }
        self.recent_active.clear();
        // The timer is one-shot: re-arm it, for the next quorum check or, after stepping
        // down, so this node can stand for election again.
        self.effects.push(Effect::ResetElectionTimer);
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.current_term {
            self.current_term = term;
            self.voted_for = None;
            self.persist_hard_state();
        }
        if self.role == Role::Leader {
            self.effects.push(Effect::SteppedDown);
            for read in self.pending_reads.drain(..) {
                self.effects.push(Effect::ReadFailed { id: read.id });
            }
            self.round_inflight = false;
        }
        self.role = Role::Follower;
        self.leader_id = leader;
        self.votes.clear();
    }

    // ----- log replication (§5.3) -----

    #[allow(clippy::too_many_arguments)]
    fn handle_append_entries(
        &mut self,
        from: NodeId,
        term: Term,
        leader_id: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: LogIndex,
        read_seq: u64,
    ) {
        // AppendEntries rule 1: reply false if term < currentTerm (tells a stale leader).
        if term < self.current_term {
            self.reply_append(from, false, 0, None, read_seq);
            return;
        }
        if self.role == Role::Leader {
            // Election Safety says this cannot happen; refuse rather than corrupt the log.
            error!(
                "[node {} term {}] AppendEntries from node {} in my own term: ignored",
                self.id, self.current_term, from
            );
            return;
        }
        if self.role == Role::Candidate || self.leader_id != Some(leader_id) {
            info!(
                "[node {} term {}] follows leader node {}",
                self.id, self.current_term, leader_id
            );
            self.become_follower(term, Some(leader_id));
        }
        self.effects.push(Effect::ResetElectionTimer);

        // Entries at or below our snapshot are committed and already in it.
        let (mut prev_index, mut prev_term) = (prev_log_index, prev_log_term);
        let snap = self.log.snapshot_index();
        if prev_index < snap {
            let skip = ((snap - prev_index) as usize).min(entries.len());
            // The snapshot holds committed entries, which every current leader has: a
            // request that disagrees at the snapshot's last index is not from one.
            if let Some(at_snap) = entries[..skip].iter().find(|e| e.index == snap) {
                if at_snap.term != self.log.snapshot_term() {
                    warn!(
                        "[node {} term {}] AppendEntries from node {} disagrees with our snapshot at {}: ignored",
                        self.id, self.current_term, from, snap
                    );
                    return;
                }
            }
            entries.drain(..skip);
            prev_index = snap;
            prev_term = self.log.snapshot_term();
        }

        // AppendEntries rule 2: the log must hold prev_log_index with prev_log_term.
        match self.log.term_at(prev_index) {
            Some(t) if t == prev_term => {}
            found => {
                let hint = match found {
                    None => RejectHint {
                        rejected_index: prev_log_index,
                        conflict_term: None,
                        conflict_index: self.log.last_index() + 1,
                    },
                    Some(t) => RejectHint {
                        rejected_index: prev_log_index,
                        conflict_term: Some(t),
                        conflict_index: self
                            .log
                            .first_index_of_term_at(prev_index)
                            .max(self.commit_index + 1),
                    },
                };
                debug!(
                    "[node {} term {}] rejects AppendEntries at {}/{} from node {}: {:?}",
                    self.id, self.current_term, prev_log_index, prev_log_term, from, hint
                );
                self.reply_append(from, false, 0, Some(hint), read_seq);
                return;
            }
        }

        // AppendEntries rules 3 and 4: skip entries we already hold; truncate only at the
        // first entry whose term conflicts, so a stale or reordered request never erases
        // entries it does not replace.
        let mut last_new = prev_index;
        let mut appended = 0usize;
        for entry in entries {
            if entry.index != last_new + 1 {
                warn!(
                    "[node {} term {}] malformed AppendEntries from node {}: index {} after {}",
                    self.id, self.current_term, from, entry.index, last_new
                );
                return;
            }
            match self.log.term_at(entry.index) {
                Some(t) if t == entry.term => {}
                Some(_) => {
                    if entry.index <= self.commit_index {
                        error!(
                            "[node {} term {}] refuses to truncate committed index {} (commit {})",
                            self.id, self.current_term, entry.index, self.commit_index
                        );
                        return;
                    }
                    info!(
                        "[node {} term {}] truncates conflicting entries from index {}",
                        self.id, self.current_term, entry.index
                    );
                    self.truncate_from(entry.index);
                    self.append_persisted(entry);
                    appended += 1;
                }
                None => {
                    self.append_persisted(entry);
                    appended += 1;
                }
            }
            last_new += 1;
        }
        if appended > 0
            && leader_commit > self.log.last_index().saturating_sub(appended as u64) + 64
        {
            info!(
                "[node {} term {}] catching up: appended {} entries from leader node {}, now at index {} (leader commit {})",
                self.id,
                self.current_term,
                appended,
                from,
                self.log.last_index(),
                leader_commit
            );
        } else if appended > 0 {
            debug!(
                "[node {} term {}] appended {} entries from node {}, last index {}",
                self.id,
                self.current_term,
                appended,
                from,
                self.log.last_index()
            );
        }

        // AppendEntries rule 5: commitIndex = min(leaderCommit, index of last new entry).
        let new_commit = leader_commit.min(last_new);
        if new_commit > self.commit_index {
            self.set_commit_index(new_commit);
        }
        self.reply_append(from, true, last_new, None, read_seq);
    }

    /// InstallSnapshot (Figure 13): chunks are assembled in order; a complete snapshot
    /// newer than our commit index replaces the state machine and the log it covers.
    #[allow(clippy::too_many_arguments)]
    fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        term: Term,
        leader_id: NodeId,
        (index, snap_term): (LogIndex, Term),
        offset: u64,
        data: Vec<u8>,
        done: bool,
        read_seq: u64,
    ) {
        let reply = |core: &mut RaftCore, next_offset: u64, installed: bool| {
            let msg = Message::InstallSnapshotResponse {
                term: core.current_term,
                last_included_index: index,
                next_offset,
                installed,
                read_seq,
            };
            core.send(from, msg);
        };
        // Figure 13 rule 1: reply immediately if term < currentTerm.
        if term < self.current_term {
            reply(self, 0, false);
            return;
        }
        if self.role == Role::Leader {
            error!(
                "[node {} term {}] InstallSnapshot from node {} in my own term: ignored",
                self.id, self.current_term, from
            );
            return;
        }
        if self.role == Role::Candidate || self.leader_id != Some(leader_id) {
            info!(
                "[node {} term {}] follows leader node {}",
                self.id, self.current_term, leader_id
            );
            self.become_follower(term, Some(leader_id));
        }
        self.effects.push(Effect::ResetElectionTimer);
        // A snapshot we already cover (committed entries are never lost) is acknowledged
        // without being installed.
        if index <= self.commit_index {
            self.incoming = None;
            reply(self, 0, true);
            return;
        }
        // Rules 2-4: a chunk at offset 0 starts a new snapshot; others must continue it.
        let buf = match (&mut self.incoming, offset) {
            (_, 0) => {
                self.incoming = Some((index, snap_term, Vec::new()));
                self.incoming.as_mut().map(|x| &mut x.2)
            }
            (Some((i, t, buf)), off)
                if *i == index && *t == snap_term && buf.len() as u64 == off =>
            {
                Some(buf)
            }
            _ => None,
        };
        let Some(buf) = buf else {
            let have = match &self.incoming {
                Some((i, t, b)) if *i == index && *t == snap_term => b.len() as u64,
                _ => 0,
            };
            reply(self, have, false);
            return;
        };
        buf.extend_from_slice(&data);
        let len = buf.len() as u64;
        if !done {
            reply(self, len, false);
            return;
        }
        let Some((_, _, bytes)) = self.incoming.take() else {
            return;
        };
        let kv = match codec::decode(&bytes) {
            Ok(kv) => kv,
            Err(e) => {
                warn!(
                    "[node {} term {}] snapshot at {} from node {} does not decode: {}",
                    self.id, self.current_term, index, from, e
                );
                reply(self, 0, false);
                return;
            }
        };
        let snapshot = Arc::new(Snapshot {
            index,
            term: snap_term,
            members: self.members(),
            kv,
        });
        info!(
            "[node {} term {}] installs snapshot from node {} at index {} (term {}); log was {}..={}",
            self.id,
            self.current_term,
            from,
            index,
            snap_term,
            self.log.snapshot_index() + 1,
            self.log.last_index()
        );
        // Rules 6-7: keep entries after the snapshot only if our log agrees at its end.
        self.log.compact_to(index, snap_term);
        self.pending_batch();
        if let Some(batch) = self.pending.as_mut() {
            batch.snapshot = Some(snapshot.clone());
            // Entries still waiting to be written survive only if the log kept them; if
            // the log was discarded, durable entries after the snapshot go too.
            let log = &self.log;
            batch
                .entries
                .retain(|e| e.index > index && log.term_at(e.index) == Some(e.term));
            if log.last_index() == index {
                batch.truncate_from =
                    Some(batch.truncate_from.map_or(index + 1, |t| t.min(index + 1)));
            }
        }
        self.lower_durable_floor(index);
        if self.compact_on_persist.take().is_some() {
            debug!(
                "[node {} term {}] local snapshot superseded",
                self.id, self.current_term
            );
        }
        self.snapshot = Some(snapshot.clone());
        // Rule 8: reset the state machine from the snapshot.
        self.commit_index = self.commit_index.max(index);
        self.applied_sent = self.applied_sent.max(index);
        self.effects.push(Effect::RestoreStateMachine(snapshot));
        reply(self, len, true);
    }

    fn members(&self) -> Vec<NodeId> {
        let mut m = self.peers.clone();
        m.push(self.id);
        m.sort_unstable();
        m
    }

    fn reply_append(
        &mut self,
        to: NodeId,
        success: bool,
        match_index: LogIndex,
        reject: Option<RejectHint>,
        read_seq: u64,
    ) {
        self.send(
            to,
            Message::AppendEntriesResponse {
                term: self.current_term,
                success,
                match_index,
                reject,
                read_seq,
            },
        );
    }

    /// Leaders rule 4: commit the highest N that a majority holds, but only when the entry
    /// at N is from the current term (§5.4.2, Figure 8). The leader counts its own copy
    /// only once it is durable.
    fn maybe_commit(&mut self) {
        let mut matches: Vec<LogIndex> = self
            .peers
            .iter()
            .map(|p| self.peer_match.get(p).copied().unwrap_or(0))
            .collect();
        matches.push(self.durable_last_index.min(self.log.last_index()));
        let n = quorum_value(&mut matches);
        if n > self.commit_index && self.log.term_at(n) == Some(self.current_term) {
            self.set_commit_index(n);
            self.check_reads();
        }
    }

    fn set_commit_index(&mut self, index: LogIndex) {
        debug!(
            "[node {} term {}] commit index {} -> {}",
            self.id, self.current_term, self.commit_index, index
        );
        self.commit_index = index;
        if index > self.applied_sent {
            let entries = self.log.range(self.applied_sent + 1, index);
            if let Some(last) = entries.last() {
                self.applied_sent = last.index;
                self.effects.push(Effect::Apply(entries));
            }
        }
    }

    // ----- linearizable reads -----

    fn start_read_round(&mut self) {
        self.read_seq += 1;
        self.round_inflight = true;
        self.effects.push(Effect::BroadcastHeartbeat {
            read_seq: self.read_seq,
        });
    }

    fn check_reads(&mut self) {
        if self.role != Role::Leader || self.pending_reads.is_empty() {
            return;
        }
        let mut acks: Vec<u64> = self
            .peers
            .iter()
            .map(|p| self.peer_read_ack.get(p).copied().unwrap_or(0))
            .collect();
        acks.push(self.read_seq);
        let acked = quorum_value(&mut acks);
        // Reads wait until this term's no-op is committed: before that the leader may not
        // know the latest committed index.
        if self.commit_index < self.noop_index {
            return;
        }
        while let Some(front) = self.pending_reads.front() {
            if front.seq > acked {
                break;
            }
            if let Some(read) = self.pending_reads.pop_front() {
                self.effects.push(Effect::ReadReady {
                    id: read.id,
                    read_index: read.read_index,
                });
            }
        }
        if acked >= self.read_seq {
            self.round_inflight = false;
            if !self.pending_reads.is_empty() {
                self.start_read_round();
            }
        }
    }

    // ----- persistence pipeline -----

    fn quorum(&self) -> usize {
        quorum_size(self.peers.len() + 1)
    }

    fn pending_batch(&mut self) -> &mut PersistBatch {
        if self.pending.is_none() {
            self.last_assigned_seq += 1;
            self.pending = Some(PersistBatch {
                seq: self.last_assigned_seq,
                ..Default::default()
            });
        }
        self.pending.get_or_insert_with(PersistBatch::default)
    }

    fn persist_hard_state(&mut self) {
        let hs = self.hard_state();
        self.pending_batch().hard_state = Some(hs);
    }

    fn append_own(&mut self, payload: Payload) -> LogIndex {
        let entry = Entry {
            term: self.current_term,
            index: self.log.last_index() + 1,
            payload,
        };
        let index = entry.index;
        self.append_persisted(entry);
        index
    }

    fn append_persisted(&mut self, entry: Entry) {
        self.log.append(entry.clone());
        self.pending_batch().entries.push(entry);
    }

    /// Some durable entries above `index` are about to be removed by the pending batch.
    fn lower_durable_floor(&mut self, index: LogIndex) {
        self.durable_last_index = self.durable_last_index.min(index);
        self.pending_floor = Some(self.pending_floor.map_or(index, |f| f.min(index)));
    }

    fn truncate_from(&mut self, from: LogIndex) {
        self.log.truncate_from(from);
        self.lower_durable_floor(from - 1);
        let batch = self.pending_batch();
        match batch.entries.first().map(|e| e.index) {
            Some(first) if from >= first => {
                batch.entries.retain(|e| e.index < from);
            }
            _ => {
                batch.entries.clear();
                batch.truncate_from = Some(batch.truncate_from.map_or(from, |t| t.min(from)));
            }
        }
    }

    /// Sends `msg` once everything persisted so far is durable (Figure 2: "respond after
    /// persisting"); messages leave in the order they were produced.
    fn send(&mut self, to: NodeId, msg: Message) {
        if self.last_assigned_seq <= self.durable_seq && self.outbox.is_empty() {
            self.effects.push(Effect::Send { to, msg });
        } else {
            self.outbox.push_back((self.last_assigned_seq, to, msg));
        }
    }

    fn flush_persist(&mut self) {
        if self.inflight.is_some() {
            return;
        }
        let Some(mut batch) = self.pending.take() else {
            return;
        };
        if batch.is_empty() {
            // Nothing to write: treat as durable immediately.
            self.durable_seq = batch.seq;
            let ready: Vec<_> = self.outbox.drain(..).collect();
            for (_, to, msg) in ready {
                self.effects.push(Effect::Send { to, msg });
            }
            return;
        }
        batch.last_index = self.log.last_index();
        self.pending_floor = None;
        self.inflight = Some(batch.seq);
        self.inflight_last_index = batch.last_index;
        self.effects.push(Effect::Persist(batch));
    }
}
