//! Rule-by-rule tests of the pure core. Each test names the part of the paper it attacks.

use super::core::{LogLimits, LogSlice, ProposeError};
use super::*;

fn entry(index: LogIndex, term: Term) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Noop,
    }
}

pub(super) fn node(id: NodeId, term: Term, entries: Vec<Entry>) -> RaftCore {
    RaftCore::new(
        id,
        vec![1, 2, 3],
        HardState {
            current_term: term,
            voted_for: None,
        },
        RaftLog::new(0, 0, entries),
        0,
    )
}

/// Completes every Persist effect (as the LogStore would) and returns all other effects.
pub(super) fn durable(core: &mut RaftCore, effects: Vec<Effect>) -> Vec<Effect> {
    let mut out = Vec::new();
    let mut queue = effects;
    while !queue.is_empty() {
        let mut next = Vec::new();
        for e in queue {
            match e {
                Effect::Persist(b) => next.extend(core.on_persisted(b.seq)),
                other => out.push(other),
            }
        }
        queue = next;
    }
    out
}

pub(super) fn sent(effects: &[Effect]) -> Vec<(NodeId, Message)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

fn vote_req(term: Term, candidate: NodeId, last_index: LogIndex, last_term: Term) -> Message {
    Message::RequestVote {
        term,
        candidate_id: candidate,
        last_log_index: last_index,
        last_log_term: last_term,
    }
}

fn granted(effects: &[Effect]) -> Option<bool> {
    sent(effects).into_iter().find_map(|(_, m)| match m {
        Message::RequestVoteResponse { vote_granted, .. } => Some(vote_granted),
        _ => None,
    })
}

pub(super) fn append(
    term: Term,
    leader: NodeId,
    prev: (LogIndex, Term),
    entries: Vec<Entry>,
    commit: LogIndex,
) -> Message {
    Message::AppendEntries {
        term,
        leader_id: leader,
        prev_log_index: prev.0,
        prev_log_term: prev.1,
        entries,
        leader_commit: commit,
        read_seq: 0,
    }
}

fn append_reply(effects: &[Effect]) -> Option<(bool, LogIndex, Option<RejectHint>)> {
    sent(effects).into_iter().find_map(|(_, m)| match m {
        Message::AppendEntriesResponse {
            success,
            match_index,
            reject,
            ..
        } => Some((success, match_index, reject)),
        _ => None,
    })
}

fn terms(core: &RaftCore) -> Vec<Term> {
    (1..=core.log().last_index())
        .map(|i| core.log().term_at(i).unwrap_or(0))
        .collect()
}

/// The election timeout fires and peer 2 grants the pre-vote: `n` becomes a candidate.
fn campaign(n: &mut RaftCore) -> Vec<Effect> {
    let e = n.on_election_timeout();
    let mut out = durable(n, e);
    let e = n.on_message(
        2,
        Message::PreVoteResponse {
            term: n.current_term() + 1,
            vote_granted: true,
        },
    );
    out.extend(durable(n, e));
    out
}

/// Elects node 1 leader of a fresh 3-node cluster in term 1.
pub(super) fn leader() -> RaftCore {
    let mut n = node(1, 0, vec![]);
    campaign(&mut n);
    let e = n.on_message(
        2,
        Message::RequestVoteResponse {
            term: 1,
            vote_granted: true,
        },
    );
    durable(&mut n, e);
    assert_eq!(n.role(), Role::Leader);
    n
}

// ----- §5.2 elections, Figure 2 RequestVote -----

#[test]
fn at_most_one_vote_per_term() {
    let mut n = node(1, 1, vec![]);
    let e = n.on_message(2, vote_req(2, 2, 0, 0));
    assert_eq!(granted(&durable(&mut n, e)), Some(true));
    // Same term, another candidate: denied.
    let e = n.on_message(3, vote_req(2, 3, 0, 0));
    assert_eq!(granted(&durable(&mut n, e)), Some(false));
    // The same candidate asking again (a retransmission) gets the same answer.
    let e = n.on_message(2, vote_req(2, 2, 0, 0));
    assert_eq!(granted(&durable(&mut n, e)), Some(true));
    assert_eq!(n.voted_for(), Some(2));
}

#[test]
fn vote_requires_candidate_log_at_least_as_up_to_date() {
    // Reference: §5.4.1 — compare last terms, then lengths.
    let log = vec![entry(1, 1), entry(2, 2), entry(3, 2)];
    let cases = [
        ((3, 2), true),  // identical
        ((5, 2), true),  // longer, same term
        ((1, 3), true),  // shorter but newer term
        ((2, 2), false), // shorter, same term
        ((9, 1), false), // longer but older term
    ];
    for ((last_index, last_term), want) in cases {
        let mut n = node(1, 2, log.clone());
        let e = n.on_message(2, vote_req(3, 2, last_index, last_term));
        assert_eq!(
            granted(&durable(&mut n, e)),
            Some(want),
            "candidate log {}/{}",
            last_index,
            last_term
        );
    }
}

