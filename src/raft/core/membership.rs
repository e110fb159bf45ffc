//! Membership changes (thesis chapter 4), learners and leadership transfer (§3.10).
//!
//! The rules, each enforced here:
//! - a configuration is in force from the moment its entry is appended, and the previous
//!   one is back in force if that entry is truncated away (§4.1);
//! - one server changes at a time, and only once the previous change has committed;
//! - a new leader changes nothing before an entry of its own term has committed (the
//!   2015 fix to single-server changes);
//! - learners receive the log but count in no quorum; a leader promotes a learner once it
//!   has caught up;
//! - a leader that is not a voter of its committed configuration steps down;
//! - servers outside the configuration cannot disrupt it: their vote requests are ignored
//!   (§4.2.3), and a non-voter never campaigns.

use super::*;

/// A member as the leader sees it, for `/cluster/members`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberProgress {
    pub id: NodeId,
    pub addrs: MemberAddrs,
    pub voter: bool,
    /// Highest index known to match the leader's log (the leader's own last index for
    /// itself).
    pub match_index: LogIndex,
    /// Within the promotion lag of the leader's log.
    pub caught_up: bool,
}

impl RaftCore {
    /// Starts from configuration `membership`, recorded at `index` (0: it comes from the
    /// config files and is recorded in the log by the first leader when `record` is set).
    /// Configuration entries in the log after it take over, the last one in force.
    pub fn with_membership(
        mut self,
        index: LogIndex,
        membership: Membership,
        record: bool,
    ) -> Self {
        self.configs = vec![(index, membership)];
        self.record_bootstrap = record;
        let found: Vec<(LogIndex, Membership)> = self
            .log
            .iter()
            .filter(|e| e.index > index)
            .filter_map(|e| match &e.payload {
                Payload::Config(m) => Some((e.index, m.clone())),
                _ => None,
            })
            .collect();
        self.configs.extend(found);
        self
    }

    /// When learners are promoted.
    pub fn with_promotion(mut self, policy: PromotionPolicy) -> Self {
        self.promotion = policy;
        self
    }

    /// The configuration in force: the latest in the log.
    pub fn membership(&self) -> &Membership {
        // `configs` is never empty: every change keeps its first element.
        &self.configs[self.configs.len() - 1].1
    }

    /// The log index of the configuration in force (0: from the config files).
    pub fn membership_index(&self) -> LogIndex {
        self.configs[self.configs.len() - 1].0
    }

    /// Is `msg` from `from` one this node listens to? Votes and their answers only from
    /// voters of our configuration: a removed server must not make us adopt its term
    /// (§4.2.3). Anything else from anyone the transport authenticated, since a leader may
    /// be in a configuration we have not received yet (a joining node knows none).
    pub(super) fn accepts_from(&self, from: NodeId, msg: &Message) -> bool {
        match msg {
            Message::PreVote { .. }
            | Message::RequestVote { .. }
            | Message::PreVoteResponse { .. }
            | Message::RequestVoteResponse { .. } => self.membership().is_voter(from),
            _ => true,
        }
    }

    /// An entry was appended: a configuration in it is in force at once.
    pub(super) fn note_appended(&mut self, entry: &Entry) {
        if let Payload::Config(m) = &entry.payload {
            self.configs.push((entry.index, m.clone()));
            self.membership_changed("appended", entry.index);
        }
    }

    /// Entries from `from` on were removed: configurations among them no longer count.
    pub(super) fn note_truncated(&mut self, from: LogIndex) {
        let before = self.configs.len();
        while self.configs.len() > 1 && self.configs[self.configs.len() - 1].0 >= from {
            self.configs.pop();
        }
        if self.configs.len() != before {
            self.membership_changed("truncated: back to the one", self.membership_index());
        }
    }

    /// The log now starts after `point`, with the state of a snapshot whose configuration
    /// is `installed` (if the snapshot carried one). Configurations the log still holds
    /// after the point stay.
    pub(super) fn note_compacted(
        &mut self,
        point: LogIndex,
        installed: Option<(LogIndex, Membership)>,
    ) {
        let before = self.membership().clone();
        let base = match installed {
            Some(b) => b,
            None => {
                let i = self
                    .configs
                    .iter()
                    .rposition(|(idx, _)| *idx <= point)
                    .unwrap_or(0);
                self.configs[i].clone()
            }
        };
        let log = &self.log;
        let kept: Vec<(LogIndex, Membership)> = self
            .configs
            .iter()
            .filter(|(idx, _)| *idx > point && *idx > base.0 && log.get(*idx).is_some())
            .cloned()
            .collect();
        self.configs = std::iter::once(base).chain(kept).collect();
        if *self.membership() != before {
            self.membership_changed("installed with a snapshot at", self.membership_index());
        }
    }

    fn membership_changed(&mut self, how: &str, index: LogIndex) {
        let m = self.membership().clone();
        info!(
            "[node {} term {}] membership {} index {}: {}",
            self.id, self.current_term, how, index, m
        );
        if m.is_voter(self.id) {
            self.told_not_voter = false;
        }
        if self.role == Role::Leader {
            self.learner_rounds.retain(|id, _| m.is_learner(*id));
            if let Some(t) = self.transfer {
                if !m.is_voter(t.target) {
                    self.abort_transfer("the target is no longer a voter");
                }
            }
        }
        self.effects.push(Effect::MembershipChanged(m));
    }

