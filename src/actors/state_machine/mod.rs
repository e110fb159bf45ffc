//! The StateMachine actor: applies committed entries to the disk-backed store strictly in
//! index order, each exactly once, and answers the clients waiting on them and on reads.
//! It also serves snapshots: a stream of chunks from a consistent read view for a leader's
//! Replicator, and the install of a leader's stream on a follower (built beside the old
//! store, swapped in atomically).
//!
//! In production it runs on its own thread (an actix Arbiter), so store commits, syncs and
//! snapshot work never stall the consensus actor.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use log::{debug, error, warn};
use tokio::sync::oneshot;

mod snapshots;

pub use snapshots::{
    Chunk, ChunkRx, ChunkStored, InstallChunk, OpenSnapshot, Polled, SnapshotLimits, SnapshotStream,
};

use crate::codec;
use crate::kv::{
    ApplyItem, ApplyOutcome, ApplyResult, ClientResponse, Command, Installer, KvStore, FIRST_SEQ,
    MAX_SESSIONS, SESSION_TTL_MS,
};
use crate::raft::{Entry, LogIndex, LogPoint, NodeId, Payload, Term};

/// Committed entries, in order, with the clients waiting for the outcome of some of them
/// (they ride along, so a write costs no message of its own between the actors).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Apply {
    pub entries: Vec<Entry>,
    pub waiters: Vec<Waiter>,
}

/// A client waiting for the outcome of the entry it proposed at (`index`, `term`).
#[derive(Debug)]
pub struct Waiter {
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

/// Read `key` from whatever is applied now (a possibly stale read); the answer goes to `tx`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReadLocal {
    pub key: String,
    pub tx: oneshot::Sender<ClientResponse>,
}

/// The applied index and every key and value (for tests and diagnostics).
#[derive(Message)]
#[rtype(result = "(LogIndex, BTreeMap<String, Vec<u8>>)")]
pub struct Dump;

/// Reported to the consensus actor when the store has synced everything up to `durable`
/// (the log below it may be compacted).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StoreDurable {
    pub durable: LogIndex,
}

/// The state machine's applied index, for `/status`: a gauge the StateMachine sets and
/// anyone may read. No decision depends on it.
#[derive(Clone, Debug, Default)]
pub struct AppliedGauge(Arc<AtomicU64>);

impl AppliedGauge {
    pub fn new(index: LogIndex) -> Self {
        AppliedGauge(Arc::new(AtomicU64::new(index)))
    }

    pub fn get(&self) -> LogIndex {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, index: LogIndex) {
        self.0.store(index, Ordering::Relaxed);
    }
}

