//! The production transport: one persistent outbound TCP connection per peer (reconnected
//! with exponential back-off), and a listener that accepts peers' connections after an
//! authenticated handshake (`auth.rs`). Bad input closes that one connection; it never
//! takes the node down.
//!
//! A connection counts as established only once the handshake has completed: a peer that
//! accepts and then closes (another cluster, a wrong secret, a proxy, a half-dead node)
//! keeps the caller backing off, and a failure that repeats is logged once per interval
//! with a count.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use super::tls::{server_name, PeerTls};
use tokio::sync::{mpsc, Semaphore};

use super::auth::{ClusterSecret, Side};
use super::frame::{
    encode_frame, read_handshake, read_message_len, read_message_payload, Accepted, FrameError,
    Hello, Proof, Welcome, MAX_FRAME_BYTES,
};
use super::{Inbound, InboundSink, LogEvery, Transport};
use crate::raft::{Message, NodeId};

/// Messages queued per peer while its connection is slow or down; beyond this they drop.
const QUEUE_DEPTH: usize = 4096;
/// ... and bytes: a peer that stops reading (paused, overloaded) must not make this node
/// hold what it keeps being sent (snapshot chunks are resent). Raft tolerates the loss.
const QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Messages queued for a peer while its connection was down are sent once it is up again
/// only if they waited less than this (about two heartbeats): older ones are stale.
const FRESH_ON_RECONNECT: Duration = Duration::from_millis(100);
/// The whole handshake must complete within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Kept below the election timeout, so a restarted peer is reached before it gives up on
/// hearing from a leader.
const BACKOFF_MAX: Duration = Duration::from_millis(250);
/// A peer that answers and then refuses us is misconfigured, not restarting: try less often.
const REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A peer that accepts and closes during the handshake may be misconfigured (it closes
/// silently on another cluster_id) or only briefly unreachable (a flaky link, a proxy, a
/// peer that is restarting). Such closes back off like an unreachable peer until they have
/// gone on this long, and only then as slowly as a refusal: a flaky link is retried soon
/// after it works again, and a misconfigured peer is not hammered.
const CLOSED_ESCALATE_AFTER: Duration = Duration::from_secs(3);
/// A failure that repeats is logged at most this often.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Outbound side: a queue per peer drained by that peer's connection task. The set of
/// peers follows the cluster's membership (`set_peers`).
pub struct TcpTransport {
    self_id: NodeId,
    cluster_id: String,
    secret: ClusterSecret,
    queues: RwLock<BTreeMap<NodeId, PeerQueue>>,
    /// The peers whose connections the listener accepts (shared with it).
    known: KnownPeers,
    /// Addresses from this node's config file: they win over the ones a membership
    /// carries, as a local route (a proxy, another interface, a name only this host uses).
    pinned: BTreeMap<NodeId, String>,
    /// Mutual TLS for every connection, when configured.
    tls: Option<PeerTls>,
    /// Per peer: how often messages to or from it may have been lost (shared with the
    /// listener and the connection tasks).
    losses: LinkLosses,
}

/// Node ids allowed to connect; changes with the membership.
pub type KnownPeers = Arc<RwLock<BTreeSet<NodeId>>>;

/// Bumps a peer's loss count when dropped: however a connection's task ends.
struct BumpOnDrop(LinkLosses, NodeId);

impl Drop for BumpOnDrop {
    fn drop(&mut self) {
        self.0.bump(self.1);
    }
}

/// Per peer, a count of the times messages to or from it may have been lost.
#[derive(Clone, Default)]
pub struct LinkLosses(Arc<Mutex<HashMap<NodeId, u64>>>);

impl LinkLosses {
    fn bump(&self, peer: NodeId) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(peer).or_default() += 1;
    }

    fn get(&self, peer: NodeId) -> u64 {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&peer).copied().unwrap_or(0)
    }
}

