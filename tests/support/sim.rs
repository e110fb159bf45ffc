#![allow(dead_code)]
//! A deterministic in-process cluster simulator.
//!
//! N real raftkv nodes (the same actors that run in production) share one actix System on
//! one thread under paused tokio time. The network is in memory and can drop, delay,
//! duplicate, reorder and partition messages; each node's "disk" is a [`MemDisk`] that
//! survives a simulated crash (unsynced writes are lost). Every random choice comes from
//! one seeded RNG, so a seed replays the same run.
//!
//! While a run goes on, a monitor checks the Raft safety properties continuously: at most
//! one leader per term, terms never decrease (also across restarts), log matching over the
//! durable logs, every leader holds every committed entry, and the state machines apply the
//! same entry at each index, in order and without gaps.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;
use raftkv::actors::consensus::{GetStatus, LogClock, NodeStatus, RaftOptions, Shutdown};
use raftkv::actors::state_machine::{AppliedEntries, Dump};
use raftkv::http::dispatch;
use raftkv::kv::{ClientRequest, ClientResponse, KvOp, KvStore, ReadConsistency, StoreDisk};
use raftkv::net::{Inbound, Transport};
use raftkv::node::{start_node, Bootstrap, NodeDeps, NodeHandle};
use raftkv::raft::{Entry, LogIndex, MemberAddrs, Membership, Message, NodeId, Term};
use raftkv::storage::MemDisk;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

