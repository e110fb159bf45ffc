//! Linearizability checker for key-value store histories.
//!
//! Model: one register per key, initially absent. `Put` sets the value,
//! `Delete` makes it absent and `Get` must observe the current value. Keys are
//! independent, so the history is partitioned by key (P-compositionality) and
//! each key is checked on its own.
//!
//! Algorithm: Wing & Gong / Lowe's just-in-time linearization search. Call and
//! return events are kept in a doubly linked list ordered by time; the search
//! repeatedly linearizes a pending call whose model step is valid (removing its
//! call and return events from the list), and backtracks when it reaches the
//! return event of an operation that has not been linearized yet. Visited
//! `(set of linearized ops, register state)` pairs are memoised so every
//! configuration is explored at most once.
//!
//! Real-time order: `a` precedes `b` iff `a.complete < b.invoke`. Equal
//! timestamps count as concurrent (calls are sorted before returns).
//!
//! Outcomes: `Failed` operations and `Get`s without an answer are dropped.
//! `Unknown` writes never return (their completion is +infinity). As a sound
//! and complete pruning, an unknown write is only linearized if it changes the
//! state and the very next linearized operation is a `Get` (which then must
//! observe it); an unobserved unknown write is equivalent to one that never
//! happened. This keeps dozens of timed-out writes from blowing up the search.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// A client request against the store.
#[allow(dead_code)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8> },
    Get { key: String },
    Delete { key: String },
}

impl Op {
    /// The key addressed by this request.
    #[allow(dead_code)]
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Get { key } | Op::Delete { key } => key,
        }
    }
}

/// What the client learned about its request.
#[allow(dead_code)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Put/Delete acknowledged (2xx)
    Done,
    /// Get answered: Some(value) for 200, None for 404
    Read(Option<Vec<u8>>),
    /// Outcome unknown (timeout, 504, connection error after sending): may take effect at any point after invoke, or never.
    Unknown,
    /// Definitely had no effect (503): must not be visible, ever.
    Failed,
}

/// One request of the recorded history.
///
/// `invoke`/`complete` are timestamps in any monotonic unit (e.g. ns) with
/// `complete >= invoke`; `complete` is ignored for `Outcome::Unknown`.
/// A `Put`/`Delete` answered with `Read(_)` counts as `Done`; a `Get` answered
/// with `Done` counts as unanswered (like `Unknown`).
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct Operation {
    pub client: u64,
    pub op: Op,
    pub invoke: u64,
    pub complete: u64,
    pub outcome: Outcome,
}

/// Result of [`check`].
#[allow(dead_code)]
#[derive(Debug)]
pub enum CheckResult {
    Ok,
    Violation { key: String, explanation: String },
    TimedOut { key: String },
}

impl CheckResult {
    /// True only for `CheckResult::Ok`.
    #[allow(dead_code)]
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok)
    }
}

/// Checks `history` for linearizability against a register-per-key model.
///
/// Keys are checked in lexicographic order; the first violation is returned.
/// `budget` is shared by all keys; when it runs out `TimedOut` is returned
/// (never `Ok`) naming the key being checked at that point.
#[allow(dead_code)]
pub fn check(history: &[Operation], budget: Duration) -> CheckResult {
    let mut clock = Clock {
        deadline: Instant::now().checked_add(budget),
        steps: 0,
        next_check: CHECK_EVERY,
    };
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, operation) in history.iter().enumerate() {
        by_key.entry(operation.op.key()).or_default().push(i);
    }
    for (key, raw) in &by_key {
        if clock.expired_now() {
            return CheckResult::TimedOut {
                key: key.to_string(),
            };
        }
        let prepared = KeyHistory::new(history, raw);
        match search(&prepared.ops, &mut clock) {
            Search::Linearizable => {}
            Search::TimedOut => {
                return CheckResult::TimedOut {
                    key: key.to_string(),
                }
            }
            Search::NotLinearizable { best } => {
                return CheckResult::Violation {
                    key: key.to_string(),
                    explanation: explain(history, key, raw, &prepared, &best),
                }
            }
        }
    }
    CheckResult::Ok
}

/// How often (in search steps) the deadline is consulted.
const CHECK_EVERY: u64 = 1000;
/// Register state id of "absent"; other ids index `KeyHistory::values` + 1.
const ABSENT: u32 = 0;
/// End-of-list marker in the event list.
const NIL: usize = usize::MAX;
/// Index of the sentinel head node of the event list.
const HEAD: usize = 0;
/// Max number of ops listed per section of a violation report.
const REPORT_LIMIT: usize = 16;

struct Clock {
    deadline: Option<Instant>,
    steps: u64,
    next_check: u64,
}

impl Clock {
    fn expired_now(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Counts one search step; consults the clock every `CHECK_EVERY` steps.
    fn tick(&mut self) -> bool {
        self.steps += 1;
        if self.steps < self.next_check {
            return false;
        }
        self.next_check = self.steps + CHECK_EVERY;
        self.expired_now()
    }
}

/// Model input of one operation; values are interned ids (`ABSENT` = None).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Put (value id) or Delete (`ABSENT`).
    Write(u32),
    /// Get that observed the given value id.
    Read(u32),
}