/// One peer's queue, with the bytes it holds.
struct PeerQueue {
    addr: String,
    tx: mpsc::Sender<(Instant, Message)>,
    bytes: Arc<AtomicUsize>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TcpTransport {
    /// Starts a connection task per peer. Must be called inside a tokio runtime.
    pub fn start(
        self_id: NodeId,
        cluster_id: &str,
        peers: &[(NodeId, String)],
        secret: ClusterSecret,
        tls: Option<PeerTls>,
    ) -> Arc<Self> {
        let t = TcpTransport {
            tls,
            self_id,
            cluster_id: cluster_id.to_string(),
            secret,
            queues: RwLock::new(BTreeMap::new()),
            known: Arc::default(),
            pinned: peers.iter().cloned().collect(),
            losses: LinkLosses::default(),
        };
        t.set_peers(peers);
        Arc::new(t)
    }

    /// The ids the listener should accept, kept current as members change.
    pub fn known_peers(&self) -> KnownPeers {
        self.known.clone()
    }

    /// The loss counts, for the listener to bump when a peer's connection ends.
    pub fn link_losses(&self) -> LinkLosses {
        self.losses.clone()
    }

    fn connect_to(&self, peer: NodeId, addr: &str) -> PeerQueue {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let bytes = Arc::new(AtomicUsize::new(0));
        tokio::spawn(outbound(
            Caller {
                self_id: self.self_id,
                peer,
                addr: addr.to_string(),
                cluster_id: self.cluster_id.clone(),
                secret: self.secret.clone(),
                tls: self.tls.clone(),
            },
            Queued::new(rx, bytes.clone()),
            self.losses.clone(),
        ));
        PeerQueue {
            addr: addr.to_string(),
            tx,
            bytes,
        }
    }
}

impl Transport for TcpTransport {
    /// Connection tasks start for new peers (or a peer's new address) and end for peers
    /// no longer listed (dropping the queue closes it).
    fn set_peers(&self, peers: &[(NodeId, String)]) {
        let peers: Vec<(NodeId, String)> = peers
            .iter()
            .map(|(id, addr)| (*id, self.pinned.get(id).unwrap_or(addr).clone()))
            .collect();
        let mut queues = write(&self.queues);
        queues.retain(|id, q| peers.iter().any(|(p, a)| p == id && *a == q.addr));
        for (peer, addr) in &peers {
            if *peer != self.self_id && !queues.contains_key(peer) {
                let q = self.connect_to(*peer, addr);
                queues.insert(*peer, q);
            }
        }
        *write(&self.known) = queues.keys().copied().collect();
    }

    fn send(&self, to: NodeId, msg: Message) {
        let queues = read(&self.queues);
        let Some(q) = queues.get(&to) else {
            return;
        };
        let size = msg.approx_size();
        if q.bytes.load(Ordering::Relaxed) + size > QUEUE_BYTES {
            debug!(
                "peer {} queue holds {} bytes: message dropped",
                to, QUEUE_BYTES
            );
            self.losses.bump(to);
            return;
        }
        q.bytes.fetch_add(size, Ordering::Relaxed);
        if q.tx.try_send((Instant::now(), msg)).is_err() {
            q.bytes.fetch_sub(size, Ordering::Relaxed);
            debug!("peer {} queue full or closed: message dropped", to);
            self.losses.bump(to);
        }
    }