thread_local! {
    static LOG_EPOCH: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Seeds to run: `RAFTKV_SIM_SEED=s` replays one seed, `RAFTKV_SIM_SEEDS=n` runs n seeds,
/// otherwise `default_count` seeds starting at `base`.
pub fn seeds(base: u64, default_count: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("RAFTKV_SIM_SEED") {
        if let Ok(seed) = s.trim().parse() {
            return vec![seed];
        }
    }
    let n = std::env::var("RAFTKV_SIM_SEEDS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default_count);
    (0..n).map(|i| base + i).collect()
}

/// Network behaviour.
#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    pub drop_rate: f64,
    pub dup_rate: f64,
    /// Usual one-way delay range, ms.
    pub delay_ms: (u64, u64),
    /// Chance of a long delay instead, and its range, ms.
    pub long_delay_rate: f64,
    pub long_delay_ms: (u64, u64),
}

impl NetConfig {
    pub fn reliable() -> Self {
        NetConfig {
            drop_rate: 0.0,
            dup_rate: 0.0,
            delay_ms: (1, 5),
            long_delay_rate: 0.0,
            long_delay_ms: (200, 2000),
        }
    }

    /// Loses, duplicates and reorders messages; a few arrive seconds late.
    pub fn unreliable() -> Self {
        NetConfig {
            drop_rate: 0.1,
            dup_rate: 0.05,
            delay_ms: (0, 30),
            long_delay_rate: 0.02,
            long_delay_ms: (200, 2000),
        }
    }
}

struct Slot {
    disk: MemDisk,
    incarnation: u64,
    handle: Option<NodeHandle>,
    /// Added to a running cluster: starts with no configuration (join mode).
    joining: bool,
}

/// The addresses a simulated member advertises (the simulated network routes by id).
pub fn sim_addrs(id: NodeId) -> MemberAddrs {
    MemberAddrs {
        raft_addr: format!("sim-node-{}:9000", id),
        http_addr: format!("sim-node-{}:8000", id),
    }
}

/// Everything the simulated cluster shares. Only ever touched from the System's one thread;
/// the mutex just satisfies the `Send + Sync` bound of [`Transport`].
pub struct World {
    pub seed: u64,
    rng: StdRng,
    net: NetConfig,
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Messages of one kind on one link that are held back until released, in order.
    held: BTreeMap<(NodeId, NodeId, &'static str), Vec<Message>>,
    /// Messages of one kind on one link that are lost.
    dropped_kinds: BTreeSet<(NodeId, NodeId, &'static str)>,
    slots: BTreeMap<NodeId, Slot>,
    options: RaftOptions,
    pub msg_counts: BTreeMap<&'static str, u64>,
    pub msgs_total: u64,
    // Invariant state.
    /// Applied entries by index, with an upper bound on the term they were committed in.
    committed: BTreeMap<LogIndex, (Entry, Term)>,
    applied_last: BTreeMap<NodeId, LogIndex>,
    leaders: BTreeMap<Term, NodeId>,
    /// Highest term each node reported in its current incarnation.
    max_term: BTreeMap<NodeId, Term>,
    /// Highest durable term each node ever had.
    max_durable_term: BTreeMap<NodeId, Term>,
    pub violations: Vec<String>,
}

impl World {
    fn violation(&mut self, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(what);
        }
    }

    fn alive(&self, id: NodeId) -> Option<&NodeHandle> {
        self.slots.get(&id).and_then(|s| s.handle.as_ref())
    }

    fn on_applied(&mut self, node: NodeId, entries: Vec<Entry>) {
        // The committing leader's term was durable on it before it led, so the highest
        // durable term anywhere bounds the commit term from above.
        let commit_term_bound = self
            .slots
            .values()
            .map(|s| s.disk.load().hard_state.current_term)
            .max()
            .unwrap_or(0);
        for e in entries {
            let last = self.applied_last.get(&node).copied().unwrap_or(0);
            if e.index != last + 1 {
                let msg = format!(
                    "node {} applied index {} after {}: out of order or gap",
                    node, e.index, last
                );
                self.violation(msg);
            }
            self.applied_last.insert(node, e.index);
            match self.committed.get(&e.index).map(|(e, _)| e) {
                Some(prev) if *prev != e => {
                    let msg = format!(
                        "State Machine Safety: node {} applied {:?} at index {} but another node applied {:?}",
                        node, e, e.index, prev
                    );
                    self.violation(msg);
                }
                Some(_) => {}
                None => {
                    self.committed.insert(e.index, (e, commit_term_bound));
                }
            }
        }
    }

    /// A state machine was reset from a snapshot ending at `index`.
    fn on_restored(&mut self, node: NodeId, index: LogIndex) {
        let last = self.applied_last.get(&node).copied().unwrap_or(0);
        if index < last {
            let msg = format!(
                "node {} state machine went back from {} to snapshot {}",
                node, last, index
            );
            self.violation(msg);
        }
        self.applied_last.insert(node, index.max(last));
    }

    fn observe_status(&mut self, s: &NodeStatus) {
        let max = self.max_term.get(&s.id).copied().unwrap_or(0);
        if s.term < max {
            let msg = format!("node {} term went back from {} to {}", s.id, max, s.term);
            self.violation(msg);
        }
        self.max_term.insert(s.id, max.max(s.term));
        if s.role == "leader" {
            match self.leaders.get(&s.term) {
                Some(&other) if other != s.id => {
                    let msg = format!(
                        "Election Safety: nodes {} and {} both lead term {}",
                        other, s.id, s.term
                    );
                    self.violation(msg);
                }
                _ => {
                    self.leaders.insert(s.term, s.id);
                }
            }
            // Leader Completeness: every committed entry is in the leader's durable log.
            let disk = self.slots.get(&s.id).map(|x| x.disk.load());
            if let Some(disk) = disk {
                let mut missing = None;
                let snap = disk.start.index;
                let first = disk.entries.first().map_or(snap + 1, |e| e.index);
                for (index, (e, committed_by)) in self.committed.range(snap + 1..) {
                    // Only entries committed in an earlier term must be in this leader's log.
                    if *committed_by >= s.term {
                        continue;
                    }
                    let found = index
                        .checked_sub(first)
                        .and_then(|i| disk.entries.get(i as usize));
                    if found != Some(e) {
                        missing = Some((*index, e.term));
                        break;
                    }
                }
                if let Some((index, term)) = missing {
                    let msg = format!(
                        "Leader Completeness: leader {} of term {} lacks committed entry {}/{}",
                        s.id, s.term, index, term
                    );
                    self.violation(msg);
                }
            }
        }
    }

    /// Log Matching over the durable logs: same index and term imply the same prefix.
    fn check_disks(&mut self) {
        let mut seen: BTreeMap<(LogIndex, Term), (NodeId, u64)> = BTreeMap::new();
        let mut problems = Vec::new();
        for (&id, slot) in &self.slots {
            let disk = slot.disk.load();
            let max = self.max_durable_term.entry(id).or_insert(0);
            if disk.hard_state.current_term < *max {
                problems.push(format!(
                    "node {} durable term went back from {} to {}",
                    id, max, disk.hard_state.current_term
                ));
            }
            *max = (*max).max(disk.hard_state.current_term);
            for e in &disk.entries {
                // Per-entry identity; with every pair of equal (index, term) holding equal
                // entries at every index, equal prefixes follow.
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                format!("{:?}", e).hash(&mut hasher);
                let h = hasher.finish();
                match seen.get(&(e.index, e.term)) {
                    Some(&(other, oh)) if oh != h => problems.push(format!(
                        "Log Matching: nodes {} and {} hold different entries at index {} term {}",
                        other, id, e.index, e.term
                    )),
                    Some(_) => {}
                    None => {
                        seen.insert((e.index, e.term), (id, h));
                    }
                }
            }
        }
        for p in problems {
            self.violation(p);
        }
    }
}

/// The simulated network seen by one node incarnation.
struct SimTransport {
    world: Arc<Mutex<World>>,
    from: NodeId,
    incarnation: u64,
}

fn lock(world: &Arc<Mutex<World>>) -> MutexGuard<'_, World> {
    match world.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Transport for SimTransport {
    fn send(&self, to: NodeId, msg: Message) {
        let mut w = lock(&self.world);
        *w.msg_counts.entry(msg.kind()).or_insert(0) += 1;
        w.msgs_total += 1;
        let from_alive = w
            .slots
            .get(&self.from)
            .is_some_and(|s| s.incarnation == self.incarnation && s.handle.is_some());
        if !from_alive || w.blocked.contains(&(self.from, to)) {
            return;
        }
        let kind = msg.kind();
        if w.dropped_kinds.contains(&(self.from, to, kind)) {
            return;
        }
        if let Some(queue) = w.held.get_mut(&(self.from, to, kind)) {
            queue.push(msg);
            return;
        }
        let net = w.net;
        if w.rng.gen_bool(net.drop_rate) {
            return;
        }
        let copies = if w.rng.gen_bool(net.dup_rate) { 2 } else { 1 };
        for _ in 0..copies {
            let ms = if w.rng.gen_bool(net.long_delay_rate) {
                w.rng.gen_range(net.long_delay_ms.0..=net.long_delay_ms.1)
            } else {
                w.rng.gen_range(net.delay_ms.0..=net.delay_ms.1)
            };
            deliver(&self.world, &w, self.from, to, msg.clone(), ms);
        }
    }
}

/// Delivers `msg` after `ms`, unless the link is cut or `to` restarts meanwhile.
fn deliver(world: &Arc<Mutex<World>>, w: &World, from: NodeId, to: NodeId, msg: Message, ms: u64) {
    let world = world.clone();
    // Like a TCP connection, a message dies with the process it was sent to: a
    // restarted node never receives what was addressed to its previous life.
    let to_incarnation = w.slots.get(&to).map(|s| s.incarnation);
    actix::spawn(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let target = {
            let w = lock(&world);
            let same_life = w.slots.get(&to).map(|s| s.incarnation) == to_incarnation;
            if w.blocked.contains(&(from, to)) || !same_life {
                None
            } else {
                w.alive(to).map(|h| h.consensus.clone())
            }
        };
        if let Some(t) = target {
            t.do_send(Inbound { from, msg });
        }
    });
}

/// Receives applied entries from every node for the State Machine Safety check.
struct Observer {
    world: Arc<Mutex<World>>,
}

impl Actor for Observer {
    type Context = Context<Self>;
}

impl Handler<AppliedEntries> for Observer {
    type Result = ();
    fn handle(&mut self, msg: AppliedEntries, _: &mut Context<Self>) {
        let mut w = lock(&self.world);
        if let Some(index) = msg.restored_to {
            w.on_restored(msg.node, index);
        }
        w.on_applied(msg.node, msg.entries);
    }
}

/// Handle to a running simulation (cheap to clone).
#[derive(Clone)]
pub struct Sim {
    pub world: Arc<Mutex<World>>,
    pub ids: Vec<NodeId>,
    observer: Recipient<AppliedEntries>,
    start: Instant,
}

/// Runs `body` against a fresh `n`-node cluster with `seed` under paused time, then checks
/// that no invariant was violated. Panics (naming the seed) on any violation.
pub fn simulate<F, Fut>(n: usize, seed: u64, net: NetConfig, body: F)
where
    F: FnOnce(Sim) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    simulate_with(n, seed, net, RaftOptions::default(), body)
}