/// An operation of one key's history, after dropping ops without effect.
#[derive(Clone, Debug)]
struct KeyOp {
    /// Index into the caller's history.
    index: usize,
    kind: Kind,
    invoke: u64,
    /// `u64::MAX` for unknown writes.
    complete: u64,
    /// Outcome unknown; only writes can be unknown (unknown reads are dropped).
    unknown: bool,
}

struct KeyHistory<'a> {
    ops: Vec<KeyOp>,
    /// Distinct values; value id `i` (>0) is `values[i - 1]`.
    values: Vec<&'a [u8]>,
    ids: HashMap<&'a [u8], u32>,
    dropped_failed: usize,
    dropped_reads: usize,
}

impl<'a> KeyHistory<'a> {
    fn new(history: &'a [Operation], raw: &[usize]) -> Self {
        let mut kh = KeyHistory {
            ops: Vec::with_capacity(raw.len()),
            values: Vec::new(),
            ids: HashMap::new(),
            dropped_failed: 0,
            dropped_reads: 0,
        };
        for &index in raw {
            let o = &history[index];
            let complete = o.complete.max(o.invoke);
            let (kind, unknown) = match (&o.op, &o.outcome) {
                (Op::Put { .. } | Op::Delete { .. }, Outcome::Failed) => {
                    kh.dropped_failed += 1;
                    continue;
                }
                (Op::Get { .. }, Outcome::Read(v)) => (Kind::Read(kh.intern(v.as_deref())), false),
                (Op::Get { .. }, _) => {
                    kh.dropped_reads += 1;
                    continue;
                }
                (Op::Put { value, .. }, outcome) => (
                    Kind::Write(kh.intern(Some(value))),
                    *outcome == Outcome::Unknown,
                ),
                (Op::Delete { .. }, outcome) => (Kind::Write(ABSENT), *outcome == Outcome::Unknown),
            };
            kh.ops.push(KeyOp {
                index,
                kind,
                invoke: o.invoke,
                complete: if unknown { u64::MAX } else { complete },
                unknown,
            });
        }
        kh
    }

    fn intern(&mut self, value: Option<&'a [u8]>) -> u32 {
        let Some(value) = value else { return ABSENT };
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        self.values.push(value);
        let id = u32::try_from(self.values.len()).expect("too many distinct values");
        self.ids.insert(value, id);
        id
    }

    fn show_state(&self, id: u32) -> String {
        match id {
            ABSENT => "<absent>".to_string(),
            id => show_bytes(self.values[id as usize - 1]),
        }
    }
}

/// A node of the event list: the call or return event of one operation.
#[derive(Clone, Copy, Debug)]
struct Node {
    prev: usize,
    next: usize,
    op: usize,
    is_call: bool,
}

/// Doubly linked list of call/return events sorted by time (dancing links).
struct EventList {
    nodes: Vec<Node>,
    call_of: Vec<usize>,
    ret_of: Vec<usize>,
}

impl EventList {
    fn new(ops: &[KeyOp]) -> Self {
        // (time, is_return, op): at equal times calls sort before returns.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoke, false, i));
            events.push((op.complete, true, i));
        }
        events.sort_unstable();
        let mut list = EventList {
            nodes: Vec::with_capacity(events.len() + 1),
            call_of: vec![NIL; ops.len()],
            ret_of: vec![NIL; ops.len()],
        };
        list.nodes.push(Node {
            prev: NIL,
            next: if events.is_empty() { NIL } else { 1 },
            op: NIL,
            is_call: false,
        });
        for (pos, &(_, is_return, op)) in events.iter().enumerate() {
            let id = pos + 1;
            list.nodes.push(Node {
                prev: pos,
                next: if id == events.len() { NIL } else { id + 1 },
                op,
                is_call: !is_return,
            });
            if is_return {
                list.ret_of[op] = id;
            } else {
                list.call_of[op] = id;
            }
        }
        list
    }

    fn first(&self) -> usize {
        self.nodes[HEAD].next
    }

    fn unlink(&mut self, x: usize) {
        let Node { prev, next, .. } = self.nodes[x];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, x: usize) {
        let Node { prev, next, .. } = self.nodes[x];
        self.nodes[prev].next = x;
        if next != NIL {
            self.nodes[next].prev = x;
        }
    }

    /// Removes both events of `op`.
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        self.unlink(self.ret_of[op]);
    }

    /// Undoes the most recent `lift` (must be called in LIFO order).
    fn unlift(&mut self, op: usize) {
        self.relink(self.ret_of[op]);
        self.relink(self.call_of[op]);
    }
}

/// splitmix64 finaliser, used for Zobrist hashing of the linearized set.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Set of linearized ops as a bitset with an incrementally maintained
/// Zobrist hash.
struct LinearizedSet {
    bits: Vec<u64>,
    hash: u64,
    zobrist: Vec<u64>,
}

impl LinearizedSet {
    fn new(n: usize) -> Self {
        LinearizedSet {
            bits: vec![0; n.div_ceil(64)],
            hash: 0,
            zobrist: (0..n as u64).map(|i| mix(i ^ 0x5555_0000_AAAA)).collect(),
        }
    }

    fn flip(&mut self, i: usize) {
        self.bits[i / 64] ^= 1 << (i % 64);
        self.hash ^= self.zobrist[i];
    }
}