    fn losses(&self, peer: NodeId) -> u64 {
        self.losses.get(peer)
    }
}

/// A peer connection once established: plain TCP, or TLS over it.
pub trait PeerStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> PeerStream for T {}

/// Connects to the peer port at `addr` as node `self_id`, to reach node `peer`, and
/// completes the authenticated handshake; the stream then carries message frames
/// (`frame::encode_frame`). The transport connects this way; tests use it to play a peer.
pub async fn dial(
    self_id: NodeId,
    peer: NodeId,
    addr: &str,
    cluster_id: &str,
    secret: ClusterSecret,
    tls: Option<PeerTls>,
) -> Result<Box<dyn PeerStream>, String> {
    let caller = Caller {
        self_id,
        peer,
        addr: addr.to_string(),
        cluster_id: cluster_id.to_string(),
        secret,
        tls,
    };
    caller.connect().await.map_err(|f| match f {
        ConnectFailure::Unreachable(why)
        | ConnectFailure::Closed(why)
        | ConnectFailure::Refused(why) => why,
    })
}

/// One outbound connection's identity.
struct Caller {
    self_id: NodeId,
    peer: NodeId,
    addr: String,
    cluster_id: String,
    secret: ClusterSecret,
    tls: Option<PeerTls>,
}

/// Why a connection attempt failed.
enum ConnectFailure {
    /// Nobody answered (connection refused, unreachable, name not resolving yet).
    Unreachable(String),
    /// Someone answered and closed the connection during the handshake, without a word:
    /// another cluster_id or a wrong secret on its side, or a flaky link or a proxy.
    Closed(String),
    /// Someone answered and refused us, or could not prove the secret.
    Refused(String),
}

impl Caller {
    /// Connects and completes the handshake; the stream is then ready for messages.
    async fn connect(&self) -> Result<Box<dyn PeerStream>, ConnectFailure> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| ConnectFailure::Unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut stream: Box<dyn PeerStream> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = server_name(&self.addr).map_err(ConnectFailure::Refused)?;
                let tls_stream =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connector.connect(name, tcp))
                        .await
                        .map_err(|_| {
                            ConnectFailure::Refused(format!(
                                "no TLS handshake within {:?}",
                                HANDSHAKE_TIMEOUT
                            ))
                        })?
                        .map_err(|e| ConnectFailure::Refused(format!("TLS: {}", e)))?;
                Box::new(tls_stream)
            }
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(&mut stream)).await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(failure)) => Err(failure),
            Err(_) => Err(ConnectFailure::Refused(format!(
                "no handshake answer within {:?}",
                HANDSHAKE_TIMEOUT
            ))),
        }
    }

    async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: &mut S,
    ) -> Result<(), ConnectFailure> {
        let hello = Hello::new(&self.cluster_id, self.self_id, self.peer);
        send_frame(s, &hello)
            .await
            .map_err(ConnectFailure::Closed)?;
        let closed = |e: FrameError| match e {
            FrameError::Closed | FrameError::Io(_) => ConnectFailure::Closed(format!(
                "it closed the connection during the handshake ({}another cluster_id, a \
                 wrong cluster secret, or not a configured peer? its log says which)",
                match e {
                    FrameError::Io(e) => format!("{}; ", e),
                    _ => String::new(),
                }
            )),
            other => ConnectFailure::Refused(format!("bad handshake answer: {}", other)),
        };
        let welcome: Welcome = read_handshake(s).await.map_err(closed)?;
        if !self.secret.verify(
            Side::Listener,
            &hello,
            self.peer,
            &welcome.nonce,
            &welcome.proof,
        ) {
            return Err(ConnectFailure::Refused(
                "it could not prove the cluster secret (a different cluster_secret_file, \
                 or not our peer)"
                    .into(),
            ));
        }
        let proof = self
            .secret
            .proof(Side::Caller, &hello, self.peer, &welcome.nonce);
        send_frame(s, &Proof { proof })
            .await
            .map_err(ConnectFailure::Closed)?;
        let _: Accepted = read_handshake(s).await.map_err(closed)?;
        Ok(())
    }
}

async fn send_frame<S: AsyncWrite + Unpin, T: serde::Serialize>(
    s: &mut S,
    value: &T,
) -> Result<(), String> {
    let mut buf = Vec::new();
    encode_frame(&mut buf, value).map_err(|e| e.to_string())?;
    s.write_all(&buf).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())
}

/// The receiving end of a peer's queue; every message taken out gives its bytes back.
struct Queued {
    rx: mpsc::Receiver<(Instant, Message)>,
    bytes: Arc<AtomicUsize>,
    /// The longest any message taken out since the last report had waited.
    longest_wait: Duration,
    slow: LogEvery,
}

/// A message that waited this long in a peer's queue is worth a warning: heartbeats wait
/// there too, and the peer's election timeout is not much longer.
const SLOW_QUEUE: Duration = Duration::from_millis(200);

impl Queued {
    fn new(rx: mpsc::Receiver<(Instant, Message)>, bytes: Arc<AtomicUsize>) -> Self {
        Queued {
            rx,
            bytes,
            longest_wait: Duration::ZERO,
            slow: LogEvery::new(LOG_INTERVAL),
        }
    }

    fn took(&mut self, queued_at: Instant, m: Message) -> Message {
        self.bytes.fetch_sub(m.approx_size(), Ordering::Relaxed);
        self.longest_wait = self.longest_wait.max(queued_at.elapsed());
        m
    }

    async fn recv(&mut self) -> Option<Message> {
        let (at, m) = self.rx.recv().await?;
        Some(self.took(at, m))
    }

    fn try_recv(&mut self) -> Option<Message> {
        let (at, m) = self.rx.try_recv().ok()?;
        Some(self.took(at, m))
    }