#[test]
fn stale_term_vote_is_denied_and_higher_term_makes_follower() {
    let mut n = leader();
    let e = n.on_message(2, vote_req(0, 2, 10, 10));
    assert_eq!(granted(&durable(&mut n, e)), Some(false));
    assert_eq!(n.role(), Role::Leader);
    // Figure 2, All Servers: any higher term turns a leader into a follower of that term,
    // even when the vote itself is denied (log behind).
    let e = n.on_message(3, vote_req(5, 3, 0, 0));
    let e = durable(&mut n, e);
    assert!(e.contains(&Effect::SteppedDown));
    assert_eq!(granted(&e), Some(false));
    assert_eq!((n.role(), n.current_term()), (Role::Follower, 5));
}

#[test]
fn vote_reply_waits_until_the_vote_is_durable() {
    let mut n = node(1, 1, vec![]);
    let effects = n.on_message(2, vote_req(2, 2, 0, 0));
    // The reply is held back: only a Persist (of term 2, vote for 2) comes out.
    assert!(sent(&effects).is_empty());
    let batch = effects
        .iter()
        .find_map(|e| match e {
            Effect::Persist(b) => Some(b.clone()),
            _ => None,
        })
        .expect("persist");
    assert_eq!(
        batch.hard_state,
        Some(HardState {
            current_term: 2,
            voted_for: Some(2)
        })
    );
    let after = n.on_persisted(batch.seq);
    assert_eq!(granted(&after), Some(true));
}

#[test]
fn candidate_needs_a_majority_and_ignores_other_terms() {
    let mut n = node(1, 0, vec![]);
    let e = campaign(&mut n);
    assert_eq!(n.role(), Role::Candidate);
    let asks = sent(&e)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::RequestVote { .. }))
        .count();
    assert_eq!(asks, 2, "asks both peers");
    // A stale grant from an earlier term does not count.
    n.on_message(
        2,
        Message::RequestVoteResponse {
            term: 0,
            vote_granted: true,
        },
    );
    assert_eq!(n.role(), Role::Candidate);
    let e = n.on_message(
        3,
        Message::RequestVoteResponse {
            term: 1,
            vote_granted: false,
        },
    );
    durable(&mut n, e);
    assert_eq!(n.role(), Role::Candidate);
    let e = n.on_message(
        2,
        Message::RequestVoteResponse {
            term: 1,
            vote_granted: true,
        },
    );
    let e = durable(&mut n, e);
    assert_eq!(n.role(), Role::Leader);
    assert!(e.contains(&Effect::BecameLeader {
        term: 1,
        next_index: 1
    }));
    // The new leader's first entry is a no-op of its own term (§5.4.2).
    assert_eq!(
        n.log().get(1).map(|e| (&e.payload, e.term)),
        Some((&Payload::Noop, 1))
    );
}

// ----- §5.3 log replication, Figure 2 AppendEntries -----

#[test]
fn append_rejects_on_missing_or_mismatched_prev_with_a_hint() {
    let mut n = node(
        2,
        3,
        vec![entry(1, 1), entry(2, 2), entry(3, 2), entry(4, 2)],
    );
    // Too short: hint is our last index + 1.
    let e = n.on_message(1, append(3, 1, (9, 3), vec![], 0));
    let (ok, _, hint) = append_reply(&durable(&mut n, e)).unwrap();
    assert!(!ok);
    assert_eq!(
        hint,
        Some(RejectHint {
            rejected_index: 9,
            conflict_term: None,
            conflict_index: 5
        })
    );
    // Term mismatch at 4: hint is the first index of our term 2.
    let e = n.on_message(1, append(3, 1, (4, 3), vec![], 0));
    let (ok, _, hint) = append_reply(&durable(&mut n, e)).unwrap();
    assert!(!ok);
    assert_eq!(
        hint,
        Some(RejectHint {
            rejected_index: 4,
            conflict_term: Some(2),
            conflict_index: 2
        })
    );
    assert_eq!(n.log().last_index(), 4, "a refusal changes nothing");
}

#[test]
fn append_truncates_only_from_the_first_conflict() {
    let mut n = node(
        2,
        2,
        vec![entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)],
    );
    let e = n.on_message(1, append(3, 1, (2, 1), vec![entry(3, 2), entry(4, 3)], 0));
    let (ok, m, _) = append_reply(&durable(&mut n, e)).unwrap();
    assert!(ok);
    assert_eq!(m, 4);
    assert_eq!(terms(&n), vec![1, 1, 2, 3]);
}

#[test]
fn stale_reordered_append_never_erases_entries() {
    let mut n = node(2, 1, vec![]);
    let full = append(1, 1, (0, 0), vec![entry(1, 1), entry(2, 1), entry(3, 1)], 0);
    let e = n.on_message(1, full);
    durable(&mut n, e);
    // An older request that carried only entry 1 arrives late: entries 2 and 3 must stay.
    let e = n.on_message(1, append(1, 1, (0, 0), vec![entry(1, 1)], 0));
    let (ok, m, _) = append_reply(&durable(&mut n, e)).unwrap();
    assert!(ok);
    assert_eq!(m, 1, "acknowledges only what this request proved");
    assert_eq!(terms(&n), vec![1, 1, 1]);
}

