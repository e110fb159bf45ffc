//! The StateMachine actor: applies committed entries to the disk-backed store strictly in
//! index order, each exactly once, and answers the clients waiting on them and on reads.
//! It also serves snapshots: a stream of chunks from a consistent read view for a leader's
//! Replicator, and the install of a leader's stream on a follower (built beside the old
//! store, swapped in atomically).
//!
//! In production it runs on its own thread (an actix Arbiter), so store commits, syncs and
//! snapshot work never stall the consensus actor.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use log::{debug, error, info, warn};
use tokio::sync::{mpsc, oneshot};

use crate::codec;
use crate::kv::{ApplyItem, ClientResponse, Command, Installer, KvStore};
use crate::raft::{Entry, LogIndex, LogPoint, NodeId, Payload, Term};

/// Committed entries, in order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Apply(pub Vec<Entry>);

/// Tell `tx` the outcome of the entry proposed at (`index`, `term`) once it is applied.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AwaitApplied {
    pub index: LogIndex,
    pub term: Term,
    pub tx: oneshot::Sender<ClientResponse>,
}

/// Answer a read of `key` once everything up to `read_index` is applied.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReadAt {
    pub key: String,
    pub read_index: LogIndex,
    pub tx: oneshot::Sender<ClientResponse>,
}

/// Read `key` from whatever is applied now (a possibly stale read).
#[derive(Message)]
#[rtype(result = "ClientResponse")]
pub struct ReadLocal(pub String);

/// The applied index and every key and value (for tests and diagnostics).
#[derive(Message)]
#[rtype(result = "(LogIndex, BTreeMap<String, Vec<u8>>)")]
pub struct Dump;

/// Reported to the consensus actor after each applied batch; `durable` is set when the
/// store has synced everything up to that index (the log below it may be compacted).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Applied {
    pub index: LogIndex,
    pub durable: Option<LogIndex>,
}

/// One chunk of a leader's snapshot stream for this (follower) node's store.
#[derive(Message)]
#[rtype(result = "()")]
pub struct InstallChunk {
    pub from: NodeId,
    pub snapshot: LogPoint,
    pub offset: u64,
    pub data: Vec<u8>,
    pub done: bool,
    pub read_seq: u64,
    pub stream: u64,
}

/// The answer to an [`InstallChunk`], for the consensus core.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ChunkStored {
    pub from: NodeId,
    pub snapshot: LogPoint,
    /// Bytes of the stream stored so far (where the next chunk must start).
    pub next_offset: u64,
    /// The new store is in place, durably.
    pub installed: bool,
    pub read_seq: u64,
    pub stream: u64,
}

/// A Replicator asks for a snapshot stream of everything applied so far.
#[derive(Message)]
#[rtype(result = "Option<SnapshotStream>")]
pub struct OpenSnapshot;

/// One chunk of a snapshot stream; `last` marks the final one.
#[derive(Debug)]
pub struct Chunk {
    pub data: Vec<u8>,
    pub last: bool,
}

/// Where a snapshot stream's chunks arrive: a bounded channel fed by a producer thread
/// (production), or a channel filled up front (the simulator, which stays on one thread).
pub enum ChunkRx {
    Bounded(mpsc::Receiver<Chunk>),
    Filled(mpsc::UnboundedReceiver<Chunk>),
}

impl ChunkRx {
    pub async fn recv(&mut self) -> Option<Chunk> {
        match self {
            ChunkRx::Bounded(rx) => rx.recv().await,
            ChunkRx::Filled(rx) => rx.recv().await,
        }
    }

    /// The next chunk if one is ready.
    pub fn try_recv(&mut self) -> Polled {
        use mpsc::error::TryRecvError;
        let r = match self {
            ChunkRx::Bounded(rx) => rx.try_recv(),
            ChunkRx::Filled(rx) => rx.try_recv(),
        };
        match r {
            Ok(c) => Polled::Chunk(c),
            Err(TryRecvError::Empty) => Polled::NotYet,
            Err(TryRecvError::Disconnected) => Polled::Ended,
        }
    }
}

