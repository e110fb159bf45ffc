//! Leader election (§5.2): timeouts, RequestVote on both sides, becoming leader or
//! follower, and the leader's quorum check.

use super::*;

impl RaftCore {
    /// The election timeout fired: first ask whether a majority would vote for us (Pre-Vote,
    /// thesis §9.6), without touching our term. A lone node needs nobody's opinion.
    pub(super) fn start_pre_vote(&mut self) {
        if !self.is_voter_or_explain() {
            return;
        }
        let voters = self.membership().other_voters(self.id);
        if voters.is_empty() {
            self.start_election();
            return;
        }
        self.leader_id = None;
        self.prevotes = Some(BTreeSet::from([self.id]));
        self.answered.clear();
        self.effects.push(Effect::ResetElectionTimer);
        info!(
            "[node {} term {}] election timeout: asks {} peers for pre-votes for term {} (last log {}/{})",
            self.id,
            self.current_term,
            voters.len(),
            self.current_term + 1,
            self.log.last_index(),
            self.log.last_term()
        );
        self.ask_pre_votes(voters);
    }

    fn ask_pre_votes(&mut self, peers: Vec<NodeId>) {
        for peer in peers {
            self.send(
                peer,
                Message::PreVote {
                    term: self.current_term + 1,
                    candidate_id: self.id,
                    last_log_index: self.log.last_index(),
                    last_log_term: self.log.last_term(),
                },
            );
        }
    }

    fn ask_votes(&mut self, peers: Vec<NodeId>) {
        for peer in peers {
            self.send(
                peer,
                Message::RequestVote {
                    term: self.current_term,
                    candidate_id: self.id,
                    last_log_index: self.log.last_index(),
                    last_log_term: self.log.last_term(),
                },
            );
        }
    }

    /// "Servers retry RPCs if they do not receive a response in a timely manner" (§5.1):
    /// on each heartbeat tick of a pre-vote or an election, the voters that have not
    /// answered are asked again. A refusal is an answer: a voter that still follows its
    /// leader, or chose another candidate, is asked again only at the next randomized
    /// timeout, as before (asking a refusing voter every tick made elections more likely
    /// on a starved machine, where both followers time out close together). Both requests
    /// are idempotent: a pre-vote changes nothing, and a voter that granted this candidate
    /// its vote in this term grants it again (RequestVote rule 2).
    pub(super) fn retry_vote_requests(&mut self) {
        if self.role == Role::Leader {
            return;
        }
        let voters = self.membership().other_voters(self.id);
        let what = if self.prevotes.is_some() {
            "pre-votes"
        } else if self.role == Role::Candidate {
            "votes"
        } else {
            return;
        };
        let missing: Vec<NodeId> = voters
            .into_iter()
            .filter(|v| !self.answered.contains(v))
            .collect();
        if missing.is_empty() {
            return;
        }
        debug!(
            "[node {} term {}] asks {:?} again for {}",
            self.id, self.current_term, missing, what
        );
        if self.prevotes.is_some() {
            self.ask_pre_votes(missing);
        } else {
            self.ask_votes(missing);
        }
    }

    /// Would we vote for `candidate` in `term`? Yes if the term is newer than ours, its log
    /// is at least as up to date, and we are not following a leader we still hear from
    /// (leader stickiness). Nothing changes here, so nothing needs to be persisted.
    pub(super) fn handle_pre_vote(
        &mut self,
        from: NodeId,
        term: Term,
        candidate: NodeId,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        let following = self.role == Role::Leader
            || (self.role == Role::Follower && self.leader_id.is_some() && self.prevotes.is_none());
        let granted = term > self.current_term
            && !following
            && self
                .log
                .candidate_is_up_to_date(last_log_term, last_log_index);
        debug!(
            "[node {} term {}] pre-vote for node {} in term {}: {}",
            self.id,
            self.current_term,
            candidate,
            term,
            if granted { "yes" } else { "no" }
        );
        self.send(
            from,
            Message::PreVoteResponse {
                term: if granted { term } else { self.current_term },
                vote_granted: granted,
            },
        );
    }

