//! The peer network: how Raft messages reach other nodes.
//!
//! [`Transport`] is the seam: production uses [`tcp::TcpTransport`] (one persistent TCP
//! connection per peer, length-prefixed bincode frames, a handshake, reconnect with
//! back-off); the simulator plugs in an in-memory network.

pub mod frame;
pub mod tcp;

use actix::prelude::*;

use crate::raft::{Message, NodeId};

/// Sends messages to peers. Delivery is best effort: Raft tolerates loss, duplication and
/// reordering, so a full queue or a broken connection drops the message.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, to: NodeId, msg: Message);
}

/// A message that arrived from peer `from`.
#[derive(actix::Message, Debug)]
#[rtype(result = "()")]
pub struct Inbound {
    pub from: NodeId,
    pub msg: Message,
}

/// Where inbound messages are delivered.
pub type InboundSink = Recipient<Inbound>;