/// When the store syncs (a durable commit): the log is the write-ahead log, so these only
/// bound how much of it is replayed after a crash and how soon it can be compacted.
#[derive(Clone, Copy, Debug)]
pub struct SyncPolicy {
    /// Entries applied since the last sync.
    pub every_entries: u64,
    /// Approximate bytes of entries applied since the last sync.
    pub every_bytes: u64,
    /// Sync at least this often while entries are being applied.
    pub interval: Duration,
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

/// What the consensus actor holds of its state machine.
pub struct StateMachineRef {
    pub addr: Addr<StateMachine>,
    pub applied: AppliedGauge,
}

/// Where the state machine reports to.
pub struct StateMachineLinks {
    pub durable: Recipient<StoreDurable>,
    pub chunks: Recipient<ChunkStored>,
    pub applied: AppliedGauge,
    pub metrics: Arc<crate::metrics::Metrics>,
}

pub struct StateMachine {
    node_id: NodeId,
    store: KvStore,
    last_applied: LogIndex,
    last_applied_term: Term,
    /// Highest index the store holds durably.
    durable: LogIndex,
    entries_since_sync: u64,
    bytes_since_sync: u64,
    sync: SyncPolicy,
    snapshots: SnapshotLimits,
    waiters: BTreeMap<LogIndex, (Term, oneshot::Sender<ClientResponse>)>,
    reads: BTreeMap<LogIndex, Vec<(String, oneshot::Sender<ClientResponse>)>>,
    links: Option<StateMachineLinks>,
    observer: Option<Recipient<AppliedEntries>>,
    /// A snapshot being received from a leader, with the transfer's stream id.
    install: Option<(u64, Installer)>,
    install_logged: u64,
    /// Stop the arbiter this actor runs on when it stops.
    own_arbiter: bool,
    /// Committed entries received and not yet applied (see `ApplyPending`).
    pending: Vec<Entry>,
    apply_scheduled: bool,
    /// A commit of the store's open transaction is due (see `COMMIT_DELAY`).
    commit_scheduled: bool,
}

/// How long applied entries may wait in the store's open transaction before a commit. A
/// commit costs about 30 µs, applying an entry about 2 µs: at one client this turns one
/// commit per write into one per few writes.
const COMMIT_DELAY: Duration = Duration::from_millis(2);

impl StateMachine {
    /// A state machine over `store`, which has applied up to `applied` (durably).
    pub fn new(
        node_id: NodeId,
        store: KvStore,
        applied: LogPoint,
        links: Option<StateMachineLinks>,
    ) -> Self {
        StateMachine {
            node_id,
            store,
            last_applied: applied.index,
            last_applied_term: applied.term,
            durable: applied.index,
            entries_since_sync: 0,
            bytes_since_sync: 0,
            sync: SyncPolicy {
                every_entries: 10_000,
                every_bytes: 64 * 1024 * 1024,
                interval: Duration::from_secs(1),
            },
            snapshots: SnapshotLimits {
                chunk_bytes: 1024 * 1024,
                window: 8,
                threaded: false,
            },
            waiters: BTreeMap::new(),
            reads: BTreeMap::new(),
            links,
            observer: None,
            install: None,
            install_logged: 0,
            own_arbiter: false,
            pending: Vec::new(),
            apply_scheduled: false,
            commit_scheduled: false,
        }
    }

    pub fn with_policies(mut self, sync: SyncPolicy, snapshots: SnapshotLimits) -> Self {
        self.sync = sync;
        self.snapshots = snapshots;
        self
    }

    /// Also report every applied entry to `observer` (tests).
    pub fn with_observer(mut self, observer: Option<Recipient<AppliedEntries>>) -> Self {
        self.observer = observer;
        self
    }

    /// This actor runs on an arbiter of its own, to be stopped with it.
    pub fn on_own_arbiter(mut self) -> Self {
        self.own_arbiter = true;
        self
    }

    /// The store failed: nothing this node applies can be trusted any more.
    fn fatal(&mut self, why: &str, ctx: &mut Context<Self>) {
        error!(
            "[node {}] fatal: state machine store failed: {}; stopping the node",
            self.node_id, why
        );
        ctx.stop();
        System::current().stop_with_code(1);
    }

    fn read(&self, key: &str) -> ClientResponse {
        match self.store.get(key) {
            Ok(v) => ClientResponse::Value(v),
            Err(e) => {
                error!("[node {}] read of {:?} failed: {}", self.node_id, key, e);
                ClientResponse::Unavailable {
                    reason: format!("store read failed: {}", e),
                    leader: None,
                }
            }
        }
    }

    fn answer_reads(&mut self) {
        let later = self.reads.split_off(&(self.last_applied + 1));
        let ready = std::mem::replace(&mut self.reads, later);
        for (_, waiting) in ready {
            for (key, tx) in waiting {
                let _ = tx.send(self.read(&key));
            }
        }
    }

    /// Publishes the applied index, and tells the consensus actor when the store holds
    /// everything up to it durably.
    fn report(&self, durable: bool) {
        if let Some(l) = &self.links {
            l.applied.set(self.last_applied);
            if durable {
                l.durable.do_send(StoreDurable {
                    durable: self.durable,
                });
            }
        }
    }