#[test]
fn commit_is_min_of_leader_commit_and_last_new_entry() {
    let mut n = node(2, 1, vec![entry(1, 1), entry(2, 1), entry(3, 1)]);
    // Our log has 3 entries, but this request only proves agreement up to 2.
    let e = n.on_message(1, append(1, 1, (1, 1), vec![entry(2, 1)], 3));
    let e = durable(&mut n, e);
    assert_eq!(n.commit_index(), 2);
    assert!(e.contains(&Effect::Apply(vec![entry(1, 1), entry(2, 1)])));
    let e = n.on_message(1, append(1, 1, (3, 1), vec![], 3));
    let e = durable(&mut n, e);
    assert_eq!(n.commit_index(), 3);
    assert!(
        e.contains(&Effect::Apply(vec![entry(3, 1)])),
        "applied once, in order"
    );
}

/// The Replicator's keepalive (sent while it reads old entries from disk) claims a match
/// only at index 0: the follower answers it, and changes neither its log nor its commit.
#[test]
fn a_keepalive_from_index_zero_changes_neither_log_nor_commit() {
    let mut n = node(2, 1, vec![entry(1, 1), entry(2, 1), entry(3, 1)]);
    let e = n.on_message(1, append(1, 1, (1, 1), vec![], 1));
    durable(&mut n, e);
    assert_eq!(n.commit_index(), 1);
    let e = n.on_message(1, append(1, 1, (0, 0), vec![], 3));
    let e = durable(&mut n, e);
    assert_eq!(append_reply(&e), Some((true, 0, None)));
    assert_eq!(
        n.commit_index(),
        1,
        "commit only as far as the request proves"
    );
    assert_eq!(terms(&n), vec![1, 1, 1]);
}

#[test]
fn append_ack_waits_until_entries_are_durable() {
    let mut n = node(2, 1, vec![]);
    let effects = n.on_message(1, append(1, 1, (0, 0), vec![entry(1, 1)], 0));
    assert!(sent(&effects).is_empty(), "no ack before fsync");
    let e = durable(&mut n, effects);
    assert_eq!(append_reply(&e).map(|r| r.0), Some(true));
}

#[test]
fn append_from_stale_term_is_refused_with_our_term() {
    let mut n = node(2, 5, vec![]);
    let e = n.on_message(1, append(4, 1, (0, 0), vec![entry(1, 4)], 0));
    let e = durable(&mut n, e);
    match sent(&e).first() {
        Some((
            1,
            Message::AppendEntriesResponse {
                term: 5,
                success: false,
                ..
            },
        )) => {}
        other => panic!("unexpected {:?}", other),
    }
    assert_eq!(n.log().last_index(), 0);
}

// ----- §5.4.2 committing entries from previous terms (Figure 8) -----

#[test]
fn leader_commits_only_current_term_entries_by_counting_replicas() {
    // Node 1 has an entry from term 2 that it never committed, and now leads term 4.
    let mut n = RaftCore::new(
        1,
        vec![1, 2, 3],
        HardState {
            current_term: 3,
            voted_for: None,
        },
        RaftLog::new(0, 0, vec![entry(1, 1), entry(2, 2)]),
        0,
    );
    campaign(&mut n);
    let e = n.on_message(
        2,
        Message::RequestVoteResponse {
            term: 4,
            vote_granted: true,
        },
    );
    durable(&mut n, e);
    assert_eq!(n.role(), Role::Leader);
    assert_eq!(terms(&n), vec![1, 2, 4], "no-op appended at 3");
    // A majority (1 and 2) holds index 2 from term 2: not enough to commit it.
    let e = n.on_replicated(4, 2, 2, 0, None);
    durable(&mut n, e);
    assert_eq!(n.commit_index(), 0);
    // Once the current-term no-op is on a majority, everything up to it commits.
    let e = n.on_replicated(4, 2, 3, 0, None);
    let e = durable(&mut n, e);
    assert_eq!(n.commit_index(), 3);
    assert!(e.contains(&Effect::Apply(vec![entry(1, 1), entry(2, 2), entry(3, 4)])));
}

#[test]
fn leader_counts_its_own_copy_only_once_durable() {
    let mut n = leader();
    let e = n.on_replicated(1, 2, 1, 0, None); // the no-op commits
    durable(&mut n, e);
    let (res, effects) = n.propose(Payload::Noop);
    let (index, _) = res.unwrap();
    // The follower acknowledges before our own fsync finished: no commit yet, since only
    // one copy (the follower's) is known durable.
    let e = n.on_replicated(1, 2, index, 0, None);
    assert!(e.is_empty() || !e.iter().any(|x| matches!(x, Effect::Apply(_))));
    assert!(n.commit_index() < index);
    durable(&mut n, effects);
    assert_eq!(n.commit_index(), index);
}

#[test]
fn replicator_of_an_old_term_gets_nothing() {
    let mut n = leader();
    assert!(matches!(
        n.log_slice(1, 1, 10, 1 << 20),
        LogSlice::Entries { .. }
    ));
    assert_eq!(n.log_slice(0, 1, 10, 1 << 20), LogSlice::NotLeader);
    let e = n.on_message(2, vote_req(7, 2, 9, 9));
    durable(&mut n, e);
    assert_eq!(n.log_slice(1, 1, 10, 1 << 20), LogSlice::NotLeader);
}

// ----- reads (§6.4 of the thesis) -----

