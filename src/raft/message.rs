use serde::{Deserialize, Serialize};

use super::types::{Entry, LogIndex, NodeId, Term};

/// Why a follower refused an AppendEntries, so the leader can skip back a whole term at once
/// instead of one entry per round trip (§5.3, "the protocol can be optimized").
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectHint {
    /// The `prev_log_index` of the refused request (lets the leader drop stale refusals).
    pub rejected_index: LogIndex,
    /// The follower's term at `rejected_index`, if it has an entry there.
    pub conflict_term: Option<Term>,
    /// First index the follower holds for `conflict_term`, or its last index + 1 when its
    /// log is too short.
    pub conflict_index: LogIndex,
}

/// Everything one node says to another over the peer network.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Pre-Vote (thesis §9.6): "would you vote for me in `term`?" Changes nothing on the
    /// receiver; a node runs a real election only after a majority says yes, so a node
    /// that was cut off does not disrupt the cluster with a higher term when it returns.
    PreVote {
        /// The term the candidate would use (its current term + 1).
        term: Term,
        candidate_id: NodeId,
        last_log_index: LogIndex,
        last_log_term: Term,
    },
    PreVoteResponse {
        /// The term asked about when granted; the receiver's term when refused.
        term: Term,
        vote_granted: bool,
    },
    RequestVote {
        term: Term,
        candidate_id: NodeId,
        last_log_index: LogIndex,
        last_log_term: Term,
    },
    RequestVoteResponse {
        term: Term,
        vote_granted: bool,
    },
    AppendEntries {
        term: Term,
        leader_id: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        /// Read-index round this request belongs to; echoed in the response.
        read_seq: u64,
    },
    AppendEntriesResponse {
        term: Term,
        success: bool,
        /// On success: the index of the last entry known to match the leader's log.
        match_index: LogIndex,
        reject: Option<RejectHint>,
        read_seq: u64,
    },
    /// One chunk of the leader's snapshot (Figure 13), for a follower whose next entries
    /// are compacted away. `data` is opaque to the protocol: the state machine produced it
    /// from a consistent read view of its store, and the follower's state machine consumes
    /// it. An empty chunk at the follower's current offset is a keep-alive.
    InstallSnapshot {
        term: Term,
        leader_id: NodeId,
        last_included_index: LogIndex,
        last_included_term: Term,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        done: bool,
        read_seq: u64,
        /// Identifies one transfer: a chunk at offset 0 of a new stream starts the install
        /// over, a resent one of the stream being installed does not.
        stream: u64,
    },
    InstallSnapshotResponse {
        term: Term,
        last_included_index: LogIndex,
        /// The transfer this answers (echoed), so answers to an abandoned one are ignored.
        stream: u64,
        /// Where the next chunk should start (bytes the follower has stored so far).
        next_offset: u64,
        /// The follower now holds everything up to `last_included_index`.
        installed: bool,
        read_seq: u64,
    },
    /// A follower hands a client request to the leader. The request is the node's own
    /// encoding (the protocol does not look inside); it rides the peer connection only to
    /// save a second one.
    Forward {
        req_id: u64,
        #[serde(with = "serde_bytes")]
        request: Vec<u8>,
    },
    /// The leader's answer to a forwarded request (the node's encoding).
    ForwardReply {
        req_id: u64,
        #[serde(with = "serde_bytes")]
        response: Vec<u8>,
    },
    /// Leadership transfer (thesis §3.10): the leader of `term` has brought the receiver's
    /// log up to date and asks it to start an election now, without waiting for its
    /// timeout or a pre-vote.
    TimeoutNow {
        term: Term,
    },
}

/// Terms, indexes and offsets from a peer above this are refused: no real cluster gets
/// near it (a term per microsecond for 100 000 years), and it leaves room for `+ 1`.
pub const MAX_SANE: u64 = 1 << 62;