/// What [`ChunkRx::try_recv`] found.
pub enum Polled {
    Chunk(Chunk),
    /// The producer is behind.
    NotYet,
    /// The producer is gone (after the last chunk, or because it failed).
    Ended,
}

/// A consistent snapshot of the store ending at `point`, as a stream of chunks.
pub struct SnapshotStream {
    pub point: LogPoint,
    pub chunks: ChunkRx,
}

/// When the store syncs (a durable commit): the log is the write-ahead log, so these only
/// bound how much of it is replayed after a crash and how soon it can be compacted.
#[derive(Clone, Copy, Debug)]
pub struct SyncPolicy {
    /// Entries applied since the last sync.
    pub every_entries: u64,
    /// Approximate bytes of entries applied since the last sync.
    pub every_bytes: u64,
    /// Sync at least this often while entries are being applied.
    pub interval: Duration,
}

/// How snapshot streams are cut.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotLimits {
    /// Bytes per chunk.
    pub chunk_bytes: usize,
    /// Chunks the producer may run ahead of the sender.
    pub window: usize,
    /// Produce streams on their own thread (production) or up front (simulator).
    pub threaded: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct StopStateMachine;

/// Every applied entry, for test observers that check State Machine Safety.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct AppliedEntries {
    pub node: u64,
    /// Set when the state machine was reset from a snapshot ending at this index.
    pub restored_to: Option<LogIndex>,
    pub entries: Vec<Entry>,
}

/// Where the state machine reports to.
pub struct StateMachineLinks {
    pub applied: Recipient<Applied>,
    pub chunks: Recipient<ChunkStored>,
}

pub struct StateMachine {
    node_id: NodeId,
    store: KvStore,
    last_applied: LogIndex,
    last_applied_term: Term,
    /// Highest index the store holds durably.
    durable: LogIndex,
    entries_since_sync: u64,
    bytes_since_sync: u64,
    sync: SyncPolicy,
    snapshots: SnapshotLimits,
    waiters: BTreeMap<LogIndex, (Term, oneshot::Sender<ClientResponse>)>,
    reads: BTreeMap<LogIndex, Vec<(String, oneshot::Sender<ClientResponse>)>>,
    links: Option<StateMachineLinks>,
    observer: Option<Recipient<AppliedEntries>>,
    /// A snapshot being received from a leader, with the transfer's stream id.
    install: Option<(u64, Installer)>,
    install_logged: u64,
    /// Stop the arbiter this actor runs on when it stops.
    own_arbiter: bool,
    /// Committed entries received and not yet applied (see `ApplyPending`).
    pending: Vec<Entry>,
    apply_scheduled: bool,
}

impl StateMachine {
    /// A state machine over `store`, which has applied up to `applied` (durably).
    pub fn new(
        node_id: NodeId,
        store: KvStore,
        applied: LogPoint,
        links: Option<StateMachineLinks>,
    ) -> Self {
        StateMachine {
            node_id,
            store,
            last_applied: applied.index,
            last_applied_term: applied.term,
            durable: applied.index,
            entries_since_sync: 0,
            bytes_since_sync: 0,
            sync: SyncPolicy {
                every_entries: 10_000,
                every_bytes: 64 * 1024 * 1024,
                interval: Duration::from_secs(1),
            },
            snapshots: SnapshotLimits {
                chunk_bytes: 1024 * 1024,
                window: 8,
                threaded: false,
            },
            waiters: BTreeMap::new(),
            reads: BTreeMap::new(),
            links,
            observer: None,
            install: None,
            install_logged: 0,
            own_arbiter: false,
            pending: Vec::new(),
            apply_scheduled: false,
        }
    }

    pub fn with_policies(mut self, sync: SyncPolicy, snapshots: SnapshotLimits) -> Self {
        self.sync = sync;
        self.snapshots = snapshots;
        self
    }