    /// A non-voter's election timeout: it does not campaign, and says why once.
    pub(super) fn is_voter_or_explain(&mut self) -> bool {
        if self.membership().is_voter(self.id) {
            return true;
        }
        if !self.told_not_voter {
            self.told_not_voter = true;
            let what = if self.membership().is_learner(self.id) {
                "a learner: it waits for the leader to promote it once caught up".to_string()
            } else if self.membership().voters.is_empty() {
                "waiting to be added to the cluster: no configuration is known yet (join mode)"
                    .to_string()
            } else {
                format!(
                    "not a member of {} (removed, or waiting to be added)",
                    self.membership()
                )
            };
            info!(
                "[node {} term {}] does not stand for election: {}",
                self.id, self.current_term, what
            );
        }
        self.effects.push(Effect::ResetElectionTimer);
        false
    }

    /// Why a membership change cannot start now, if it cannot.
    fn change_blocked(&self) -> Option<ChangeError> {
        if self.role != Role::Leader {
            return Some(ChangeError::NotLeader);
        }
        if let Some(t) = self.transfer {
            return Some(ChangeError::Busy(format!(
                "leadership is being transferred to node {}",
                t.target
            )));
        }
        if self.commit_index < self.noop_index {
            return Some(ChangeError::Busy(
                "this leader has not yet committed an entry of its own term".into(),
            ));
        }
        if self.membership_index() > self.commit_index {
            return Some(ChangeError::Busy(format!(
                "the previous membership change (index {}) has not committed yet",
                self.membership_index()
            )));
        }
        None
    }

    /// Proposes one membership change; returns the index and term of its entry.
    pub fn propose_change(
        &mut self,
        change: &MembershipChange,
    ) -> (Result<(LogIndex, Term), ChangeError>, Vec<Effect>) {
        let result = self.start_change(change);
        (result, self.finish())
    }

    fn start_change(&mut self, change: &MembershipChange) -> Result<(LogIndex, Term), ChangeError> {
        if let Some(e) = self.change_blocked() {
            return Err(e);
        }
        let next = self
            .membership()
            .after(change)
            .map_err(ChangeError::Invalid)?;
        info!(
            "[node {} term {}] membership change: {} (now {})",
            self.id,
            self.current_term,
            change,
            self.membership()
        );
        let index = self.append_own(Payload::Config(next));
        self.effects.push(Effect::ReplicateNow);
        if self.membership().voters.len() <= 1 {
            self.maybe_commit();
        }
        Ok((index, self.current_term))
    }

    /// A leader's first configuration entry, when its configuration so far comes only from
    /// the config files.
    pub(super) fn record_bootstrap_membership(&mut self) {
        if self.record_bootstrap && self.membership_index() == 0 {
            let m = self.membership().clone();
            info!(
                "[node {} term {}] records the bootstrap membership in the log: {}",
                self.id, self.current_term, m
            );
            self.append_own(Payload::Config(m));
        }
    }

    /// Counts a caught-up round for learner `peer` and promotes it after enough of them.
    pub(super) fn maybe_promote(&mut self, peer: NodeId) {
        if self.role != Role::Leader || !self.membership().is_learner(peer) {
            return;
        }
        let matched = self.peer_match.get(&peer).copied().unwrap_or(0);
        let lag = self.log.last_index().saturating_sub(matched);
        let rounds = self.learner_rounds.entry(peer).or_insert(0);
        if lag > self.promotion.max_lag {
            *rounds = 0;
            return;
        }
        *rounds += 1;
        if *rounds < self.promotion.rounds || self.change_blocked().is_some() {
            return;
        }
        info!(
            "[node {} term {}] learner node {} caught up (index {} of {}) for {} rounds: promoting it",
            self.id,
            self.current_term,
            peer,
            matched,
            self.log.last_index(),
            self.promotion.rounds
        );
        self.learner_rounds.remove(&peer);
        if let Err(e) = self.start_change(&MembershipChange::Promote { id: peer }) {
            warn!(
                "[node {} term {}] could not promote node {}: {:?}",
                self.id, self.current_term, peer, e
            );
        }
    }

    /// A leader that is no longer a voter of its committed configuration steps down
    /// (§4.2.2); the remaining voters elect a leader among themselves.
    pub(super) fn step_down_if_removed(&mut self) {
        if self.role == Role::Leader
            && !self.membership().is_voter(self.id)
            && self.membership_index() <= self.commit_index
        {
            info!(
                "[node {} term {}] steps down: removed from the cluster (index {} committed)",
                self.id,
                self.current_term,
                self.membership_index()
            );
            let term = self.current_term;
            self.become_follower(term, None);
        }
    }