#[test]
fn read_waits_for_noop_commit_and_a_heartbeat_quorum() {
    let mut n = leader();
    let (ok, e) = n.read(7);
    assert!(ok);
    let e = durable(&mut n, e);
    assert!(e.contains(&Effect::BroadcastHeartbeat { read_seq: 1 }));
    assert!(!e.iter().any(|x| matches!(x, Effect::ReadReady { .. })));
    // A peer acknowledges the round but the no-op is not yet committed: still waiting.
    let e = n.on_replicated(1, 2, 0, 1, None);
    assert!(!e.iter().any(|x| matches!(x, Effect::ReadReady { .. })));
    // The no-op commits: the read is released with read index 1.
    let e = n.on_replicated(1, 2, 1, 1, None);
    let e = durable(&mut n, e);
    assert!(e.contains(&Effect::ReadReady {
        id: 7,
        read_index: 1
    }));
}

#[test]
fn deposed_leader_fails_pending_reads() {
    let mut n = leader();
    let (_, e) = n.read(9);
    durable(&mut n, e);
    let e = n.on_message(
        3,
        Message::AppendEntriesResponse {
            term: 2,
            success: false,
            match_index: 0,
            reject: None,
            read_seq: 1,
        },
    );
    let e = durable(&mut n, e);
    assert!(e.contains(&Effect::ReadFailed { id: 9 }));
    assert_eq!(n.role(), Role::Follower);
}

#[test]
fn leader_without_a_majority_steps_down_at_the_next_timeout() {
    let mut n = leader();
    let e = n.on_election_timeout();
    let e = durable(&mut n, e);
    assert!(e.contains(&Effect::SteppedDown));
    assert_eq!(n.role(), Role::Follower);
    // ... and keeps its election timer running so it can stand again later.
    assert!(e.contains(&Effect::ResetElectionTimer));
    // With a peer answering, a leader keeps its role.
    let mut n = leader();
    n.on_message(
        2,
        Message::AppendEntriesResponse {
            term: 1,
            success: true,
            match_index: 1,
            reject: None,
            read_seq: 0,
        },
    );
    n.on_election_timeout();
    assert_eq!(n.role(), Role::Leader);
}

// ----- InstallSnapshot (Figure 13) -----

fn install(term: Term, index: LogIndex, snap_term: Term) -> Message {
    Message::InstallSnapshot {
        term,
        leader_id: 1,
        last_included_index: index,
        last_included_term: snap_term,
        offset: 0,
        data: vec![1, 2, 3],
        done: true,
        read_seq: 0,
        stream: 7,
    }
}

/// Delivers a one-chunk snapshot and plays the state machine that stores and installs it.
fn install_and_store(
    n: &mut RaftCore,
    term: Term,
    index: LogIndex,
    snap_term: Term,
) -> Vec<Effect> {
    let mut e = n.on_message(1, install(term, index, snap_term));
    let chunk = e.iter().find_map(|x| match x {
        Effect::InstallChunk { snapshot, data, .. } => Some((*snapshot, data.len() as u64)),
        _ => None,
    });
    if let Some((point, len)) = chunk {
        e.extend(n.on_snapshot_chunk(1, point, (len, true), None, (0, 7)));
    }
    e
}

#[test]
fn snapshot_that_disagrees_discards_the_log_including_unwritten_entries() {
    let mut n = node(2, 3, vec![entry(1, 1), entry(2, 1)]);
    // Entries 3..5 of a deposed term-3 leader arrive while an earlier batch is still being
    // written, so they wait in the pending batch.
    let _in_flight = n.on_message(1, append(3, 1, (2, 1), vec![entry(3, 3)], 0));
    let e = n.on_message(1, append(3, 1, (3, 3), vec![entry(4, 3), entry(5, 3)], 0));
    assert!(e.is_empty() || !e.iter().any(|x| matches!(x, Effect::Persist(_))));
    // The new leader's snapshot ends at 4 with term 6: our log disagrees there.
    let e = install_and_store(&mut n, 6, 4, 6);
    assert!(e.iter().any(|x| matches!(x, Effect::InstallChunk { .. })));
    assert_eq!((n.log().snapshot_index(), n.log().last_index()), (4, 4));
    let mut batches = Vec::new();
    let mut queue = e;
    queue.extend(n.on_persisted(1));
    for x in queue {
        if let Effect::Persist(b) = x {
            batches.push(b);
        }
    }
    let b = batches.last().expect("snapshot batch");
    assert_eq!(b.compact_to, Some(LogPoint { index: 4, term: 6 }));
    assert!(
        b.entries.is_empty(),
        "stale entries would be written: {:?}",
        b.entries
    );
    assert_eq!(b.truncate_from, Some(5));
}

#[test]
fn snapshot_older_than_commit_is_acknowledged_not_installed() {
    let mut n = node(2, 1, vec![entry(1, 1), entry(2, 1), entry(3, 1)]);
    let e = n.on_message(1, append(1, 1, (3, 1), vec![], 3));
    durable(&mut n, e);
    assert_eq!(n.commit_index(), 3);
    let e = n.on_message(1, install(1, 2, 1));
    let e = durable(&mut n, e);
    assert!(!e.iter().any(|x| matches!(x, Effect::InstallChunk { .. })));
    assert_eq!(n.log().last_index(), 3);
    assert!(sent(&e).iter().any(|(_, m)| matches!(
        m,
        Message::InstallSnapshotResponse {
            installed: true,
            ..
        }
    )));
}