    /// Also report every applied entry to `observer` (tests).
    pub fn with_observer(mut self, observer: Option<Recipient<AppliedEntries>>) -> Self {
        self.observer = observer;
        self
    }

    /// This actor runs on an arbiter of its own, to be stopped with it.
    pub fn on_own_arbiter(mut self) -> Self {
        self.own_arbiter = true;
        self
    }

    /// The store failed: nothing this node applies can be trusted any more.
    fn fatal(&mut self, why: &str, ctx: &mut Context<Self>) {
        error!(
            "[node {}] fatal: state machine store failed: {}; stopping the node",
            self.node_id, why
        );
        ctx.stop();
        System::current().stop_with_code(1);
    }

    fn read(&self, key: &str) -> ClientResponse {
        match self.store.get(key) {
            Ok(v) => ClientResponse::Value(v),
            Err(e) => {
                error!("[node {}] read of {:?} failed: {}", self.node_id, key, e);
                ClientResponse::Unavailable {
                    reason: format!("store read failed: {}", e),
                    leader: None,
                }
            }
        }
    }

    fn answer_reads(&mut self) {
        let later = self.reads.split_off(&(self.last_applied + 1));
        let ready = std::mem::replace(&mut self.reads, later);
        for (_, waiting) in ready {
            for (key, tx) in waiting {
                let _ = tx.send(self.read(&key));
            }
        }
    }

    fn report(&self, durable: Option<LogIndex>) {
        if let Some(l) = &self.links {
            l.applied.do_send(Applied {
                index: self.last_applied,
                durable,
            });
        }
    }

    fn sync_now(&mut self, ctx: &mut Context<Self>) {
        self.apply_pending(ctx);
        if self.durable >= self.last_applied {
            return;
        }
        let started = std::time::Instant::now();
        if let Err(e) = self.store.sync() {
            self.fatal(&e.to_string(), ctx);
            return;
        }
        slow(
            "store sync",
            started,
            self.node_id,
            self.last_applied - self.durable,
        );
        self.durable = self.last_applied;
        self.entries_since_sync = 0;
        self.bytes_since_sync = 0;
        debug!(
            "[node {}] store synced through index {}",
            self.node_id, self.durable
        );
        self.report(Some(self.durable));
    }

    fn reply_chunk(&self, msg: &InstallChunk, next_offset: u64, installed: bool) {
        if let Some(l) = &self.links {
            l.chunks.do_send(ChunkStored {
                from: msg.from,
                snapshot: msg.snapshot,
                next_offset,
                installed,
                read_seq: msg.read_seq,
                stream: msg.stream,
            });
        }
    }

    /// The new store is complete: swap it in and move the applied point to the snapshot.
    fn finish_install(&mut self, installer: Installer, ctx: &mut Context<Self>) -> bool {
        let point = installer.point;
        match installer.finish() {
            Ok(store) => {
                self.store = store;
                self.last_applied = point.index;
                self.last_applied_term = point.term;
                self.durable = point.index;
                self.entries_since_sync = 0;
                self.bytes_since_sync = 0;
                info!(
                    "[node {}] snapshot at index {} (term {}) installed: {} keys",
                    self.node_id,
                    point.index,
                    point.term,
                    self.store.key_count().unwrap_or(0)
                );
                // Writes that were waiting on entries inside the snapshot: applied or not,
                // their individual results are gone.
                let later = self.waiters.split_off(&(self.last_applied + 1));
                for (_, (_, tx)) in std::mem::replace(&mut self.waiters, later) {
                    let _ = tx.send(ClientResponse::Unknown {
                        reason: "state replaced by a snapshot before the result was known".into(),
                        leader: None,
                    });
                }
                self.answer_reads();
                if let Some(o) = &self.observer {
                    o.do_send(AppliedEntries {
                        node: self.node_id,
                        restored_to: Some(point.index),
                        entries: Vec::new(),
                    });
                }
                self.report(Some(self.durable));
                true
            }
            Err(e) => {
                // The old store is still in place (the swap is the last step), unless the
                // swap itself failed part-way; either way this node cannot go on.
                self.fatal(&format!("installing snapshot: {}", e), ctx);
                false
            }
        }
    }
}

