//! A leader's knowledge of one follower: `next_index` and `match_index` (Figure 2, "Volatile
//! state on leaders"), and how to back `next_index` off when the follower refuses.
//! Each Replicator actor owns exactly one `Progress`.

use super::message::RejectHint;
use super::types::LogIndex;

/// How the leader is currently talking to the follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Looking for the point where the logs agree: one AppendEntries at a time.
    Probe,
    /// The logs agree up to `match_index`: stream entries, several requests in flight.
    Replicate,
}

/// `next_index`/`match_index` for one peer plus the flow control around them.
#[derive(Clone, Debug)]
pub struct Progress {
    pub next_index: LogIndex,
    pub match_index: LogIndex,
    pub state: ProgressState,
    /// Last index carried by each AppendEntries in flight (Replicate state).
    inflight: Vec<LogIndex>,
    max_inflight: usize,
    /// A probe is in flight; wait for its answer or the next heartbeat before probing again.
    probe_sent: bool,
}

impl Progress {
    /// Figure 2: "nextIndex: initialized to leader last log index + 1", matchIndex 0.
    pub fn new(next_index: LogIndex, max_inflight: usize) -> Self {
        Progress {
            next_index,
            match_index: 0,
            state: ProgressState::Probe,
            inflight: Vec::new(),
            max_inflight: max_inflight.max(1),
            probe_sent: false,
        }
    }

    /// May an AppendEntries carrying entries be sent now?
    pub fn can_send_entries(&self) -> bool {
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => self.inflight.len() < self.max_inflight,
        }
    }

    /// Records that a request with `prev_log_index = next_index - 1` carrying entries up to
    /// `last_index` went out.
    pub fn sent(&mut self, last_index: LogIndex) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                if last_index >= self.next_index {
                    self.inflight.push(last_index);
                    // Optimistic: the next request continues where this one ends.
                    self.next_index = last_index + 1;
                }
            }
        }
    }

    /// A heartbeat interval passed: allow a fresh probe (the previous one may be lost).
    pub fn on_heartbeat_tick(&mut self) {
        self.probe_sent = false;
    }

    /// The follower accepted entries up to `match_index`. Returns true if `match_index` grew.
    pub fn on_success(&mut self, match_index: LogIndex) -> bool {
        self.probe_sent = false;
        self.inflight.retain(|&last| last > match_index);
        if match_index <= self.match_index {
            return false;
        }
        self.match_index = match_index;
        self.next_index = self.next_index.max(match_index + 1);
        if self.state == ProgressState::Probe {
            self.state = ProgressState::Replicate;
            self.inflight.clear();
        }
        true
    }

    /// The follower refused: move `next_index` back using its hint. Returns false for a
    /// refusal of a request that is no longer current (reordered or duplicated).
    pub fn on_reject(&mut self, hint: &RejectHint) -> bool {
        // A refusal at or below what the follower already matched is stale: its log has
        // since been shown to agree there.
        if hint.rejected_index < self.match_index {
            return false;
        }
        if self.state == ProgressState::Probe && hint.rejected_index + 1 != self.next_index {
            return false;
        }
        self.probe_sent = false;
        if hint.conflict_term.is_none() && hint.conflict_index <= self.match_index {
            // The follower's log now ends before what it acknowledged: it lost its data (a
            // wiped disk). Raft assumes that never happens; the best the leader can do is
            // to send it everything again, from the log or as a snapshot.
            self.match_index = hint.conflict_index.saturating_sub(1);
            self.next_index = hint.conflict_index.max(1);
            self.state = ProgressState::Probe;
            self.inflight.clear();
            return true;
        }
        // Skip back to the follower's hint, never past what is known to match and always
        // strictly below the refused position, so every refusal makes progress.
        let target = hint.conflict_index.min(hint.rejected_index);
        self.next_index = target.max(self.match_index + 1);
        self.state = ProgressState::Probe;
        self.inflight.clear();
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_follower_that_lost_its_log_is_sent_everything_again() {
        let mut p = Progress::new(11, 4);
        assert!(p.on_success(10));
        // It comes back with an empty log (wiped) and refuses the next request.
        let hint = RejectHint {
            rejected_index: 10,
            conflict_term: None,
            conflict_index: 1,
        };
        assert!(p.on_reject(&hint));
        assert_eq!((p.match_index, p.next_index), (0, 1));
        assert_eq!(p.state, ProgressState::Probe);
    }

    use super::*;

    fn hint(rejected_index: LogIndex, conflict_index: LogIndex) -> RejectHint {
        RejectHint {
            rejected_index,
            conflict_term: None,
            conflict_index,
        }
    }

    #[test]
    fn probe_backs_off_by_hint_not_one_by_one() {
        let mut p = Progress::new(101, 4);
        p.sent(100);
        // Follower only has 40 entries: jump straight to 41.
        assert!(p.on_reject(&hint(100, 41)));
        assert_eq!(p.next_index, 41);
        p.sent(100);
        assert!(!p.can_send_entries());
        assert!(p.on_success(100));
        assert_eq!(p.state, ProgressState::Replicate);
        assert_eq!(p.next_index, 101);
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(11, 4);
        assert!(p.on_success(10));
        // A refusal of an old request below match_index must not move next_index back.
        assert!(!p.on_reject(&hint(5, 3)));
        assert_eq!(p.next_index, 11);
        // In probe state only the refusal of the current probe counts.
        let conflicting = RejectHint {
            conflict_term: Some(2),
            ..hint(10, 10)
        };
        assert!(p.on_reject(&conflicting));
        assert_eq!(p.state, ProgressState::Probe);
        assert_eq!(p.next_index, 11); // never below match_index + 1
        assert!(!p.on_reject(&hint(14, 12)));
    }

    #[test]
    fn replicate_pipelines_up_to_the_inflight_limit() {
        let mut p = Progress::new(1, 2);
        assert!(p.on_success(0) || p.state == ProgressState::Probe);
        p.state = ProgressState::Replicate;
        p.sent(3);
        p.sent(6);
        assert_eq!(p.next_index, 7);
        assert!(!p.can_send_entries());
        p.on_success(3);
        assert!(p.can_send_entries());
    }

    #[test]
    fn every_rejection_moves_strictly_back() {
        let mut p = Progress::new(50, 1);
        // A hint above the rejected index (bogus) still moves back below it.
        assert!(p.on_reject(&hint(49, 70)));
        assert_eq!(p.next_index, 49);
    }
}
