use serde::{Deserialize, Serialize};

/// A change to the key-value map.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    Put {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
}

impl KvOp {
    pub fn key(&self) -> &str {
        match self {
            KvOp::Put { key, .. } | KvOp::Delete { key } => key,
        }
    }
}

/// Identity of a client request (`X-Client-Id`, `X-Request-Seq`): a retry carries the same pair.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClientSession {
    pub client_id: String,
    pub seq: u64,
}

/// What a log entry asks the state machine to do.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub op: KvOp,
    pub session: Option<ClientSession>,
    /// The proposing leader's clock (ms since the Unix epoch): log time, by which client
    /// sessions expire (see `sessions`).
    pub stamp_ms: u64,
}

impl Command {
    /// The outcome applying this command has whatever the store holds, when there is one:
    /// a put without a session always stores its value (see `apply_one`), while a delete
    /// reports whether the key existed and a session may find a duplicate or be expired.
    pub fn outcome_known_before_applying(&self) -> Option<ApplyResult> {
        match (&self.op, &self.session) {
            (KvOp::Put { .. }, None) => Some(ApplyResult::Put),
            _ => None,
        }
    }
}

/// The outcome of applying a command, recorded per session so a retry gets the same answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ApplyResult {
    /// The key now holds the value.
    Put,
    /// The key is gone; `existed` says whether it was there before.
    Deleted { existed: bool },
    /// The request's seq is older than the newest one applied for its client: it was applied
    /// (or superseded) earlier, and its original result is no longer kept.
    Superseded,
    /// A membership change took effect.
    Configured,
}

/// What applying a command came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Applied (or a duplicate answered from its session) at the index.
    Applied(ApplyResult, crate::raft::LogIndex),
    /// Not applied: its session is unknown and this is not the session's first request.
    SessionExpired,
    /// Not applied: it would open a session while the table is full.
    TooManySessions,
}