#[test]
fn snapshot_that_agrees_keeps_the_entries_after_it() {
    let mut n = node(
        2,
        1,
        vec![entry(1, 1), entry(2, 1), entry(3, 1), entry(4, 1)],
    );
    let e = install_and_store(&mut n, 1, 2, 1);
    durable(&mut n, e);
    assert_eq!((n.log().snapshot_index(), n.log().last_index()), (2, 4));
    assert_eq!(n.commit_index(), 2);
}

#[test]
fn installed_answer_waits_for_the_log_to_agree_with_the_new_store() {
    // Figure 2/13: the follower acknowledges only once the compaction is durable, so a
    // leader never counts a snapshot the follower could lose on a crash.
    let mut n = node(2, 1, vec![entry(1, 1)]);
    let e = install_and_store(&mut n, 1, 9, 1);
    assert!(
        !sent(&e).iter().any(|(_, m)| matches!(
            m,
            Message::InstallSnapshotResponse {
                installed: true,
                ..
            }
        )),
        "answered before the compaction was durable"
    );
    let e = durable(&mut n, e);
    assert!(sent(&e).iter().any(|(_, m)| matches!(
        m,
        Message::InstallSnapshotResponse {
            installed: true,
            ..
        }
    )));
    assert_eq!(n.commit_index(), 9);
}

#[test]
fn chunks_go_to_the_state_machine_and_partial_progress_is_answered_at_once() {
    let mut n = node(2, 1, vec![]);
    let mut msg = install(1, 20, 1);
    if let Message::InstallSnapshot { done, .. } = &mut msg {
        *done = false;
    }
    let e = n.on_message(1, msg);
    assert!(e
        .iter()
        .any(|x| matches!(x, Effect::InstallChunk { done: false, .. })));
    let e = n.on_snapshot_chunk(1, LogPoint { index: 20, term: 1 }, (3, false), None, (0, 7));
    assert!(sent(&e).iter().any(|(_, m)| matches!(
        m,
        Message::InstallSnapshotResponse {
            next_offset: 3,
            installed: false,
            ..
        }
    )));
    assert_eq!(n.commit_index(), 0);
}

// ----- Compaction against the store -----

/// A leader of term 1 with `n` committed entries (all durable, acknowledged by node 2).
/// A leader whose durable log keeps no longer tail than memory does.
fn leader_with(entries: u64, tail: u64) -> RaftCore {
    leader_keeping(entries, tail, 0)
}

/// A leader with `entries` committed, keeping `tail` entries in memory and about
/// `disk_bytes` on disk below the store's durable index.
fn leader_keeping(entries: u64, tail: u64, disk_bytes: u64) -> RaftCore {
    let mut n = leader().with_log_tail(tail).with_limits(LogLimits {
        disk_tail_bytes: disk_bytes,
        ..LogLimits::default()
    });
    for i in 0..entries {
        let (_, e) = n.propose(Payload::Command(vec![i as u8].into()));
        durable(&mut n, e);
    }
    let last = n.log().last_index();
    let e = n.on_replicated(1, 2, last, 0, None);
    durable(&mut n, e);
    assert_eq!(n.commit_index(), last);
    n
}

fn compaction(effects: &[Effect]) -> Option<LogPoint> {
    effects.iter().find_map(|x| match x {
        Effect::Persist(b) => b.compact_to,
        _ => None,
    })
}

#[test]
fn log_is_compacted_to_the_stores_durable_index_minus_the_tail() {
    let mut n = leader_with(100, 10);
    // Nothing is dropped before the store holds it durably.
    assert_eq!(n.log().snapshot_index(), 0);
    let e = n.on_store_durable(60);
    assert_eq!(compaction(&e).map(|p| p.index), Some(50));
    assert_eq!(n.log().snapshot_index(), 50);
    durable(&mut n, e);
    // Entries the follower needs after the tail are still served from the log.
    assert!(matches!(
        n.log_slice(1, 51, 10, usize::MAX),
        LogSlice::Entries { .. }
    ));
    assert!(matches!(
        n.log_slice(1, 50, 10, usize::MAX),
        LogSlice::NeedSnapshot
    ));
}

#[test]
fn compaction_waits_for_a_snapshot_being_streamed() {
    let mut n = leader_with(100, 10);
    let last = n.log().last_index();
    // Node 3 is being sent a snapshot at 30: the log must still continue after it.
    let e = n.on_replicated(1, 3, 0, 0, Some(30));
    durable(&mut n, e);
    let e = n.on_store_durable(last);
    assert_eq!(compaction(&e).map(|p| p.index), Some(30));
    durable(&mut n, e);
    let e = n.on_replicated(1, 3, 30, 0, None);
    durable(&mut n, e);
    let e = n.on_store_durable(last);
    assert_eq!(compaction(&e).map(|p| p.index), Some(last - 10));
}

// ----- Pre-Vote (thesis §9.6) -----

fn pre_vote(term: Term, candidate: NodeId, last_index: LogIndex, last_term: Term) -> Message {
    Message::PreVote {
        term,
        candidate_id: candidate,
        last_log_index: last_index,
        last_log_term: last_term,
    }
}

fn pre_granted(effects: &[Effect]) -> Option<bool> {
    sent(effects).into_iter().find_map(|(_, m)| match m {
        Message::PreVoteResponse { vote_granted, .. } => Some(vote_granted),
        _ => None,
    })
}

