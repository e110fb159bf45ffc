//! The StateMachine actor: applies committed entries to the key-value map strictly in index
//! order, each exactly once, and answers the clients waiting on them and on reads.

use std::collections::BTreeMap;

use actix::prelude::*;
use log::{debug, error};
use tokio::sync::oneshot;

use std::sync::Arc;

use crate::kv::{ClientResponse, KvStore};
use crate::raft::{Entry, LogIndex, Payload, Snapshot, Term};

/// Committed entries, in order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Apply(pub Vec<Entry>);

/// Tell `tx` the outcome of the entry proposed at (`index`, `term`) once it is applied.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AwaitApplied {
    pub index: LogIndex,
    pub term: Term,
    pub tx: oneshot::Sender<ClientResponse>,
}

/// Answer a read of `key` once everything up to `read_index` is applied.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReadAt {
    pub key: String,
    pub read_index: LogIndex,
    pub tx: oneshot::Sender<ClientResponse>,
}

/// Read `key` from whatever is applied now (a possibly stale read).
#[derive(Message)]
#[rtype(result = "Option<Vec<u8>>")]
pub struct ReadLocal(pub String);

/// The applied index and a copy of the map (for tests and diagnostics).
#[derive(Message)]
#[rtype(result = "(LogIndex, KvStore)")]
pub struct Dump;

/// Reported to the consensus core after each applied batch, with a snapshot of the state
/// machine when the log since the last one passed the configured threshold.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Applied {
    pub index: LogIndex,
    pub snapshot: Option<Snapshot>,
}

/// Replace the whole state with a snapshot installed from the leader.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restore(pub Arc<Snapshot>);

/// When the state machine hands a snapshot to the core.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotPolicy {
    /// Entries applied since the last snapshot.
    pub max_entries: u64,
    /// Approximate bytes of entries applied since the last snapshot.
    pub max_bytes: u64,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct StopStateMachine;

/// Every applied entry, for test observers that check State Machine Safety.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct AppliedEntries {
    pub node: u64,
    /// Set when the state machine was reset from a snapshot ending at this index.
    pub restored_to: Option<LogIndex>,
    pub entries: Vec<Entry>,
}

pub struct StateMachine {
    node_id: u64,
    kv: KvStore,
    last_applied: LogIndex,
    waiters: BTreeMap<LogIndex, (Term, oneshot::Sender<ClientResponse>)>,
    reads: BTreeMap<LogIndex, Vec<(String, oneshot::Sender<ClientResponse>)>>,
    applied_to: Option<Recipient<Applied>>,
    observer: Option<Recipient<AppliedEntries>>,
    last_applied_term: Term,
    policy: SnapshotPolicy,
    snapshot_index: LogIndex,
    bytes_since_snapshot: u64,
    members: Vec<u64>,
}

impl StateMachine {
    pub fn new(
        node_id: u64,
        kv: KvStore,
        last_applied: LogIndex,
        applied_to: Option<Recipient<Applied>>,
    ) -> Self {
        StateMachine {
            node_id,
            kv,
            last_applied,
            waiters: BTreeMap::new(),
            reads: BTreeMap::new(),
            applied_to,
            observer: None,
            last_applied_term: 0,
            policy: SnapshotPolicy {
                max_entries: u64::MAX,
                max_bytes: u64::MAX,
            },
            snapshot_index: last_applied,
            bytes_since_snapshot: 0,
            members: Vec::new(),
        }
    }

    /// Snapshot when the applied log passes `policy`; `members` and `term` describe the
    /// starting point (the term of the entry at `last_applied`).
    pub fn with_snapshots(mut self, policy: SnapshotPolicy, members: Vec<u64>, term: Term) -> Self {
        self.policy = policy;
        self.members = members;
        self.last_applied_term = term;
        self
    }

    fn take_snapshot_if_due(&mut self) -> Option<Snapshot> {
        let entries = self.last_applied - self.snapshot_index;
        if entries == 0
            || (entries < self.policy.max_entries
                && self.bytes_since_snapshot < self.policy.max_bytes)
        {
            return None;
        }
        self.snapshot_index = self.last_applied;
        self.bytes_since_snapshot = 0;
        // The hand-off is a copy of the map; encoding and disk writes happen in the LogStore.
        Some(Snapshot {
            index: self.last_applied,
            term: self.last_applied_term,
            members: self.members.clone(),
            kv: self.kv.clone(),
        })
    }

    /// Also report every applied entry to `observer` (tests).
    pub fn with_observer(mut self, observer: Option<Recipient<AppliedEntries>>) -> Self {
        self.observer = observer;
        self
    }

    fn answer_reads(&mut self) {
        let later = self.reads.split_off(&(self.last_applied + 1));
        let ready = std::mem::replace(&mut self.reads, later);
        for (_, waiting) in ready {
            for (key, tx) in waiting {
                let _ = tx.send(ClientResponse::Value(self.kv.get(&key).cloned()));
            }
        }
    }
}