pub fn simulate_with<F, Fut>(n: usize, seed: u64, net: NetConfig, options: RaftOptions, body: F)
where
    F: FnOnce(Sim) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    eprintln!(
        "simulation seed {} (replay: RAFTKV_SIM_SEED={})",
        seed, seed
    );
    if std::env::var("RAFTKV_SIM_LOG").is_ok() {
        // Node logs on stderr (RUST_LOG filters them); run the test with --nocapture.
        use std::io::Write;
        let _ = env_logger::builder()
            .format(|buf, record| {
                // Virtual time since the simulation started.
                let t = LOG_EPOCH
                    .with(|e| e.get().map(|e| e.elapsed().as_millis()))
                    .unwrap_or(0);
                writeln!(buf, "{:>7}ms {:<5} {}", t, record.level(), record.args())
            })
            .try_init();
    }
    let system = actix::System::new();
    system.block_on(async move {
        tokio::time::pause();
        LOG_EPOCH.with(|e| e.set(Some(Instant::now())));
        let sim = Sim::new(n, seed, net, options);
        let monitor = sim.clone();
        let handle = actix::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(25)).await;
                monitor.check_now().await;
            }
        });
        body(sim.clone()).await;
        sim.check_now().await;
        handle.abort();
        sim.shutdown_all();
        let w = lock(&sim.world);
        assert!(
            w.violations.is_empty(),
            "seed {}: invariant violations:\n{}",
            seed,
            w.violations.join("\n")
        );
    });
}