    /// The leader's view of every member, for operators.
    pub fn member_progress(&self) -> Vec<MemberProgress> {
        let m = self.membership();
        let last = self.log.last_index();
        let progress = |id: NodeId, voter: bool, addrs: &MemberAddrs| {
            let match_index = if id == self.id {
                last
            } else {
                self.peer_match.get(&id).copied().unwrap_or(0)
            };
            MemberProgress {
                id,
                addrs: addrs.clone(),
                voter,
                match_index,
                caught_up: (match_index > 0 || last == 0)
                    && last.saturating_sub(match_index) <= self.promotion.max_lag,
            }
        };
        m.voters
            .iter()
            .map(|(id, a)| progress(*id, true, a))
            .chain(m.learners.iter().map(|(id, a)| progress(*id, false, a)))
            .collect()
    }

    // ----- leadership transfer (§3.10) -----

    /// Hands leadership to `target`, or to the most up-to-date other voter. While the
    /// transfer runs this leader accepts no proposals; it gives up after an election
    /// timeout. Returns the chosen target.
    pub fn transfer_leadership(
        &mut self,
        target: Option<NodeId>,
    ) -> (Result<NodeId, ChangeError>, Vec<Effect>) {
        let result = self.start_transfer(target);
        (result, self.finish())
    }

    fn start_transfer(&mut self, target: Option<NodeId>) -> Result<NodeId, ChangeError> {
        if self.role != Role::Leader {
            return Err(ChangeError::NotLeader);
        }
        if let Some(t) = self.transfer {
            return Err(ChangeError::Busy(format!(
                "leadership is already being transferred to node {}",
                t.target
            )));
        }
        let voters = self.membership().other_voters(self.id);
        let target = match target {
            Some(t) if t == self.id => {
                return Err(ChangeError::Invalid(format!("node {} already leads", t)))
            }
            Some(t) if !voters.contains(&t) => {
                return Err(ChangeError::Invalid(format!(
                    "node {} is not a voter of {}",
                    t,
                    self.membership()
                )))
            }
            Some(t) => t,
            None => voters
                .iter()
                .copied()
                .max_by_key(|p| (self.peer_match.get(p).copied().unwrap_or(0), u64::MAX - p))
                .ok_or_else(|| {
                    ChangeError::Invalid("there is no other voter to hand leadership to".into())
                })?,
        };
        info!(
            "[node {} term {}] transfers leadership to node {} (its match {}, our last {}); \
             proposals wait",
            self.id,
            self.current_term,
            target,
            self.peer_match.get(&target).copied().unwrap_or(0),
            self.log.last_index()
        );
        self.transfer = Some(Transfer {
            target,
            sent: false,
        });
        // The next tick of the timer comes one full election timeout from now: the
        // transfer is abandoned then if it has not completed.
        self.effects.push(Effect::ResetElectionTimer);
        self.effects.push(Effect::ReplicateNow);
        self.maybe_send_timeout_now();
        Ok(target)
    }

    /// Sends TimeoutNow once the target holds everything this leader has.
    pub(super) fn maybe_send_timeout_now(&mut self) {
        let Some(t) = self.transfer else {
            return;
        };
        if t.sent || self.role != Role::Leader {
            return;
        }
        let matched = self.peer_match.get(&t.target).copied().unwrap_or(0);
        if matched < self.log.last_index() {
            return;
        }
        info!(
            "[node {} term {}] node {} holds our whole log (index {}): sends it TimeoutNow",
            self.id, self.current_term, t.target, matched
        );
        self.transfer = Some(Transfer { sent: true, ..t });
        let term = self.current_term;
        self.send(t.target, Message::TimeoutNow { term });
    }

    /// The leader's timer fired with a transfer still running: give up, accept proposals
    /// again.
    pub(super) fn transfer_timed_out(&mut self) {
        if self.transfer.is_some() {
            self.abort_transfer("it did not complete within an election timeout");
        }
    }

    fn abort_transfer(&mut self, why: &str) {
        if let Some(t) = self.transfer.take() {
            info!(
                "[node {} term {}] gives up transferring leadership to node {}: {}",
                self.id, self.current_term, t.target, why
            );
            self.effects
                .push(Effect::TransferAborted { target: t.target });
        }
    }

    /// Leaving the leader role ends a transfer (done, if the target won).
    pub(super) fn end_transfer(&mut self) {
        self.transfer = None;
        self.learner_rounds.clear();
    }

    /// TimeoutNow from the leader of our term: campaign at once, skipping Pre-Vote (the
    /// leader asked for it, so nobody's leader is being disrupted).
    pub(super) fn handle_timeout_now(&mut self, from: NodeId, term: Term) {
        if term != self.current_term || self.role == Role::Leader {
            debug!(
                "[node {} term {}] ignores TimeoutNow from node {} for term {}",
                self.id, self.current_term, from, term
            );
            return;
        }
        if !self.membership().is_voter(self.id) {
            info!(
                "[node {} term {}] ignores TimeoutNow from node {}: not a voter",
                self.id, self.current_term, from
            );
            return;
        }
        info!(
            "[node {} term {}] TimeoutNow from leader node {}: starts an election now (leadership transfer)",
            self.id, self.current_term, from
        );
        self.start_election();
    }
}