    fn sync_now(&mut self, ctx: &mut Context<Self>) {
        self.apply_pending(ctx);
        if self.durable >= self.last_applied {
            return;
        }
        let started = std::time::Instant::now();
        if let Err(e) = self.store.sync() {
            self.fatal(&e.to_string(), ctx);
            return;
        }
        slow(
            "store sync",
            started,
            self.node_id,
            self.last_applied - self.durable,
        );
        self.durable = self.last_applied;
        self.entries_since_sync = 0;
        self.bytes_since_sync = 0;
        debug!(
            "[node {}] store synced through index {}",
            self.node_id, self.durable
        );
        self.report(true);
    }
}

/// What a client hears of its applied command.
fn outcome_response(outcome: ApplyOutcome) -> ClientResponse {
    match outcome {
        ApplyOutcome::Applied(result, index) => ClientResponse::Written { index, result },
        ApplyOutcome::SessionExpired => ClientResponse::SessionExpired {
            reason: format!(
                "session expired or unknown: its requests after the first (seq {}) can no longer \
                 be told apart from retries, so this one was not applied; start a new session \
                 (a new X-Client-Id, or seq {}). Sessions expire after {} minutes without a write",
                FIRST_SEQ,
                FIRST_SEQ,
                SESSION_TTL_MS / 60_000
            ),
        },
        ApplyOutcome::TooManySessions => ClientResponse::Unavailable {
            reason: format!(
                "too many client sessions ({} are live; they expire after {} minutes without a \
                 write); not applied. Retry later, or write without X-Client-Id",
                MAX_SESSIONS,
                SESSION_TTL_MS / 60_000
            ),
            leader: None,
        },
    }
}

/// Store work that took long enough to show in client latency is worth an operator's
/// attention (a slow or busy disk).
pub(crate) fn slow(what: &str, started: std::time::Instant, node: NodeId, entries: u64) {
    let took = started.elapsed();
    if took >= SLOW_STORE_WORK {
        warn!(
            "[node {}] {} of {} entries took {} ms",
            node,
            what,
            entries,
            took.as_millis()
        );
    }
}

/// See [`slow`].
const SLOW_STORE_WORK: Duration = Duration::from_millis(50);

impl Actor for StateMachine {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.last_applied > 0 {
            if let Some(o) = &self.observer {
                o.do_send(AppliedEntries {
                    node: self.node_id,
                    restored_to: Some(self.last_applied),
                    entries: Vec::new(),
                });
            }
        }
        ctx.run_interval(self.sync.interval, |act, ctx| act.sync_now(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some((_, i)) = self.install.take() {
            i.abandon();
        }
        if self.own_arbiter {
            Arbiter::current().stop();
        }
    }
}

/// Apply what has piled up (sent to itself after the first `Apply` of a burst, so it runs
/// once the mailbox is drained: one store transaction for the whole burst).
#[derive(Message)]
#[rtype(result = "()")]
struct ApplyPending;

impl Handler<Apply> for StateMachine {
    type Result = ();

    fn handle(&mut self, Apply { entries, waiters }: Apply, ctx: &mut Context<Self>) {
        self.pending.extend(entries);
        for w in waiters {
            if w.index <= self.last_applied {
                let _ = w.tx.send(ClientResponse::Unknown {
                    reason: "entry applied before its outcome could be recorded".into(),
                    leader: None,
                });
            } else {
                self.waiters.insert(w.index, (w.term, w.tx));
            }
        }
        if !self.apply_scheduled {
            self.apply_scheduled = true;
            ctx.notify(ApplyPending);
        }
    }
}

impl Handler<ApplyPending> for StateMachine {
    type Result = ();

