//! The Raft protocol as pure types: no I/O, no clock, no randomness.
//!
//! [`RaftCore`] takes events (a message, an election timeout, a proposal, "this batch is
//! durable") and returns [`Effect`]s for the actors to carry out. Every rule of Figure 2
//! of the Raft paper is enforced here, next to a comment that names it.

mod core;
mod log;
mod membership;
mod message;
mod progress;
mod quorum;
mod snapshot_send;
mod types;

#[cfg(test)]
mod core_membership_tests;
#[cfg(test)]
mod core_tests;

pub use self::core::{
    ChangeError, Effect, LogLimits, LogSlice, MemberProgress, PersistBatch, PromotionPolicy,
    ProposeError, RaftCore, ReadId, Role, Status,
};
pub use self::log::RaftLog;
pub use self::membership::MembershipChange;
pub use self::message::{Message, RejectHint};
pub use self::progress::{Progress, ProgressState};
pub use self::quorum::{quorum_size, quorum_value};
pub use self::snapshot_send::{SnapshotChunk, SnapshotReply, SnapshotSend, STALL_TICKS};
pub use self::types::{
    Entry, HardState, LogIndex, LogPoint, MemberAddrs, Membership, NodeId, Payload, Term,
};
