//! Rule-by-rule tests of membership changes, learners and leadership transfer (thesis
//! §4.1, §4.2.3, §3.10). Each test names the rule it attacks.

use super::core::{ChangeError, ProposeError};
use super::core_tests::{append, durable, leader, node, sent};
use super::*;

fn addrs(id: NodeId) -> MemberAddrs {
    MemberAddrs {
        raft_addr: format!("127.0.0.1:{}", 9000 + id),
        http_addr: format!("127.0.0.1:{}", 8000 + id),
    }
}

fn voters(ids: &[NodeId]) -> Membership {
    Membership::with_voters(ids.iter().map(|i| (*i, addrs(*i))))
}

fn add(id: NodeId) -> MembershipChange {
    MembershipChange::AddLearner {
        id,
        addrs: addrs(id),
    }
}

/// Node 1 leads term 1 of {1,2,3} and its no-op (index 1) is committed.
fn settled_leader() -> RaftCore {
    let mut n = leader();
    let e = n.on_replicated(1, 2, 1, 0, None);
    durable(&mut n, e);
    assert_eq!(n.commit_index(), 1);
    n
}

fn config_entry(index: LogIndex, term: Term, m: Membership) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Config(m),
    }
}

fn proposed(n: &mut RaftCore, change: &MembershipChange) -> Result<LogIndex, ChangeError> {
    let (r, e) = n.propose_change(change);
    durable(n, e);
    r.map(|(index, _)| index)
}

#[test]
fn a_configuration_counts_once_appended_and_not_once_truncated() {
    let mut n = node(2, 1, vec![]);
    let mut with4 = voters(&[1, 2, 3]);
    with4.learners.insert(4, addrs(4));
    let e = n.on_message(
        1,
        append(1, 1, (0, 0), vec![config_entry(1, 1, with4.clone())], 0),
    );
    let e = durable(&mut n, e);
    // In force before it commits (commit index is still 0).
    assert_eq!(n.commit_index(), 0);
    assert_eq!(n.membership(), &with4);
    assert!(e
        .iter()
        .any(|x| matches!(x, Effect::MembershipChanged(m) if *m == with4)));
    // A leader of term 2 replaces that entry: the configuration before it is back.
    let e = n.on_message(3, append(2, 3, (0, 0), vec![entry_noop(1, 2)], 0));
    durable(&mut n, e);
    assert!(!n.membership().contains(4));
    assert_eq!(n.membership_index(), 0);
}

fn entry_noop(index: LogIndex, term: Term) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Noop,
    }
}

#[test]
fn a_new_leader_changes_nothing_before_an_entry_of_its_term_commits() {
    // The 2015 fix to single-server changes: the no-op must commit first.
    let mut n = leader();
    assert!(matches!(
        proposed(&mut n, &add(4)),
        Err(ChangeError::Busy(_))
    ));
    let e = n.on_replicated(1, 2, 1, 0, None);
    durable(&mut n, e);
    assert!(proposed(&mut n, &add(4)).is_ok());
}

#[test]
fn only_one_change_at_a_time() {
    let mut n = settled_leader();
    let index = proposed(&mut n, &add(4)).unwrap();
    assert!(n.membership().is_learner(4), "in force when appended");
    let second = proposed(&mut n, &add(5));
    assert!(
        matches!(&second, Err(ChangeError::Busy(why)) if why.contains("not committed")),
        "{:?}",
        second
    );
    // Once the first commits, the next may start.
    let e = n.on_replicated(1, 2, index, 0, None);
    durable(&mut n, e);
    assert!(n.commit_index() >= index);
    assert!(proposed(&mut n, &add(5)).is_ok());
    // Nonsense is refused for good, not "busy".
    let e = n.on_replicated(1, 2, n.log().last_index(), 0, None);
    durable(&mut n, e);
    assert!(matches!(
        proposed(&mut n, &add(2)),
        Err(ChangeError::Invalid(_))
    ));
    // A follower refuses outright.
    let mut f = node(2, 1, vec![]);
    assert_eq!(proposed(&mut f, &add(4)), Err(ChangeError::NotLeader));
}