#[test]
fn election_timeout_asks_for_pre_votes_without_changing_term() {
    let mut n = node(1, 3, vec![]);
    let e = n.on_election_timeout();
    assert_eq!(n.current_term(), 3, "a pre-vote changes no term");
    assert!(!e.iter().any(|x| matches!(x, Effect::Persist(_))));
    assert_eq!(
        sent(&e)
            .iter()
            .filter(|(_, m)| matches!(m, Message::PreVote { term: 4, .. }))
            .count(),
        2
    );
    // Refusals (or silence) leave the node where it was.
    let e = n.on_message(
        2,
        Message::PreVoteResponse {
            term: 3,
            vote_granted: false,
        },
    );
    assert!(e.is_empty());
    assert_eq!((n.role(), n.current_term()), (Role::Follower, 3));
}

#[test]
fn pre_vote_is_refused_while_following_a_leader_and_changes_nothing() {
    let mut n = node(2, 1, vec![entry(1, 1)]);
    let e = n.on_message(1, append(1, 1, (1, 1), vec![], 1));
    durable(&mut n, e);
    assert_eq!(n.leader_id(), Some(1));
    // Node 3 was cut off and wants term 2: refused, and our term stays 1.
    let e = n.on_message(3, pre_vote(2, 3, 1, 1));
    assert_eq!(pre_granted(&e), Some(false));
    assert_eq!(n.current_term(), 1);
    assert_eq!(n.voted_for(), None);
    // Without a leader, an up-to-date candidate gets a yes, a stale one a no.
    let mut m = node(2, 1, vec![entry(1, 1)]);
    assert_eq!(
        pre_granted(&m.on_message(3, pre_vote(2, 3, 1, 1))),
        Some(true)
    );
    assert_eq!(
        pre_granted(&m.on_message(3, pre_vote(2, 3, 0, 0))),
        Some(false)
    );
    assert_eq!(
        pre_granted(&m.on_message(3, pre_vote(1, 3, 5, 1))),
        Some(false)
    );
    assert_eq!(m.current_term(), 1);
}

/// Reference: thesis §9.6 (Pre-Vote) with §5.2. A candidate of term 1 times out and starts
/// a pre-vote for term 2 while a vote for term 1 is still in flight. The vote arrives and
/// it leads term 1; then a late pre-vote grant for term 2 arrives. That grant belongs to a
/// pre-campaign that ended when this node won: it must not depose the new leader.
#[test]
fn late_pre_vote_grant_does_not_depose_a_new_leader() {
    let mut n = node(1, 0, vec![]);
    campaign(&mut n);
    assert_eq!((n.role(), n.current_term()), (Role::Candidate, 1));
    // The candidate's election times out: a pre-vote for term 2 goes out.
    let e = n.on_election_timeout();
    durable(&mut n, e);
    assert_eq!((n.role(), n.current_term()), (Role::Candidate, 1));
    // The vote for term 1 arrives late: node 1 leads term 1.
    let e = n.on_message(
        2,
        Message::RequestVoteResponse {
            term: 1,
            vote_granted: true,
        },
    );
    durable(&mut n, e);
    assert_eq!(n.role(), Role::Leader);
    // Then node 2's grant of the pre-vote for term 2.
    let e = n.on_message(
        2,
        Message::PreVoteResponse {
            term: 2,
            vote_granted: true,
        },
    );
    let e = durable(&mut n, e);
    assert_eq!((n.role(), n.current_term()), (Role::Leader, 1));
    assert!(
        !sent(&e)
            .iter()
            .any(|(_, m)| matches!(m, Message::RequestVote { .. })),
        "no election for term 2: {:?}",
        e
    );
}

/// A peer that sends numbers near u64::MAX (a bug or an attack) is ignored: the term does
/// not move, and nothing downstream does arithmetic on it.
#[test]
fn hostile_numbers_from_a_peer_are_ignored() {
    let mut n = node(2, 1, vec![entry(1, 1)]);
    for msg in [
        vote_req(u64::MAX, 3, 1, 1),
        vote_req(2, 3, u64::MAX, 1),
        append(u64::MAX, 1, (1, 1), vec![], 1),
        append(2, 1, (u64::MAX, 1), vec![], 1),
        append(2, 1, (1, 1), vec![], u64::MAX),
        // Entries that do not follow prev_log_index, or from a newer term than the leader's.
        append(2, 1, (1, 1), vec![entry(5, 2)], 1),
        append(2, 1, (1, 1), vec![entry(2, 3)], 1),
        Message::AppendEntriesResponse {
            term: 1,
            success: true,
            match_index: u64::MAX,
            reject: None,
            read_seq: 0,
        },
    ] {
        let e = n.on_message(3, msg.clone());
        assert!(e.is_empty(), "{:?} -> {:?}", msg, e);
        assert_eq!((n.current_term(), n.voted_for()), (1, None), "{:?}", msg);
    }
    assert_eq!(n.log().last_index(), 1);
}