    /// Drops what has waited longer than `max_age` and returns the first message that has
    /// not (the queue is oldest first, so everything behind it is fresh too), and whether
    /// anything was dropped.
    fn skip_older_than(&mut self, max_age: Duration) -> (Option<Message>, bool) {
        let mut dropped = false;
        while let Ok((at, m)) = self.rx.try_recv() {
            if at.elapsed() < max_age {
                return (Some(self.took(at, m)), dropped);
            }
            // Dropped, not sent: it does not count as a wait in the queue.
            self.bytes.fetch_sub(m.approx_size(), Ordering::Relaxed);
            dropped = true;
        }
        (None, dropped)
    }

    /// Warns (once per interval) when messages to `peer` waited long in the queue: the
    /// connection or the peer is slower than what is sent to it.
    fn report_waits(&mut self, self_id: NodeId, peer: NodeId) {
        if self.longest_wait < SLOW_QUEUE {
            return;
        }
        let longest = std::mem::take(&mut self.longest_wait);
        if let Some(held) = self.slow.check() {
            warn!(
                "[node {}] messages to peer {} waited up to {} ms in the send queue ({} KiB \
                 queued now, {} such reports held back): the link or the peer is slow",
                self_id,
                peer,
                longest.as_millis(),
                self.bytes.load(Ordering::Relaxed) / 1024,
                held
            );
        }
    }

    fn is_closed(&self) -> bool {
        self.rx.is_closed()
    }
}