impl Sim {
    fn new(n: usize, seed: u64, net: NetConfig, options: RaftOptions) -> Sim {
        let ids: Vec<NodeId> = (1..=n as u64).collect();
        let world = Arc::new(Mutex::new(World {
            seed,
            rng: StdRng::seed_from_u64(seed),
            net,
            blocked: BTreeSet::new(),
            held: BTreeMap::new(),
            dropped_kinds: BTreeSet::new(),
            slots: ids
                .iter()
                .map(|&id| {
                    (
                        id,
                        Slot {
                            disk: MemDisk::new(),
                            incarnation: 0,
                            handle: None,
                            joining: false,
                        },
                    )
                })
                .collect(),
            options,
            msg_counts: BTreeMap::new(),
            msgs_total: 0,
            committed: BTreeMap::new(),
            applied_last: BTreeMap::new(),
            leaders: BTreeMap::new(),
            max_term: BTreeMap::new(),
            max_durable_term: BTreeMap::new(),
            violations: Vec::new(),
        }));
        let observer = Observer {
            world: world.clone(),
        }
        .start()
        .recipient();
        let sim = Sim {
            world,
            ids: ids.clone(),
            observer,
            start: Instant::now(),
        };
        for id in ids {
            sim.boot(id);
        }
        sim
    }

    fn boot(&self, id: NodeId) {
        let mut w = lock(&self.world);
        let seed = w.rng.gen();
        let options = w.options;
        let Some(slot) = w.slots.get_mut(&id) else {
            return;
        };
        if slot.handle.is_some() {
            return;
        }
        let (store, applied) = KvStore::open(&StoreDisk::Mem(slot.disk.store()), 4 << 20)
            .unwrap_or_else(|e| panic!("node {} store does not open: {}", id, e));
        let transport = Arc::new(SimTransport {
            world: self.world.clone(),
            from: id,
            incarnation: slot.incarnation,
        });
        let bootstrap = if slot.joining {
            Bootstrap::Join
        } else {
            Bootstrap::Members(Membership::with_voters(
                self.ids.iter().map(|n| (*n, sim_addrs(*n))),
            ))
        };
        let handle = start_node(
            id,
            bootstrap,
            options,
            NodeDeps {
                transport,
                storage: Box::new(slot.disk.storage()),
                initial: slot.disk.load(),
                store,
                applied,
                threaded: false,
                seed,
                // Log time is the simulation's virtual time, the same on every node.
                clock: LogClock::starting_at(self.now_ms()),
                observer: Some(self.observer.clone()),
            },
        )
        .unwrap_or_else(|e| panic!("node {} does not start: {}", id, e));
        slot.handle = Some(handle);
    }

    /// Virtual time since the start, in ms.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// A random number from the simulation's RNG.
    pub fn rand_range(&self, lo: u64, hi_inclusive: u64) -> u64 {
        lock(&self.world).rng.gen_range(lo..=hi_inclusive)
    }

    pub fn rand_bool(&self, p: f64) -> bool {
        lock(&self.world).rng.gen_bool(p)
    }

    pub fn set_net(&self, net: NetConfig) {
        lock(&self.world).net = net;
    }

    /// Kills node `id`: its actors stop, unsynced writes are lost, its disk is kept.
    pub fn crash(&self, id: NodeId) {
        let mut w = lock(&self.world);
        let Some(slot) = w.slots.get_mut(&id) else {
            return;
        };
        if let Some(h) = slot.handle.take() {
            slot.incarnation += 1;
            slot.disk.crash();
            h.consensus.do_send(Shutdown);
        }
        // A restarted state machine begins again from its (empty) initial state, and the
        // in-memory term restarts from the durable one.
        w.applied_last.remove(&id);
        w.max_term.remove(&id);
    }

