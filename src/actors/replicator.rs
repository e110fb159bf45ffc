//! A Replicator: one per peer, alive while this node leads. It owns that peer's
//! [`Progress`] (`next_index`, `match_index`, the back-off on refusals), sends
//! AppendEntries — heartbeats included — and reports progress to the consensus core.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use actix::prelude::*;
use log::{debug, info, warn};

use super::log_store::ReadEntries;
use super::state_machine::{ChunkRx, OpenSnapshot, Polled, SnapshotStream};
use crate::net::Transport;
use crate::raft::{
    Entry, LogIndex, LogPoint, LogSlice, Message, NodeId, Progress, SnapshotChunk, SnapshotReply,
    SnapshotSend, Term,
};

/// A Replicator asks what to send from `next_index` on.
#[derive(Message)]
#[rtype(result = "LogSlice")]
pub struct ReadLog {
    pub term: Term,
    pub next_index: LogIndex,
    pub max_entries: usize,
    pub max_bytes: usize,
}

/// A Replicator's progress report.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Replicated {
    pub term: Term,
    pub peer: NodeId,
    pub match_index: LogIndex,
    pub read_seq: u64,
    /// A snapshot being streamed to the peer: (its index, bytes the peer has stored).
    pub snapshot: Option<(LogIndex, u64)>,
}

/// How a Replicator reaches the consensus core: where entries come from and where progress
/// goes.
pub struct CoreLink {
    pub log: Recipient<ReadLog>,
    pub progress: Recipient<Replicated>,
    /// The state machine, which streams snapshots from a consistent read view.
    pub snapshots: Recipient<OpenSnapshot>,
    /// The LogStore, which reads entries no longer held in memory from disk.
    pub disk: Recipient<ReadEntries>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// New entries were appended: send them if flow control allows.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

/// Send a heartbeat now, tagged with read round `read_seq`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HeartbeatNow {
    pub read_seq: u64,
}

/// The peer's answer to one of our AppendEntries (routed here by the core after its term
/// check).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerResponse(pub Message);

#[derive(Message)]
#[rtype(result = "()")]
pub struct StopReplicator;

/// Limits on one AppendEntries.
#[derive(Clone, Copy, Debug)]
pub struct ReplicationLimits {
    /// Snapshot chunks in flight at once.
    pub snapshot_window: usize,
    pub heartbeat: Duration,
    pub max_entries: usize,
    pub max_bytes: usize,
    pub max_inflight: usize,
}

pub struct Replicator {
    leader: NodeId,
    peer: NodeId,
    term: Term,
    progress: Progress,
    log: Recipient<ReadLog>,
    core: Recipient<Replicated>,
    metrics: Arc<crate::metrics::Metrics>,
    snapshots: Recipient<OpenSnapshot>,
    disk: Recipient<ReadEntries>,
    transport: Arc<dyn Transport>,
    limits: ReplicationLimits,
    read_seq: u64,
    /// A ReadLog request to the core (or a read of the durable log) is outstanding.
    fetching: bool,
    /// When the outstanding fetch was asked for.
    fetch_started: Instant,
    /// Something asked for a send while fetching: send again afterwards.
    again: bool,
    heartbeat_due: bool,
    /// A snapshot being streamed to the peer (its next entries are compacted away).
    snapshot: Option<Transfer>,
    /// A snapshot stream was asked for and has not arrived yet.
    opening: bool,
    /// Counts transfers, so a late chunk of an abandoned one is not mistaken for the next.
    transfer_seq: u64,
    /// The outstanding fetch is a read of the durable log (which may take a while, so
    /// heartbeats go out meanwhile).
    reading_disk: bool,
    /// Entries read from disk beyond what one AppendEntries carries, after the point
    /// given: sent as the window allows without reading again.
    read_ahead: Option<(LogPoint, VecDeque<Entry>)>,
    /// The highest commit index a slice told us.
    leader_commit: LogIndex,
    /// Nothing has gone to the peer since the last heartbeat tick: while a fetch is slow
    /// (a read of the durable log, or a ReadLog outstanding for half an interval or more),
    /// a keepalive may go out (once per tick). It does not pay the heartbeat owed
    /// (`heartbeat_due`): only a heartbeat at `next_index` shows whether the follower's
    /// log agrees.
    keepalive_due: bool,
    /// Heartbeat ticks in a row that found nothing sent since the one before.
    quiet_ticks: u32,
    quiet_log: crate::net::LogEvery,
}