/// Store work that took long enough to show in client latency is worth an operator's
/// attention (a slow or busy disk).
pub(crate) fn slow(what: &str, started: std::time::Instant, node: NodeId, entries: u64) {
    let took = started.elapsed();
    if took >= SLOW_STORE_WORK {
        warn!(
            "[node {}] {} of {} entries took {} ms",
            node,
            what,
            entries,
            took.as_millis()
        );
    }
}

/// See [`slow`].
const SLOW_STORE_WORK: Duration = Duration::from_millis(50);

impl Actor for StateMachine {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.last_applied > 0 {
            if let Some(o) = &self.observer {
                o.do_send(AppliedEntries {
                    node: self.node_id,
                    restored_to: Some(self.last_applied),
                    entries: Vec::new(),
                });
            }
        }
        ctx.run_interval(self.sync.interval, |act, ctx| act.sync_now(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some((_, i)) = self.install.take() {
            i.abandon();
        }
        if self.own_arbiter {
            Arbiter::current().stop();
        }
    }
}

/// Apply what has piled up (sent to itself after the first `Apply` of a burst, so it runs
/// once the mailbox is drained: one store transaction for the whole burst).
#[derive(Message)]
#[rtype(result = "()")]
struct ApplyPending;

impl Handler<Apply> for StateMachine {
    type Result = ();

    fn handle(&mut self, Apply(entries): Apply, ctx: &mut Context<Self>) {
        self.pending.extend(entries);
        if !self.apply_scheduled {
            self.apply_scheduled = true;
            ctx.notify(ApplyPending);
        }
    }
}

impl Handler<ApplyPending> for StateMachine {
    type Result = ();

    fn handle(&mut self, _: ApplyPending, ctx: &mut Context<Self>) {
        self.apply_pending(ctx);
    }
}

impl StateMachine {
    fn apply_pending(&mut self, ctx: &mut Context<Self>) {
        self.apply_scheduled = false;
        let entries = std::mem::take(&mut self.pending);
        // Apply in index order, exactly once (Figure 2, All Servers rule 1).
        let mut fresh: Vec<Entry> = Vec::with_capacity(entries.len());
        for entry in entries {
            let expected = fresh.last().map_or(self.last_applied, |e| e.index) + 1;
            if entry.index < expected {
                continue;
            }
            if entry.index != expected {
                error!(
                    "[node {}] state machine gap: got index {} after {}; not applied",
                    self.node_id,
                    entry.index,
                    expected - 1
                );
                break;
            }
            fresh.push(entry);
        }
        let Some(last) = fresh.last().map(|e| (e.index, e.term)) else {
            return;
        };
        let commands: Vec<Option<Command>> = fresh
            .iter()
            .map(|e| match &e.payload {
                Payload::Noop => None,
                Payload::Command(bytes) => match codec::decode::<Command>(bytes) {
                    Ok(c) => Some(c),
                    Err(err) => {
                        // Every replica decodes the same bytes the same way: all skip it.
                        error!(
                            "[node {}] entry {} holds a command that does not decode ({}); skipped",
                            self.node_id, e.index, err
                        );
                        None
                    }
                },
            })
            .collect();
        let items: Vec<ApplyItem> = fresh
            .iter()
            .zip(&commands)
            .map(|(e, c)| ApplyItem {
                index: e.index,
                term: e.term,
                command: c.as_ref(),
            })
            .collect();
        self.entries_since_sync += fresh.len() as u64;
        self.bytes_since_sync += fresh.iter().map(|e| e.approx_size() as u64).sum::<u64>();
        let durable = self.entries_since_sync >= self.sync.every_entries
            || self.bytes_since_sync >= self.sync.every_bytes;
        let started = std::time::Instant::now();
        let results = match self.store.apply(&items, durable) {
            Ok(r) => r,
            Err(e) => {
                self.fatal(&e.to_string(), ctx);
                return;
            }
        };
        slow(
            if durable {
                "store sync"
            } else {
                "store commit"
            },
            started,
            self.node_id,
            fresh.len() as u64,
        );
        self.last_applied = last.0;
        self.last_applied_term = last.1;
        for (entry, result) in fresh.iter().zip(results) {
            if let Some((term, tx)) = self.waiters.remove(&entry.index) {
                let response = match result {
                    Some((result, index)) if term == entry.term => {
                        ClientResponse::Written { index, result }
                    }
                    // Another leader's entry took this index: ours was never committed and,
                    // living only at this index, never will be.
                    _ => ClientResponse::Unavailable {
                        reason: "leadership changed before the write committed; it was not applied"
                            .into(),
                        leader: None,
                    },
                };
                let _ = tx.send(response);
            }
        }
        debug!(
            "[node {}] applied through index {}",
            self.node_id, self.last_applied
        );
        // Waiters below last_applied were for entries already handled (cannot normally happen).
        let later = self.waiters.split_off(&(self.last_applied + 1));
        self.waiters = later;
        self.answer_reads();
        if let Some(o) = &self.observer {
            o.do_send(AppliedEntries {
                node: self.node_id,
                restored_to: None,
                entries: fresh,
            });
        }
        if durable {
            self.durable = self.last_applied;
            self.entries_since_sync = 0;
            self.bytes_since_sync = 0;
        }
        self.report(durable.then_some(self.last_applied));
    }
}

impl Handler<InstallChunk> for StateMachine {
    type Result = ();

