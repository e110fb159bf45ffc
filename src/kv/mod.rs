//! The replicated key-value data: commands carried in log entries, the disk-backed store
//! they act on (with the client-session table that makes retried writes apply once), and
//! the snapshot stream that copies a store to a follower.

mod command;
mod disk;
mod error;
mod request;
mod sessions;
mod store;

pub use command::{ApplyOutcome, ApplyResult, ClientSession, Command, KvOp};
pub use disk::{MemStoreDisk, StoreDisk, STAGING_FILE, STORE_FILE};
pub use error::StoreError;
pub use request::{ClientRequest, ClientResponse, MemberInfo, ReadConsistency};
pub use sessions::{SessionRecord, FIRST_SEQ, MAX_SESSIONS, SESSION_TTL_MS};
pub use store::{ApplyItem, Installer, KvStore, SnapshotReader};

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