    /// Starts a new, empty node `id` in join mode: it waits for the cluster to add it.
    pub fn add_node(&self, id: NodeId) {
        lock(&self.world).slots.entry(id).or_insert_with(|| Slot {
            disk: MemDisk::new(),
            incarnation: 0,
            handle: None,
            joining: true,
        });
        self.boot(id);
    }

    pub fn restart(&self, id: NodeId) {
        self.boot(id);
    }

    pub fn is_alive(&self, id: NodeId) -> bool {
        lock(&self.world).alive(id).is_some()
    }

    pub fn live_nodes(&self) -> Vec<NodeId> {
        let w = lock(&self.world);
        self.ids
            .iter()
            .copied()
            .filter(|id| w.alive(*id).is_some())
            .collect()
    }

    pub fn handle(&self, id: NodeId) -> Option<NodeHandle> {
        lock(&self.world).alive(id).cloned()
    }

    /// Cuts every link between `id` and the others, both ways.
    pub fn isolate(&self, id: NodeId) {
        let mut w = lock(&self.world);
        for &other in &self.ids {
            if other != id {
                w.blocked.insert((id, other));
                w.blocked.insert((other, id));
            }
        }
    }

    /// Only nodes in the same group can talk.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let mut w = lock(&self.world);
        w.blocked.clear();
        for &a in &self.ids {
            for &b in &self.ids {
                let same = groups.iter().any(|g| g.contains(&a) && g.contains(&b));
                if a != b && !same {
                    w.blocked.insert((a, b));
                }
            }
        }
    }

    /// Messages from `from` to `to` are lost (the other direction still works).
    pub fn cut_one_way(&self, from: NodeId, to: NodeId) {
        lock(&self.world).blocked.insert((from, to));
    }

    /// Holds back messages of `kind` (see `Message::kind`) from `from` to `to` until
    /// [`Sim::release`].
    pub fn hold(&self, from: NodeId, to: NodeId, kind: &'static str) {
        lock(&self.world).held.entry((from, to, kind)).or_default();
    }

    /// How many messages of `kind` from `from` to `to` are held back.
    pub fn held(&self, from: NodeId, to: NodeId, kind: &'static str) -> usize {
        lock(&self.world)
            .held
            .get(&(from, to, kind))
            .map_or(0, Vec::len)
    }

    /// Stops holding messages of `kind` from `from` to `to` and delivers the held ones
    /// now, in the order they were sent.
    pub fn release(&self, from: NodeId, to: NodeId, kind: &'static str) {
        let mut w = lock(&self.world);
        let held = w.held.remove(&(from, to, kind)).unwrap_or_default();
        for msg in held {
            deliver(&self.world, &w, from, to, msg, 0);
        }
    }

    /// Messages of `kind` from `from` to `to` are lost from now on.
    pub fn drop_kind(&self, from: NodeId, to: NodeId, kind: &'static str) {
        lock(&self.world).dropped_kinds.insert((from, to, kind));
    }

    pub fn heal(&self) {
        lock(&self.world).blocked.clear();
    }

    pub fn messages_total(&self) -> u64 {
        lock(&self.world).msgs_total
    }

    pub fn messages_of(&self, kind: &str) -> u64 {
        lock(&self.world).msg_counts.get(kind).copied().unwrap_or(0)
    }

    pub async fn status(&self, id: NodeId) -> Option<NodeStatus> {
        let h = self.handle(id)?;
        h.consensus.send(GetStatus).await.ok()
    }

    /// The leader with the highest term among live nodes, if any.
    pub async fn leader(&self) -> Option<(NodeId, Term)> {
        let mut best: Option<(NodeId, Term)> = None;
        for id in self.live_nodes() {
            if let Some(s) = self.status(id).await {
                if s.role == "leader" && best.is_none_or(|(_, t)| s.term > t) {
                    best = Some((id, s.term));
                }
            }
        }
        best
    }

    /// Waits (in virtual time) for a leader that every live member of `among` follows.
    pub async fn wait_leader(&self, among: &[NodeId], timeout: Duration) -> Option<(NodeId, Term)> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut agreed: Option<(NodeId, Term)> = None;
            let mut ok = true;
            for &id in among {
                if let Some(s) = self.status(id).await {
                    match (s.leader, agreed) {
                        (Some(l), None) => agreed = Some((l, s.term)),
                        (Some(l), Some((al, at))) if l == al && s.term == at => {}
                        _ => ok = false,
                    }
                }
            }
            if ok {
                if let Some((l, t)) = agreed {
                    if among.contains(&l) {
                        return Some((l, t));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// Sends a client request into node `id` through the gateway's path.
    pub async fn request(
        &self,
        id: NodeId,
        request: ClientRequest,
        timeout: Duration,
    ) -> ClientResponse {
        match self.handle(id) {
            Some(h) => dispatch(&h, request, timeout).await,
            None => ClientResponse::Unavailable {
                reason: "node is down".into(),
                leader: None,
            },
        }
    }

    pub async fn put(&self, id: NodeId, key: &str, value: &str) -> ClientResponse {
        self.request(
            id,
            ClientRequest::Write {
                op: KvOp::Put {
                    key: key.into(),
                    value: value.as_bytes().to_vec(),
                },
                session: None,
            },
            Duration::from_secs(2),
        )
        .await
    }

    pub async fn get(&self, id: NodeId, key: &str) -> ClientResponse {
        self.request(
            id,
            ClientRequest::Read {
                key: key.into(),
                consistency: ReadConsistency::Linearizable,
            },
            Duration::from_secs(2),
        )
        .await
    }

    /// Writes through whoever leads until acknowledged (or gives up after `timeout`).
    pub async fn put_until_ok(&self, key: &str, value: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((l, _)) = self.leader().await {
                if matches!(
                    self.put(l, key, value).await,
                    ClientResponse::Written { .. }
                ) {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Applied index and key-value contents of node `id`.
    pub async fn dump(&self, id: NodeId) -> Option<(LogIndex, Vec<(String, Vec<u8>)>)> {
        let h = self.handle(id)?;
        let (applied, kv) = h.state_machine.send(Dump).await.ok()?;
        Some((
            applied,
            kv.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ))
    }

    /// The log length on node `id`'s disk.
    /// Index of the snapshot on node `id`'s disk (0 if none) and the number of log entries
    /// kept after it.
    pub fn durable_snapshot(&self, id: NodeId) -> (LogIndex, usize) {
        let w = lock(&self.world);
        w.slots
            .get(&id)
            .map(|s| {
                let d = s.disk.load();
                (d.start.index, d.entries.len())
            })
            .unwrap_or((0, 0))
    }

    pub fn durable_last_index(&self, id: NodeId) -> LogIndex {
        let w = lock(&self.world);
        w.slots
            .get(&id)
            .map(|s| {
                let d = s.disk.load();
                d.last_index()
            })
            .unwrap_or(0)
    }

    /// Index of the highest entry any state machine applied.
    pub fn committed_index(&self) -> LogIndex {
        lock(&self.world)
            .committed
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
    }

    /// Entries known committed (applied somewhere).
    pub fn committed_entries(&self) -> BTreeMap<LogIndex, Entry> {
        lock(&self.world)
            .committed
            .iter()
            .map(|(i, (e, _))| (*i, e.clone()))
            .collect()
    }

    /// One round of the continuous invariant checks.
    pub async fn check_now(&self) {
        let mut statuses = Vec::new();
        for id in self.live_nodes() {
            if let Some(s) = self.status(id).await {
                statuses.push(s);
            }
        }
        let mut w = lock(&self.world);
        for s in &statuses {
            w.observe_status(s);
        }
        w.check_disks();
    }

    /// Heals the network, restarts every node and waits until all apply the same entries.
    /// Returns false if they do not converge within `timeout`.
    pub async fn converge(&self, timeout: Duration) -> bool {
        self.heal();
        for id in self.ids.clone() {
            self.restart(id);
        }
        let deadline = Instant::now() + timeout;
        // Commit something in the current term so every earlier entry commits everywhere.
        let _ = self.put_until_ok("__converge", "x", timeout).await;
        while Instant::now() < deadline {
            let mut dumps = Vec::new();
            for id in self.ids.clone() {
                dumps.push(self.dump(id).await);
            }
            let first = dumps.first().cloned().flatten();
            if first.is_some() && dumps.iter().all(|d| *d == first) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.world).violations.clone()
    }

    fn shutdown_all(&self) {
        let w = lock(&self.world);
        for slot in w.slots.values() {
            if let Some(h) = &slot.handle {
                h.consensus.do_send(Shutdown);
            }
        }
    }
}