    fn handle(&mut self, msg: InstallChunk, ctx: &mut Context<Self>) {
        self.apply_pending(ctx);
        if msg.snapshot.index <= self.last_applied {
            if let Some((_, i)) = self.install.take() {
                i.abandon();
            }
            self.reply_chunk(&msg, 0, true);
            return;
        }
        let current = self
            .install
            .as_ref()
            .is_some_and(|(stream, i)| *stream == msg.stream && i.point == msg.snapshot);
        if !current && msg.offset == 0 && !msg.data.is_empty() {
            // The first chunk of a new transfer: start over beside the current store.
            if let Some((_, i)) = self.install.take() {
                i.abandon();
            }
            match self.store.begin_install(msg.snapshot) {
                Ok(i) => {
                    info!(
                        "[node {}] receiving snapshot at index {} (term {}) from node {}",
                        self.node_id, msg.snapshot.index, msg.snapshot.term, msg.from
                    );
                    self.install_logged = 0;
                    self.install = Some((msg.stream, i));
                }
                Err(e) => {
                    self.fatal(&format!("cannot start a snapshot install: {}", e), ctx);
                    return;
                }
            }
        }
        let Some((stream, inst)) = self.install.as_mut() else {
            self.reply_chunk(&msg, 0, false);
            return;
        };
        if *stream != msg.stream || inst.point != msg.snapshot {
            // A chunk of a transfer this node is not installing (it restarted, or the
            // first chunk was lost): the leader starts over.
            self.reply_chunk(&msg, 0, false);
            return;
        }
        if inst.received != msg.offset || (msg.data.is_empty() && !msg.done) {
            // A duplicate, a gap after a lost chunk, or a keep-alive: say where we are.
            let at = inst.received;
            self.reply_chunk(&msg, at, false);
            return;
        }
        if !msg.data.is_empty() {
            if let Err(e) = inst.write_chunk(&msg.data) {
                warn!(
                    "[node {}] snapshot chunk at offset {} from node {} rejected: {}; starting over",
                    self.node_id, msg.offset, msg.from, e
                );
                if let Some((_, i)) = self.install.take() {
                    i.abandon();
                }
                self.reply_chunk(&msg, 0, false);
                return;
            }
        }
        let received = inst.received;
        if received >= self.install_logged + 64 * 1024 * 1024 {
            self.install_logged = received;
            info!(
                "[node {}] receiving snapshot at index {}: {} MiB stored",
                self.node_id,
                msg.snapshot.index,
                received / (1024 * 1024)
            );
        }
        if !msg.done {
            self.reply_chunk(&msg, received, false);
            return;
        }
        let Some((_, installer)) = self.install.take() else {
            return;
        };
        if self.finish_install(installer, ctx) {
            self.reply_chunk(&msg, received, true);
        }
    }
}

impl Handler<OpenSnapshot> for StateMachine {
    type Result = Option<SnapshotStream>;

