//! Snapshots and compaction (Figure 13). The state machine's store *is* the snapshot: a
//! leader streams a consistent read view of it to a follower whose next entries are
//! compacted away, and the log is compacted up to what the store holds durably.

use super::*;

impl RaftCore {
    /// InstallSnapshot (Figure 13), one chunk. The core decides whether the sender is the
    /// leader to obey; the bytes go to the state machine, which assembles the new store
    /// beside the old one and reports back through `on_snapshot_chunk`.
    pub(super) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        term: Term,
        leader_id: NodeId,
        snapshot: LogPoint,
        (offset, data, done): (u64, Vec<u8>, bool),
        (read_seq, stream): (u64, u64),
    ) {
        // Figure 13 rule 1: reply immediately if term < currentTerm.
        if term < self.current_term {
            self.reply_snapshot(from, snapshot.index, (0, false), (read_seq, stream));
            return;
        }
        if !self.accept_leader(from, term, leader_id, "InstallSnapshot") {
            return;
        }
        // A snapshot we already cover (committed entries are never lost) is acknowledged
        // without being installed.
        if snapshot.index <= self.commit_index {
            self.reply_snapshot(from, snapshot.index, (0, true), (read_seq, stream));
            return;
        }
        // Rules 2-5 (chunk offsets, assembling, done) are the state machine's.
        self.effects.push(Effect::InstallChunk {
            from,
            snapshot,
            offset,
            data,
            done,
            read_seq,
            stream,
        });
    }

    /// The state machine stored a chunk of `snapshot` from `from`: it holds `next_offset`
    /// bytes of it, and `installed` says the new store is in place (durably, replacing the
    /// old one), with `membership`: the configuration the snapshot holds, and the index it
    /// was recorded at. The answer to the leader leaves once the log agrees with the new
    /// store.
    pub fn on_snapshot_chunk(
        &mut self,
        from: NodeId,
        snapshot: LogPoint,
        (next_offset, installed): (u64, bool),
        membership: Option<(LogIndex, Membership)>,
        (read_seq, stream): (u64, u64),
    ) -> Vec<Effect> {
        if installed && snapshot.index > self.commit_index {
            let was = if self.log.last_index() > self.log.snapshot_index() {
                format!(
                    "log was {}..={}",
                    self.log.snapshot_index() + 1,
                    self.log.last_index()
                )
            } else {
                format!("empty log after {}", self.log.snapshot_index())
            };
            info!(
                "[node {} term {}] installed snapshot from node {} at index {} (term {}); {}",
                self.id, self.current_term, from, snapshot.index, snapshot.term, was
            );
            // Rules 6-7: keep entries after the snapshot only if our log agrees at its end.
            self.log.compact_to(snapshot.index, snapshot.term);
            self.disk_start = snapshot;
            self.disk_marks.clear();
            self.note_compacted(snapshot.index, membership);
            self.pending_batch();
            if let Some(batch) = self.pending.as_mut() {
                if batch.compact_to.is_none_or(|c| c.index < snapshot.index) {
                    batch.compact_to = Some(snapshot);
                }
                // Entries still waiting to be written survive only if the log kept them;
                // if the log was discarded, durable entries after the snapshot go too.
                let log = &self.log;
                batch
                    .entries
                    .retain(|e| e.index > snapshot.index && log.term_at(e.index) == Some(e.term));
                if log.last_index() == snapshot.index {
                    batch.truncate_from = Some(
                        batch
                            .truncate_from
                            .map_or(snapshot.index + 1, |t| t.min(snapshot.index + 1)),
                    );
                }
            }
            self.lower_durable_floor(snapshot.index);
            // Rule 8: the state machine already holds the snapshot's state.
            self.commit_index = self.commit_index.max(snapshot.index);
            self.applied_sent = self.applied_sent.max(snapshot.index);
            self.store_durable = self.store_durable.max(snapshot.index);
        }
        self.reply_snapshot(
            from,
            snapshot.index,
            (next_offset, installed),
            (read_seq, stream),
        );
        self.finish()
    }

    fn reply_snapshot(
        &mut self,
        to: NodeId,
        last_included_index: LogIndex,
        (next_offset, installed): (u64, bool),
        (read_seq, stream): (u64, u64),
    ) {
        let msg = Message::InstallSnapshotResponse {
            term: self.current_term,
            last_included_index,
            stream,
            next_offset,
            installed,
            read_seq,
        };
        self.send(to, msg);
    }

    /// Drops log entries the store holds durably, keeping `log_tail` of them for followers
    /// that lag a little, and never past a snapshot being streamed to a peer (it continues
    /// from the log after that snapshot). Only entries durable in the log itself are
    /// dropped, so the pending batch never holds entries below the compaction point.
    pub(super) fn maybe_compact(&mut self) {
        let base = self
            .store_durable
            .min(self.durable_last_index)
            .min(self.commit_index);
        // The tail is bounded in entries and in bytes (large values).
        let by_bytes = self
            .log
            .start_keeping_bytes(base, self.limits.log_tail_bytes);
        let mut point = base.saturating_sub(self.log_tail).max(by_bytes).min(base);
        if let Some(pin) = self.snapshot_pins.values().min() {
            point = point.min(*pin);
        }
        // Compacting a handful of small entries at a time is not worth a record.
        let from = self.log.snapshot_index();
        let step = (self.log_tail / 8).max(1);
        if point <= from
            || (point < from + step
                && self.log.bytes_between(from, point) < self.limits.log_tail_bytes / 8)
        {
            return;
        }
        let Some(term) = self.log.term_at(point) else {
            return;
        };
        let total = self.log.running_total(point);
        self.log.compact_to(point, term);
        self.note_compacted(point, None);
        debug!(
            "[node {} term {}] log compacted in memory to index {} ({} entries kept)",
            self.id,
            self.current_term,
            point,
            self.log.len()
        );
        self.disk_marks
            .push_back((LogPoint { index: point, term }, total));
        self.maybe_compact_disk(self.log.running_total(base), base);
    }

    /// Compacts the durable log to the oldest point the memory log was compacted to that
    /// leaves at most the disk tail (in bytes and entries) below `base`, the store's
    /// durable index, whose running byte total is `base_total`.
    fn maybe_compact_disk(&mut self, base_total: u64, base: LogIndex) {
        let bytes = self.limits.disk_tail_bytes;
        let entries = self.limits.disk_tail_entries;
        let within = |(p, total): &(LogPoint, u64)| {
            base_total.saturating_sub(*total) <= bytes && base.saturating_sub(p.index) <= entries
        };
        // Marks are oldest first: drop those too old, keeping the newest of them as the
        // point to compact to.
        let mut to = None;
        while let Some(mark) = self.disk_marks.front() {
            if within(mark) {
                break;
            }
            to = self.disk_marks.pop_front();
        }
        let Some((point, _)) = to else {
            return;
        };
        if point.index <= self.disk_start.index {
            return;
        }
        self.disk_start = point;
        debug!(
            "[node {} term {}] durable log compacted to index {}",
            self.id, self.current_term, point.index
        );
        let batch = self.pending_batch();
        if batch.compact_to.is_none_or(|c| c.index < point.index) {
            batch.compact_to = Some(point);
        }
    }
}