#[test]
fn learners_count_in_no_quorum_and_never_campaign() {
    let mut n = settled_leader();
    let index = proposed(&mut n, &add(4)).unwrap();
    let e = n.on_replicated(1, 2, index, 0, None);
    durable(&mut n, e);
    let e = n.on_replicated(1, 3, index, 0, None);
    durable(&mut n, e);
    let (r, e) = n.propose(Payload::Command(vec![1].into()));
    let (cmd, _) = r.unwrap();
    durable(&mut n, e);
    // The learner's copy alone does not make a majority with the leader's.
    let e = n.on_replicated(1, 4, cmd, 0, None);
    durable(&mut n, e);
    assert!(
        n.commit_index() < cmd,
        "a learner's copy counted toward commit"
    );
    let e = n.on_replicated(1, 3, cmd, 0, None);
    durable(&mut n, e);
    assert_eq!(n.commit_index(), cmd);

    // A learner's election timeout starts nothing.
    let mut learner = node(4, 1, vec![]).with_membership(index, n.membership().clone(), false);
    let e = learner.on_election_timeout();
    let e = durable(&mut learner, e);
    assert!(sent(&e).is_empty(), "a learner campaigned: {:?}", sent(&e));
    assert_eq!(learner.role(), Role::Follower);
    // A joining node that knows no configuration does not either.
    let mut joining = node(5, 0, vec![]).with_membership(0, Membership::default(), false);
    let e = joining.on_election_timeout();
    assert!(sent(&durable(&mut joining, e)).is_empty());
}

#[test]
fn a_caught_up_learner_is_promoted() {
    let mut n = settled_leader().with_promotion(PromotionPolicy {
        max_lag: 0,
        rounds: 3,
    });
    let index = proposed(&mut n, &add(4)).unwrap();
    let e = n.on_replicated(1, 2, index, 0, None);
    durable(&mut n, e);
    let last = n.log().last_index();
    for round in 1..=3 {
        assert!(
            n.membership().is_learner(4),
            "promoted after {} rounds",
            round - 1
        );
        let e = n.on_replicated(1, 4, last, 0, None);
        durable(&mut n, e);
    }
    assert!(n.membership().is_voter(4), "{}", n.membership());
    let last_entry = n.log().get(n.log().last_index()).cloned().unwrap();
    assert!(matches!(last_entry.payload, Payload::Config(ref m) if m.is_voter(4)));
    // Now a voter: 4 of them, so 3 make a majority.
    assert_eq!(n.membership().quorum(), 3);
}

#[test]
fn a_lagging_learner_is_not_promoted() {
    let mut n = settled_leader().with_promotion(PromotionPolicy {
        max_lag: 0,
        rounds: 2,
    });
    let index = proposed(&mut n, &add(4)).unwrap();
    let e = n.on_replicated(1, 2, index, 0, None);
    durable(&mut n, e);
    for _ in 0..5 {
        let e = n.on_replicated(1, 4, index - 1, 0, None);
        durable(&mut n, e);
    }
    assert!(n.membership().is_learner(4));
}

#[test]
fn a_leader_that_removed_itself_steps_down_once_it_commits() {
    let mut n = settled_leader();
    let index = proposed(&mut n, &MembershipChange::Remove { id: 1 }).unwrap();
    assert_eq!(n.role(), Role::Leader, "leads until the removal commits");
    assert!(!n.membership().is_voter(1));
    // Its own copy does not count: voters are {2,3}, and both must hold it.
    let e = n.on_replicated(1, 2, index, 0, None);
    durable(&mut n, e);
    assert_eq!(n.role(), Role::Leader);
    assert!(n.commit_index() < index);
    let e = n.on_replicated(1, 3, index, 0, None);
    let e = durable(&mut n, e);
    assert_eq!(n.commit_index(), index);
    assert_eq!(n.role(), Role::Follower);
    assert!(e.contains(&Effect::SteppedDown));
    // And it does not campaign any more.
    let e = n.on_election_timeout();
    assert!(sent(&durable(&mut n, e)).is_empty());
}

#[test]
fn votes_from_outside_the_configuration_are_ignored() {
    // §4.2.3: a removed server's RequestVote with a higher term must not depose anyone.
    let mut n = node(2, 3, vec![]);
    let e = n.on_message(
        9,
        Message::RequestVote {
            term: 7,
            candidate_id: 9,
            last_log_index: 100,
            last_log_term: 6,
        },
    );
    assert!(durable(&mut n, e).is_empty());
    assert_eq!(n.current_term(), 3);
}