async fn outbound(caller: Caller, mut rx: Queued, losses: LinkLosses) {
    let (self_id, peer) = (caller.self_id, caller.peer);
    let mut backoff = BACKOFF_MIN;
    let mut failures = LogEvery::new(LOG_INTERVAL);
    let mut last_refused: Option<bool> = None;
    // When the current run of failed attempts began (None: the last attempt succeeded).
    let mut failing_since: Option<Instant> = None;
    loop {
        let stream = match caller.connect().await {
            Ok(s) => s,
            Err(failure) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                let (why, cap, refused) = match failure {
                    ConnectFailure::Unreachable(why) => (why, BACKOFF_MAX, false),
                    ConnectFailure::Closed(why) if since.elapsed() < CLOSED_ESCALATE_AFTER => {
                        (why, BACKOFF_MAX, true)
                    }
                    ConnectFailure::Closed(why) | ConnectFailure::Refused(why) => {
                        (why, REFUSED_BACKOFF_MAX, true)
                    }
                };
                // A new kind of failure (the peer came up but refuses us) is news: say it
                // now, not at the end of the interval.
                if last_refused != Some(refused) {
                    failures.reset();
                    last_refused = Some(refused);
                }
                if let Some(held) = failures.check() {
                    let again = if held > 0 {
                        format!("; {} more failed attempts since the last report", held)
                    } else {
                        String::new()
                    };
                    info!(
                        "[node {}] cannot connect to peer {} at {}: {} (retrying with back-off{})",
                        self_id, peer, caller.addr, why, again
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cap);
                if rx.is_closed() {
                    return;
                }
                continue;
            }
        };
        // The handshake completed: this connection has proved itself.
        info!(
            "[node {}] connected to peer {} at {}{}",
            self_id,
            peer,
            caller.addr,
            if failing_since.is_some() {
                " (recovered)"
            } else {
                ""
            }
        );
        failing_since = None;
        failures.reset();
        last_refused = None;
        backoff = BACKOFF_MIN;
        // What queued up long before the connection is stale: Raft resends what matters.
        // What was queued just now, such as a vote request sent during a brief cut, still
        // counts, and goes first.
        let (mut first, dropped) = rx.skip_older_than(FRESH_ON_RECONNECT);
        if dropped {
            losses.bump(peer);
        }
        let (mut rd, wr) = tokio::io::split(stream);
        // The peer never writes after the handshake; a read returning means it closed (for
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
        loop {
            let msg = if let Some(m) = first.take() {
                Some(m)
            } else {
                tokio::select! {
                    msg = rx.recv() => msg,
                    _ = &mut closed => {
                        info!("[node {}] connection to peer {} closed by the peer", self_id, peer);
                        break;
                    }
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
                next = rx.try_recv();
            }
            rx.report_waits(self_id, peer);
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
        // What was in flight on that connection may be lost.
        losses.bump(peer);
    }
}

/// What the listener side knows about itself.
#[derive(Clone)]
pub struct Listener {
    pub self_id: NodeId,
    pub cluster_id: String,
    pub peers: KnownPeers,
    /// Bumped for a peer when a connection from it ends (what it sent may be lost).
    pub losses: LinkLosses,
    pub secret: ClusterSecret,
    /// Mutual TLS: a connection that does not present a certificate of the cluster's CA
    /// is closed before anything else is read.
    pub tls: Option<PeerTls>,
}

/// Refused connections, by remote host and reason: each logged once per interval.
type RefusalLog = Arc<Mutex<HashMap<(std::net::IpAddr, String), LogEvery>>>;

/// Peer connections accepted at once from one IP address (a node has one to each of its
/// peers, plus a few while they reconnect); more are refused.
const MAX_CONNECTIONS_PER_HOST: usize = 32;

/// Open inbound connections by remote IP address.
type OpenByHost = Arc<Mutex<HashMap<std::net::IpAddr, usize>>>;

/// Bytes of inbound frames one peer may have this node hold at once, over all of its
/// connections (read, decoded, or waiting to be handled): room for one frame of the largest
/// size and then some. A legitimate peer sends over one connection and far less; a peer
/// that floods large frames over many connections waits for room, in its own socket
/// buffers, instead of growing this node's memory with every connection it opens.
pub const PEER_INBOUND_BYTES: usize = MAX_FRAME_BYTES + MAX_FRAME_BYTES / 2;

/// The inbound budget of each peer id (see `PEER_INBOUND_BYTES`).
#[derive(Clone, Default)]
struct InboundBudgets(Arc<Mutex<HashMap<NodeId, Arc<Semaphore>>>>);

impl InboundBudgets {
    fn of(&self, peer: NodeId) -> Arc<Semaphore> {
        let mut map = match self.0.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(peer)
            .or_insert_with(|| Arc::new(Semaphore::new(PEER_INBOUND_BYTES / 1024)))
            .clone()
    }
}

/// Counts one open connection from a host for as long as it lives.
struct HostSlot {
    open: OpenByHost,
    ip: std::net::IpAddr,
}

impl HostSlot {
    fn take(open: &OpenByHost, ip: std::net::IpAddr) -> Option<HostSlot> {
        let mut map = match open.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let n = map.entry(ip).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_HOST {
            return None;
        }
        *n += 1;
        Some(HostSlot {
            open: open.clone(),
            ip,
        })
    }
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        let mut map = match self.open.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Frames of this size or more are read and decoded on the [`FrameThread`]; smaller ones
/// (heartbeats, votes, responses, small batches) on the consensus thread, where handing
/// them to another thread would cost each a wake-up of two threads and the
/// one-connection write path about 6 % of its throughput.
const OFF_THREAD_FRAME_BYTES: usize = 64 * 1024;

/// A thread of its own, with a tokio runtime, that reads and decodes the large frames of
/// inbound peer connections (`OFF_THREAD_FRAME_BYTES`). The consensus thread, which also
/// sends the heartbeats, then only handles their messages: a peer flooding 32 MiB frames
/// kept it busy for 100 ms and more at a time, and its followers elected another leader.
#[derive(Clone)]
pub struct FrameThread(tokio::runtime::Handle);

impl FrameThread {
    pub fn start(node: NodeId) -> std::io::Result<FrameThread> {
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name(format!("peer-frames-{}", node))
            .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        Ok(FrameThread(handle))
    }

    /// Reads and decodes the `len`-byte payload that comes next on `r`, on this thread;
    /// `r` comes back with the message. (The socket stays registered with the consensus
    /// thread's reactor, which only passes on its readiness.)
    async fn read<R: AsyncRead + Unpin + Send + 'static>(
        &self,
        mut r: R,
        len: usize,
    ) -> Result<(R, Message), FrameError> {
        let job = self.0.spawn(async move {
            let msg = read_message_payload(&mut r, len).await?;
            Ok((r, msg))
        });
        job.await.unwrap_or_else(|e| {
            Err(FrameError::Io(std::io::Error::other(format!(
                "the frame thread dropped the read: {}",
                e
            ))))
        })
    }

    /// Gives back to the system the memory of the frames this thread decoded that other
    /// threads have freed since (`collect_blocks_freed_elsewhere`).
    fn collect(&self) {
        self.0.spawn(async { collect_blocks_freed_elsewhere() });
    }
}

/// Gives back to the system the memory of blocks this thread allocated and another thread
/// has freed since. A large message is decoded on the [`FrameThread`] and dropped on the
/// consensus thread; mimalloc (the binary's allocator) returns a block of more than 16 MiB
/// freed that way only once the thread that allocated it collects, so without this a flood
/// of 32 MiB frames grew the node by every frame (1.6 GB in 6 s). Cheap: that thread's
/// heap holds a few buffers.
fn collect_blocks_freed_elsewhere() {
    // SAFETY: mi_collect takes no pointers and only frees blocks that are already free;
    // it is safe to call from any thread, whichever allocator the program uses.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// Accepts peer connections on `listener` and delivers their messages to `sink`; large
/// frames are read on `frames`.
pub async fn serve_inbound(
    listener: TcpListener,
    me: Listener,
    sink: InboundSink,
    frames: FrameThread,
) {
    let refusals: RefusalLog = Arc::default();
    let open: OpenByHost = Arc::default();
    let budgets = InboundBudgets::default();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("[node {}] accept failed: {}", me.self_id, e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = HostSlot::take(&open, remote.ip()) else {
            let why = format!(
                "{} peer connections from this host are open already",
                MAX_CONNECTIONS_PER_HOST
            );
            refuse(&refusals, me.self_id, remote, "too many", &why);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (me, refusals, sink) = (me.clone(), refusals.clone(), sink.clone());
        let (budgets, frames) = (budgets.clone(), frames.clone());
        tokio::spawn(async move {
            inbound(stream, remote, me, refusals, sink, budgets, frames).await;
            drop(slot);
        });
    }
}

/// Logs that a connection from `remote` was refused for `why`, unless the same was logged
/// for that host within the interval.
fn refuse(refusals: &RefusalLog, me: NodeId, remote: SocketAddr, kind: &str, why: &str) {
    let held = {
        let mut map = match refusals.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if map.len() > 1024 {
            map.clear();
        }
        map.entry((remote.ip(), kind.to_string()))
            .or_insert_with(|| LogEvery::new(LOG_INTERVAL))
            .check()
    };
    if let Some(held) = held {
        let again = if held > 0 {
            format!(" ({} more such connections since the last report)", held)
        } else {
            String::new()
        };
        warn!(
            "[node {}] closing connection from {}: {}{}",
            me, remote, why, again
        );
    }
}

/// Runs the listener's side of the handshake; the caller's node id once it has proved
/// itself, or (kind, reason) of the refusal.
async fn accept_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: &Listener,
) -> Result<NodeId, (&'static str, String)> {
    let hello: Hello = read_handshake(s)
        .await
        .map_err(|e| ("bad handshake", format!("bad handshake: {}", e)))?;
    if let Some(problem) = hello.problem(&me.cluster_id) {
        return Err(("wrong cluster", problem));
    }
    if !read(&me.peers).contains(&hello.node_id) {
        return Err((
            "unknown node",
            format!("node {} is not a configured peer", hello.node_id),
        ));
    }
    if hello.to != me.self_id {
        return Err((
            "misrouted",
            format!(
                "node {} meant to reach node {}, but this is node {}",
                hello.node_id, hello.to, me.self_id
            ),
        ));
    }
    let nonce: [u8; 16] = rand::random();
    let proof = me.secret.proof(Side::Listener, &hello, me.self_id, &nonce);
    send_frame(s, &Welcome { nonce, proof })
        .await
        .map_err(|e| ("bad handshake", format!("handshake write failed: {}", e)))?;
    let answer: Proof = read_handshake(s).await.map_err(|e| {
        (
            "unauthenticated",
            format!(
                "node {} did not prove the cluster secret: {}",
                hello.node_id, e
            ),
        )
    })?;
    if !me
        .secret
        .verify(Side::Caller, &hello, me.self_id, &nonce, &answer.proof)
    {
        return Err((
            "unauthenticated",
            format!(
                "node {} failed authentication (a different cluster_secret_file?)",
                hello.node_id
            ),
        ));
    }
    send_frame(s, &Accepted)
        .await
        .map_err(|e| ("bad handshake", format!("handshake write failed: {}", e)))?;
    Ok(hello.node_id)
}

async fn inbound(
    tcp: TcpStream,
    remote: SocketAddr,
    me: Listener,
    refusals: RefusalLog,
    sink: InboundSink,
    budgets: InboundBudgets,
    frames: FrameThread,
) {
    let stream: Box<dyn PeerStream> = match &me.tls {
        None => Box::new(tcp),
        Some(tls) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(tcp)).await {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => {
                    refuse(&refusals, me.self_id, remote, "tls", &format!("TLS: {}", e));
                    return;
                }
                Err(_) => {
                    let why = format!("no TLS handshake within {:?}", HANDSHAKE_TIMEOUT);
                    refuse(&refusals, me.self_id, remote, "slow handshake", &why);
                    return;
                }
            }
        }
    };
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    let from = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept_handshake(&mut r, &me)).await {
        Ok(Ok(from)) => from,
        Ok(Err((kind, why))) => {
            refuse(&refusals, me.self_id, remote, kind, &why);
            return;
        }
        Err(_) => {
            let why = format!("no handshake within {:?}", HANDSHAKE_TIMEOUT);
            refuse(&refusals, me.self_id, remote, "slow handshake", &why);
            return;
        }
    };
    debug!(
        "[node {}] accepted peer {} from {}",
        me.self_id, from, remote
    );
    let budget = budgets.of(from);
    let _lost_on_close = BumpOnDrop(me.losses.clone(), from);
    loop {
        // Backpressure: the next frame is read only once this one is handled, so a peer
        // that sends faster than this node can handle fills its own socket buffers, not
        // this node's memory; and all of a peer's connections together hold at most its
        // budget, taken before the payload is allocated and given back once it is handled.
        let len = match read_message_len(&mut r).await {
            Ok(len) => len,
            Err(e) => return log_read_error(&me, from, remote, e),
        };
        let Ok(room) = budget
            .clone()
            .acquire_many_owned(len.div_ceil(1024) as u32)
            .await
        else {
            return;
        };
        let off_thread = len >= OFF_THREAD_FRAME_BYTES;
        let msg = if off_thread {
            match frames.read(r, len).await {
                Ok((back, msg)) => {
                    r = back;
                    msg
                }
                Err(e) => return log_read_error(&me, from, remote, e),
            }
        } else {
            match read_message_payload(&mut r, len).await {
                Ok(msg) => msg,
                Err(e) => return log_read_error(&me, from, remote, e),
            }
        };
        let handled = sink.send(Inbound { from, msg }).await;
        if off_thread {
            frames.collect();
        }
        drop(room);
        if handled.is_err() {
            return; // the node is stopping
        }
    }
}

