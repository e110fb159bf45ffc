//! Snapshots on the StateMachine: streaming a consistent read view of the store to a
//! leader's Replicator, and installing a leader's stream on a follower (the new store is
//! built beside the old one and swapped in atomically).

use actix::prelude::*;
use log::{error, info, warn};
use tokio::sync::mpsc;

use super::{AppliedEntries, StateMachine};
use crate::kv::{ClientResponse, Installer};
use crate::raft::{LogIndex, LogPoint, Membership, NodeId};

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
    /// The configuration the installed store holds, and the index it was recorded at.
    pub membership: Option<(LogIndex, Membership)>,
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

impl StateMachine {
    fn reply_chunk(&mut self, msg: &InstallChunk, next_offset: u64, installed: bool) {
        // The configuration the installed store holds goes to the core with it.
        let membership = if installed {
            match self.store.membership() {
                Ok(m) => m,
                Err(e) => {
                    error!(
                        "[node {}] reading the installed membership: {}",
                        self.node_id, e
                    );
                    None
                }
            }
        } else {
            None
        };
        if let Some(l) = &self.links {
            l.chunks.do_send(ChunkStored {
                from: msg.from,
                snapshot: msg.snapshot,
                next_offset,
                installed,
                membership,
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
                self.report(true);
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
            if let Some(l) = &self.links {
                l.metrics
                    .snapshot_received_bytes
                    .inc_by(msg.data.len() as u64);
            }
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
