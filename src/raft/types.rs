use serde::{Deserialize, Serialize};

use crate::kv::{Command, KvStore};

/// A server's identity in the cluster (the `id` in its config file).
pub type NodeId = u64;
/// A Raft term.
pub type Term = u64;
/// A position in the replicated log; the first entry has index 1, 0 means "none".
pub type LogIndex = u64;

/// What a log entry carries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Appended by every new leader so it can commit entries of earlier terms (§5.4.2)
    /// and serve linearizable reads (§6.4 of the thesis).
    Noop,
    Command(Command),
}

/// One entry of the replicated log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub payload: Payload,
}

impl Entry {
    /// Rough in-memory/wire size, used to bound batches.
    pub fn approx_size(&self) -> usize {
        32 + match &self.payload {
            Payload::Noop => 0,
            Payload::Command(c) => {
                c.op.key().len()
                    + match &c.op {
                        crate::kv::KvOp::Put { value, .. } => value.len(),
                        crate::kv::KvOp::Delete { .. } => 0,
                    }
                    + c.session.as_ref().map_or(0, |s| s.client_id.len() + 8)
            }
        }
    }
}

/// The persistent state Figure 2 lists besides the log: written and fsync'd before the
/// node answers anything that depends on it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub current_term: Term,
    pub voted_for: Option<NodeId>,
}

/// A point-in-time image of the state machine that replaces the log up to `index`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Last log index the snapshot covers.
    pub index: LogIndex,
    /// Term of the entry at `index`.
    pub term: Term,
    /// Cluster members at `index` (membership is fixed today; kept for future changes).
    pub members: Vec<NodeId>,
    /// The key-value map and the client-session table.
    pub kv: KvStore,
}