/// A snapshot transfer: the pure sending state plus where its chunks come from.
struct Transfer {
    send: SnapshotSend,
    seq: u64,
    /// `None` while a receive is waiting on it.
    chunks: Option<ChunkRx>,
    /// The stream closed without its last chunk (the producer failed).
    broken: bool,
    started: Instant,
    logged_at: Instant,
    /// When the peer last confirmed storing more of it.
    progressed_at: Instant,
}

/// A transfer the peer has not advanced for this long is abandoned (the peer is gone or
/// cut off); the next attempt starts from a fresh read view.
const TRANSFER_STALL: Duration = Duration::from_secs(5);

impl Replicator {
    pub fn new(
        leader: NodeId,
        peer: NodeId,
        term: Term,
        next_index: LogIndex,
        core: CoreLink,
        transport: Arc<dyn Transport>,
        limits: ReplicationLimits,
    ) -> Self {
        Replicator {
            leader,
            peer,
            term,
            progress: Progress::new(next_index, limits.max_inflight),
            log: core.log,
            core: core.progress,
            metrics: core.metrics,
            snapshots: core.snapshots,
            disk: core.disk,
            transport,
            limits,
            read_seq: 0,
            fetching: false,
            again: false,
            heartbeat_due: true,
            snapshot: None,
            opening: false,
            transfer_seq: 0,
            reading_disk: false,
            fetch_started: Instant::now(),
            read_ahead: None,
            leader_commit: 0,
            keepalive_due: false,
            quiet_ticks: 0,
            quiet_log: crate::net::LogEvery::new(Duration::from_secs(5)),
        }
    }

    /// On a heartbeat tick: warns (once per interval) when nothing has gone to the peer
    /// for several intervals, which its election timer will not take long to notice.
    fn note_quiet(&mut self) {
        // Cleared by every AppendEntries since the last tick (a snapshot transfer watches
        // its own progress instead).
        if !self.keepalive_due || self.snapshot.is_some() {
            self.quiet_ticks = 0;
            return;
        }
        self.quiet_ticks += 1;
        if self.quiet_ticks == 3 {
            if let Some(held) = self.quiet_log.check() {
                warn!(
                    "[node {} term {}] nothing sent to peer {} for {} heartbeat intervals \
                     (fetching {}, reading disk {}, snapshot {}, can send entries {}; {} \
                     such reports held back)",
                    self.leader,
                    self.term,
                    self.peer,
                    self.quiet_ticks,
                    self.fetching,
                    self.reading_disk,
                    self.snapshot.is_some() || self.opening,
                    self.progress.can_send_entries(),
                    held
                );
            }
        }
    }

    /// Asks the state machine for a snapshot stream (the peer's next entries are compacted).
    fn open_snapshot(&mut self, ctx: &mut Context<Self>) {
        if self.opening || self.snapshot.is_some() {
            return;
        }
        self.opening = true;
        let ask = self.snapshots.send(OpenSnapshot);
        ctx.spawn(fut::wrap_future::<_, Self>(ask).map(|res, act, ctx| {
            act.opening = false;
            match res {
                Ok(Some(stream)) => act.start_transfer(stream, ctx),
                Ok(None) => warn!(
                    "[node {} term {}] no snapshot available for peer {}; retrying",
                    act.leader, act.term, act.peer
                ),
                Err(_) => ctx.stop(),
            }
        }));
    }

