//! InstallSnapshot on the follower side (Figure 13).

use super::*;

impl RaftCore {
    /// InstallSnapshot (Figure 13): chunks are assembled in order; a complete snapshot
    /// newer than our commit index replaces the state machine and the log it covers.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        term: Term,
        leader_id: NodeId,
        (index, snap_term): (LogIndex, Term),
        offset: u64,
        data: Vec<u8>,
        done: bool,
        read_seq: u64,
    ) {
        let reply = |core: &mut RaftCore, next_offset: u64, installed: bool| {
            let msg = Message::InstallSnapshotResponse {
                term: core.current_term,
                last_included_index: index,
                next_offset,
                installed,
                read_seq,
            };
            core.send(from, msg);
        };
        // Figure 13 rule 1: reply immediately if term < currentTerm.
        if term < self.current_term {
            reply(self, 0, false);
            return;
        }
        if !self.accept_leader(from, term, leader_id, "InstallSnapshot") {
            return;
        }
        // A snapshot we already cover (committed entries are never lost) is acknowledged
        // without being installed.
        if index <= self.commit_index {
            self.incoming = None;
            reply(self, 0, true);
            return;
        }
        // Rules 2-4: a chunk at offset 0 starts a new snapshot; others must continue it.
        let buf = match (&mut self.incoming, offset) {
            (_, 0) => {
                self.incoming = Some((index, snap_term, Vec::new()));
                self.incoming.as_mut().map(|x| &mut x.2)
            }
            (Some((i, t, buf)), off)
                if *i == index && *t == snap_term && buf.len() as u64 == off =>
            {
                Some(buf)
            }
            _ => None,
        };
        let Some(buf) = buf else {
            let have = match &self.incoming {
                Some((i, t, b)) if *i == index && *t == snap_term => b.len() as u64,
                _ => 0,
            };
            reply(self, have, false);
            return;
        };
        buf.extend_from_slice(&data);
        let len = buf.len() as u64;
        if !done {
            reply(self, len, false);
            return;
        }
        let Some((_, _, bytes)) = self.incoming.take() else {
            return;
        };
        let kv = match codec::decode(&bytes) {
            Ok(kv) => kv,
            Err(e) => {
                warn!(
                    "[node {} term {}] snapshot at {} from node {} does not decode: {}",
                    self.id, self.current_term, index, from, e
                );
                reply(self, 0, false);
                return;
            }
        };
        let snapshot = Arc::new(Snapshot {
            index,
            term: snap_term,
            members: self.members(),
            kv,
        });
        info!(
            "[node {} term {}] installs snapshot from node {} at index {} (term {}); log was {}..={}",
            self.id,
            self.current_term,
            from,
            index,
            snap_term,
            self.log.snapshot_index() + 1,
            self.log.last_index()
        );
        // Rules 6-7: keep entries after the snapshot only if our log agrees at its end.
        self.log.compact_to(index, snap_term);
        self.pending_batch();
        if let Some(batch) = self.pending.as_mut() {
            batch.snapshot = Some(snapshot.clone());
            // Entries still waiting to be written survive only if the log kept them; if
            // the log was discarded, durable entries after the snapshot go too.
            let log = &self.log;
            batch
                .entries
                .retain(|e| e.index > index && log.term_at(e.index) == Some(e.term));
            if log.last_index() == index {
                batch.truncate_from =
                    Some(batch.truncate_from.map_or(index + 1, |t| t.min(index + 1)));
            }
        }
        self.lower_durable_floor(index);
        if self.compact_on_persist.take().is_some() {
            debug!(
                "[node {} term {}] local snapshot superseded",
                self.id, self.current_term
            );
        }
        self.snapshot = Some(snapshot.clone());
        // Rule 8: reset the state machine from the snapshot.
        self.commit_index = self.commit_index.max(index);
        self.applied_sent = self.applied_sent.max(index);
        self.effects.push(Effect::RestoreStateMachine(snapshot));
        reply(self, len, true);
    }

    pub(super) fn members(&self) -> Vec<NodeId> {
        let mut m = self.peers.clone();
        m.push(self.id);
        m.sort_unstable();
        m
    }
}
