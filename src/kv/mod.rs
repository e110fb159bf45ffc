//! The replicated key-value data: commands carried in log entries, the map they act on,
//! and the client-session table that makes retried writes apply once.

mod command;
mod request;
mod sessions;
mod store;

pub use command::{ApplyResult, ClientSession, Command, KvOp};
pub use request::{ClientRequest, ClientResponse, ReadConsistency};
pub use sessions::{SessionTable, MAX_SESSIONS};
pub use store::KvStore;

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