impl Actor for StateMachine {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        if self.last_applied > 0 {
            if let Some(o) = &self.observer {
                o.do_send(AppliedEntries {
                    node: self.node_id,
                    restored_to: Some(self.last_applied),
                    entries: Vec::new(),
                });
            }
        }
    }
}

impl Handler<Apply> for StateMachine {
    type Result = ();

    fn handle(&mut self, Apply(entries): Apply, _ctx: &mut Context<Self>) {
        let observed = self.observer.as_ref().map(|_| entries.clone());
        for entry in entries {
            // Apply in index order, exactly once (Figure 2, All Servers rule 1).
            if entry.index <= self.last_applied {
                continue;
            }
            if entry.index != self.last_applied + 1 {
                error!(
                    "[node {}] state machine gap: got index {} after {}; not applied",
                    self.node_id, entry.index, self.last_applied
                );
                return;
            }
            let result = match &entry.payload {
                Payload::Noop => None,
                Payload::Command(cmd) => Some(self.kv.apply(entry.index, cmd)),
            };
            self.last_applied = entry.index;
            self.last_applied_term = entry.term;
            self.bytes_since_snapshot += entry.approx_size() as u64;
            if let Some((term, tx)) = self.waiters.remove(&entry.index) {
                let response = match result {
                    Some((result, index)) if term == entry.term => {
                        ClientResponse::Written { index, result }
                    }
                    // Another leader's entry took this index: ours was never committed and,
                    // living only at this index, never will be.
                    _ => ClientResponse::Unavailable {
                        reason: "leadership changed before the write committed; it was not applied"
                            .into(),
                        leader: None,
                    },
                };
                let _ = tx.send(response);
            }
        }
        debug!(
            "[node {}] applied through index {}",
            self.node_id, self.last_applied
        );
        // Waiters below last_applied were for entries already handled (cannot normally happen).
        let later = self.waiters.split_off(&(self.last_applied + 1));
        self.waiters = later;
        self.answer_reads();
        if let (Some(o), Some(mut entries)) = (&self.observer, observed) {
            entries.retain(|e| e.index <= self.last_applied);
            o.do_send(AppliedEntries {
                node: self.node_id,
                restored_to: None,
                entries,
            });
        }
        let snapshot = self.take_snapshot_if_due();
        if let Some(r) = &self.applied_to {
            r.do_send(Applied {
                index: self.last_applied,
                snapshot,
            });
        }
    }
}

impl Handler<Restore> for StateMachine {
    type Result = ();

    fn handle(&mut self, Restore(snapshot): Restore, _ctx: &mut Context<Self>) {
        if snapshot.index <= self.last_applied {
            return;
        }
        self.kv = snapshot.kv.clone();
        self.last_applied = snapshot.index;
        self.last_applied_term = snapshot.term;
        self.snapshot_index = snapshot.index;
        self.bytes_since_snapshot = 0;
        // Writes that were waiting on entries inside the snapshot: applied or not, their
        // individual results are gone.
        let later = self.waiters.split_off(&(self.last_applied + 1));
        for (_, (_, tx)) in std::mem::replace(&mut self.waiters, later) {
            let _ = tx.send(ClientResponse::Unknown {
                reason: "state replaced by a snapshot before the result was known".into(),
                leader: None,
            });
        }
        self.answer_reads();
        if let Some(o) = &self.observer {
            o.do_send(AppliedEntries {
                node: self.node_id,
                restored_to: Some(snapshot.index),
                entries: Vec::new(),
            });
        }
        if let Some(r) = &self.applied_to {
            r.do_send(Applied {
                index: self.last_applied,
                snapshot: None,
            });
        }
    }
}

impl Handler<AwaitApplied> for StateMachine {
    type Result = ();

    fn handle(&mut self, msg: AwaitApplied, _ctx: &mut Context<Self>) {
        if msg.index <= self.last_applied {
            let _ = msg.tx.send(ClientResponse::Unknown {
                reason: "entry applied before its outcome could be recorded".into(),
                leader: None,
            });
            return;
        }
        self.waiters.insert(msg.index, (msg.term, msg.tx));
    }
}

impl Handler<ReadAt> for StateMachine {
    type Result = ();

    fn handle(&mut self, msg: ReadAt, _ctx: &mut Context<Self>) {
        if msg.read_index <= self.last_applied {
            let _ = msg
                .tx
                .send(ClientResponse::Value(self.kv.get(&msg.key).cloned()));
        } else {
            self.reads
                .entry(msg.read_index)
                .or_default()
                .push((msg.key, msg.tx));
        }
    }
}

impl Handler<ReadLocal> for StateMachine {
    type Result = Option<Vec<u8>>;

    fn handle(&mut self, ReadLocal(key): ReadLocal, _ctx: &mut Context<Self>) -> Self::Result {
        self.kv.get(&key).cloned()
    }
}

impl Handler<Dump> for StateMachine {
    type Result = MessageResult<Dump>;

    fn handle(&mut self, _: Dump, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult((self.last_applied, self.kv.clone()))
    }
}

impl Handler<StopStateMachine> for StateMachine {
    type Result = ();

    fn handle(&mut self, _: StopStateMachine, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