/// A visited configuration: linearized set, register state, and whether the
/// last linearized op was an unknown write (which must be observed next).
struct Visited {
    bits: Box<[u64]>,
    state: u32,
    constrained: bool,
}

/// Memo of visited configurations, bucketed by hash so that a lookup does
/// not allocate.
#[derive(Default)]
struct Cache {
    buckets: HashMap<u64, Vec<Visited>>,
}

impl Cache {
    /// Records the configuration; false if it was visited before.
    fn insert(&mut self, set: &LinearizedSet, state: u32, constrained: bool) -> bool {
        let extra = (u64::from(state) << 1) | u64::from(constrained);
        let bucket = self.buckets.entry(set.hash ^ mix(extra)).or_default();
        let seen = bucket
            .iter()
            .any(|v| v.state == state && v.constrained == constrained && *v.bits == *set.bits);
        if !seen {
            bucket.push(Visited {
                bits: set.bits.clone().into_boxed_slice(),
                state,
                constrained,
            });
        }
        !seen
    }
}

enum Search {
    Linearizable,
    /// `best`: the longest linearizable prefix found, in linearization order.
    NotLinearizable {
        best: Vec<usize>,
    },
    TimedOut,
}

/// Model step of a write with the unknown-write pruning; `None` if `op` can't
/// be linearized next. Reads are handled by `pending_valid_read`.
fn allowed_write(state: u32, op: &KeyOp, constrained: bool) -> Option<u32> {
    match op.kind {
        Kind::Read(_) => None,
        // The previous op was an unknown write: only a read may follow it.
        Kind::Write(_) if constrained => None,
        // An unknown write that changes nothing is the same as no write.
        Kind::Write(v) if op.unknown && v == state => None,
        Kind::Write(v) => Some(v),
    }
}

/// A pending read (call before the first return) that observes `state`.
///
/// Linearizing such a read next is always safe: reads don't change the state
/// and no pending op has to precede it in real time, so if any completion
/// exists, one starting with this read exists too. The search therefore
/// takes it without branching ("forced").
fn pending_valid_read(
    list: &EventList,
    ops: &[KeyOp],
    state: u32,
    clock: &mut Clock,
) -> Option<usize> {
    let mut entry = list.first();
    while entry != NIL {
        let node = list.nodes[entry];
        if !node.is_call {
            return None;
        }
        clock.steps += 1;
        if ops[node.op].kind == Kind::Read(state) {
            return Some(node.op);
        }
        entry = node.next;
    }
    None
}

/// Values observed by pending reads (calls before the first return).
fn pending_read_values(list: &EventList, ops: &[KeyOp]) -> Vec<u32> {
    let mut values = Vec::new();
    let mut entry = list.first();
    while entry != NIL && list.nodes[entry].is_call {
        if let Kind::Read(v) = ops[list.nodes[entry].op].kind {
            values.push(v);
        }
        entry = list.nodes[entry].next;
    }
    values
}

/// One linearized op on the search stack.
struct Frame {
    op: usize,
    /// State before the op.
    prev: u32,
    /// Taken without alternatives (see `pending_valid_read`).
    forced: bool,
}

fn search(ops: &[KeyOp], clock: &mut Clock) -> Search {
    let mut list = EventList::new(ops);
    let mut set = LinearizedSet::new(ops.len());
    let mut cache = Cache::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut best: Vec<usize> = Vec::new();
    let mut state = ABSENT;
    let mut entry = list.first();
    // Whether `entry` is the start of a configuration not scanned yet.
    let mut fresh = true;
    // Lazily computed `pending_read_values` of the current configuration.
    let mut window_reads: Option<Vec<u32>> = None;
    loop {
        if clock.tick() {
            return Search::TimedOut;
        }
        let mut dead = false;
        if fresh {
            fresh = false;
            if let Some(read) = pending_valid_read(&list, ops, state, clock) {
                set.flip(read);
                if cache.insert(&set, state, false) {
                    stack.push(Frame {
                        op: read,
                        prev: state,
                        forced: true,
                    });
                    list.lift(read);
                    window_reads = None;
                    entry = list.first();
                    fresh = true;
                    continue;
                }
                // Explored before without success, so this configuration
                // is dead too.
                set.flip(read);
                dead = true;
            }
        }
        if !dead {
            if entry == NIL {
                return Search::Linearizable;
            }
            let node = list.nodes[entry];
            let op = &ops[node.op];
            if node.is_call {
                let constrained = stack.last().is_some_and(|f| ops[f.op].unknown);
                let mut next = allowed_write(state, op, constrained);
                if let (Some(v), true) = (next, op.unknown) {
                    // An unknown write must be observed by the very next op,
                    // which has to be one of the currently pending reads.
                    let reads = window_reads.get_or_insert_with(|| pending_read_values(&list, ops));
                    if !reads.contains(&v) {
                        next = None;
                    }
                }
                if let Some(next) = next {
                    set.flip(node.op);
                    if cache.insert(&set, next, op.unknown) {
                        stack.push(Frame {
                            op: node.op,
                            prev: state,
                            forced: false,
                        });
                        state = next;
                        list.lift(node.op);
                        window_reads = None;
                        entry = list.first();
                        fresh = true;
                        continue;
                    }
                    set.flip(node.op);
                }
                entry = node.next;
                continue;
            }
            if op.unknown {
                // Unknown returns sit at +infinity: every other op has been
                // linearized, and remaining unknown writes can go last.
                return Search::Linearizable;
            }
            // This op's deadline passed without it being linearized.
        }
        // Backtrack to the most recent choice that has alternatives left.
        if stack.len() > best.len() {
            best = stack.iter().map(|f| f.op).collect();
        }
        loop {
            let Some(frame) = stack.pop() else {
                return Search::NotLinearizable { best };
            };
            state = frame.prev;
            set.flip(frame.op);
            list.unlift(frame.op);
            window_reads = None;
            if !frame.forced {
                entry = list.nodes[list.call_of[frame.op]].next;
                break;
            }
        }
    }
}

