//! The StateMachine actor: applies committed entries to the key-value map strictly in index
//! order, each exactly once, and answers the clients waiting on them and on reads.

use std::collections::BTreeMap;

use actix::prelude::*;
use log::{debug, error};
use tokio::sync::oneshot;

use crate::kv::{ClientResponse, KvStore};
use crate::raft::{Entry, LogIndex, Payload, Term};

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

/// Reported to the consensus core after each applied batch.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct Applied {
    pub index: LogIndex,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct StopStateMachine;

/// Every applied entry, for test observers that check State Machine Safety.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct AppliedEntries {
    pub node: u64,
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
        }
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
            if let Some((term, tx)) = self.waiters.remove(&entry.index) {
                let response = match result {
                    Some(result) if term == entry.term => ClientResponse::Written {
                        index: entry.index,
                        result,
                    },
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
                entries,
            });
        }
        if let Some(r) = &self.applied_to {
            r.do_send(Applied {
                index: self.last_applied,
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