    fn handle(&mut self, _: ApplyPending, ctx: &mut Context<Self>) {
        self.apply_pending(ctx);
    }
}

impl StateMachine {
    fn apply_pending(&mut self, ctx: &mut Context<Self>) {
        self.apply_scheduled = false;
        let entries = std::mem::take(&mut self.pending);
        // Apply in index order, exactly once (Figure 2, All Servers rule 1).
        let mut fresh: Vec<Entry> = Vec::with_capacity(entries.len());
        for entry in entries {
            let expected = fresh.last().map_or(self.last_applied, |e| e.index) + 1;
            if entry.index < expected {
                continue;
            }
            if entry.index != expected {
                error!(
                    "[node {}] state machine gap: got index {} after {}; not applied",
                    self.node_id,
                    entry.index,
                    expected - 1
                );
                break;
            }
            fresh.push(entry);
        }
        let Some(last) = fresh.last().map(|e| (e.index, e.term)) else {
            return;
        };
        let commands: Vec<Option<Command>> = fresh
            .iter()
            .map(|e| match &e.payload {
                Payload::Noop | Payload::Config(_) => None,
                Payload::Command(bytes) => match codec::decode::<Command>(bytes) {
                    Ok(c) => Some(c),
                    Err(err) => {
                        // Every replica decodes the same bytes the same way: all skip it.
                        error!(
                            "[node {}] entry {} holds a command that does not decode ({}); skipped",
                            self.node_id, e.index, err
                        );
                        None
                    }
                },
            })
            .collect();
        let items: Vec<ApplyItem> = fresh
            .iter()
            .zip(&commands)
            .map(|(e, c)| ApplyItem {
                index: e.index,
                term: e.term,
                command: c.as_ref(),
                membership: match &e.payload {
                    Payload::Config(m) => Some(m),
                    _ => None,
                },
            })
            .collect();
        self.entries_since_sync += fresh.len() as u64;
        self.bytes_since_sync += fresh.iter().map(|e| e.approx_size() as u64).sum::<u64>();
        let durable = self.entries_since_sync >= self.sync.every_entries
            || self.bytes_since_sync >= self.sync.every_bytes;
        let started = std::time::Instant::now();
        let results = match self.store.apply(&items, durable) {
            Ok(r) => r,
            Err(e) => {
                self.fatal(&e.to_string(), ctx);
                return;
            }
        };
        if let Some(l) = &self.links {
            l.metrics
                .apply_latency
                .observe(started.elapsed().as_secs_f64());
        }
        slow(
            if durable {
                "store sync"
            } else {
                "store commit"
            },
            started,
            self.node_id,
            fresh.len() as u64,
        );
        self.last_applied = last.0;
        self.last_applied_term = last.1;
        for (entry, result) in fresh.iter().zip(results) {
            if let Some((term, tx)) = self.waiters.remove(&entry.index) {
                let response = match result {
                    Some(outcome) if term == entry.term => outcome_response(outcome),
                    None if term == entry.term && matches!(entry.payload, Payload::Config(_)) => {
                        ClientResponse::Written {
                            index: entry.index,
                            result: ApplyResult::Configured,
                        }
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
        if let Some(o) = &self.observer {
            o.do_send(AppliedEntries {
                node: self.node_id,
                restored_to: None,
                entries: fresh,
            });
        }
        if durable {
            self.durable = self.last_applied;
            self.entries_since_sync = 0;
            self.bytes_since_sync = 0;
        }
        self.report(durable);
        if !durable && !self.commit_scheduled {
            // Clients are already answered: the entries are committed in the Raft log, and
            // this store only has to catch up. One store commit serves a few ms of writes.
            self.commit_scheduled = true;
            ctx.run_later(COMMIT_DELAY, |act, ctx| {
                act.commit_scheduled = false;
                if let Err(e) = act.store.commit_pending() {
                    act.fatal(&e.to_string(), ctx);
                }
            });
        }
    }
}

impl Handler<ReadAt> for StateMachine {
    type Result = ();

    fn handle(&mut self, msg: ReadAt, _ctx: &mut Context<Self>) {
        if msg.read_index <= self.last_applied {
            let _ = msg.tx.send(self.read(&msg.key));
        } else {
            self.reads
                .entry(msg.read_index)
                .or_default()
                .push((msg.key, msg.tx));
        }
    }
}

impl Handler<ReadLocal> for StateMachine {
    type Result = ();

    fn handle(&mut self, ReadLocal { key, tx }: ReadLocal, _ctx: &mut Context<Self>) {
        let _ = tx.send(self.read(&key));
    }
}

impl Handler<Dump> for StateMachine {
    type Result = MessageResult<Dump>;

    fn handle(&mut self, _: Dump, ctx: &mut Context<Self>) -> Self::Result {
        self.apply_pending(ctx);
        let map = self.store.dump().unwrap_or_else(|e| {
            error!("[node {}] dump failed: {}", self.node_id, e);
            BTreeMap::new()
        });
        MessageResult((self.last_applied, map))
    }
}

impl Handler<StopStateMachine> for StateMachine {
    type Result = ();

    fn handle(&mut self, _: StopStateMachine, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