/// Lossy UTF-8 rendering of a value, quoted and truncated.
fn show_bytes(v: &[u8]) -> String {
    const MAX_CHARS: usize = 40;
    let s = String::from_utf8_lossy(v);
    if s.chars().count() > MAX_CHARS {
        let head: String = s.chars().take(MAX_CHARS).collect();
        format!("{head:?}... ({} bytes)", v.len())
    } else {
        format!("{s:?}")
    }
}

/// One-line description of `history[index]`.
fn describe(history: &[Operation], index: usize) -> String {
    let o = &history[index];
    let op = match &o.op {
        Op::Put { value, .. } => format!("put {}", show_bytes(value)),
        Op::Get { .. } => "get".to_string(),
        Op::Delete { .. } => "delete".to_string(),
    };
    let (end, outcome) = match &o.outcome {
        Outcome::Done => (format!("{}]", o.complete), "ok".to_string()),
        Outcome::Read(Some(v)) => (
            format!("{}]", o.complete),
            format!("read {}", show_bytes(v)),
        ),
        Outcome::Read(None) => (format!("{}]", o.complete), "read <absent>".to_string()),
        Outcome::Unknown => (
            format!("inf) (gave up at {})", o.complete),
            "unknown".to_string(),
        ),
        Outcome::Failed => (format!("{}]", o.complete), "failed".to_string()),
    };
    format!(
        "#{index} client {} {op} [{}, {end} -> {outcome}",
        o.client, o.invoke
    )
}

fn explain(
    history: &[Operation],
    key: &str,
    raw: &[usize],
    kh: &KeyHistory,
    best: &[usize],
) -> String {
    let ops = &kh.ops;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "key {key:?}: no linearization of its {} ops exists ({} in history; \
         ignored {} failed writes and {} unanswered gets).",
        ops.len(),
        raw.len(),
        kh.dropped_failed,
        kh.dropped_reads
    );
    let state = best
        .iter()
        .rev()
        .find_map(|&i| match ops[i].kind {
            Kind::Write(v) => Some(v),
            Kind::Read(_) => None,
        })
        .unwrap_or(ABSENT);
    let _ = writeln!(
        out,
        "Longest linearizable prefix: {} ops, leaving the value {}.",
        best.len(),
        kh.show_state(state)
    );
    if !best.is_empty() {
        let skip = best.len().saturating_sub(REPORT_LIMIT / 2);
        let _ = writeln!(out, "Its last {} ops, in order:", best.len() - skip);
        for &i in &best[skip..] {
            let _ = writeln!(out, "  {}", describe(history, ops[i].index));
        }
    }
    let mut done = vec![false; ops.len()];
    for &i in best {
        done[i] = true;
    }
    let stuck = (0..ops.len())
        .filter(|&i| !done[i] && !ops[i].unknown)
        .min_by_key(|&i| (ops[i].complete, ops[i].invoke));
    let Some(stuck) = stuck else {
        return out;
    };
    let deadline = ops[stuck].complete;
    let _ = writeln!(
        out,
        "Stuck: {}\n  must take effect by t={deadline}, but no order of the ops pending \
         then extends the prefix. Pending ops (invoked by t={deadline}):",
        describe(history, ops[stuck].index)
    );
    let mut pending: Vec<usize> = (0..ops.len())
        .filter(|&i| !done[i] && ops[i].invoke <= deadline)
        .collect();
    pending.sort_by_key(|&i| (ops[i].invoke, ops[i].index));
    let (unknown, known): (Vec<usize>, Vec<usize>) =
        pending.into_iter().partition(|&i| ops[i].unknown);
    for &i in known.iter().take(REPORT_LIMIT) {
        let _ = writeln!(out, "  {}", describe(history, ops[i].index));
        match ops[i].kind {
            Kind::Read(v) if v != ABSENT => {
                let value = kh.values[v as usize - 1];
                let _ = writeln!(out, "    {}", provenance(history, raw, value));
            }
            _ => {}
        }
    }
    if known.len() > REPORT_LIMIT {
        let _ = writeln!(out, "  ... and {} more", known.len() - REPORT_LIMIT);
    }
    if !unknown.is_empty() {
        let ids: Vec<String> = unknown
            .iter()
            .take(REPORT_LIMIT)
            .map(|&i| format!("#{}", ops[i].index))
            .collect();
        let more = if unknown.len() > REPORT_LIMIT {
            ", ..."
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "Also pending: {} unknown-outcome writes (usable only if observed): {}{more}",
            unknown.len(),
            ids.join(", ")
        );
    }
    out
}

