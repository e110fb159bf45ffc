//! The peer network: how Raft messages reach other nodes.
//!
//! [`Transport`] is the seam: production uses [`tcp::TcpTransport`] (one persistent TCP
//! connection per peer, length-prefixed bincode frames, a handshake, reconnect with
//! back-off); the simulator plugs in an in-memory network.

pub mod auth;
pub mod frame;
pub mod tcp;
pub mod tls;

use actix::prelude::*;

use crate::raft::{Message, NodeId};

/// Sends messages to peers. Delivery is best effort: Raft tolerates loss, duplication and
/// reordering, so a full queue or a broken connection drops the message.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, to: NodeId, msg: Message);

    /// The members changed: reach exactly these peers (id, raft address) from now on. A
    /// network that routes by id alone (the simulator's) ignores it.
    fn set_peers(&self, _peers: &[(NodeId, String)]) {}

    /// How many times messages to or from `peer` may have been lost so far: a connection
    /// with it ended, or messages queued for it were dropped. A request sent to the peer
    /// and not answered when this has moved may never be answered. (The simulator's
    /// network says 0: it loses messages on purpose, and its tests wait for timeouts.)
    fn losses(&self, _peer: NodeId) -> u64 {
        0
    }
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

/// Lets a repeating log line through once per `interval`, counting what it held back.
#[derive(Debug)]
pub struct LogEvery {
    interval: std::time::Duration,
    last: Option<std::time::Instant>,
    held: u64,
}

impl LogEvery {
    pub fn new(interval: std::time::Duration) -> Self {
        LogEvery {
            interval,
            last: None,
            held: 0,
        }
    }

    /// `Some(n)` when the line may be logged now (`n` occurrences were held back since the
    /// last one); `None` when it is held back.
    pub fn check(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.interval => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }

    /// Forgets the history (the condition cleared): the next occurrence logs at once.
    pub fn reset(&mut self) {
        self.last = None;
        self.held = 0;
    }
}
