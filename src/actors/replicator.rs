//! A Replicator: one per peer, alive while this node leads. It owns that peer's
//! [`Progress`] (`next_index`, `match_index`, the back-off on refusals), sends
//! AppendEntries — heartbeats included — and reports progress to the consensus core.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use log::{debug, info};

use crate::codec;
use crate::net::Transport;
use crate::raft::{LogIndex, LogSlice, Message, NodeId, Progress, Snapshot, Term};

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
}

/// How a Replicator reaches the consensus core: where entries come from and where progress
/// goes.
pub struct CoreLink {
    pub log: Recipient<ReadLog>,
    pub progress: Recipient<Replicated>,
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
    pub snapshot_chunk: usize,
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
    transport: Arc<dyn Transport>,
    limits: ReplicationLimits,
    read_seq: u64,
    /// A ReadLog request to the core is outstanding.
    fetching: bool,
    /// Something asked for a send while fetching: send again afterwards.
    again: bool,
    heartbeat_due: bool,
    /// A snapshot being streamed to the peer (its next entries are compacted away).
    snapshot: Option<SnapshotSend>,
}

struct SnapshotSend {
    index: LogIndex,
    term: Term,
    data: Arc<Vec<u8>>,
    offset: u64,
    in_flight: bool,
}

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
            transport,
            limits,
            read_seq: 0,
            fetching: false,
            again: false,
            heartbeat_due: true,
            snapshot: None,
        }
    }

    fn start_snapshot(&mut self, snapshot: &Snapshot) {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.index == snapshot.index)
        {
            return;
        }
        match codec::encode(&snapshot.kv) {
            Ok(data) => {
                info!(
                    "[node {} term {}] sending snapshot at index {} ({} bytes) to peer {}",
                    self.leader,
                    self.term,
                    snapshot.index,
                    data.len(),
                    self.peer
                );
                self.snapshot = Some(SnapshotSend {
                    index: snapshot.index,
                    term: snapshot.term,
                    data: Arc::new(data),
                    offset: 0,
                    in_flight: false,
                });
            }
            Err(e) => log::error!(
                "[node {} term {}] cannot encode snapshot for peer {}: {}",
                self.leader,
                self.term,
                self.peer,
                e
            ),
        }
    }

    /// Tells the core how far the peer matches (and which read round it answered), then
    /// sends whatever is next.
    fn report_and_continue(&mut self, read_seq: u64, ctx: &mut Context<Self>) {
        self.core.do_send(Replicated {
            term: self.term,
            peer: self.peer,
            match_index: self.progress.match_index,
            read_seq,
        });
        self.pump(ctx);
    }

    /// Sends the next snapshot chunk (one at a time; a heartbeat tick resends a lost one).
    fn send_snapshot_chunk(&mut self) {
        let Some(s) = self.snapshot.as_mut() else {
            return;
        };
        if s.in_flight && !self.heartbeat_due {
            return;
        }
        let start = (s.offset as usize).min(s.data.len());
        let end = (start + self.limits.snapshot_chunk.max(1)).min(s.data.len());
        s.in_flight = true;
        self.heartbeat_due = false;
        self.transport.send(
            self.peer,
            Message::InstallSnapshot {
                term: self.term,
                leader_id: self.leader,
                last_included_index: s.index,
                last_included_term: s.term,
                offset: start as u64,
                data: s.data[start..end].to_vec(),
                done: end == s.data.len(),
                read_seq: self.read_seq,
            },
        );
    }

    /// Sends what the follower needs: entries if flow control allows, otherwise (when a
    /// heartbeat is due) an empty AppendEntries.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.snapshot.is_some() {
            self.send_snapshot_chunk();
            return;
        }
        if self.fetching {
            self.again = true;
            return;
        }
        let with_entries = self.progress.can_send_entries();
        if !with_entries && !self.heartbeat_due {
            return;
        }
        self.fetching = true;
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
                    // The Progress may have moved while we waited: only send if this slice
                    // still starts where the follower needs it.
                    if prev_log_index + 1 == act.progress.next_index || entries.is_empty() {
                        if entries.is_empty() && !act.heartbeat_due {
                            // Nothing new to ship and no heartbeat owed.
                        } else {
                            if let Some(last) = entries.last() {
                                act.progress.sent(last.index);
                            }
                            act.heartbeat_due = false;
                            act.transport.send(
                                act.peer,
                                Message::AppendEntries {
                                    term: act.term,
                                    leader_id: act.leader,
                                    prev_log_index,
                                    prev_log_term,
                                    entries,
                                    leader_commit,
                                    read_seq: act.read_seq,
                                },
                            );
                        }
                    } else {
                        act.again = true;
                    }
                }
                Ok(LogSlice::NeedSnapshot(snapshot)) => {
                    debug!(
                        "[node {} term {}] peer {} needs entries from {} that are compacted",
                        act.leader, act.term, act.peer, next_index
                    );
                    act.start_snapshot(&snapshot);
                    act.again = true;
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
            act.heartbeat_due = true;
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
        self.pump(ctx);
    }
}

impl Handler<PeerResponse> for Replicator {
    type Result = ();

    fn handle(&mut self, PeerResponse(msg): PeerResponse, ctx: &mut Context<Self>) {
        if let Message::InstallSnapshotResponse {
            term,
            last_included_index,
            next_offset,
            installed,
            read_seq,
        } = msg
        {
            if term != self.term {
                return;
            }
            if let Some(s) = self.snapshot.as_mut() {
                if s.index == last_included_index {
                    if installed {
                        info!(
                            "[node {} term {}] peer {} installed snapshot at index {}",
                            self.leader, self.term, self.peer, s.index
                        );
                        self.snapshot = None;
                        self.progress.on_success(last_included_index);
                    } else {
                        s.offset = next_offset;
                        s.in_flight = false;
                    }
                }
            } else if installed {
                self.progress.on_success(last_included_index);
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