    pub(super) fn handle_pre_vote_response(&mut self, from: NodeId, term: Term, granted: bool) {
        debug!(
            "[node {} term {}] pre-vote answer from node {} for term {}: {}",
            self.id,
            self.current_term,
            from,
            term,
            if granted { "yes" } else { "no" }
        );
        if !granted && term > self.current_term {
            // Refused by a node in a newer term: that term is real, adopt it.
            info!(
                "[node {} term {}] sees term {} in PreVoteResponse from node {}: becomes follower",
                self.id, self.current_term, term, from
            );
            self.become_follower(term, None);
            return;
        }
        // Only a follower or candidate pre-campaigns. A grant that arrives after this node
        // won the election of its current term must not start another one: it would depose
        // the leader it just became.
        if self.role == Role::Leader {
            return;
        }
        let wanted = self.current_term + 1;
        let Some(prevotes) = self.prevotes.as_mut() else {
            return;
        };
        self.answered.insert(from);
        if !granted || term != wanted {
            return;
        }
        prevotes.insert(from);
        let granted = match &self.prevotes {
            Some(p) => self.membership().count_voters(p.iter()),
            None => 0,
        };
        if granted >= self.quorum() {
            info!(
                "[node {} term {}] won the pre-vote ({} of {}): starts the election",
                self.id,
                self.current_term,
                granted,
                self.membership().voters.len()
            );
            self.start_election();
        }
    }

    pub(super) fn start_election(&mut self) {
        self.prevotes = None;
        // Never from the leader role (pre-vote grants are ignored there), but if it ever
        // were, everything waiting on the old role must hear of it.
        self.leave_leadership();
        self.current_term += 1;
        self.role = Role::Candidate;
        self.leader_id = None;
        // Vote for self, persisted before any RequestVote leaves (outbox).
        self.voted_for = Some(self.id);
        self.votes.clear();
        self.votes.insert(self.id);
        self.answered.clear();
        self.persist_hard_state();
        self.effects.push(Effect::ResetElectionTimer);
        let voters = self.membership().other_voters(self.id);
        info!(
            "[node {} term {}] becomes candidate (last log {}/{}), asks {} peers for votes",
            self.id,
            self.current_term,
            self.log.last_index(),
            self.log.last_term(),
            voters.len()
        );
        if self.membership().count_voters(self.votes.iter()) >= self.quorum() {
            self.become_leader();
            return;
        }
        self.ask_votes(voters);
    }

    pub(super) fn handle_request_vote(
        &mut self,
        from: NodeId,
        term: Term,
        candidate: NodeId,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        // RequestVote rule 1: reply false if term < currentTerm.
        let granted = if term < self.current_term {
            info!(
                "[node {} term {}] denies vote to node {}: its term {} is stale",
                self.id, self.current_term, candidate, term
            );
            false
        } else if self.voted_for.is_some() && self.voted_for != Some(candidate) {
            // RequestVote rule 2a: at most one vote per term.
            info!(
                "[node {} term {}] denies vote to node {}: already voted for node {}",
                self.id,
                self.current_term,
                candidate,
                self.voted_for.unwrap_or_default()
            );
            false
        } else if !self
            .log
            .candidate_is_up_to_date(last_log_term, last_log_index)
        {
            // RequestVote rule 2b: only for a candidate whose log is at least as up to date.
            info!(
                "[node {} term {}] denies vote to node {}: its log {}/{} is behind ours {}/{}",
                self.id,
                self.current_term,
                candidate,
                last_log_index,
                last_log_term,
                self.log.last_index(),
                self.log.last_term()
            );
            false
        } else {
            info!(
                "[node {} term {}] grants vote to node {} (its log {}/{}, ours {}/{})",
                self.id,
                self.current_term,
                candidate,
                last_log_index,
                last_log_term,
                self.log.last_index(),
                self.log.last_term()
            );
            if self.voted_for != Some(candidate) {
                self.voted_for = Some(candidate);
                self.persist_hard_state();
            }
            // Followers rule 2: granting a vote resets the election timeout.
            self.effects.push(Effect::ResetElectionTimer);
            true
        };
        self.send(
            from,
            Message::RequestVoteResponse {
                term: self.current_term,
                vote_granted: granted,
            },
        );
    }

