//! The state machine's store: the key-value map, the client-session table and the applied
//! (index, term), in one redb database, so a transaction writes a batch of entries, their
//! sessions and the applied index together.
//!
//! Most commits are not synced (`Durability::None`): the Raft log is the write-ahead log,
//! and after a crash the store is back at its last durable commit and the entries after it
//! are applied again. Replaying is idempotent because the applied index moves with the data
//! it describes. A durable commit every so often bounds that replay and lets the log drop
//! what the store holds.

use std::collections::BTreeMap;
use std::fmt;

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use super::command::{ApplyOutcome, ApplyResult, Command, KvOp};
use super::disk::StoreDisk;
use super::error::StoreError;
use super::sessions::{self, SessionCheck, SessionRecord, MAX_SESSIONS};
use super::MAX_VALUE_BYTES;
use crate::codec;
use crate::raft::{LogIndex, LogPoint, Membership, Term};

/// Keys and their values of up to [`LARGE_VALUE_BYTES`].
const DATA: TableDefinition<&str, &[u8]> = TableDefinition::new("data");
/// Keys with a longer value: (its blob id, its length). The value lies in [`CHUNKS`].
const LARGE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("large");
/// (blob id, piece number) -> a piece of a large value, [`CHUNK_BYTES`] long but the last.
const CHUNKS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("chunks");
/// Values longer than this are stored in pieces. redb gives a leaf that holds one large
/// pair a page of the next power of two and writes it whole: a 1 MiB value (with its key,
/// just over 1 MiB) took a 2 MiB page, twice the bytes written and up to 2.6 times the
/// space on disk. Pieces that fill their pages, under ascending blob ids (which redb
/// appends without rewriting the leaf before), are written once.
const LARGE_VALUE_BYTES: usize = 32 * 1024;
/// A piece, its key and the leaf's header fit a 32 KiB page.
const CHUNK_BYTES: usize = 32 * 1024 - 128;
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// (last index, client id): the order in which sessions expire.
const SESSION_ORDER: TableDefinition<(u64, &str), ()> = TableDefinition::new("session_order");
/// The cluster configuration applied last, under [`CURRENT`]: (its index, the membership).
const MEMBERSHIP: TableDefinition<&str, &[u8]> = TableDefinition::new("membership");
const CURRENT: &str = "current";

const APPLIED_INDEX: &str = "applied_index";
const APPLIED_TERM: &str = "applied_term";
const FORMAT: &str = "format";
/// Log time (ms): the newest leader stamp applied, never going backwards.
const LOG_TIME: &str = "log_time_ms";
/// Bumped when the layout of the tables changes. Version 3 added large values in pieces
/// (`LARGE`, `CHUNKS`); a version 2 store is read as is (it has none) and marked 3.
const FORMAT_VERSION: u64 = 3;
const FORMAT_UPGRADABLE: u64 = 2;

/// One committed entry for the store: `command` is `None` for a no-op (it still moves the
/// applied index).
pub struct ApplyItem<'a> {
    pub index: LogIndex,
    pub term: Term,
    pub command: Option<&'a Command>,
    /// A configuration entry: recorded with the applied point, for snapshots and restarts.
    pub membership: Option<&'a Membership>,
}

/// One item of a snapshot stream.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
enum SnapshotItem {
    Kv(String, #[serde(with = "serde_bytes")] Vec<u8>),
    Session(String, SessionRecord),
    /// The log time sessions expire by.
    LogTime(u64),
    /// The cluster configuration the snapshot holds, and the index it was recorded at.
    Membership(LogIndex, Membership),
}

/// The key-value map, the session table and the applied point, on disk.
pub struct KvStore {
    db: Database,
    disk: StoreDisk,
    cache_bytes: usize,
    max_sessions: usize,
    /// Applied entries not yet committed: committing costs far more than applying, so a
    /// few milliseconds of entries share one commit (`commit_pending`). Reads of this store
    /// see them; a crash loses them like any unsynced commit.
    open: Option<WriteTransaction>,
}

impl fmt::Debug for KvStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KvStore({})", self.disk)
    }
}