/// Logs why a peer connection ends, unless it was closed cleanly.
fn log_read_error(me: &Listener, from: NodeId, remote: SocketAddr, e: FrameError) {
    if !matches!(e, FrameError::Closed) {
        warn!(
            "[node {}] closing connection from peer {} ({}): {}",
            me.self_id, from, remote, e
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A large frame is read on the frame thread, and the reader comes back with what
    /// followed it still in place (its buffer travels with it).
    #[tokio::test]
    async fn a_large_frame_is_read_on_the_frame_thread_and_the_reader_comes_back() {
        let frames = FrameThread::start(1).unwrap();
        let big = Message::InstallSnapshot {
            term: 3,
            leader_id: 2,
            last_included_index: 10,
            last_included_term: 3,
            offset: 0,
            data: vec![7; OFF_THREAD_FRAME_BYTES],
            done: false,
            read_seq: 1,
            stream: 1,
        };
        let small = Message::RequestVoteResponse {
            term: 4,
            vote_granted: true,
        };
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, &big).unwrap();
        encode_frame(&mut bytes, &small).unwrap();
        let (mut tx, rx) = tokio::io::duplex(16 * 1024);
        let writer = tokio::spawn(async move { tx.write_all(&bytes).await.unwrap() });
        let mut r = BufReader::with_capacity(64 * 1024, rx);
        let len = read_message_len(&mut r).await.unwrap();
        assert!(len >= OFF_THREAD_FRAME_BYTES);
        let (mut r, msg) = frames.read(r, len).await.unwrap();
        assert_eq!(msg, big);
        let len = read_message_len(&mut r).await.unwrap();
        assert!(len < OFF_THREAD_FRAME_BYTES);
        assert_eq!(read_message_payload(&mut r, len).await.unwrap(), small);
        writer.await.unwrap();
    }
}
