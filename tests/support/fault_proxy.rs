//! A small TCP fault-injecting proxy for multi-process integration tests.
//!
//! Every directed link between two raftkv nodes (node A's outbound peer
//! connection to node B) is routed through one [`FaultProxy`]: A dials the
//! proxy's listen address, the proxy dials B's real address and pipes bytes
//! both ways. The link's behaviour is switched at run time with
//! [`FaultProxy::set_mode`]:
//!
//! * [`LinkMode::Pass`]: bytes flow normally.
//! * [`LinkMode::Cut`]: every open connection is closed at once (both sides),
//!   and new connections are accepted and closed immediately.
//! * [`LinkMode::Stall`]: connections stay open but the proxy stops reading
//!   from both sockets, so TCP backpressure holds the bytes in the kernel
//!   buffers; new connections are accepted and left hanging (the target is not
//!   dialled until the stall ends). Returning to `Pass` resumes forwarding on
//!   the existing connections with no byte lost.
//!
//! Tests are synchronous, so the proxy runs on its own background thread with
//! its own single-threaded tokio runtime. Dropping the proxy stops that
//! thread, closes the listener and every connection, and never hangs.

// This file is compiled into several test crates, each of which uses only part
// of the API.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Size of the per-direction copy buffer.
const BUF_SIZE: usize = 32 * 1024;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the accept
/// loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// How a proxied link behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// bytes flow normally
    Pass,
    /// every open connection through the proxy is closed at once (both sides), and new connections are accepted and immediately closed
    Cut,
    /// connections stay open but no byte is forwarded in either direction (a silent network stall); bytes read meanwhile are discarded; new connections are accepted and left hanging
    ///
    /// (As implemented, the proxy simply stops reading from both sockets
    /// while stalled, so nothing is discarded: TCP backpressure holds the
    /// bytes, and they are delivered when the link returns to `Pass`.)
    Stall,
}

impl LinkMode {
    fn to_u8(self) -> u8 {
        match self {
            LinkMode::Pass => 0,
            LinkMode::Cut => 1,
            LinkMode::Stall => 2,
        }
    }

    fn from_u8(v: u8) -> LinkMode {
        match v {
            0 => LinkMode::Pass,
            1 => LinkMode::Cut,
            _ => LinkMode::Stall,
        }
    }
}

/// What connection tasks watch: the current mode plus a counter bumped on
/// every transition into `Cut`. A connection remembers the counter value it
/// was accepted under and closes as soon as the counter moves, so even a
/// quick `Cut` -> `Pass` flip that a task never observed as `Cut` still
/// closes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LinkState {
    mode: LinkMode,
    cut_epoch: u64,
}

/// State shared between the handle and the proxy thread.
struct Shared {
    /// Current mode, for cheap reads from [`FaultProxy::mode`].
    mode: AtomicU8,
    /// Notifies connection tasks of mode changes.
    state: watch::Sender<LinkState>,
    /// Bytes written to either side so far.
    bytes: AtomicU64,
}

/// A TCP proxy forwarding every accepted connection to one target, with
/// switchable fault injection. See the module documentation.
pub struct FaultProxy {
    listen_addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Binds `listen` (use "127.0.0.1:0" for an ephemeral port) and forwards every accepted connection to `target`. Returns once listening.
    pub fn start(listen: SocketAddr, target: SocketAddr) -> io::Result<FaultProxy> {
        let std_listener = std::net::TcpListener::bind(listen)?;
        std_listener.set_nonblocking(true)?;
        let listen_addr = std_listener.local_addr()?;

        let (state_tx, _) = watch::channel(LinkState {
            mode: LinkMode::Pass,
            cut_epoch: 0,
        });
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(LinkMode::Pass.to_u8()),
            state: state_tx,
            bytes: AtomicU64::new(0),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        // The runtime is built and the listener registered on the proxy
        // thread itself, so no runtime is ever created or dropped on the
        // caller's thread (which might be inside another runtime).
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", listen_addr.port()))
            .spawn(move || {
                proxy_thread(std_listener, target, thread_shared, shutdown_rx, ready_tx)
            })?;

        let ready = ready_rx.recv().unwrap_or_else(|_| {
            Err(io::Error::other(
                "fault proxy thread exited during start-up",
            ))
        });
        if let Err(e) = ready {
            let _ = thread.join();
            return Err(e);
        }

        Ok(FaultProxy {
            listen_addr,
            target,
            shared,
            shutdown: shutdown_tx,
            thread: Some(thread),
        })
    }