impl Message {
    /// Checks the numbers a peer sent before the protocol acts on them: nothing near
    /// `u64::MAX` (arithmetic on it would overflow) and an AppendEntries whose entries
    /// follow `prev_log_index` one by one, in terms no newer than the leader's.
    pub fn validate(&self) -> Result<(), String> {
        let sane = |what: &str, v: u64| {
            if v > MAX_SANE {
                Err(format!("{} {} is out of range", what, v))
            } else {
                Ok(())
            }
        };
        match self {
            Message::PreVote {
                term,
                last_log_index,
                last_log_term,
                ..
            }
            | Message::RequestVote {
                term,
                last_log_index,
                last_log_term,
                ..
            } => {
                sane("term", *term)?;
                sane("last_log_index", *last_log_index)?;
                sane("last_log_term", *last_log_term)
            }
            Message::PreVoteResponse { term, .. } | Message::RequestVoteResponse { term, .. } => {
                sane("term", *term)
            }
            Message::AppendEntries {
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                ..
            } => {
                sane("term", *term)?;
                sane("prev_log_index", *prev_log_index)?;
                sane("prev_log_term", *prev_log_term)?;
                sane("leader_commit", *leader_commit)?;
                if *prev_log_term > *term {
                    return Err(format!(
                        "prev_log_term {} is newer than the leader's term {}",
                        prev_log_term, term
                    ));
                }
                let mut expected = *prev_log_index;
                for e in entries {
                    expected += 1;
                    if e.index != expected || e.term > *term || e.index > MAX_SANE {
                        return Err(format!(
                            "entry {}/{} does not follow index {} in a term up to {}",
                            e.index,
                            e.term,
                            expected - 1,
                            term
                        ));
                    }
                }
                Ok(())
            }
            Message::AppendEntriesResponse {
                term,
                match_index,
                reject,
                ..
            } => {
                sane("term", *term)?;
                sane("match_index", *match_index)?;
                if let Some(r) = reject {
                    sane("rejected_index", r.rejected_index)?;
                    sane("conflict_index", r.conflict_index)?;
                    sane("conflict_term", r.conflict_term.unwrap_or(0))?;
                }
                Ok(())
            }
            Message::InstallSnapshot {
                term,
                last_included_index,
                last_included_term,
                offset,
                ..
            } => {
                sane("term", *term)?;
                sane("last_included_index", *last_included_index)?;
                sane("last_included_term", *last_included_term)?;
                sane("offset", *offset)
            }
            Message::InstallSnapshotResponse {
                term,
                last_included_index,
                next_offset,
                ..
            } => {
                sane("term", *term)?;
                sane("last_included_index", *last_included_index)?;
                sane("next_offset", *next_offset)
            }
            Message::TimeoutNow { term } => sane("term", *term),
            Message::Forward { .. } | Message::ForwardReply { .. } => Ok(()),
        }
    }

    /// The sender's term, for messages that carry one (client forwarding does not).
    pub fn term(&self) -> Option<Term> {
        match self {
            Message::RequestVote { term, .. }
            | Message::RequestVoteResponse { term, .. }
            | Message::AppendEntries { term, .. }
            | Message::AppendEntriesResponse { term, .. }
            | Message::InstallSnapshot { term, .. }
            | Message::InstallSnapshotResponse { term, .. }
            | Message::TimeoutNow { term } => Some(*term),
            // Pre-Vote terms are hypothetical: they never make anyone adopt them.
            Message::PreVote { .. }
            | Message::PreVoteResponse { .. }
            | Message::Forward { .. }
            | Message::ForwardReply { .. } => None,
        }
    }

    /// Roughly how many bytes this message holds (for bounding queues).
    pub fn approx_size(&self) -> usize {
        64 + match self {
            Message::AppendEntries { entries, .. } => {
                entries.iter().map(Entry::approx_size).sum::<usize>()
            }
            Message::InstallSnapshot { data, .. } => data.len(),
            Message::Forward { request, .. } => request.len(),
            Message::ForwardReply { response, .. } => response.len(),
            _ => 0,
        }
    }

    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::PreVote { .. } => "PreVote",
            Message::PreVoteResponse { .. } => "PreVoteResponse",
            Message::RequestVote { .. } => "RequestVote",
            Message::RequestVoteResponse { .. } => "RequestVoteResponse",
            Message::AppendEntries { .. } => "AppendEntries",
            Message::AppendEntriesResponse { .. } => "AppendEntriesResponse",
            Message::InstallSnapshot { .. } => "InstallSnapshot",
            Message::InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
            Message::Forward { .. } => "Forward",
            Message::ForwardReply { .. } => "ForwardReply",
            Message::TimeoutNow { .. } => "TimeoutNow",
        }
    }
}
