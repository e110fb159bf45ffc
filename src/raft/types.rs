use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A server's identity in the cluster (the `id` in its config file).
pub type NodeId = u64;
/// A Raft term.
pub type Term = u64;
/// A position in the replicated log; the first entry has index 1, 0 means "none".
pub type LogIndex = u64;

/// What a log entry carries. The protocol never looks inside a command: it is the state
/// machine's encoding, carried as opaque bytes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Appended by every new leader so it can commit entries of earlier terms (§5.4.2)
    /// and serve linearizable reads (§6.4 of the thesis).
    Noop,
    /// Shared, not copied: the log, the persist batch, each follower's AppendEntries and
    /// the StateMachine's `Apply` hold the same bytes. Encoded like `serde_bytes`' Vec
    /// (a length, then the bytes) on the wire and on disk.
    Command(bytes::Bytes),
    /// A new cluster configuration (thesis §4.1), in force from the moment it is appended.
    Config(Membership),
}

/// One entry of the replicated log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub payload: Payload,
}

impl Entry {
    /// Where this entry sits in the log.
    pub fn point(&self) -> LogPoint {
        LogPoint {
            index: self.index,
            term: self.term,
        }
    }

    /// Rough in-memory/wire size, used to bound batches.
    pub fn approx_size(&self) -> usize {
        32 + match &self.payload {
            Payload::Noop => 0,
            Payload::Command(c) => c.len(),
            Payload::Config(m) => 64 * (m.voters.len() + m.learners.len()),
        }
    }
}

/// A position in the log named by index and term: where a snapshot ends, where the log
/// starts after compaction. Index 0 with term 0 is "before the first entry".
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPoint {
    pub index: LogIndex,
    pub term: Term,
}

/// The persistent state Figure 2 lists besides the log: written and fsync'd before the
/// node answers anything that depends on it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub current_term: Term,
    pub voted_for: Option<NodeId>,
}

/// Where a member listens: for peers (`raft_addr`) and for clients (`http_addr`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberAddrs {
    pub raft_addr: String,
    pub http_addr: String,
}

/// One configuration: the voters, whose majority decides elections and commits, and the
/// learners, who receive the log but are counted in no quorum.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub voters: BTreeMap<NodeId, MemberAddrs>,
    pub learners: BTreeMap<NodeId, MemberAddrs>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    /// `Payload` as versions before the shared buffer declared it.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum PayloadBefore {
        Noop,
        Command(#[serde(with = "serde_bytes")] Vec<u8>),
        Config(Membership),
    }

    /// Logs on disk and peers of the previous version read the same bytes.
    #[test]
    fn a_command_payload_encodes_as_before() {
        let bytes: Vec<u8> = (0..=255).collect();
        let now = codec::encode(&Payload::Command(bytes.clone().into())).unwrap();
        let before = codec::encode(&PayloadBefore::Command(bytes.clone())).unwrap();
        assert_eq!(now, before);
        assert_eq!(
            codec::decode::<Payload>(&before).unwrap(),
            Payload::Command(bytes.into())
        );
        let noop = codec::encode(&PayloadBefore::Noop).unwrap();
        assert_eq!(codec::decode::<Payload>(&noop).unwrap(), Payload::Noop);
    }
}