/// A leader whose followers do not keep up refuses new proposals once too much waits to
/// commit (memory stays bounded), and accepts again as soon as entries commit.
#[test]
fn proposals_are_refused_while_too_much_waits_to_commit() {
    let mut n = leader().with_limits(LogLimits {
        max_uncommitted_entries: 3,
        max_uncommitted_bytes: 1 << 20,
        log_tail_bytes: 1 << 20,
        ..LogLimits::default()
    });
    // The no-op is uncommitted too: two more fit.
    for _ in 0..2 {
        let (r, e) = n.propose(Payload::Command(vec![1; 10].into()));
        assert!(r.is_ok());
        durable(&mut n, e);
    }
    let (r, e) = n.propose(Payload::Command(vec![1; 10].into()));
    assert_eq!(
        r,
        Err(ProposeError::Overloaded {
            entries: 3,
            bytes: n.log().bytes_between(0, 3)
        })
    );
    assert!(e.is_empty(), "nothing appended: {:?}", e);
    assert_eq!(n.log().last_index(), 3);
    let e = n.on_replicated(1, 2, 3, 0, None);
    durable(&mut n, e);
    assert!(n.propose(Payload::Command(vec![1; 10].into())).0.is_ok());
    // And by bytes: one large proposal fills the budget.
    let mut m = leader().with_limits(LogLimits {
        max_uncommitted_entries: 100,
        max_uncommitted_bytes: 1000,
        log_tail_bytes: 1 << 20,
        ..LogLimits::default()
    });
    assert!(m.propose(Payload::Command(vec![0; 2000].into())).0.is_ok());
    assert!(matches!(
        m.propose(Payload::Command(vec![0; 1].into())).0,
        Err(ProposeError::Overloaded { .. })
    ));
}

/// A store that falls behind (a slow disk) stops new proposals as well: committed entries
/// still waiting to be applied count against the leader's budget until the state machine
/// reports them applied, so clients get a 503 at once instead of a 504 at their timeout.
#[test]
fn proposals_wait_for_the_state_machine_to_catch_up() {
    let mut n = leader().with_limits(LogLimits {
        max_uncommitted_entries: 100,
        max_unapplied_entries: 3,
        ..LogLimits::default()
    });
    for _ in 0..2 {
        let (r, e) = n.propose(Payload::Command(vec![1; 10].into()));
        assert!(r.is_ok());
        durable(&mut n, e);
    }
    // The no-op and both commands commit; none is applied yet.
    let e = n.on_replicated(1, 2, 3, 0, None);
    durable(&mut n, e);
    assert_eq!(n.commit_index(), 3);
    let (r, e) = n.propose(Payload::Command(vec![1; 10].into()));
    assert_eq!(
        r,
        Err(ProposeError::ApplyBehind {
            entries: 3,
            bytes: n.log().bytes_between(0, 3)
        })
    );
    assert!(e.is_empty(), "nothing appended: {:?}", e);
    assert_eq!(n.log().last_index(), 3);
    // One applied makes room for one more (uncommitted entries count too).
    n.note_applied(1);
    assert!(n.propose(Payload::Command(vec![1; 10].into())).0.is_ok());
    assert!(matches!(
        n.propose(Payload::Command(vec![1; 10].into())).0,
        Err(ProposeError::ApplyBehind { entries: 3, .. })
    ));
    // And by bytes: one large committed value not yet applied fills the budget.
    let mut m = leader().with_limits(LogLimits {
        max_uncommitted_entries: 100,
        max_uncommitted_bytes: 1 << 20,
        max_unapplied_bytes: 1000,
        ..LogLimits::default()
    });
    let (r, e) = m.propose(Payload::Command(vec![0; 2000].into()));
    assert_eq!(r, Ok((2, 1)));
    durable(&mut m, e);
    let e = m.on_replicated(1, 2, 2, 0, None);
    durable(&mut m, e);
    assert!(matches!(
        m.propose(Payload::Command(vec![0; 1].into())).0,
        Err(ProposeError::ApplyBehind { entries: 2, .. })
    ));
    m.note_applied(2);
    assert!(m.propose(Payload::Command(vec![0; 1].into())).0.is_ok());
}

/// The log tail kept for slow followers is bounded in bytes too: with large values, the
/// entry count alone would keep gigabytes in memory.
#[test]
fn the_log_tail_is_bounded_in_bytes() {
    let mut n = leader().with_log_tail(1000).with_limits(LogLimits {
        max_uncommitted_entries: 1000,
        max_uncommitted_bytes: 1 << 30,
        log_tail_bytes: 10_000,
        disk_tail_bytes: 0,
        ..LogLimits::default()
    });
    for _ in 0..20 {
        let (_, e) = n.propose(Payload::Command(vec![0; 1000].into()));
        durable(&mut n, e);
    }
    let last = n.log().last_index();
    let e = n.on_replicated(1, 2, last, 0, None);
    durable(&mut n, e);
    let before = n.log().clone();
    let e = n.on_store_durable(last);
    let point = compaction(&e).expect("compacts by bytes although 1000 entries are allowed");
    assert!(before.bytes_between(point.index, last) <= 10_000);
    assert!(before.bytes_between(point.index - 1, last) > 10_000);
}