#[test]
fn transfer_sends_timeout_now_once_the_target_is_up_to_date() {
    let mut n = settled_leader();
    let (r, e) = n.propose(Payload::Command(vec![1].into()));
    let (cmd, _) = r.unwrap();
    durable(&mut n, e);
    let (target, e) = n.transfer_leadership(Some(2));
    assert_eq!(target, Ok(2));
    let e = durable(&mut n, e);
    assert!(!sent(&e)
        .iter()
        .any(|(_, m)| matches!(m, Message::TimeoutNow { .. })));
    // No new proposals while it runs.
    let (r, _) = n.propose(Payload::Command(vec![2].into()));
    assert_eq!(r, Err(ProposeError::Transferring { target: 2 }));
    assert!(matches!(
        proposed(&mut n, &add(4)),
        Err(ChangeError::Busy(_))
    ));
    // Node 2 catches up: TimeoutNow goes to it, once.
    let e = n.on_replicated(1, 2, cmd, 0, None);
    let e = durable(&mut n, e);
    assert_eq!(
        sent(&e)
            .iter()
            .filter(|(to, m)| *to == 2 && matches!(m, Message::TimeoutNow { term: 1 }))
            .count(),
        1
    );
    let e = n.on_replicated(1, 2, cmd, 0, None);
    assert!(!sent(&durable(&mut n, e))
        .iter()
        .any(|(_, m)| matches!(m, Message::TimeoutNow { .. })));
}

#[test]
fn timeout_now_starts_an_election_without_a_pre_vote() {
    let mut f = node(2, 1, vec![]);
    let e = f.on_message(1, append(1, 1, (0, 0), vec![entry_noop(1, 1)], 1));
    durable(&mut f, e);
    let e = f.on_message(1, Message::TimeoutNow { term: 1 });
    let e = durable(&mut f, e);
    assert_eq!(f.role(), Role::Candidate);
    assert_eq!(f.current_term(), 2);
    let asked: Vec<NodeId> = sent(&e)
        .iter()
        .filter(|(_, m)| matches!(m, Message::RequestVote { term: 2, .. }))
        .map(|(to, _)| *to)
        .collect();
    assert_eq!(asked, vec![1, 3]);
    // TimeoutNow from an older term does nothing.
    let mut g = node(3, 5, vec![]);
    let e = g.on_message(1, Message::TimeoutNow { term: 4 });
    durable(&mut g, e);
    assert_eq!(g.role(), Role::Follower);
    assert_eq!(g.current_term(), 5);
}

#[test]
fn a_transfer_that_does_not_complete_is_abandoned_at_the_next_timeout() {
    let mut n = settled_leader();
    let (target, e) = n.transfer_leadership(None);
    assert_eq!(target, Ok(2), "the most up-to-date voter");
    durable(&mut n, e);
    // Keep the quorum check happy (node 3 answers), then let the timer fire.
    let e = n.on_message(
        3,
        Message::AppendEntriesResponse {
            term: 1,
            success: true,
            match_index: 1,
            reject: None,
            read_seq: 0,
        },
    );
    durable(&mut n, e);
    let e = n.on_election_timeout();
    let e = durable(&mut n, e);
    assert!(e.contains(&Effect::TransferAborted { target: 2 }));
    assert_eq!(n.role(), Role::Leader);
    let (r, _) = n.propose(Payload::Command(vec![3].into()));
    assert!(r.is_ok(), "{:?}", r);
    // Not to itself, not to a non-voter.
    assert!(matches!(
        n.transfer_leadership(Some(1)).0,
        Err(ChangeError::Invalid(_))
    ));
    assert!(matches!(
        n.transfer_leadership(Some(9)).0,
        Err(ChangeError::Invalid(_))
    ));
}

#[test]
fn a_snapshot_brings_its_configuration() {
    let mut n = node(3, 1, vec![]).with_membership(0, Membership::default(), false);
    let m = voters(&[1, 2, 3]);
    let point = LogPoint { index: 50, term: 1 };
    let e = n.on_message(
        1,
        Message::InstallSnapshot {
            term: 1,
            leader_id: 1,
            last_included_index: 50,
            last_included_term: 1,
            offset: 0,
            data: vec![1],
            done: true,
            read_seq: 0,
            stream: 7,
        },
    );
    durable(&mut n, e);
    let e = n.on_snapshot_chunk(1, point, (1, true), Some((40, m.clone())), (0, 7));
    let e = durable(&mut n, e);
    assert_eq!(n.membership(), &m);
    assert_eq!(n.membership_index(), 40);
    assert!(e.contains(&Effect::MembershipChanged(m)));
}
