//! The protocol's knobs (`RaftOptions`) and the clock proposals are stamped with.

use std::time::Duration;

use crate::raft::{LogLimits, PromotionPolicy};

/// Timing and batching knobs of the protocol.
#[derive(Clone, Copy, Debug)]
pub struct RaftOptions {
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub heartbeat_interval: Duration,
    pub max_entries_per_append: usize,
    pub max_bytes_per_append: usize,
    pub max_inflight: usize,
    /// Simulated fsync time (in-memory storage only).
    pub sim_fsync_latency: Duration,
    /// The store syncs (a durable commit) once this many entries were applied since the
    /// last sync...
    pub store_sync_entries: u64,
    /// ... or about this many bytes of entries ...
    pub store_sync_bytes: u64,
    /// ... or this much time passed with entries applied.
    pub store_sync_interval: Duration,
    /// Log entries kept below the store's durable index, for followers that lag a little
    /// (a follower further behind gets a snapshot).
    pub log_tail_entries: u64,
    /// Size of one InstallSnapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// InstallSnapshot chunks in flight to one follower.
    pub snapshot_window: usize,
    /// Bounds on the uncommitted entries a leader accepts and the tail it keeps.
    pub log_limits: LogLimits,
    /// Linearizable reads waiting for confirmation, and requests forwarded to the leader,
    /// at most (each): past it, requests are refused as overloaded.
    pub max_pending_requests: usize,
    /// When a leader promotes a learner to voter.
    pub promotion: PromotionPolicy,
}

impl Default for RaftOptions {
    fn default() -> Self {
        RaftOptions {
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            heartbeat_interval: Duration::from_millis(50),
            max_entries_per_append: 1024,
            max_bytes_per_append: 1024 * 1024,
            max_inflight: 8,
            sim_fsync_latency: Duration::from_millis(1),
            store_sync_entries: 2000,
            store_sync_bytes: 16 * 1024 * 1024,
            store_sync_interval: Duration::from_secs(1),
            log_tail_entries: 100_000,
            snapshot_chunk_bytes: 1024 * 1024,
            snapshot_window: 8,
            log_limits: LogLimits::default(),
            max_pending_requests: 10_000,
            promotion: PromotionPolicy::default(),
        }
    }
}

/// The wall clock as this node's proposals see it: the Unix time (ms) at `origin`, plus
/// tokio's monotonic time since (so the simulator's virtual time drives it, and a wall
/// clock stepped backwards while the node runs does not move it).
#[derive(Clone, Copy, Debug)]
pub struct LogClock {
    origin_ms: u64,
    origin: tokio::time::Instant,
}

impl LogClock {
    /// Starting at `origin_ms` now.
    pub fn starting_at(origin_ms: u64) -> Self {
        LogClock {
            origin_ms,
            origin: tokio::time::Instant::now(),
        }
    }

    /// Starting at the system's wall clock now.
    pub fn system() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self::starting_at(ms)
    }

    pub fn now_ms(&self) -> u64 {
        self.origin_ms
            .saturating_add(self.origin.elapsed().as_millis() as u64)
    }
}
