//! The actors that make up one node. Each owns one job and talks to the others only by
//! typed messages; no lock guards Raft state.
//!
//! - [`Consensus`]: owns the pure [`crate::raft::RaftCore`] (role, term, vote, commit
//!   index, in-memory log) and executes its effects.
//! - [`ElectionTimer`]: the randomized election timeout.
//! - [`Replicator`]: one per peer while leading; owns that peer's `next_index`/`match_index`.
//! - [`LogStore`]: makes log entries and term/vote durable, off the async threads.
//! - [`StateMachine`]: applies committed entries to the key-value map, answers reads.

pub mod consensus;
pub mod election_timer;
pub mod log_store;
pub mod replicator;
pub mod state_machine;

pub use consensus::Consensus;
pub use election_timer::ElectionTimer;
pub use log_store::LogStore;
pub use replicator::Replicator;
pub use state_machine::StateMachine;