    /// The address clients should dial (with the real port when bound to
    /// port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The address every connection is forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Switches the link's behaviour; takes effect on all open connections
    /// immediately.
    pub fn set_mode(&self, mode: LinkMode) {
        // The watch's write lock serialises concurrent callers, so the atomic
        // and the watched state always agree.
        self.shared.state.send_if_modified(|st| {
            if st.mode == mode {
                return false;
            }
            if mode == LinkMode::Cut {
                st.cut_epoch += 1;
            }
            st.mode = mode;
            self.shared.mode.store(mode.to_u8(), Ordering::SeqCst);
            true
        });
    }

    /// The current mode.
    pub fn mode(&self) -> LinkMode {
        LinkMode::from_u8(self.shared.mode.load(Ordering::SeqCst))
    }

    /// bytes forwarded so far (both directions), for assertions
    pub fn bytes_forwarded(&self) -> u64 {
        self.shared.bytes.load(Ordering::SeqCst)
    }
}

/// A proxy for every directed link among `nodes` (id, address to reach it), keyed by
/// (from, to): node `from` should dial the proxy's `listen_addr` to reach `to`.
pub fn proxy_every_link(nodes: &[(u64, SocketAddr)]) -> BTreeMap<(u64, u64), FaultProxy> {
    let mut proxies = BTreeMap::new();
    for &(from, _) in nodes {
        for &(to, target) in nodes {
            if from != to {
                let proxy = FaultProxy::start("127.0.0.1:0".parse().expect("addr"), target)
                    .expect("start proxy");
                proxies.insert((from, to), proxy);
            }
        }
    }
    proxies
}

/// A cluster (`crate::cluster`, which every user of this module includes too) whose every
/// peer link goes through a proxy of its own, launched; the proxies keyed by (from, to).
pub fn proxied_cluster(
    name: &str,
    opts: crate::cluster::ClusterOptions,
) -> (crate::cluster::Cluster, BTreeMap<(u64, u64), FaultProxy>) {
    let mut c = crate::cluster::Cluster::prepare(name, opts);
    let nodes: Vec<(u64, SocketAddr)> = c
        .ids()
        .iter()
        .map(|&id| (id, c.raft_addr(id).parse().expect("raft addr")))
        .collect();
    let proxies = proxy_every_link(&nodes);
    for (&(from, to), proxy) in &proxies {
        c.route_peer(from, to, proxy.listen_addr().to_string());
    }
    c.launch();
    (c, proxies)
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("listen_addr", &self.listen_addr)
            .field("target", &self.target)
            .field("mode", &self.mode())
            .field("bytes_forwarded", &self.bytes_forwarded())
            .finish()
    }
}

impl Drop for FaultProxy {
    /// Stops the thread, closes the listener and all connections.
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            // The proxy thread never owns a `FaultProxy`, so this cannot be a
            // self-join; the check is only belt and braces.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// Body of the proxy thread: runs the accept loop until shutdown, then drops
/// the runtime, which drops every connection task and so closes every socket.
fn proxy_thread(
    std_listener: std::net::TcpListener,
    target: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    ready: mpsc::Sender<io::Result<()>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let listener = {
        let _guard = rt.enter();
        match TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
    };
    let _ = ready.send(Ok(()));
    rt.block_on(accept_loop(listener, target, shared, shutdown));
    // Connection tasks only wait on sockets and channels, never on blocking
    // work, so shutting down is immediate; the timeout is a safety net.
    rt.shutdown_timeout(Duration::from_secs(1));
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    let st = *shared.state.borrow();
                    if st.mode == LinkMode::Cut {
                        // Closed at once.
                        drop(client);
                    } else {
                        tokio::spawn(handle_conn(client, target, Arc::clone(&shared), st.cut_epoch));
                    }
                }
                Err(_) => {
                    tokio::select! {
                        _ = shutdown.changed() => {}
                        _ = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                    }
                }
            }
        }
    }
}

