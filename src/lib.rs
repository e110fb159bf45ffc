//! raftkv: a Raft-replicated, durable, linearizable key-value store.
//!
//! The crate is organised by concern (see `docs/ARCHITECTURE.md`):
//! - [`raft`]: the pure protocol — terms, votes, log matching, progress, quorum. No I/O.
//! - [`actors`]: the actix actors that run one node (consensus core, election timer,
//!   replicators, log store, state machine).
//! - [`storage`]: the on-disk log, checksummed records and snapshots.
//! - [`net`]: peer frames, handshake and the TCP transport.
//! - [`http`]: the client-facing HTTP gateway.
//! - [`kv`]: the key-value map, commands and client sessions.
//! - [`codec`]: the single place where bytes are encoded and decoded (bincode 1.3).
//! - [`node`] wires one node's actors; [`server`] runs it on disk, TCP and HTTP.

pub mod actors;
pub mod certs;
pub mod client;
pub mod codec;
pub mod config;
pub mod http;
pub mod kv;
pub mod metrics;
pub mod net;
pub mod node;
pub mod raft;
pub mod server;
pub mod stall;
pub mod storage;
