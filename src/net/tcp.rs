//! The production transport: one persistent outbound TCP connection per peer (reconnected
//! with exponential back-off), and a listener that accepts peers' connections after a
//! handshake. Bad input closes that one connection; it never takes the node down.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::frame::{encode_frame, read_hello, read_message, FrameError, Hello};
use super::{Inbound, InboundSink, Transport};
use crate::raft::{Message, NodeId};

/// Messages queued per peer while its connection is slow or down; beyond this they drop.
const QUEUE_DEPTH: usize = 4096;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Kept below the election timeout, so a restarted peer is reached before it gives up on
/// hearing from a leader.
const BACKOFF_MAX: Duration = Duration::from_millis(250);

/// Outbound side: a queue per peer drained by that peer's connection task.
pub struct TcpTransport {
    queues: BTreeMap<NodeId, mpsc::Sender<Message>>,
}

impl TcpTransport {
    /// Starts a connection task per peer. Must be called inside a tokio runtime.
    pub fn start(self_id: NodeId, cluster_id: &str, peers: &[(NodeId, String)]) -> Arc<Self> {
        let mut queues = BTreeMap::new();
        for (peer, addr) in peers {
            let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
            queues.insert(*peer, tx);
            tokio::spawn(outbound(
                self_id,
                *peer,
                addr.clone(),
                Hello::new(cluster_id, self_id),
                rx,
            ));
        }
        Arc::new(TcpTransport { queues })
    }
}

impl Transport for TcpTransport {
    fn send(&self, to: NodeId, msg: Message) {
        if let Some(q) = self.queues.get(&to) {
            if q.try_send(msg).is_err() {
                debug!("peer {} queue full or closed: message dropped", to);
            }
        }
    }
}

async fn outbound(
    self_id: NodeId,
    peer: NodeId,
    addr: String,
    hello: Hello,
    mut rx: mpsc::Receiver<Message>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut was_connected = true; // log the first failure
    loop {
        let stream = match TcpStream::connect(&addr).await {
            Ok(s) => s,
            Err(e) => {
                if was_connected {
                    info!(
                        "[node {}] cannot reach peer {} at {}: {} (retrying with back-off)",
                        self_id, peer, addr, e
                    );
                    was_connected = false;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                if rx.is_closed() {
                    return;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        info!("[node {}] connected to peer {} at {}", self_id, peer, addr);
        was_connected = true;
        backoff = BACKOFF_MIN;
        // What queued up while disconnected is stale; Raft resends what matters.
        while rx.try_recv().is_ok() {}
        let (mut rd, wr) = stream.into_split();
        // The peer never writes on this connection; a read returning means it closed (for
        // example it restarted), so reconnect before the next message is lost into it.
        let mut closed = tokio::spawn(async move {
            let mut b = [0u8; 64];
            while let Ok(n) = rd.read(&mut b).await {
                if n == 0 {
                    break;
                }
            }
        });
        let mut w = BufWriter::with_capacity(256 * 1024, wr);
        let mut buf = Vec::new();
        if encode_frame(&mut buf, &hello).is_err()
            || w.write_all(&buf).await.is_err()
            || w.flush().await.is_err()
        {
            closed.abort();
            continue;
        }
        loop {
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                _ = &mut closed => {
                    info!("[node {}] connection to peer {} closed by the peer", self_id, peer);
                    break;
                }
            };
            let Some(msg) = msg else {
                closed.abort();
                return;
            };
            buf.clear();
            let mut next = Some(msg);
            // Batch whatever else is already queued into one write.
            while let Some(m) = next {
                if let Err(e) = encode_frame(&mut buf, &m) {
                    warn!("[node {}] cannot encode {}: {}", self_id, m.kind(), e);
                }
                if buf.len() > 1024 * 1024 {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if let Err(e) = async {
                w.write_all(&buf).await?;
                w.flush().await
            }
            .await
            {
                info!("[node {}] connection to peer {} lost: {}", self_id, peer, e);
                closed.abort();
                break;
            }
        }
    }
}

/// Accepts peer connections on `listener` and delivers their messages to `sink`.
pub async fn serve_inbound(
    listener: TcpListener,
    self_id: NodeId,
    cluster_id: String,
    peers: BTreeSet<NodeId>,
    sink: InboundSink,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("[node {}] accept failed: {}", self_id, e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(inbound(
            stream,
            remote,
            self_id,
            cluster_id.clone(),
            peers.clone(),
            sink.clone(),
        ));
    }
}

async fn inbound(
    stream: TcpStream,
    remote: SocketAddr,
    self_id: NodeId,
    cluster_id: String,
    peers: BTreeSet<NodeId>,
    sink: InboundSink,
) {
    let mut r = BufReader::with_capacity(256 * 1024, stream);
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_hello(&mut r)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            warn!(
                "[node {}] closing connection from {}: bad handshake: {}",
                self_id, remote, e
            );
            return;
        }
        Err(_) => {
            warn!(
                "[node {}] closing connection from {}: no handshake within {:?}",
                self_id, remote, HANDSHAKE_TIMEOUT
            );
            return;
        }
    };
    if let Some(problem) = hello.problem(&cluster_id) {
        warn!(
            "[node {}] closing connection from {}: {}",
            self_id, remote, problem
        );
        return;
    }
    if !peers.contains(&hello.node_id) {
        warn!(
            "[node {}] closing connection from {}: node {} is not a configured peer",
            self_id, remote, hello.node_id
        );
        return;
    }
    let from = hello.node_id;
    debug!("[node {}] accepted peer {} from {}", self_id, from, remote);
    loop {
        match read_message(&mut r).await {
            Ok(msg) => sink.do_send(Inbound { from, msg }),
            Err(FrameError::Closed) => return,
            Err(e) => {
                warn!(
                    "[node {}] closing connection from peer {} ({}): {}",
                    self_id, from, remote, e
                );
                return;
            }
        }
    }
}
