//! The persistence pipeline: what must be durable before which message may leave.

use super::*;

impl RaftCore {
    pub(super) fn pending_batch(&mut self) -> &mut PersistBatch {
        if self.pending.is_none() {
            self.last_assigned_seq += 1;
            self.pending = Some(PersistBatch {
                seq: self.last_assigned_seq,
                ..Default::default()
            });
        }
        self.pending.get_or_insert_with(PersistBatch::default)
    }

    pub(super) fn persist_hard_state(&mut self) {
        let hs = self.hard_state();
        self.pending_batch().hard_state = Some(hs);
    }

    pub(super) fn append_own(&mut self, payload: Payload) -> LogIndex {
        let entry = Entry {
            term: self.current_term,
            index: self.log.last_index() + 1,
            payload,
        };
        let index = entry.index;
        self.append_persisted(entry);
        index
    }

    pub(super) fn append_persisted(&mut self, entry: Entry) {
        self.note_appended(&entry);
        self.log.append(entry.clone());
        self.pending_batch().entries.push(entry);
    }

    /// Some durable entries above `index` are about to be removed by the pending batch.
    pub(super) fn lower_durable_floor(&mut self, index: LogIndex) {
        self.durable_last_index = self.durable_last_index.min(index);
        self.pending_floor = Some(self.pending_floor.map_or(index, |f| f.min(index)));
    }

    pub(super) fn truncate_from(&mut self, from: LogIndex) {
        self.log.truncate_from(from);
        self.note_truncated(from);
        self.lower_durable_floor(from - 1);
        let batch = self.pending_batch();
        match batch.entries.first().map(|e| e.index) {
            Some(first) if from >= first => {
                batch.entries.retain(|e| e.index < from);
            }
            _ => {
                batch.entries.clear();
                batch.truncate_from = Some(batch.truncate_from.map_or(from, |t| t.min(from)));
            }
        }
    }

    /// Sends `msg` once everything persisted so far is durable (Figure 2: "respond after
    /// persisting"); messages leave in the order they were produced.
    pub(super) fn send(&mut self, to: NodeId, msg: Message) {
        if self.last_assigned_seq <= self.durable_seq && self.outbox.is_empty() {
            self.effects.push(Effect::Send { to, msg });
        } else {
            self.outbox.push_back((self.last_assigned_seq, to, msg));
        }
    }

    pub(super) fn flush_persist(&mut self) {
        if self.inflight.is_some() {
            return;
        }
        let Some(mut batch) = self.pending.take() else {
            return;
        };
        if batch.is_empty() {
            // Nothing to write: treat as durable immediately.
            self.durable_seq = batch.seq;
            let ready: Vec<_> = self.outbox.drain(..).collect();
            for (_, to, msg) in ready {
                self.effects.push(Effect::Send { to, msg });
            }
            return;
        }
        batch.last_index = self.log.last_index();
        self.pending_floor = None;
        self.inflight = Some(batch.seq);
        self.inflight_last_index = batch.last_index;
        self.effects.push(Effect::Persist(batch));
    }
}