    fn start_transfer(&mut self, stream: SnapshotStream, ctx: &mut Context<Self>) {
        info!(
            "[node {} term {}] sending snapshot at index {} (term {}) to peer {}",
            self.leader, self.term, stream.point.index, stream.point.term, self.peer
        );
        self.transfer_seq += 1;
        let now = Instant::now();
        self.snapshot = Some(Transfer {
            // Unique per leader term and transfer, so the follower tells a new transfer
            // from a resent chunk of the current one.
            send: SnapshotSend::new(
                stream.point,
                (self.term << 32) | (self.transfer_seq & 0xffff_ffff),
                self.limits.snapshot_window,
            ),
            seq: self.transfer_seq,
            chunks: Some(stream.chunks),
            broken: false,
            started: now,
            logged_at: now,
            progressed_at: now,
        });
        self.report(0);
        self.pump(ctx);
    }

    /// Abandons the transfer; the next pump finds out again what the peer needs.
    fn end_transfer(&mut self) {
        self.snapshot = None;
    }

    fn send_chunk(&self, chunk: SnapshotChunk) {
        let Some(t) = self.snapshot.as_ref() else {
            return;
        };
        self.metrics
            .snapshot_sent_bytes
            .inc_by(chunk.data.len() as u64);
        self.transport.send(
            self.peer,
            Message::InstallSnapshot {
                term: self.term,
                leader_id: self.leader,
                last_included_index: t.send.point.index,
                last_included_term: t.send.point.term,
                offset: chunk.offset,
                data: chunk.data,
                done: chunk.last,
                read_seq: self.read_seq,
                stream: t.send.stream,
            },
        );
    }

    /// Moves chunks from the stream to the wire while the window has room; waits for the
    /// producer when it is behind. On a heartbeat tick, resends after a stall (or sends a
    /// keep-alive).
    fn pump_snapshot(&mut self, ctx: &mut Context<Self>) {
        let tick = std::mem::take(&mut self.heartbeat_due);
        let mut out = Vec::new();
        let mut wait = false;
        if tick
            && self
                .snapshot
                .as_ref()
                .is_some_and(|t| t.progressed_at.elapsed() > TRANSFER_STALL)
        {
            warn!(
                "[node {} term {}] snapshot transfer to peer {} made no progress for {:?}; abandoned",
                self.leader, self.term, self.peer, TRANSFER_STALL
            );
            self.end_transfer();
            self.report(0);
            return;
        }
        if let Some(t) = self.snapshot.as_mut() {
            if tick {
                out.extend(t.send.on_tick());
            }
            while t.send.wants_chunk() && !t.broken {
                let Some(rx) = t.chunks.as_mut() else {
                    break; // a receive is already waiting
                };
                match rx.try_recv() {
                    Polled::Chunk(c) => out.push(t.send.push_chunk(c.data, c.last)),
                    Polled::NotYet => {
                        wait = true;
                        break;
                    }
                    Polled::Ended => t.broken = true,
                }
            }
        }
        for chunk in out {
            self.send_chunk(chunk);
        }
        if self.snapshot.as_ref().is_some_and(|t| t.broken) {
            warn!(
                "[node {} term {}] snapshot stream for peer {} ended early; starting over",
                self.leader, self.term, self.peer
            );
            self.end_transfer();
            return;
        }
        if wait {
            self.wait_for_chunk(ctx);
        }
    }

    /// Waits for the producer's next chunk without blocking the actor.
    fn wait_for_chunk(&mut self, ctx: &mut Context<Self>) {
        let Some(t) = self.snapshot.as_mut() else {
            return;
        };
        let Some(mut rx) = t.chunks.take() else {
            return;
        };
        let seq = t.seq;
        let recv = async move {
            let chunk = rx.recv().await;
            (rx, chunk)
        };
        ctx.spawn(
            fut::wrap_future::<_, Self>(recv).map(move |(rx, chunk), act, ctx| {
                let Some(t) = act.snapshot.as_mut().filter(|t| t.seq == seq) else {
                    return;
                };
                t.chunks = Some(rx);
                match chunk {
                    Some(c) => {
                        let c = t.send.push_chunk(c.data, c.last);
                        act.send_chunk(c);
                    }
                    None => t.broken = true,
                }
                act.pump(ctx);
            }),
        );
    }