    fn handle(&mut self, _: OpenSnapshot, ctx: &mut Context<Self>) -> Self::Result {
        self.apply_pending(ctx);
        let reader = match self.store.snapshot_reader() {
            Ok(r) => r,
            Err(e) => {
                error!("[node {}] cannot open a snapshot: {}", self.node_id, e);
                return None;
            }
        };
        let point = reader.point;
        let node = self.node_id;
        let chunk_bytes = self.snapshots.chunk_bytes;
        let chunks = if self.snapshots.threaded {
            let (tx, rx) = mpsc::channel(self.snapshots.window.max(1));
            let spawned = std::thread::Builder::new()
                .name(format!("snapshot-{}", point.index))
                .spawn(move || {
                    let r = reader.produce(chunk_bytes, |data, last| {
                        tx.blocking_send(Chunk { data, last }).is_ok()
                    });
                    if let Err(e) = r {
                        error!("[node {}] snapshot stream failed: {}", node, e);
                    }
                });
            if let Err(e) = spawned {
                error!("[node {}] cannot start a snapshot stream: {}", node, e);
                return None;
            }
            ChunkRx::Bounded(rx)
        } else {
            let (tx, rx) = mpsc::unbounded_channel();
            if let Err(e) = reader.produce(chunk_bytes, |data, last| {
                tx.send(Chunk { data, last }).is_ok()
            }) {
                error!("[node {}] snapshot stream failed: {}", node, e);
                return None;
            }
            ChunkRx::Filled(rx)
        };
        Some(SnapshotStream { point, chunks })
    }
}

impl Handler<AwaitApplied> for StateMachine {
    type Result = ();

    fn handle(&mut self, msg: AwaitApplied, _ctx: &mut Context<Self>) {
        if msg.index <= self.last_applied {
            let _ = msg.tx.send(ClientResponse::Unknown {
                reason: "entry applied before its outcome could be recorded".into(),
                leader: None,
            });
            return;
        }
        self.waiters.insert(msg.index, (msg.term, msg.tx));
    }
}

impl Handler<ReadAt> for StateMachine {
    type Result = ();

    fn handle(&mut self, msg: ReadAt, _ctx: &mut Context<Self>) {
        if msg.read_index <= self.last_applied {
            let _ = msg.tx.send(self.read(&msg.key));
        } else {
            self.reads
                .entry(msg.read_index)
                .or_default()
                .push((msg.key, msg.tx));
        }
    }
}

impl Handler<ReadLocal> for StateMachine {
    type Result = MessageResult<ReadLocal>;

    fn handle(&mut self, ReadLocal(key): ReadLocal, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.read(&key))
    }
}

impl Handler<Dump> for StateMachine {
    type Result = MessageResult<Dump>;

    fn handle(&mut self, _: Dump, ctx: &mut Context<Self>) -> Self::Result {
        self.apply_pending(ctx);
        let map = self.store.dump().unwrap_or_else(|e| {
            error!("[node {}] dump failed: {}", self.node_id, e);
            BTreeMap::new()
        });
        MessageResult((self.last_applied, map))
    }
}

impl Handler<StopStateMachine> for StateMachine {
    type Result = ();

    fn handle(&mut self, _: StopStateMachine, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