/// Which puts of this key wrote `value` (helps spot failed or phantom writes).
fn provenance(history: &[Operation], raw: &[usize], value: &[u8]) -> String {
    let writers: Vec<usize> = raw
        .iter()
        .copied()
        .filter(|&i| matches!(&history[i].op, Op::Put { value: w, .. } if w == value))
        .collect();
    if writers.is_empty() {
        return "value was never written by any put of this key".to_string();
    }
    let list: Vec<String> = writers
        .iter()
        .take(3)
        .map(|&i| describe(history, i))
        .collect();
    let more = writers.len().saturating_sub(3);
    let suffix = if more > 0 {
        format!(" (+{more} more)")
    } else {
        String::new()
    };
    format!("value written by: {}{suffix}", list.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_secs(30);

    fn op(client: u64, op: Op, invoke: u64, complete: u64, outcome: Outcome) -> Operation {
        Operation {
            client,
            op,
            invoke,
            complete,
            outcome,
        }
    }

    fn put_with(client: u64, key: &str, value: &str, t: (u64, u64), outcome: Outcome) -> Operation {
        let p = Op::Put {
            key: key.to_string(),
            value: value.as_bytes().to_vec(),
        };
        op(client, p, t.0, t.1, outcome)
    }

    fn put(client: u64, key: &str, value: &str, invoke: u64, complete: u64) -> Operation {
        put_with(client, key, value, (invoke, complete), Outcome::Done)
    }

    fn get(client: u64, key: &str, invoke: u64, complete: u64, read: Option<&str>) -> Operation {
        let g = Op::Get {
            key: key.to_string(),
        };
        let r = Outcome::Read(read.map(|s| s.as_bytes().to_vec()));
        op(client, g, invoke, complete, r)
    }

    fn del(client: u64, key: &str, invoke: u64, complete: u64) -> Operation {
        let d = Op::Delete {
            key: key.to_string(),
        };
        op(client, d, invoke, complete, Outcome::Done)
    }

    fn assert_ok(history: &[Operation]) {
        match check(history, BUDGET) {
            CheckResult::Ok => {}
            other => panic!("expected Ok, got {other:?}"),
        }
    }

    fn assert_violation(history: &[Operation], expected_key: &str) -> String {
        match check(history, BUDGET) {
            CheckResult::Violation { key, explanation } => {
                assert_eq!(key, expected_key, "{explanation}");
                explanation
            }
            other => panic!("expected a violation on {expected_key:?}, got {other:?}"),
        }
    }

    #[test]
    fn empty_history_is_ok() {
        assert_ok(&[]);
    }

    #[test]
    fn sequential_put_then_get_is_ok() {
        assert_ok(&[
            get(1, "a", 0, 5, None),
            put(1, "a", "1", 10, 20),
            get(2, "a", 30, 40, Some("1")),
            put(2, "a", "2", 50, 60),
            get(1, "a", 70, 80, Some("2")),
        ]);
    }

    #[test]
    fn concurrent_get_may_see_old_or_new_value() {
        let base = [put(1, "a", "old", 0, 10), put(1, "a", "new", 20, 40)];
        for seen in ["old", "new"] {
            let mut h = base.to_vec();
            h.push(get(2, "a", 25, 35, Some(seen)));
            assert_ok(&h);
        }
        // Two concurrent readers may even disagree, as long as the one seeing
        // "old" could have gone first.
        let mut h = base.to_vec();
        h.push(get(2, "a", 15, 50, Some("new")));
        h.push(get(3, "a", 15, 50, Some("old")));
        assert_ok(&h);
        // Touching timestamps count as concurrent.
        assert_ok(&[put(1, "a", "1", 0, 10), get(2, "a", 10, 20, None)]);
    }

    #[test]
    fn stale_read_after_completed_put_is_rejected() {
        let explanation =
            assert_violation(&[put(1, "a", "1", 0, 10), get(2, "a", 20, 30, None)], "a");
        assert!(explanation.contains("client 2 get"), "{explanation}");
        assert_violation(
            &[
                put(1, "a", "1", 0, 10),
                put(1, "a", "2", 20, 30),
                get(2, "a", 40, 50, Some("1")),
            ],
            "a",
        );
    }

    #[test]
    fn lost_write_is_rejected() {
        assert_violation(
            &[
                put(1, "a", "1", 0, 10),
                put(2, "a", "2", 20, 30),
                get(3, "a", 40, 50, Some("1")),
                get(1, "a", 60, 70, Some("1")),
            ],
            "a",
        );
    }

    #[test]
    fn readers_must_agree_on_order_of_concurrent_writes() {
        let writes = [put(1, "a", "1", 0, 10), put(2, "a", "2", 0, 10)];
        let mut h = writes.to_vec();
        h.push(get(3, "a", 20, 30, Some("2")));
        h.push(get(3, "a", 40, 50, Some("2")));
        assert_ok(&h);
        let mut h = writes.to_vec();
        h.push(get(3, "a", 20, 30, Some("2")));
        h.push(get(4, "a", 40, 50, Some("1")));
        assert_violation(&h, "a");
    }

    #[test]
    fn failed_put_that_becomes_visible_is_rejected() {
        let h = [
            put(1, "a", "1", 0, 10),
            put_with(2, "a", "ghost", (20, 30), Outcome::Failed),
            get(3, "a", 40, 50, Some("ghost")),
        ];
        let explanation = assert_violation(&h, "a");
        assert!(explanation.contains("failed"), "{explanation}");
        assert!(explanation.contains("ghost"), "{explanation}");
    }

    #[test]
    fn failed_put_that_stays_invisible_is_ok() {
        assert_ok(&[
            put(1, "a", "1", 0, 10),
            put_with(2, "a", "ghost", (20, 30), Outcome::Failed),
            get(3, "a", 25, 50, Some("1")),
        ]);
    }

    #[test]
    fn unknown_put_that_becomes_visible_later_is_ok() {
        assert_ok(&[
            put(1, "a", "1", 0, 10),
            put_with(2, "a", "late", (20, 30), Outcome::Unknown),
            get(3, "a", 100, 110, Some("1")),
            put(1, "a", "3", 200, 210),
            get(3, "a", 300, 310, Some("3")),
            get(3, "a", 1000, 1010, Some("late")),
            get(1, "a", 1100, 1110, Some("late")),
        ]);
    }

    #[test]
    fn unknown_put_that_is_never_visible_is_ok() {
        assert_ok(&[
            put(1, "a", "1", 0, 10),
            put_with(2, "a", "lost", (20, 30), Outcome::Unknown),
            get(3, "a", 100, 110, Some("1")),
            get(3, "a", 200, 210, Some("1")),
        ]);
    }

    #[test]
    fn unknown_put_cannot_take_effect_before_invoke_or_twice() {
        assert_violation(
            &[
                get(1, "a", 0, 10, Some("early")),
                put_with(2, "a", "early", (20, 30), Outcome::Unknown),
            ],
            "a",
        );
        assert_violation(
            &[
                put_with(2, "a", "once", (0, 10), Outcome::Unknown),
                get(1, "a", 20, 30, Some("once")),
                put(1, "a", "2", 40, 50),
                get(1, "a", 60, 70, Some("once")),
            ],
            "a",
        );
    }

    #[test]
    fn unanswered_get_is_ignored() {
        let g = Op::Get {
            key: "a".to_string(),
        };
        assert_ok(&[
            put(1, "a", "1", 0, 10),
            op(2, g.clone(), 20, 30, Outcome::Unknown),
            op(2, g, 40, 50, Outcome::Failed),
            get(3, "a", 60, 70, Some("1")),
        ]);
    }

    #[test]
    fn delete_semantics() {
        assert_ok(&[
            put(1, "a", "1", 0, 10),
            del(2, "a", 20, 30),
            get(1, "a", 40, 50, None),
            put(2, "a", "2", 60, 70),
            get(1, "a", 80, 90, Some("2")),
        ]);
        // Concurrent delete: either value is fine.
        assert_ok(&[
            put(1, "a", "1", 0, 10),
            del(2, "a", 20, 40),
            get(1, "a", 25, 30, Some("1")),
        ]);
        // A completed delete must hide the old value.
        assert_violation(
            &[
                put(1, "a", "1", 0, 10),
                del(2, "a", 20, 30),
                get(1, "a", 40, 50, Some("1")),
            ],
            "a",
        );
        // An unknown delete may or may not happen.
        let d = Op::Delete {
            key: "a".to_string(),
        };
        assert_ok(&[
            put(1, "a", "1", 0, 10),
            op(2, d.clone(), 20, 30, Outcome::Unknown),
            get(1, "a", 40, 50, Some("1")),
            get(1, "a", 60, 70, None),
        ]);
        assert_violation(
            &[
                put(1, "a", "1", 0, 10),
                op(2, d, 20, 30, Outcome::Failed),
                get(1, "a", 60, 70, None),
            ],
            "a",
        );
    }

    #[test]
    fn independent_keys_do_not_interfere() {
        // Interleaved in time, each key on its own is linearizable; as one
        // register it would not be.
        assert_ok(&[
            put(1, "a", "1", 0, 10),
            put(2, "b", "2", 20, 30),
            get(3, "a", 40, 50, Some("1")),
            get(3, "b", 60, 70, Some("2")),
            get(4, "c", 80, 90, None),
        ]);
    }

    #[test]
    fn violation_is_reported_with_its_key() {
        let explanation = assert_violation(
            &[
                put(1, "a", "1", 0, 10),
                put(1, "m", "x", 0, 10),
                get(2, "a", 20, 30, Some("1")),
                put(1, "z", "1", 0, 10),
                get(2, "m", 40, 50, Some("y")),
                get(2, "z", 20, 30, Some("1")),
            ],
            "m",
        );
        assert!(explanation.contains("key \"m\""), "{explanation}");
        assert!(
            explanation.contains("#4 client 2 get [40, 50] -> read \"y\""),
            "{explanation}"
        );
        assert!(explanation.contains("never written"), "{explanation}");
    }

    #[test]
    fn long_values_are_truncated_in_reports() {
        let long = "x".repeat(500);
        let explanation =
            assert_violation(&[put(1, "a", &long, 0, 10), get(2, "a", 20, 30, None)], "a");
        assert!(explanation.contains("(500 bytes)"), "{explanation}");
        assert!(!explanation.contains(&long), "{explanation}");
    }

    #[test]
    fn zero_budget_times_out() {
        let h = random_history(7, 200, &["a", "b"], 4);
        assert!(matches!(
            check(&h, Duration::ZERO),
            CheckResult::TimedOut { .. }
        ));
        let tiny = [put(1, "a", "1", 0, 10), get(2, "a", 20, 30, Some("1"))];
        assert!(matches!(
            check(&tiny, Duration::ZERO),
            CheckResult::TimedOut { .. }
        ));
    }

    #[test]
    fn small_budget_on_exponential_history_times_out_promptly() {
        // 24 mutually concurrent puts and an impossible concurrent read: the
        // search has to visit every subset of the puts before giving up.
        let mut h: Vec<Operation> = (0..24)
            .map(|i| put(i, "a", &format!("v{i}"), 0, 100))
            .collect();
        h.push(get(99, "a", 0, 100, Some("nope")));
        let start = Instant::now();
        let result = check(&h, Duration::from_millis(100));
        assert!(
            matches!(result, CheckResult::TimedOut { ref key } if key == "a"),
            "{result:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }

    /// Tiny deterministic LCG (Knuth's MMIX constants).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    /// Generates a linearizable history: ops take effect sequentially at
    /// points 10 time units apart; each op's interval is then widened around
    /// its point, and each client runs one op at a time. Some puts fail
    /// (never applied) or are unknown (applied never, at their point, or much
    /// later); a few gets go unanswered.
    fn random_history(seed: u64, n_ops: usize, keys: &[&str], clients: u64) -> Vec<Operation> {
        let mut rng = Lcg(seed);
        let mut model: HashMap<String, Option<Vec<u8>>> = HashMap::new();
        let mut free_at = vec![0u64; clients as usize];
        let mut delayed: Vec<(u64, String, Vec<u8>)> = Vec::new();
        let mut history = Vec::with_capacity(n_ops);
        let mut t = 1_000u64;
        for i in 0..n_ops {
            t += 10;
            let client = loop {
                let start = rng.below(clients);
                let free = (0..clients)
                    .map(|c| (start + c) % clients)
                    .find(|&c| free_at[c as usize] < t);
                match free {
                    Some(c) => break c,
                    None => t += 10,
                }
            };
            // Late effects of unknown writes due before this op's point.
            delayed.sort();
            while delayed.first().is_some_and(|d| d.0 < t) {
                let (_, key, value) = delayed.remove(0);
                model.insert(key, Some(value));
            }
            let invoke = (free_at[client as usize] + 1).max(t - rng.below(60));
            let complete = t + rng.below(60);
            free_at[client as usize] = complete;
            let key = keys[rng.below(keys.len() as u64) as usize].to_string();
            let roll = rng.below(100);
            let (o, outcome) = if roll < 45 {
                let outcome = if rng.below(50) == 0 {
                    Outcome::Unknown
                } else {
                    Outcome::Read(model.get(&key).cloned().flatten())
                };
                (Op::Get { key }, outcome)
            } else if roll < 88 {
                let value = format!("{key}-{i}").into_bytes();
                let outcome = match rng.below(40) {
                    0 | 1 => Outcome::Failed,
                    2 => Outcome::Unknown,
                    3 => {
                        model.insert(key.clone(), Some(value.clone()));
                        Outcome::Unknown
                    }
                    4 => {
                        delayed.push((t + 10 * rng.below(200) + 5, key.clone(), value.clone()));
                        Outcome::Unknown
                    }
                    _ => {
                        model.insert(key.clone(), Some(value.clone()));
                        Outcome::Done
                    }
                };
                (Op::Put { key, value }, outcome)
            } else {
                model.insert(key.clone(), None);
                (Op::Delete { key }, Outcome::Done)
            };
            history.push(op(client, o, invoke, complete, outcome));
        }
        history
    }

    /// Reference checker: tries every subset of unknown writes and every
    /// real-time-respecting order of the remaining ops.
    fn brute_force(history: &[Operation]) -> bool {
        let ops: Vec<&Operation> = history
            .iter()
            .filter(|o| match (&o.op, &o.outcome) {
                (Op::Get { .. }, Outcome::Read(_)) => true,
                (Op::Get { .. }, _) | (_, Outcome::Failed) => false,
                _ => true,
            })
            .collect();
        let unknown: Vec<usize> = (0..ops.len())
            .filter(|&i| ops[i].outcome == Outcome::Unknown)
            .collect();
        (0u32..1 << unknown.len()).any(|mask| {
            let chosen: Vec<&Operation> = (0..ops.len())
                .filter(|i| match unknown.iter().position(|u| u == i) {
                    Some(bit) => mask & (1 << bit) != 0,
                    None => true,
                })
                .map(|i| ops[i])
                .collect();
            orders(&chosen, &mut vec![false; chosen.len()], &mut HashMap::new())
        })
    }

    fn orders<'a>(
        ops: &[&'a Operation],
        used: &mut Vec<bool>,
        model: &mut HashMap<&'a str, Option<&'a [u8]>>,
    ) -> bool {
        let end = |o: &Operation| match o.outcome {
            Outcome::Unknown => u64::MAX,
            _ => o.complete,
        };
        if used.iter().all(|&u| u) {
            return true;
        }
        for i in 0..ops.len() {
            let o = ops[i];
            let blocked = (0..ops.len()).any(|j| !used[j] && j != i && end(ops[j]) < o.invoke);
            if used[i] || blocked {
                continue;
            }
            let key = o.op.key();
            let before = model.get(key).copied().flatten();
            match (&o.op, &o.outcome) {
                (Op::Get { .. }, Outcome::Read(r)) if r.as_deref() != before => continue,
                (Op::Get { .. }, _) => {}
                (Op::Put { value, .. }, _) => {
                    model.insert(key, Some(value));
                }
                (Op::Delete { .. }, _) => {
                    model.insert(key, None);
                }
            }
            used[i] = true;
            let ok = orders(ops, used, model);
            used[i] = false;
            model.insert(key, before);
            if ok {
                return true;
            }
        }
        false
    }

    #[test]
    fn matches_brute_force_on_small_random_histories() {
        let mut rng = Lcg(2024);
        let mut verdicts = [0usize; 2];
        for _ in 0..20_000 {
            let len = 2 + rng.below(6);
            let history: Vec<Operation> = (0..len)
                .map(|c| {
                    let key = ["a", "a", "b"][rng.below(3) as usize];
                    let invoke = rng.below(40);
                    let complete = invoke + rng.below(25);
                    let value = ["1", "2", "3"][rng.below(3) as usize];
                    let outcome = match rng.below(10) {
                        0 | 1 => Outcome::Unknown,
                        2 => Outcome::Failed,
                        _ => Outcome::Done,
                    };
                    match rng.below(7) {
                        0..=2 => put_with(c, key, value, (invoke, complete), outcome),
                        3 => {
                            let mut d = del(c, key, invoke, complete);
                            d.outcome = outcome;
                            d
                        }
                        4 if outcome == Outcome::Unknown => {
                            let mut g = get(c, key, invoke, complete, None);
                            g.outcome = Outcome::Unknown;
                            g
                        }
                        5 => get(c, key, invoke, complete, None),
                        _ => get(c, key, invoke, complete, Some(value)),
                    }
                })
                .collect();
            let expected = brute_force(&history);
            let actual = check(&history, BUDGET);
            assert_eq!(actual.is_ok(), expected, "{history:#?}\n{actual:?}");
            assert!(!matches!(actual, CheckResult::TimedOut { .. }));
            verdicts[usize::from(expected)] += 1;
        }
        assert!(verdicts.iter().all(|&n| n > 2_000), "{verdicts:?}");
    }

    #[test]
    fn randomized_valid_history_of_2000_ops_over_3_keys_is_ok() {
        let h = random_history(42, 2_000, &["a", "b", "c"], 8);
        let unknown = h.iter().filter(|o| o.outcome == Outcome::Unknown).count();
        assert!(
            unknown >= 10,
            "generator should produce unknown ops: {unknown}"
        );
        let start = Instant::now();
        assert_ok(&h);
        eprintln!("2000 ops / 3 keys / 8 clients: {:?}", start.elapsed());
    }

    #[test]
    fn randomized_valid_history_of_2000_ops_on_one_key_is_ok() {
        for seed in [1, 2, 3] {
            let h = random_history(seed, 2_000, &["k"], 10);
            let start = Instant::now();
            assert_ok(&h);
            eprintln!("2000 ops / 1 key / 10 clients: {:?}", start.elapsed());
        }
    }

    #[test]
    fn corrupted_read_in_large_history_is_rejected() {
        let mut h = random_history(9, 2_000, &["k"], 10);
        let victim = (1_000..h.len())
            .find(|&i| matches!(h[i].outcome, Outcome::Read(_)))
            .expect("a read");
        h[victim].outcome = Outcome::Read(Some(b"bogus".to_vec()));
        let start = Instant::now();
        let explanation = assert_violation(&h, "k");
        eprintln!("violation found in {:?}", start.elapsed());
        assert!(
            explanation.contains(&format!("#{victim} ")),
            "{explanation}"
        );
    }

    #[test]
    fn many_unobserved_unknown_writes_stay_fast() {
        // 60 timed-out writes concurrent with everything, never observed, plus
        // a stale read at the end forcing an exhaustive search.
        let mut h = Vec::new();
        for i in 0..60u64 {
            let v = format!("u{i}");
            h.push(put_with(100 + i, "a", &v, (i, i + 1), Outcome::Unknown));
        }
        let mut t = 100;
        for i in 0..200u64 {
            let v = format!("v{i}");
            h.push(put(1, "a", &v, t, t + 10));
            h.push(get(2, "a", t + 20, t + 30, Some(&v)));
            h.push(del(1, "a", t + 40, t + 50));
            h.push(get(2, "a", t + 60, t + 70, None));
            t += 100;
        }
        let start = Instant::now();
        assert_ok(&h);
        h.push(get(3, "a", t + 10, t + 20, Some("v3")));
        assert_violation(&h, "a");
        eprintln!("60 unknown writes: {:?}", start.elapsed());
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