    fn log_transfer_progress(&mut self) {
        let Some(t) = self.snapshot.as_mut() else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(t.logged_at) < Duration::from_secs(2) {
            return;
        }
        t.logged_at = now;
        let secs = now.duration_since(t.started).as_secs_f64().max(0.001);
        info!(
            "[node {} term {}] sending snapshot at index {} to peer {}: {} MiB stored, {:.0} MB/s",
            self.leader,
            self.term,
            t.send.point.index,
            self.peer,
            t.send.acked() / (1024 * 1024),
            t.send.acked() as f64 / secs / 1e6
        );
    }

    /// Tells the core how far the peer matches, which read round it answered and how a
    /// snapshot transfer stands.
    fn report(&self, read_seq: u64) {
        self.core.do_send(Replicated {
            term: self.term,
            peer: self.peer,
            match_index: self.progress.match_index,
            read_seq,
            // Reported (and so keeping the leader from compacting past it) only once the
            // peer has stored part of it: a peer that never answers pins nothing.
            snapshot: self
                .snapshot
                .as_ref()
                .filter(|t| t.send.acked() > 0)
                .map(|t| (t.send.point.index, t.send.acked())),
        });
    }

    /// Reports to the core, then sends whatever is next.
    fn report_and_continue(&mut self, read_seq: u64, ctx: &mut Context<Self>) {
        self.report(read_seq);
        self.pump(ctx);
    }

    /// Sends what the follower needs: entries if flow control allows, otherwise (when a
    /// heartbeat is due) an empty AppendEntries.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.snapshot.is_some() {
            self.pump_snapshot(ctx);
            return;
        }
        if self.opening {
            return;
        }
        if self.fetching {
            // A fetch may take a while: a read of the durable log does, and a ReadLog waits
            // in the core's mailbox behind every client request queued there (at the start
            // of a burst of 2,000 clients, long enough for followers to time out and elect).
            // The heartbeat must not wait with it.
            // And whatever the fetches do, a whole interval without sending anything is one
            // too many (a fetch answered and asked again before each tick looks young).
            let slow = self.reading_disk
                || self.quiet_ticks > 0
                || self.fetch_started.elapsed() >= self.limits.heartbeat / 2;
            if slow && self.keepalive_due {
                self.keepalive();
            }
            self.again = true;
            return;
        }
        let mut sent = false;
        while self.progress.can_send_entries() && self.send_read_ahead() {
            sent = true;
        }
        if sent {
            return;
        }
        let with_entries = self.progress.can_send_entries();
        if !with_entries && !self.heartbeat_due {
            return;
        }
        self.fetching = true;
        self.fetch_started = Instant::now();
        let next_index = self.progress.next_index;
        let max_entries = if with_entries {
            self.limits.max_entries
        } else {
            0
        };
        let ask = self.log.send(ReadLog {
            term: self.term,
            next_index,
            max_entries,
            max_bytes: self.limits.max_bytes,
        });
        ctx.spawn(fut::wrap_future::<_, Self>(ask).map(move |res, act, ctx| {
            act.fetching = false;
            match res {
                Ok(LogSlice::Entries {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                }) => {
                    let prev = LogPoint {
                        index: prev_log_index,
                        term: prev_log_term,
                    };
                    act.send_entries(prev, entries, leader_commit);
                }
                Ok(LogSlice::OnDisk {
                    from,
                    prev,
                    through,
                    leader_commit,
                }) => {
                    act.read_from_disk(from, prev, through, leader_commit, max_entries, ctx);
                    return;
                }
                Ok(LogSlice::NeedSnapshot) => {
                    debug!(
                        "[node {} term {}] peer {} needs entries from {} that are compacted",
                        act.leader, act.term, act.peer, next_index
                    );
                    act.open_snapshot(ctx);
                }
                Ok(LogSlice::NotLeader) | Err(_) => {
                    ctx.stop();
                    return;
                }
            }
            if std::mem::take(&mut act.again) {
                act.pump(ctx);
            }
        }));
    }
}

