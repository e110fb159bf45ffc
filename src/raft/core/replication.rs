//! Log replication (§5.3): AppendEntries on the follower side and the leader's commit
//! rule (§5.4.2).

use super::*;

impl RaftCore {
    /// A message from the leader of our current term: follow it and restart the election
    /// timeout (Figure 2, Followers rule 2). False if we lead this term ourselves, which
    /// Election Safety says cannot happen: the message is then refused, not obeyed.
    pub(super) fn accept_leader(
        &mut self,
        from: NodeId,
        term: Term,
        leader_id: NodeId,
        kind: &str,
    ) -> bool {
        if self.role == Role::Leader {
            error!(
                "[node {} term {}] {} from node {} in my own term: ignored",
                self.id, self.current_term, kind, from
            );
            return false;
        }
        if self.role == Role::Candidate || self.leader_id != Some(leader_id) {
            info!(
                "[node {} term {}] follows leader node {}",
                self.id, self.current_term, leader_id
            );
            self.become_follower(term, Some(leader_id));
        }
        self.effects.push(Effect::ResetElectionTimer);
        true
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_append_entries(
        &mut self,
        from: NodeId,
        term: Term,
        leader_id: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: LogIndex,
        read_seq: u64,
    ) {
        // AppendEntries rule 1: reply false if term < currentTerm (tells a stale leader).
        if term < self.current_term {
            self.reply_append(from, false, 0, None, read_seq);
            return;
        }
        if !self.accept_leader(from, term, leader_id, "AppendEntries") {
            return;
        }

        // Entries at or below our snapshot are committed and already in it.
        let (mut prev_index, mut prev_term) = (prev_log_index, prev_log_term);
        let snap = self.log.snapshot_index();
        if prev_index < snap {
            let skip = ((snap - prev_index) as usize).min(entries.len());
            // The snapshot holds committed entries, which every current leader has: a
            // request that disagrees at the snapshot's last index is not from one.
            if let Some(at_snap) = entries[..skip].iter().find(|e| e.index == snap) {
                if at_snap.term != self.log.snapshot_term() {
                    warn!(
                        "[node {} term {}] AppendEntries from node {} disagrees with our snapshot at {}: ignored",
                        self.id, self.current_term, from, snap
                    );
                    return;
                }
            }
            entries.drain(..skip);
            prev_index = snap;
            prev_term = self.log.snapshot_term();
        }

        // AppendEntries rule 2: the log must hold prev_log_index with prev_log_term.
        match self.log.term_at(prev_index) {
            Some(t) if t == prev_term => {}
            found => {
                let hint = match found {
                    None => RejectHint {
                        rejected_index: prev_log_index,
                        conflict_term: None,
                        conflict_index: self.log.last_index() + 1,
                    },
                    Some(t) => RejectHint {
                        rejected_index: prev_log_index,
                        conflict_term: Some(t),
                        conflict_index: self
                            .log
                            .first_index_of_term_at(prev_index)
                            .max(self.commit_index + 1),
                    },
                };
                debug!(
                    "[node {} term {}] rejects AppendEntries at {}/{} from node {}: {:?}",
                    self.id, self.current_term, prev_log_index, prev_log_term, from, hint
                );
                self.reply_append(from, false, 0, Some(hint), read_seq);
                return;
            }
        }

        // AppendEntries rules 3 and 4: skip entries we already hold; truncate only at the
        // first entry whose term conflicts, so a stale or reordered request never erases
        // entries it does not replace.
        let mut last_new = prev_index;
        let mut appended = 0usize;
        for entry in entries {
            if entry.index != last_new + 1 {
                warn!(
                    "[node {} term {}] malformed AppendEntries from node {}: index {} after {}",
                    self.id, self.current_term, from, entry.index, last_new
                );
                return;
            }
            match self.log.term_at(entry.index) {
                Some(t) if t == entry.term => {}
                Some(_) => {
                    if entry.index <= self.commit_index {
                        error!(
                            "[node {} term {}] refuses to truncate committed index {} (commit {})",
                            self.id, self.current_term, entry.index, self.commit_index
                        );
                        return;
                    }
                    info!(
                        "[node {} term {}] truncates conflicting entries from index {}",
                        self.id, self.current_term, entry.index
                    );
                    self.truncate_from(entry.index);
                    self.append_persisted(entry);
                    appended += 1;
                }
                None => {
                    self.append_persisted(entry);
                    appended += 1;
                }
            }
            last_new += 1;
        }
        if appended > 0
            && leader_commit > self.log.last_index().saturating_sub(appended as u64) + 64
        {
            info!(
                "[node {} term {}] catching up: appended {} entries from leader node {}, now at index {} (leader commit {})",
                self.id,
                self.current_term,
                appended,
                from,
                self.log.last_index(),
                leader_commit
            );
        } else if appended > 0 {
            debug!(
                "[node {} term {}] appended {} entries from node {}, last index {}",
                self.id,
                self.current_term,
                appended,
                from,
                self.log.last_index()
            );
        }

        // AppendEntries rule 5: commitIndex = min(leaderCommit, index of last new entry).
        let new_commit = leader_commit.min(last_new);
        if new_commit > self.commit_index {
            self.set_commit_index(new_commit);
        }
        self.reply_append(from, true, last_new, None, read_seq);
    }

    pub(super) fn reply_append(
        &mut self,
        to: NodeId,
        success: bool,
        match_index: LogIndex,
        reject: Option<RejectHint>,
        read_seq: u64,
    ) {
        self.send(
            to,
            Message::AppendEntriesResponse {
                term: self.current_term,
                success,
                match_index,
                reject,
                read_seq,
            },
        );
    }

    /// Leaders rule 4: commit the highest N that a majority holds, but only when the entry
    /// at N is from the current term (§5.4.2, Figure 8). The leader counts its own copy
    /// only once it is durable.
    pub(super) fn maybe_commit(&mut self) {
        // One value per voter of the configuration in force; this leader's own copy only
        // if it is one of them (a leader removing itself is not).
        let own = self.durable_last_index.min(self.log.last_index());
        let mut matches: Vec<LogIndex> = self
            .membership()
            .voters
            .keys()
            .map(|p| {
                if *p == self.id {
                    own
                } else {
                    self.peer_match.get(p).copied().unwrap_or(0)
                }
            })
            .collect();
        let n = quorum_value(&mut matches);
        if n > self.commit_index && self.log.term_at(n) == Some(self.current_term) {
            self.set_commit_index(n);
            self.check_reads();
            self.step_down_if_removed();
        }
    }

    pub(super) fn set_commit_index(&mut self, index: LogIndex) {
        debug!(
            "[node {} term {}] commit index {} -> {}",
            self.id, self.current_term, self.commit_index, index
        );
        self.commit_index = index;
        if index > self.applied_sent {
            let entries = self.log.range(self.applied_sent + 1, index);
            if let Some(last) = entries.last() {
                self.applied_sent = last.index;
                self.effects.push(Effect::Apply(entries));
            }
        }
    }
}
