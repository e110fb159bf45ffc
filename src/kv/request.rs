use serde::{Deserialize, Serialize};

use super::command::{ApplyResult, ClientSession, KvOp};
use crate::raft::{LogIndex, MembershipChange, NodeId};

/// How fresh a read must be.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Linearizable: the leader confirms it still leads and waits for its read index.
    Linearizable,
    /// Whatever this node has applied; may be stale.
    Stale,
}

/// A client request as it travels from a gateway to the leader (possibly forwarded).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ClientRequest {
    Write {
        op: KvOp,
        session: Option<ClientSession>,
    },
    Read {
        key: String,
        consistency: ReadConsistency,
    },
    /// Change the cluster's membership by one server.
    ChangeMembership(MembershipChange),
    /// Hand leadership to this voter, or to the most up-to-date one.
    TransferLeader(Option<NodeId>),
    /// The members as the leader sees them.
    Members,
}

/// One member as the leader sees it (`GET /cluster/members`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: NodeId,
    pub raft_addr: String,
    pub http_addr: String,
    /// "voter" or "learner".
    pub role: String,
    pub leader: bool,
    pub match_index: LogIndex,
    /// Within the promotion lag of the leader's log.
    pub caught_up: bool,
}

/// What became of a client request. The variants map one-to-one onto HTTP status classes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ClientResponse {
    /// The write is committed and applied at `index`.
    Written {
        index: LogIndex,
        result: ApplyResult,
    },
    /// The read's answer.
    Value(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    /// The request was not applied and will not be (503).
    Unavailable {
        reason: String,
        leader: Option<NodeId>,
    },
    /// Refused as overloaded: not applied; retry after a pause (503 with `Retry-After`).
    Overloaded { reason: String },
    /// The write's client session expired: it was not applied, and a retry in this session
    /// never will be (409).
    SessionExpired { reason: String },
    /// The request may or may not take effect (504).
    Unknown {
        reason: String,
        leader: Option<NodeId>,
    },
    /// Refused as it stands: retrying it unchanged will not help (409).
    Rejected { reason: String },
    /// The cluster's members (`Members`).
    Members(Vec<MemberInfo>),
    /// Leadership moved to `leader` (`TransferLeader`).
    LeaderIs { leader: NodeId },
}