impl Replicator {
    /// Sends `entries` after `prev` (or a heartbeat when there are none and one is due),
    /// if the follower still needs them from there: the Progress may have moved while
    /// they were fetched.
    fn send_entries(&mut self, prev: LogPoint, entries: Vec<Entry>, leader_commit: LogIndex) {
        self.leader_commit = self.leader_commit.max(leader_commit);
        if prev.index + 1 != self.progress.next_index && !entries.is_empty() {
            self.again = true;
            return;
        }
        if entries.is_empty() && !self.heartbeat_due {
            return; // nothing new to ship and no heartbeat owed
        }
        if let Some(last) = entries.last() {
            self.progress.sent(last.index);
        }
        self.transmit(prev, entries, leader_commit);
    }

    /// Puts one AppendEntries on the wire (which also serves as the heartbeat owed).
    fn transmit(&mut self, prev: LogPoint, entries: Vec<Entry>, leader_commit: LogIndex) {
        self.heartbeat_due = false;
        self.keepalive_due = false;
        self.metrics
            .append_entries_sent
            .with_label_values(&[&self.peer.to_string()])
            .inc();
        self.transport.send(
            self.peer,
            Message::AppendEntries {
                term: self.term,
                leader_id: self.leader,
                prev_log_index: prev.index,
                prev_log_term: prev.term,
                entries,
                leader_commit,
                read_seq: self.read_seq,
            },
        );
    }

    /// Leaves in `entries` what one AppendEntries carries (at least one entry) and
    /// returns the rest.
    fn split_batch(&self, entries: &mut Vec<Entry>) -> VecDeque<Entry> {
        let mut bytes = 0usize;
        let mut keep = 0usize;
        for e in entries.iter().take(self.limits.max_entries.max(1)) {
            bytes += e.approx_size();
            if keep > 0 && bytes > self.limits.max_bytes {
                break;
            }
            keep += 1;
        }
        entries.split_off(keep).into()
    }

    /// Sends the next AppendEntries from entries read ahead from disk, if they continue
    /// where the follower needs them. False if there is nothing to send from there.
    fn send_read_ahead(&mut self) -> bool {
        let Some((prev, mut rest)) = self.read_ahead.take() else {
            return false;
        };
        if prev.index + 1 != self.progress.next_index || rest.is_empty() {
            return false; // the follower moved elsewhere (refused, or caught up)
        }
        let mut entries: Vec<Entry> = rest.drain(..).collect();
        let more = self.split_batch(&mut entries);
        if let (Some(last), false) = (entries.last(), more.is_empty()) {
            self.read_ahead = Some((last.point(), more));
        }
        let commit = self.leader_commit;
        self.send_entries(prev, entries, commit);
        true
    }

    /// A heartbeat that needs no log read, for while one is outstanding: it claims no
    /// match (the point before is index 0, which every log holds), so a follower only
    /// learns that this leader is alive (and answers the read round).
    fn keepalive(&mut self) {
        let owed = self.heartbeat_due;
        let commit = self.leader_commit;
        self.transmit(LogPoint::default(), Vec::new(), commit);
        self.heartbeat_due = owed;
    }