    pub(super) fn handle_vote_response(&mut self, from: NodeId, term: Term, granted: bool) {
        if self.role != Role::Candidate || term != self.current_term {
            return;
        }
        self.answered.insert(from);
        if !granted {
            debug!(
                "[node {} term {}] vote denied by node {}",
                self.id, self.current_term, from
            );
            return;
        }
        self.votes.insert(from);
        let votes = self.membership().count_voters(self.votes.iter());
        info!(
            "[node {} term {}] vote from node {}: {}/{} needed",
            self.id,
            self.current_term,
            from,
            votes,
            self.quorum()
        );
        // Candidates rule 2: votes from a majority (of the voters) make this node leader.
        if votes >= self.quorum() {
            self.become_leader();
        }
    }

    pub(super) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader_id = Some(self.id);
        self.votes.clear();
        // A pre-campaign for the next term, started while this node was a candidate, ends
        // here: its late grants must not start an election that deposes this leader.
        self.prevotes = None;
        self.peer_match.clear();
        self.snapshot_pins.clear();
        self.peer_read_ack.clear();
        self.recent_active.clear();
        self.round_inflight = false;
        let next_index = self.log.last_index() + 1;
        // A new leader commits a no-op of its own term, which commits every earlier entry
        // (§5.4.2: earlier-term entries are never committed by counting replicas).
        self.noop_index = self.append_own(Payload::Noop);
        self.record_bootstrap_membership();
        info!(
            "[node {} term {}] becomes leader (no-op at index {}, log {}..={})",
            self.id,
            self.current_term,
            self.noop_index,
            self.log.snapshot_index() + 1,
            self.log.last_index()
        );
        self.effects.push(Effect::BecameLeader {
            term: self.current_term,
            next_index,
        });
        self.effects.push(Effect::ResetElectionTimer);
        if self.membership().voters.len() <= 1 {
            self.maybe_commit();
        }
    }

    /// A leader that has not heard from a majority within an election timeout steps down,
    /// so a partitioned leader stops accepting writes it can never commit.
    pub(super) fn check_quorum(&mut self) {
        self.transfer_timed_out();
        let m = self.membership();
        let active = m.count_voters(self.recent_active.iter()) + usize::from(m.is_voter(self.id));
        if active < self.quorum() {
            info!(
                "[node {} term {}] steps down: heard from {} of {} voters within an election timeout",
                self.id,
                self.current_term,
                active,
                self.membership().voters.len()
            );
            let term = self.current_term;
            self.become_follower(term, None);
        }
        self.recent_active.clear();
        // The timer is one-shot: re-arm it, for the next quorum check or, after stepping
        // down, so this node can stand for election again.
        self.effects.push(Effect::ResetElectionTimer);
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.current_term {
            self.current_term = term;
            self.voted_for = None;
            self.persist_hard_state();
        }
        self.leave_leadership();
        self.role = Role::Follower;
        self.leader_id = leader;
        // A pre-campaign ends with any change of term or leader; the next timeout restarts it.
        self.prevotes = None;
        self.votes.clear();
    }

    /// Leaving the leader role, whichever way: the Replicators stop, pending reads fail
    /// and clients waiting on this leader's entries are answered (`SteppedDown`).
    fn leave_leadership(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        self.snapshot_pins.clear();
        self.end_transfer();
        self.effects.push(Effect::SteppedDown);
        for read in self.pending_reads.drain(..) {
            self.effects.push(Effect::ReadFailed { id: read.id });
        }
        self.round_inflight = false;
    }
}