impl KvStore {
    /// Opens the store on `disk` with a page cache of `cache_bytes`; returns it with the
    /// point it has applied up to (durably: anything later was lost with a crash).
    pub fn open(disk: &StoreDisk, cache_bytes: usize) -> Result<(KvStore, LogPoint), StoreError> {
        let db = disk.open(cache_bytes)?;
        let mut store = KvStore {
            db,
            disk: disk.clone(),
            cache_bytes,
            max_sessions: MAX_SESSIONS,
            open: None,
        };
        store.init_tables()?;
        let applied = store.applied()?;
        Ok((store, applied))
    }

    /// Keep at most this many client sessions (tests).
    pub fn with_max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = n.max(1);
        self
    }

    fn err(&self, what: &str, e: impl fmt::Display) -> StoreError {
        StoreError {
            path: self.disk.to_string(),
            reason: format!("{}: {}", what, e),
        }
    }

    fn init_tables(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err("begin", e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err("meta", e))?;
            let format = meta
                .get(FORMAT)
                .map_err(|e| self.err("meta", e))?
                .map(|v| v.value());
            match format {
                None | Some(FORMAT_UPGRADABLE) => {
                    meta.insert(FORMAT, FORMAT_VERSION)
                        .map_err(|e| self.err("meta", e))?;
                }
                Some(FORMAT_VERSION) => {}
                Some(other) => {
                    return Err(self.err(
                        "unsupported store format",
                        format!(
                            "version {} (this raftkv reads {}); start with an empty data directory",
                            other, FORMAT_VERSION
                        ),
                    ))
                }
            }
            open_data_tables(&txn).map_err(|e| self.err("tables", e))?;
            txn.open_table(MEMBERSHIP)
                .map_err(|e| self.err("membership", e))?;
        }
        self.commit(txn, true)
    }

    fn commit(&self, mut txn: WriteTransaction, durable: bool) -> Result<(), StoreError> {
        let level = if durable {
            txn.set_quick_repair(true);
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(level)
            .map_err(|e| self.err("durability", e))?;
        txn.commit().map_err(|e| self.err("commit", e))
    }

    /// The cluster configuration applied last, with the index it was recorded at (`None`
    /// before the first one is applied).
    pub fn membership(&mut self) -> Result<Option<(LogIndex, Membership)>, StoreError> {
        let txn = self.read_view()?;
        read_membership(&txn).map_err(|e| self.err("membership", e))
    }

    /// The point the store has applied up to.
    pub fn applied(&mut self) -> Result<LogPoint, StoreError> {
        let txn = self.read_view()?;
        read_applied(&txn).map_err(|e| self.err("meta", e))
    }

    /// Applies committed entries, with their sessions and the new applied point, in the open
    /// transaction (committed by `commit_pending`, `sync`, or here when `durable`, which
    /// also syncs everything so far). Returns each command's result and the index it took
    /// effect at (for a retried request, the original one).
    #[allow(clippy::type_complexity)]
    pub fn apply(
        &mut self,
        items: &[ApplyItem],
        durable: bool,
    ) -> Result<Vec<Option<ApplyOutcome>>, StoreError> {
        let mut out = Vec::with_capacity(items.len());
        let Some(last) = items.last() else {
            return Ok(out);
        };
        let txn = match self.open.take() {
            Some(txn) => txn,
            None => self.db.begin_write().map_err(|e| self.err("begin", e))?,
        };
        {
            let (mut values, mut sessions, mut order) =
                open_data_tables(&txn).map_err(|e| self.err("tables", e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.err("meta", e))?;
            let start_time = meta
                .get(LOG_TIME)
                .map_err(|e| self.err("meta", e))?
                .map_or(0, |v| v.value());
            let mut t = SessionTables {
                sessions: &mut sessions,
                order: &mut order,
                max: self.max_sessions,
                now_ms: start_time,
            };
            for item in items {
                if let Some(m) = item.membership {
                    write_membership(&txn, item.index, m).map_err(|e| self.err("membership", e))?;
                }
                let Some(cmd) = item.command else {
                    out.push(None);
                    continue;
                };
                let r = apply_one(&mut values, &mut t, item.index, cmd)
                    .map_err(|e| self.err("apply", e))?;
                out.push(Some(r));
            }
            if t.now_ms != start_time {
                meta.insert(LOG_TIME, t.now_ms)
                    .map_err(|e| self.err("meta", e))?;
            }
            meta.insert(APPLIED_INDEX, last.index)
                .map_err(|e| self.err("meta", e))?;
            meta.insert(APPLIED_TERM, last.term)
                .map_err(|e| self.err("meta", e))?;
        }
        if durable {
            self.commit(txn, true)?;
        } else {
            self.open = Some(txn);
        }
        Ok(out)
    }

    /// A read transaction that sees everything applied so far (the open transaction is
    /// committed first, unsynced).
    fn read_view(&mut self) -> Result<ReadTransaction, StoreError> {
        self.commit_pending()?;
        self.db.begin_read().map_err(|e| self.err("begin read", e))
    }

    /// Commits what was applied since the last commit, without syncing.
    pub fn commit_pending(&mut self) -> Result<(), StoreError> {
        match self.open.take() {
            Some(txn) => self.commit(txn, false),
            None => Ok(()),
        }
    }

    /// Makes everything applied so far durable.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        let txn = match self.open.take() {
            Some(txn) => txn,
            None => self.db.begin_write().map_err(|e| self.err("begin", e))?,
        };
        self.commit(txn, true)
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tables = |e: redb::TableError| self.err("data", e);
        if let Some(open) = &self.open {
            let data = open.open_table(DATA).map_err(tables)?;
            let large = open.open_table(LARGE).map_err(tables)?;
            let chunks = open.open_table(CHUNKS).map_err(tables)?;
            return read_value(&data, &large, &chunks, key).map_err(|e| self.err("get", e));
        }
        let txn = self
            .db
            .begin_read()
            .map_err(|e| self.err("begin read", e))?;
        let data = txn.open_table(DATA).map_err(tables)?;
        let large = txn.open_table(LARGE).map_err(tables)?;
        let chunks = txn.open_table(CHUNKS).map_err(tables)?;
        read_value(&data, &large, &chunks, key).map_err(|e| self.err("get", e))
    }

    /// Number of keys.
    pub fn key_count(&mut self) -> Result<u64, StoreError> {
        let txn = self.read_view()?;
        let data = txn.open_table(DATA).map_err(|e| self.err("data", e))?;
        let large = txn.open_table(LARGE).map_err(|e| self.err("data", e))?;
        let small = data.len().map_err(|e| self.err("len", e))?;
        Ok(small + large.len().map_err(|e| self.err("len", e))?)
    }

    /// Every key and value (tests compare replicas with this).
    pub fn dump(&mut self) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        let txn = self.read_view()?;
        let mut out = BTreeMap::new();
        for_each_value(
            &txn,
            |e| self.err("scan", e),
            |k, v| {
                out.insert(k.to_string(), v);
                Ok(true)
            },
        )?;
        Ok(out)
    }

    /// The session record of `client_id` (tests).
    pub fn session(&mut self, client_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let txn = self.read_view()?;
        let table = txn
            .open_table(SESSIONS)
            .map_err(|e| self.err("sessions", e))?;
        let v = table.get(client_id).map_err(|e| self.err("get", e))?;
        match v {
            Some(v) => Ok(Some(
                codec::decode(v.value()).map_err(|e| self.err("session", e))?,
            )),
            None => Ok(None),
        }
    }

    /// A consistent read view of everything applied so far, for a snapshot stream. Writes
    /// go on while it is read.
    pub fn snapshot_reader(&mut self) -> Result<SnapshotReader, StoreError> {
        let txn = self.read_view()?;
        let point = read_applied(&txn).map_err(|e| self.err("meta", e))?;
        Ok(SnapshotReader {
            txn,
            point,
            path: self.disk.to_string(),
        })
    }

    /// Starts building a new store beside this one from a snapshot ending at `point`.
    pub fn begin_install(&self, point: LogPoint) -> Result<Installer, StoreError> {
        let db = self.disk.create_staging(self.cache_bytes)?;
        let installer = Installer {
            db: Some(db),
            disk: self.disk.clone(),
            cache_bytes: self.cache_bytes,
            point,
            received: 0,
            unsynced: 0,
        };
        installer.init()?;
        Ok(installer)
    }
}