    /// The follower needs committed entries that are only on disk now: the LogStore reads
    /// up to `max_entries` of them (from `from - 1` when the term before `from` is not
    /// known), then they go out like any others; with `max_entries` 0 (flow control
    /// allows only a heartbeat) just that heartbeat. If the disk no longer holds them
    /// either, a snapshot follows.
    fn read_from_disk(
        &mut self,
        from: LogIndex,
        prev: Option<LogPoint>,
        through: LogIndex,
        leader_commit: LogIndex,
        max_entries: usize,
        ctx: &mut Context<Self>,
    ) {
        if let (Some(p), 0) = (prev, max_entries) {
            self.send_entries(p, Vec::new(), leader_commit);
            if std::mem::take(&mut self.again) {
                self.pump(ctx);
            }
            return;
        }
        self.fetching = true;
        self.fetch_started = Instant::now();
        self.reading_disk = true;
        self.read_ahead = None;
        let start = if prev.is_some() { from } else { from - 1 };
        let wanted = (through + 1).saturating_sub(start) as usize;
        let extra = usize::from(prev.is_none());
        // Enough for the whole window: one read (a batch is read whole, however few of
        // its entries are wanted) then feeds several AppendEntries.
        let window = self.limits.max_inflight.max(1);
        let ask = self.disk.send(ReadEntries {
            from: start,
            max_entries: (max_entries.saturating_mul(window) + extra).min(wanted),
            max_bytes: self.limits.max_bytes.saturating_mul(window),
        });
        ctx.spawn(fut::wrap_future::<_, Self>(ask).map(move |res, act, ctx| {
            act.fetching = false;
            act.reading_disk = false;
            let entries = match res {
                Ok(Ok(Some(mut entries))) => match prev {
                    Some(p) => Some((p, entries)),
                    None if entries.first().is_some_and(|e| e.index + 1 == from) => {
                        let first = entries.remove(0);
                        Some((first.point(), entries))
                    }
                    None => None,
                },
                Ok(Ok(None)) => None,
                Ok(Err(e)) => {
                    warn!(
                        "[node {} term {}] cannot read entries from {} for peer {} from disk: {}",
                        act.leader, act.term, from, act.peer, e
                    );
                    None
                }
                Err(_) => {
                    ctx.stop();
                    return;
                }
            };
            match entries {
                Some((p, mut entries)) => {
                    entries.retain(|e| e.index <= through);
                    if !entries.is_empty() {
                        debug!(
                            "[node {} term {}] sending {} entries from {} to peer {} from disk",
                            act.leader,
                            act.term,
                            entries.len(),
                            from,
                            act.peer
                        );
                    }
                    let rest = act.split_batch(&mut entries);
                    if let (Some(last), false) = (entries.last(), rest.is_empty()) {
                        act.read_ahead = Some((last.point(), rest));
                    }
                    act.send_entries(p, entries, leader_commit);
                }
                None => {
                    debug!(
                        "[node {} term {}] peer {} needs entries from {} that are compacted on disk too",
                        act.leader, act.term, act.peer, from
                    );
                    act.open_snapshot(ctx);
                }
            }
            if std::mem::take(&mut act.again) {
                act.pump(ctx);
            }
        }));
    }
}

impl Actor for Replicator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        debug!(
            "[node {} term {}] replicator for peer {} starts at next_index {}",
            self.leader, self.term, self.peer, self.progress.next_index
        );
        // An immediate heartbeat asserts the new leadership (§5.2), then one per interval.
        self.pump(ctx);
        ctx.run_interval(self.limits.heartbeat, |act, ctx| {
            act.progress.on_heartbeat_tick();
            act.note_quiet();
            act.heartbeat_due = true;
            act.keepalive_due = true;
            act.pump(ctx);
        });
    }
}

impl Handler<Wake> for Replicator {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.pump(ctx);
    }
}

impl Handler<HeartbeatNow> for Replicator {
    type Result = ();

    fn handle(&mut self, msg: HeartbeatNow, ctx: &mut Context<Self>) {
        self.read_seq = self.read_seq.max(msg.read_seq);
        self.heartbeat_due = true;
        self.keepalive_due = true;
        self.pump(ctx);
    }
}

impl Handler<PeerResponse> for Replicator {
    type Result = ();