/// The durable log keeps a longer tail than memory: entries compacted from memory but not
/// from disk are served from disk (they are committed), and only entries compacted from
/// both need a snapshot. The disk is compacted once its tail passes its byte budget.
#[test]
fn entries_compacted_from_memory_are_served_from_disk() {
    // Entries of 33 bytes each (32 + one byte of command): a disk tail of ~40 entries.
    let mut n = leader_keeping(100, 10, 40 * 33);
    let e = n.on_store_durable(30);
    assert_eq!(n.log().snapshot_index(), 20, "memory keeps 10 below 30");
    assert_eq!(compaction(&e), None, "the disk keeps its tail");
    durable(&mut n, e);
    assert!(matches!(
        n.log_slice(1, 21, 10, usize::MAX),
        LogSlice::Entries { .. }
    ));
    // The term before 20 is not in memory: read from 19.
    assert_eq!(
        n.log_slice(1, 20, 10, usize::MAX),
        LogSlice::OnDisk {
            from: 20,
            prev: None,
            through: 20,
            leader_commit: 101,
        }
    );
    // Before the first entry, the term is known (0).
    assert!(matches!(
        n.log_slice(1, 1, 10, usize::MAX),
        LogSlice::OnDisk {
            from: 1,
            prev: Some(LogPoint { index: 0, term: 0 }),
            ..
        }
    ));
    // Once the store holds far more, the disk tail is compacted too, to the newest point
    // the memory log was compacted to that leaves more than its budget (20: 70 entries
    // below 90, where 50 would leave 40).
    let e = n.on_store_durable(60);
    assert_eq!(
        compaction(&e),
        None,
        "40 entries below 60 are within the budget"
    );
    durable(&mut n, e);
    let e = n.on_store_durable(90);
    let point = compaction(&e).expect("the disk tail passed its budget");
    assert_eq!(point, LogPoint { index: 20, term: 1 });
    durable(&mut n, e);
    assert_eq!(
        n.log_slice(1, point.index, 10, usize::MAX),
        LogSlice::NeedSnapshot
    );
    assert!(matches!(
        n.log_slice(1, point.index + 1, 10, usize::MAX),
        LogSlice::OnDisk { .. }
    ));
}

// ----- §5.1: RPCs are retried -----

/// `n` gets a vote answer from `from` (a pre-vote answer when `pre`) and makes its effects
/// durable.
fn answer_vote(n: &mut RaftCore, from: NodeId, pre: bool, term: Term, granted: bool) {
    let msg = if pre {
        Message::PreVoteResponse {
            term,
            vote_granted: granted,
        }
    } else {
        Message::RequestVoteResponse {
            term,
            vote_granted: granted,
        }
    };
    let e = n.on_message(from, msg);
    durable(n, e);
}

#[test]
fn unanswered_vote_requests_are_asked_again_on_the_tick() {
    let mut n = node(1, 0, vec![]);
    // Pre-vote: node 2's answer is lost; the tick asks nodes 2 and 3 again, for the same term.
    let e = n.on_election_timeout();
    durable(&mut n, e);
    let asked = asked_on_tick(&mut n, Ask::PreVotes);
    assert_eq!(asked, vec![2, 3]);
    assert_eq!(n.current_term(), 0, "asking again changes no term");
    // A refusal is an answer: node 3 (still following its leader) refuses and is not
    // asked again before the next timeout; node 2, silent, is.
    answer_vote(&mut n, 3, true, 0, false);
    let asked = asked_on_tick(&mut n, Ask::PreVotes);
    assert_eq!(asked, vec![2]);
    // Node 2 grants: the election starts. Its vote answer is lost too.
    answer_vote(&mut n, 2, true, 1, true);
    assert_eq!((n.role(), n.current_term()), (Role::Candidate, 1));
    assert_eq!(
        asked_on_tick(&mut n, Ask::Votes),
        vec![2, 3],
        "a candidate asks again every voter that has not answered"
    );
    // A voter that granted this candidate grants the repeated request again: votedFor is
    // the candidate (Figure 2, RequestVote rule 2).
    let mut voter = node(2, 0, vec![]);
    let e = voter.on_message(1, vote_req(1, 1, 0, 0));
    assert_eq!(granted(&durable(&mut voter, e)), Some(true));
    let e = voter.on_message(1, vote_req(1, 1, 0, 0));
    assert_eq!(granted(&durable(&mut voter, e)), Some(true));
    // Node 3 refuses: a refusal in this term is final, so only node 2 is asked again
    // (a split vote must wait for the randomized timeout).
    answer_vote(&mut n, 3, false, 1, false);
    let asked = asked_on_tick(&mut n, Ask::Votes);
    assert_eq!(asked, vec![2]);
    // Node 2 grants: leader. The tick then asks nobody for anything.
    answer_vote(&mut n, 2, false, 1, true);
    assert_eq!(n.role(), Role::Leader);
    let after = sent(&tick(&mut n));
    assert!(
        !after
            .iter()
            .any(|(_, m)| matches!(m, Message::RequestVote { .. } | Message::PreVote { .. })),
        "a leader asks for no votes: {:?}",
        after
    );
}

/// A heartbeat tick, its persists completed.
fn tick(n: &mut RaftCore) -> Vec<Effect> {
    let e = n.on_tick();
    durable(n, e)
}

enum Ask {
    PreVotes,
    Votes,
}

/// The voters a heartbeat tick asks again, for pre-votes or votes for term 1.
fn asked_on_tick(n: &mut RaftCore, ask: Ask) -> Vec<NodeId> {
    sent(&tick(n))
        .into_iter()
        .filter(|(_, m)| match ask {
            Ask::PreVotes => matches!(m, Message::PreVote { term: 1, .. }),
            Ask::Votes => matches!(m, Message::RequestVote { term: 1, .. }),
        })
        .map(|(to, _)| to)
        .collect()
}