/// Marker: the connection must be closed (cut, I/O error, or proxy gone).
struct Close;

/// Waits until the link is in `Pass` mode. Fails if the connection must be
/// closed instead.
async fn wait_pass(rx: &mut watch::Receiver<LinkState>, epoch: u64) -> Result<(), Close> {
    loop {
        let st = *rx.borrow_and_update();
        if st.cut_epoch != epoch {
            return Err(Close);
        }
        match st.mode {
            LinkMode::Pass => return Ok(()),
            LinkMode::Cut => return Err(Close),
            LinkMode::Stall => {}
        }
        if rx.changed().await.is_err() {
            return Err(Close);
        }
    }
}

/// Resolves once the link has been cut since `epoch` (or the proxy is gone).
async fn wait_cut(rx: &mut watch::Receiver<LinkState>, epoch: u64) {
    loop {
        let st = *rx.borrow_and_update();
        if st.cut_epoch != epoch || st.mode == LinkMode::Cut {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn handle_conn(client: TcpStream, target: SocketAddr, shared: Arc<Shared>, epoch: u64) {
    let mut rx = shared.state.subscribe();

    // While stalled the connection is left hanging and the target is not
    // dialled, as with a real silent partition.
    if wait_pass(&mut rx, epoch).await.is_err() {
        return;
    }

    let server = tokio::select! {
        connected = TcpStream::connect(target) => match connected {
            Ok(s) => s,
            // Target unreachable: dropping `client` closes it.
            Err(_) => return,
        },
        _ = wait_cut(&mut rx, epoch) => return,
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);

    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let upstream = pump(
        client_r,
        server_w,
        shared.state.subscribe(),
        epoch,
        &shared.bytes,
    );
    let downstream = pump(
        server_r,
        client_w,
        shared.state.subscribe(),
        epoch,
        &shared.bytes,
    );
    // Ends when both directions reached EOF, or as soon as one must close;
    // either way every half is dropped here, closing both sockets.
    let _ = tokio::try_join!(upstream, downstream);
}

/// Copies bytes from `reader` to `writer` while the link passes. While
/// stalled it neither reads nor writes (bytes already read are held, not
/// dropped). Returns `Ok` after forwarding EOF, `Err` when the whole
/// connection must close.
async fn pump<R, W>(
    mut reader: R,
    mut writer: W,
    mut rx: watch::Receiver<LinkState>,
    epoch: u64,
    counter: &AtomicU64,
) -> Result<(), Close>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        wait_pass(&mut rx, epoch).await?;
        // `read` is cancel-safe: if the mode changes first, nothing is lost.
        let n = tokio::select! {
            read = reader.read(&mut buf) => read.map_err(|_| Close)?,
            changed = rx.changed() => {
                changed.map_err(|_| Close)?;
                continue;
            }
        };
        if n == 0 {
            // Propagate the half-close; the other direction carries on.
            let _ = writer.shutdown().await;
            return Ok(());
        }
        let mut off = 0;
        while off < n {
            wait_pass(&mut rx, epoch).await?;
            // `write` is cancel-safe too, so a stall mid-buffer holds the
            // rest of it until the link passes again.
            tokio::select! {
                written = writer.write(&buf[off..n]) => match written {
                    Ok(0) | Err(_) => return Err(Close),
                    Ok(k) => {
                        off += k;
                        counter.fetch_add(k as u64, Ordering::SeqCst);
                    }
                },
                changed = rx.changed() => changed.map_err(|_| Close)?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Read, Write};
    use std::net::{Shutdown, TcpListener as StdListener, TcpStream as StdStream};
    use std::time::Instant;

    const DEADLINE: Duration = Duration::from_secs(5);
    const STALL_PROBE: Duration = Duration::from_millis(300);

    fn localhost0() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// A tiny echo server: every connection gets its bytes back; EOF from the
    /// client is answered with EOF once everything was echoed.
    fn echo_server() -> SocketAddr {
        let listener = StdListener::bind(localhost0()).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    loop {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if conn.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = conn.shutdown(Shutdown::Write);
                });
            }
        });
        addr
    }

    fn connect(proxy: &FaultProxy) -> StdStream {
        let s = StdStream::connect(proxy.listen_addr()).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s
    }

    fn round_trip(s: &mut StdStream, msg: &[u8]) {
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }

    /// Reads until the peer closes: true on EOF or a connection error, false
    /// if the read timed out with the connection still open.
    fn closed_promptly(s: &mut StdStream) -> bool {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                // Leftover data (none expected here): keep draining.
                Ok(_) if start.elapsed() < DEADLINE => continue,
                Ok(_) => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => return false,
                Err(_) => return true,
            }
        }
    }

    fn is_timeout(e: &io::Error) -> bool {
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    }

    fn assert_read_stalls(s: &mut StdStream) {
        s.set_read_timeout(Some(STALL_PROBE)).unwrap();
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Err(e) if is_timeout(&e) => {}
            other => panic!("expected the read to time out, got {other:?}"),
        }
        s.set_read_timeout(Some(DEADLINE)).unwrap();
    }

    fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond()
    }

    /// A fresh connection through `proxy` works end to end (retrying, since
    /// the mode switch is observed asynchronously by the proxy).
    fn fresh_connection_works(proxy: &FaultProxy) -> bool {
        wait_until(|| {
            let Ok(mut s) = StdStream::connect(proxy.listen_addr()) else {
                return false;
            };
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            if s.write_all(b"ping").is_err() {
                return false;
            }
            let mut got = [0u8; 4];
            s.read_exact(&mut got).is_ok() && &got == b"ping"
        })
    }

    #[test]
    fn pass_forwards_bytes_both_ways() {
        let proxy = FaultProxy::start(localhost0(), echo_server()).unwrap();
        assert_eq!(proxy.mode(), LinkMode::Pass);
        assert_ne!(proxy.listen_addr().port(), 0);
        let mut s = connect(&proxy);
        round_trip(&mut s, b"hello");
        round_trip(&mut s, b"world!");
        assert!(wait_until(|| proxy.bytes_forwarded() == 22));
    }

    #[test]
    fn pass_forwards_bulk_data_and_half_close() {
        let proxy = FaultProxy::start(localhost0(), echo_server()).unwrap();
        let mut s = connect(&proxy);
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = s.try_clone().unwrap();
        let to_send = data.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&to_send).unwrap();
            // Half-close: the echo server answers with EOF via the proxy.
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert!(got == data, "echoed data differs");
        assert!(wait_until(
            || proxy.bytes_forwarded() == 2 * data.len() as u64
        ));
    }

    #[test]
    fn cut_closes_open_and_new_connections() {
        let proxy = FaultProxy::start(localhost0(), echo_server()).unwrap();
        let mut s = connect(&proxy);
        round_trip(&mut s, b"before");

        proxy.set_mode(LinkMode::Cut);
        assert_eq!(proxy.mode(), LinkMode::Cut);
        assert!(closed_promptly(&mut s), "open connection not closed by Cut");

        for _ in 0..3 {
            let mut n = connect(&proxy);
            let _ = n.write_all(b"x");
            assert!(closed_promptly(&mut n), "new connection not closed in Cut");
        }

        proxy.set_mode(LinkMode::Pass);
        assert!(fresh_connection_works(&proxy));
    }

    #[test]
    fn quick_cut_then_pass_still_closes_connections() {
        let proxy = FaultProxy::start(localhost0(), echo_server()).unwrap();
        let mut s = connect(&proxy);
        round_trip(&mut s, b"before");
        proxy.set_mode(LinkMode::Stall);
        proxy.set_mode(LinkMode::Cut);
        proxy.set_mode(LinkMode::Pass);
        assert!(closed_promptly(&mut s), "connection survived a Cut");
        assert!(fresh_connection_works(&proxy));
    }

    #[test]
    fn stall_holds_bytes_and_pass_delivers_them() {
        let proxy = FaultProxy::start(localhost0(), echo_server()).unwrap();
        let mut s = connect(&proxy);
        round_trip(&mut s, b"warm-up");
        assert!(wait_until(|| proxy.bytes_forwarded() == 14));

        proxy.set_mode(LinkMode::Stall);
        assert_eq!(proxy.mode(), LinkMode::Stall);
        s.write_all(b"held").unwrap();
        assert_read_stalls(&mut s);
        // A connection opened during the stall is accepted but left hanging.
        let mut late = connect(&proxy);
        late.write_all(b"late").unwrap();
        assert_read_stalls(&mut late);
        assert_eq!(proxy.bytes_forwarded(), 14, "bytes moved while stalled");

        proxy.set_mode(LinkMode::Pass);
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"held");
        late.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"late");
        round_trip(&mut s, b"after");
        round_trip(&mut late, b"after");
    }

    #[test]
    fn stall_then_cut_closes_connections() {
        let proxy = FaultProxy::start(localhost0(), echo_server()).unwrap();
        let mut s = connect(&proxy);
        round_trip(&mut s, b"before");
        proxy.set_mode(LinkMode::Stall);
        let mut hanging = connect(&proxy);
        assert_read_stalls(&mut hanging);
        proxy.set_mode(LinkMode::Cut);
        assert!(closed_promptly(&mut s));
        assert!(closed_promptly(&mut hanging));
    }

    #[test]
    fn unreachable_target_closes_client() {
        let dead = {
            let l = StdListener::bind(localhost0()).unwrap();
            l.local_addr().unwrap()
        };
        let proxy = FaultProxy::start(localhost0(), dead).unwrap();
        let mut s = connect(&proxy);
        assert!(closed_promptly(&mut s));
        // The proxy keeps working for later connections.
        let mut s2 = connect(&proxy);
        assert!(closed_promptly(&mut s2));
    }

    #[test]
    fn survives_client_and_target_disappearing() {
        let proxy = FaultProxy::start(localhost0(), echo_server()).unwrap();
        for _ in 0..5 {
            let mut s = connect(&proxy);
            round_trip(&mut s, b"abc");
            s.write_all(b"unread").unwrap();
            drop(s);
        }
        assert!(fresh_connection_works(&proxy));
    }

    #[test]
    fn drop_closes_everything_and_does_not_hang() {
        let proxy = FaultProxy::start(localhost0(), echo_server()).unwrap();
        let addr = proxy.listen_addr();
        let mut open = connect(&proxy);
        round_trip(&mut open, b"open");
        proxy.set_mode(LinkMode::Stall);
        let mut hanging = connect(&proxy);
        assert_read_stalls(&mut hanging);

        let start = Instant::now();
        drop(proxy);
        assert!(
            start.elapsed() < DEADLINE,
            "drop took {:?}",
            start.elapsed()
        );

        assert!(closed_promptly(&mut open));
        assert!(closed_promptly(&mut hanging));
        assert!(
            wait_until(|| StdStream::connect(addr).is_err()),
            "listener still accepting after drop"
        );
    }

    #[test]
    fn start_fails_on_address_in_use() {
        let taken = StdListener::bind(localhost0()).unwrap();
        let err = FaultProxy::start(taken.local_addr().unwrap(), echo_server());
        assert!(err.is_err());
    }

    #[test]
    fn mode_round_trips() {
        let proxy = FaultProxy::start(localhost0(), echo_server()).unwrap();
        for m in [
            LinkMode::Stall,
            LinkMode::Cut,
            LinkMode::Pass,
            LinkMode::Cut,
        ] {
            proxy.set_mode(m);
            assert_eq!(proxy.mode(), m);
        }
        assert!(format!("{proxy:?}").contains("Cut"));
    }
}