    fn handle(&mut self, PeerResponse(msg): PeerResponse, ctx: &mut Context<Self>) {
        if let Message::InstallSnapshotResponse {
            term,
            last_included_index,
            stream,
            next_offset,
            installed,
            read_seq,
        } = msg
        {
            if term != self.term {
                return;
            }
            let reply = self
                .snapshot
                .as_mut()
                .filter(|t| t.send.point.index == last_included_index && t.send.stream == stream)
                .map(|t| {
                    let before = t.send.acked();
                    let reply = t.send.on_response(next_offset, installed);
                    if t.send.acked() > before {
                        t.progressed_at = Instant::now();
                    }
                    reply
                });
            match reply {
                Some(SnapshotReply::Installed) => {
                    info!(
                        "[node {} term {}] peer {} installed snapshot at index {}",
                        self.leader, self.term, self.peer, last_included_index
                    );
                    self.end_transfer();
                    self.progress.on_success(last_included_index);
                }
                Some(SnapshotReply::Restart) => {
                    info!(
                        "[node {} term {}] peer {} lost its partial snapshot; starting over",
                        self.leader, self.term, self.peer
                    );
                    self.end_transfer();
                }
                Some(SnapshotReply::Progress) => self.log_transfer_progress(),
                // Not the transfer in progress: an old one, or the peer already had it.
                None if installed && self.snapshot.is_none() => {
                    self.progress.on_success(last_included_index);
                }
                None => {}
            }
            self.report_and_continue(read_seq, ctx);
            return;
        }
        let Message::AppendEntriesResponse {
            term,
            success,
            match_index,
            reject,
            read_seq,
        } = msg
        else {
            return;
        };
        if term != self.term {
            return;
        }
        if success {
            self.progress.on_success(match_index);
        } else if let Some(hint) = reject {
            self.metrics
                .append_entries_rejected
                .with_label_values(&[&self.peer.to_string()])
                .inc();
            if self.progress.on_reject(&hint) {
                debug!(
                    "[node {} term {}] peer {} refused at {}: next_index now {}",
                    self.leader,
                    self.term,
                    self.peer,
                    hint.rejected_index,
                    self.progress.next_index
                );
            }
        }
        self.report_and_continue(read_seq, ctx);
    }
}

impl Handler<StopReplicator> for Replicator {
    type Result = ();