/// Records `m`, in force since `index`, as the store's configuration.
fn write_membership(txn: &WriteTransaction, index: LogIndex, m: &Membership) -> Result<(), String> {
    let raw = codec::encode(&(index, m)).map_err(|e| e.to_string())?;
    let mut table = txn.open_table(MEMBERSHIP).map_err(|e| e.to_string())?;
    table
        .insert(CURRENT, raw.as_slice())
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn read_membership(txn: &ReadTransaction) -> Result<Option<(LogIndex, Membership)>, String> {
    let table = match txn.open_table(MEMBERSHIP) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    match table.get(CURRENT).map_err(|e| e.to_string())? {
        Some(raw) => codec::decode(raw.value())
            .map(Some)
            .map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

fn read_applied(txn: &ReadTransaction) -> Result<LogPoint, redb::Error> {
    let meta = txn.open_table(META)?;
    let index = meta.get(APPLIED_INDEX)?.map_or(0, |v| v.value());
    let term = meta.get(APPLIED_TERM)?.map_or(0, |v| v.value());
    Ok(LogPoint { index, term })
}

/// The session tables of a write transaction, with the log time reached so far.
struct SessionTables<'a, 't> {
    sessions: &'a mut Tables0<'t>,
    order: &'a mut OrderTable<'t>,
    max: usize,
    now_ms: u64,
}

impl SessionTables<'_, '_> {
    /// Drops the sessions idle for longer than the TTL at log time `now_ms`, oldest first
    /// (log time never goes backwards, so the order by last index is the order by time).
    fn expire(&mut self) -> Result<(), String> {
        let e = |e: redb::StorageError| e.to_string();
        loop {
            let oldest = match self.order.first().map_err(e)? {
                Some((k, _)) => k.value().1.to_string(),
                None => return Ok(()),
            };
            let last_ms = match self.sessions.get(oldest.as_str()).map_err(e)? {
                Some(raw) => {
                    codec::decode::<SessionRecord>(raw.value())
                        .map_err(|x| format!("session {:?}: {}", oldest, x))?
                        .last_ms
                }
                // An order row without its session: drop the row.
                None => 0,
            };
            if !sessions::expired(last_ms, self.now_ms) {
                return Ok(());
            }
            self.order.pop_first().map_err(e)?;
            self.sessions.remove(oldest.as_str()).map_err(e)?;
        }
    }
}

fn apply_one(
    values: &mut Values,
    t: &mut SessionTables,
    index: LogIndex,
    cmd: &Command,
) -> Result<ApplyOutcome, String> {
    let e = |e: redb::Error| e.to_string();
    // Log time: the leader's stamp, but never earlier than what was applied before (a new
    // leader's clock may be behind), so every replica reaches the same time at this entry.
    t.now_ms = t.now_ms.max(cmd.stamp_ms);
    t.expire()?;
    let mut previous: Option<SessionRecord> = None;
    if let Some(session) = &cmd.session {
        if let Some(raw) = t
            .sessions
            .get(session.client_id.as_str())
            .map_err(|x| e(x.into()))?
        {
            previous = Some(codec::decode(raw.value()).map_err(|x| x.to_string())?);
        }
        match sessions::check(previous.as_ref(), session) {
            SessionCheck::Apply => {}
            SessionCheck::Duplicate(result, at) => return Ok(ApplyOutcome::Applied(result, at)),
            SessionCheck::Expired => return Ok(ApplyOutcome::SessionExpired),
        }
        if previous.is_none() && t.sessions.len().map_err(|x| e(x.into()))? >= t.max as u64 {
            return Ok(ApplyOutcome::TooManySessions);
        }
    }
    let result = match &cmd.op {
        KvOp::Put { key, value } => {
            values.put(key, value).map_err(|x| e(x.into()))?;
            ApplyResult::Put
        }
        KvOp::Delete { key } => ApplyResult::Deleted {
            existed: values.remove(key).map_err(|x| e(x.into()))?,
        },
    };
    if let Some(session) = &cmd.session {
        if let Some(old) = &previous {
            t.order
                .remove((old.last_index, session.client_id.as_str()))
                .map_err(|x| e(x.into()))?;
        }
        let rec = SessionRecord {
            last_seq: session.seq,
            last_result: result.clone(),
            last_index: index,
            last_ms: t.now_ms,
        };
        let raw = codec::encode(&rec).map_err(|x| x.to_string())?;
        t.sessions
            .insert(session.client_id.as_str(), raw.as_slice())
            .map_err(|x| e(x.into()))?;
        t.order
            .insert((index, session.client_id.as_str()), ())
            .map_err(|x| e(x.into()))?;
    }
    Ok(ApplyOutcome::Applied(result, index))
}

type Tables0<'t> = redb::Table<'t, &'static str, &'static [u8]>;
type OrderTable<'t> = redb::Table<'t, (u64, &'static str), ()>;

/// The key-value map of a write transaction: small values in `DATA`, large ones in pieces.
struct Values<'t> {
    data: Tables0<'t>,
    large: redb::Table<'t, &'static str, (u64, u64)>,
    chunks: redb::Table<'t, (u64, u32), &'static [u8]>,
}

impl Values<'_> {
    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), redb::StorageError> {
        self.remove_large(key)?;
        if value.len() <= LARGE_VALUE_BYTES {
            self.data.insert(key, value)?;
            return Ok(());
        }
        self.data.remove(key)?;
        // Above every blob so far: redb appends it without rewriting the leaf before.
        let id = self.chunks.last()?.map_or(0, |(k, _)| k.value().0) + 1;
        for (n, piece) in value.chunks(CHUNK_BYTES).enumerate() {
            self.chunks.insert((id, n as u32), piece)?;
        }
        self.large.insert(key, (id, value.len() as u64))?;
        Ok(())
    }

    /// Removes `key`; whether it was there.
    fn remove(&mut self, key: &str) -> Result<bool, redb::StorageError> {
        let small = self.data.remove(key)?.is_some();
        Ok(self.remove_large(key)? || small)
    }

    fn remove_large(&mut self, key: &str) -> Result<bool, redb::StorageError> {
        let Some((id, len)) = self.large.remove(key)?.map(|v| v.value()) else {
            return Ok(false);
        };
        for n in 0..len.div_ceil(CHUNK_BYTES as u64) {
            self.chunks.remove((id, n as u32))?;
        }
        Ok(true)
    }
}

/// The value of `key`, put back together when it is large.
fn read_value(
    data: &impl ReadableTable<&'static str, &'static [u8]>,
    large: &impl ReadableTable<&'static str, (u64, u64)>,
    chunks: &impl ReadableTable<(u64, u32), &'static [u8]>,
    key: &str,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(v) = data.get(key).map_err(|e| e.to_string())? {
        return Ok(Some(v.value().to_vec()));
    }
    match large.get(key).map_err(|e| e.to_string())? {
        Some(v) => {
            let (id, len) = v.value();
            assemble(chunks, key, id, len).map(Some)
        }
        None => Ok(None),
    }
}

/// The large value of `key` (blob `id`, `len` bytes) from its pieces. A piece missing or
/// of the wrong length is damage, reported with the key.
fn assemble(
    chunks: &impl ReadableTable<(u64, u32), &'static [u8]>,
    key: &str,
    id: u64,
    len: u64,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(len.min(2 * MAX_VALUE_BYTES as u64) as usize);
    for item in chunks
        .range((id, 0)..=(id, u32::MAX))
        .map_err(|e| e.to_string())?
    {
        let (_, piece) = item.map_err(|e| e.to_string())?;
        out.extend_from_slice(piece.value());
    }
    if out.len() as u64 != len {
        return Err(format!(
            "the value of key {:?} should hold {} bytes, its pieces hold {} (damaged store)",
            key,
            len,
            out.len()
        ));
    }
    Ok(out)
}

/// Calls `f` with every key and its value, in key order within the small and the large
/// values, until it returns false; whether it went through all of them. Store errors
/// reach the caller through `err`, the same way as `f`'s.
fn for_each_value<E>(
    txn: &ReadTransaction,
    err: impl Fn(String) -> E,
    mut f: impl FnMut(&str, Vec<u8>) -> Result<bool, E>,
) -> Result<bool, E> {
    let e = |x: &dyn fmt::Display| err(x.to_string());
    let data = txn.open_table(DATA).map_err(|x| e(&x))?;
    for item in data.iter().map_err(|x| e(&x))? {
        let (k, v) = item.map_err(|x| e(&x))?;
        if !f(k.value(), v.value().to_vec())? {
            return Ok(false);
        }
    }
    let large = txn.open_table(LARGE).map_err(|x| e(&x))?;
    let chunks = txn.open_table(CHUNKS).map_err(|x| e(&x))?;
    for item in large.iter().map_err(|x| e(&x))? {
        let (k, v) = item.map_err(|x| e(&x))?;
        let (id, len) = v.value();
        let value = assemble(&chunks, k.value(), id, len).map_err(|x| e(&x))?;
        if !f(k.value(), value)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The data, sessions and session-order tables of a write transaction.
fn open_data_tables(
    txn: &WriteTransaction,
) -> Result<(Values<'_>, Tables0<'_>, OrderTable<'_>), redb::TableError> {
    Ok((
        Values {
            data: txn.open_table(DATA)?,
            large: txn.open_table(LARGE)?,
            chunks: txn.open_table(CHUNKS)?,
        },
        txn.open_table(SESSIONS)?,
        txn.open_table(SESSION_ORDER)?,
    ))
}

/// A consistent read view of the store, turned into a stream of snapshot chunks.
pub struct SnapshotReader {
    txn: ReadTransaction,
    /// The snapshot ends here: everything applied up to it, nothing after.
    pub point: LogPoint,
    path: String,
}

impl SnapshotReader {
    /// Encodes the view into chunks of about `chunk_bytes` and hands each to `sink` with
    /// `last` set on the final one (there is always at least one). Stops early, without an
    /// error, when `sink` returns false (nobody wants the rest). Returns the bytes produced.
    pub fn produce(
        self,
        chunk_bytes: usize,
        mut sink: impl FnMut(Vec<u8>, bool) -> bool,
    ) -> Result<u64, StoreError> {
        let err = |what: &str, e: &dyn fmt::Display| StoreError {
            path: self.path.clone(),
            reason: format!("snapshot {}: {}", what, e),
        };
        let mut held: Option<Vec<u8>> = None;
        let mut items: Vec<SnapshotItem> = Vec::new();
        let mut size = 0usize;
        let mut total = 0u64;
        // Emits the previous chunk once the next exists, so the final one can be marked.
        let mut flush = |items: &mut Vec<SnapshotItem>,
                         held: &mut Option<Vec<u8>>,
                         total: &mut u64|
         -> Result<bool, StoreError> {
            let chunk = codec::encode(&*items).map_err(|e| err("encode", &e))?;
            items.clear();
            *total += chunk.len() as u64;
            if let Some(prev) = held.replace(chunk) {
                return Ok(sink(prev, false));
            }
            Ok(true)
        };
        let meta = self.txn.open_table(META).map_err(|e| err("meta", &e))?;
        let log_time = meta
            .get(LOG_TIME)
            .map_err(|e| err("meta", &e))?
            .map_or(0, |v| v.value());
        items.push(SnapshotItem::LogTime(log_time));
        if let Some((index, m)) = read_membership(&self.txn).map_err(|e| err("membership", &e))? {
            items.push(SnapshotItem::Membership(index, m));
        }
        let all = for_each_value(
            &self.txn,
            |e| err("scan", &e),
            |k, v| {
                size += k.len() + v.len() + 8;
                items.push(SnapshotItem::Kv(k.to_string(), v));
                if size < chunk_bytes {
                    return Ok(true);
                }
                size = 0;
                flush(&mut items, &mut held, &mut total)
            },
        )?;
        if !all {
            return Ok(total);
        }
        let sessions = self
            .txn
            .open_table(SESSIONS)
            .map_err(|e| err("sessions", &e))?;
        for item in sessions.iter().map_err(|e| err("scan", &e))? {
            let (k, v) = item.map_err(|e| err("scan", &e))?;
            let rec: SessionRecord = codec::decode(v.value()).map_err(|e| err("session", &e))?;
            size += k.value().len() + 32;
            items.push(SnapshotItem::Session(k.value().to_string(), rec));
            if size >= chunk_bytes {
                size = 0;
                if !flush(&mut items, &mut held, &mut total)? {
                    return Ok(total);
                }
            }
        }
        if (!items.is_empty() || held.is_none()) && !flush(&mut items, &mut held, &mut total)? {
            return Ok(total);
        }
        if let Some(last) = held {
            sink(last, true);
        }
        Ok(total)
    }
}

/// A new store being built from a snapshot stream, beside the current one.
pub struct Installer {
    db: Option<Database>,
    disk: StoreDisk,
    cache_bytes: usize,
    /// The snapshot being installed.
    pub point: LogPoint,
    /// Bytes of the stream stored so far.
    pub received: u64,
    /// Bytes stored since the last sync.
    unsynced: u64,
}

/// The staging store syncs after this many bytes of the stream. Writing a large snapshot
/// without syncing leaves the kernel a backlog of dirty pages that it flushes all at once,
/// stalling every other fsync on the disk (the log's, the other nodes' on one machine)
/// for seconds; small regular syncs keep the writes steady.
const INSTALL_SYNC_BYTES: u64 = 8 * 1024 * 1024;

impl Installer {
    fn err(&self, what: &str, e: impl fmt::Display) -> StoreError {
        StoreError {
            path: format!("{} (installing)", self.disk),
            reason: format!("{}: {}", what, e),
        }
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db
            .as_ref()
            .ok_or_else(|| self.err("install", "already finished"))
    }

    fn init(&self) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write().map_err(|e| self.err("begin", e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err("meta", e))?;
            meta.insert(FORMAT, FORMAT_VERSION)
                .map_err(|e| self.err("meta", e))?;
            open_data_tables(&txn).map_err(|e| self.err("tables", e))?;
            txn.open_table(MEMBERSHIP)
                .map_err(|e| self.err("membership", e))?;
        }
        let mut txn = txn;
        txn.set_durability(Durability::None)
            .map_err(|e| self.err("durability", e))?;
        txn.commit().map_err(|e| self.err("commit", e))
    }

    /// Stores one chunk of the stream (not synced: nothing counts until `finish`).
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let items: Vec<SnapshotItem> =
            codec::decode(chunk).map_err(|e| self.err("chunk does not decode", e))?;
        let mut txn = self.db()?.begin_write().map_err(|e| self.err("begin", e))?;
        {
            let (mut values, mut sessions, mut order) =
                open_data_tables(&txn).map_err(|e| self.err("tables", e))?;
            for item in &items {
                match item {
                    SnapshotItem::Kv(k, v) => {
                        values.put(k, v).map_err(|e| self.err("insert", e))?;
                    }
                    SnapshotItem::LogTime(ms) => {
                        let mut meta = txn.open_table(META).map_err(|e| self.err("meta", e))?;
                        meta.insert(LOG_TIME, *ms)
                            .map_err(|e| self.err("meta", e))?;
                    }
                    SnapshotItem::Membership(index, m) => {
                        write_membership(&txn, *index, m).map_err(|e| self.err("membership", e))?;
                    }
                    SnapshotItem::Session(id, rec) => {
                        let raw = codec::encode(rec).map_err(|e| self.err("session", e))?;
                        sessions
                            .insert(id.as_str(), raw.as_slice())
                            .map_err(|e| self.err("insert", e))?;
                        order
                            .insert((rec.last_index, id.as_str()), ())
                            .map_err(|e| self.err("insert", e))?;
                    }
                }
            }
        }
        self.unsynced += chunk.len() as u64;
        let durability = if self.unsynced >= INSTALL_SYNC_BYTES {
            self.unsynced = 0;
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability)
            .map_err(|e| self.err("durability", e))?;
        txn.commit().map_err(|e| self.err("commit", e))?;
        self.received += chunk.len() as u64;
        Ok(())
    }

    /// Records the snapshot's point, syncs the new store and swaps it in for the old one
    /// in one atomic step; returns it opened. A crash before the swap leaves the old store,
    /// after it the new one.
    pub fn finish(mut self) -> Result<KvStore, StoreError> {
        let txn = self.db()?.begin_write().map_err(|e| self.err("begin", e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err("meta", e))?;
            meta.insert(APPLIED_INDEX, self.point.index)
                .map_err(|e| self.err("meta", e))?;
            meta.insert(APPLIED_TERM, self.point.term)
                .map_err(|e| self.err("meta", e))?;
        }
        let mut txn = txn;
        txn.set_quick_repair(true);
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.err("durability", e))?;
        txn.commit().map_err(|e| self.err("commit", e))?;
        // Close the new store before it takes the old one's name.
        drop(self.db.take());
        self.disk.promote_staging()?;
        let (store, applied) = KvStore::open(&self.disk, self.cache_bytes)?;
        if applied != self.point {
            return Err(self.err(
                "installed store",
                format!("reports {:?}, expected {:?}", applied, self.point),
            ));
        }
        Ok(store)
    }

    /// Gives up on this install.
    pub fn abandon(mut self) {
        drop(self.db.take());
        self.disk.discard_staging();
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
