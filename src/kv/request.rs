use serde::{Deserialize, Serialize};

use super::command::{ApplyResult, ClientSession, KvOp};
use crate::raft::{LogIndex, NodeId};

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
    Value(Option<Vec<u8>>),
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
}