    fn handle(&mut self, _: StopReplicator, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::storage::StorageError;

    /// Records what the Replicator puts on the wire.
    #[derive(Default)]
    struct Wire(Mutex<Vec<(NodeId, Message)>>);

    impl Transport for Wire {
        fn send(&self, to: NodeId, msg: Message) {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((to, msg));
        }
    }

    impl Wire {
        fn take(&self) -> Vec<(NodeId, Message)> {
            std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
        }
    }

    /// A consensus core whose mailbox is backed up: a `ReadLog` is answered only after
    /// `delay` (forever when `None`), as when a thousand client requests are queued ahead
    /// of it.
    struct SlowCore {
        delay: Option<Duration>,
        tail: LogPoint,
        /// Answer with an entry where the Replicator did not ask (so it asks again).
        misplaced: bool,
    }

    impl Actor for SlowCore {
        type Context = Context<Self>;
    }

    impl Handler<ReadLog> for SlowCore {
        type Result = ResponseFuture<LogSlice>;

        fn handle(&mut self, msg: ReadLog, _: &mut Context<Self>) -> Self::Result {
            let (delay, tail, misplaced) = (self.delay, self.tail, self.misplaced);
            Box::pin(async move {
                match delay {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
                assert_eq!(msg.next_index, tail.index + 1);
                if misplaced {
                    let entry = Entry {
                        term: tail.term,
                        index: tail.index + 6,
                        payload: crate::raft::Payload::Noop,
                    };
                    return LogSlice::Entries {
                        prev_log_index: tail.index + 5,
                        prev_log_term: tail.term,
                        entries: vec![entry],
                        leader_commit: tail.index,
                    };
                }
                LogSlice::Entries {
                    prev_log_index: tail.index,
                    prev_log_term: tail.term,
                    entries: Vec::new(),
                    leader_commit: tail.index,
                }
            })
        }
    }

    impl Handler<Replicated> for SlowCore {
        type Result = ();

        fn handle(&mut self, _: Replicated, _: &mut Context<Self>) {}
    }

    impl Handler<OpenSnapshot> for SlowCore {
        type Result = Option<SnapshotStream>;

        fn handle(&mut self, _: OpenSnapshot, _: &mut Context<Self>) -> Self::Result {
            None
        }
    }

    impl Handler<ReadEntries> for SlowCore {
        type Result = Result<Option<Vec<Entry>>, StorageError>;

        fn handle(&mut self, _: ReadEntries, _: &mut Context<Self>) -> Self::Result {
            Ok(None)
        }
    }

    const HEARTBEAT: Duration = Duration::from_millis(50);

    /// Starts a Replicator of leader 1 (term 3) for peer 2, whose log ends at index 10,
    /// against `core`; lets `run` pass in paused time; returns what went on the wire.
    fn replicate(core: SlowCore, run: Duration) -> Vec<Message> {
        let system = System::new();
        system.block_on(async move {
            tokio::time::pause();
            let next = core.tail.index + 1;
            let core = core.start();
            let wire = Arc::new(Wire::default());
            let limits = ReplicationLimits {
                snapshot_window: 4,
                heartbeat: HEARTBEAT,
                max_entries: 64,
                max_bytes: 1 << 20,
                max_inflight: 4,
            };
            let link = CoreLink {
                log: core.clone().recipient(),
                progress: core.clone().recipient(),
                snapshots: core.clone().recipient(),
                disk: core.clone().recipient(),
                metrics: Arc::new(crate::metrics::Metrics::new(1)),
            };
            let r = Replicator::new(1, 2, 3, next, link, wire.clone(), limits).start();
            tokio::time::sleep(run).await;
            r.do_send(StopReplicator);
            wire.take()
                .into_iter()
                .map(|(to, m)| {
                    assert_eq!(to, 2);
                    m
                })
                .collect()
        })
    }

    /// (prev_log_index, entries) of each AppendEntries sent, in order.
    fn appends(sent: &[Message]) -> Vec<(LogIndex, usize)> {
        sent.iter()
            .filter_map(|m| match m {
                Message::AppendEntries {
                    term: 3,
                    leader_id: 1,
                    prev_log_index,
                    entries,
                    ..
                } => Some((*prev_log_index, entries.len())),
                _ => None,
            })
            .collect()
    }

    /// The bug behind two elections at the start of an overload burst: while a `ReadLog`
    /// waited in the core's mailbox, the Replicator sent nothing at all, and the follower
    /// timed out. Now a keepalive (after index 0, so it claims no match) goes out on each
    /// heartbeat tick while the fetch is outstanding.
    #[test]
    fn heartbeats_keep_flowing_while_the_core_does_not_answer() {
        let core = SlowCore {
            delay: None,
            tail: LogPoint { index: 10, term: 3 },
            misplaced: false,
        };
        let sent = appends(&replicate(core, HEARTBEAT * 10 + HEARTBEAT / 2));
        assert!(
            sent.len() >= 9,
            "one keepalive per heartbeat tick expected while the ReadLog is outstanding, got {sent:?}"
        );
        assert!(
            sent.iter().all(|&(prev, n)| prev == 0 && n == 0),
            "a keepalive claims no match and carries no entries: {sent:?}"
        );
    }

    /// Whatever the core answers, a whole heartbeat interval without sending anything is
    /// not repeated: here every fetch is answered within 20 ms with entries the Replicator
    /// did not ask for, so it asks again at once and each tick finds a young fetch.
    #[test]
    fn a_quiet_interval_is_followed_by_a_keepalive_whatever_the_fetches_do() {
        let core = SlowCore {
            delay: Some(Duration::from_millis(20)),
            tail: LogPoint { index: 10, term: 3 },
            misplaced: true,
        };
        let sent = appends(&replicate(core, HEARTBEAT * 10 + HEARTBEAT / 2));
        assert!(
            sent.len() >= 4,
            "a keepalive at least every second tick expected, got {sent:?}"
        );
        assert!(
            sent.iter().all(|&(prev, n)| prev == 0 && n == 0),
            "{sent:?}"
        );
    }

    /// A core that answers well within half an interval gets no keepalives: every tick's
    /// heartbeat is a real one, at the point the follower's log must agree with.
    #[test]
    fn a_prompt_core_gets_real_heartbeats_only() {
        let core = SlowCore {
            delay: Some(HEARTBEAT / 10),
            tail: LogPoint { index: 10, term: 3 },
            misplaced: false,
        };
        let sent = appends(&replicate(core, HEARTBEAT * 10 + HEARTBEAT / 2));
        assert!(
            sent.len() >= 9,
            "a heartbeat per tick expected, got {sent:?}"
        );
        assert!(
            sent.iter().all(|&(prev, n)| prev == 10 && n == 0),
            "heartbeats at the follower's next_index: {sent:?}"
        );
    }
}
