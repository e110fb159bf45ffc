//! Durable Raft state: the log, term and vote.
//!
//! [`FileStorage`] keeps them in segment files of checksummed records under
//! `data_dir/log/`; [`MemStorage`] keeps them in memory for the simulator. Both implement
//! [`Storage`], the seam the LogStore actor writes through. The state machine's data lives
//! elsewhere (`crate::kv::store`): the log only has to reach back to what the store holds
//! durably.

mod file;
mod mem;
mod record;

pub use file::{FileStorage, DEFAULT_SEGMENT_BYTES};
pub use mem::{MemDisk, MemStorage};
pub use record::{read_records, RecordReadOutcome, RecordWriter};

use std::path::PathBuf;

use crate::raft::{Entry, HardState, LogIndex, LogPoint, PersistBatch};

/// What a node finds in its log when it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    pub hard_state: HardState,
    /// The log starts after this point (compacted or replaced by a snapshot before it).
    pub start: LogPoint,
    /// The entries after `start`, in order.
    pub entries: Vec<Entry>,
    /// The durable log starts after this point (at or before `start`): the entries in
    /// between were left on disk (the state machine holds them) and are read with
    /// [`Storage::read_entries`].
    pub disk_start: LogPoint,
}

impl InitialState {
    /// Index of the last entry (the start when there is none).
    pub fn last_index(&self) -> LogIndex {
        self.entries.last().map_or(self.start.index, |e| e.index)
    }
}

/// Storage failed; `path` and `offset` say where.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt record at byte offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Unusable { path: PathBuf, reason: String },
    #[error("encoding failed: {0}")]
    Codec(#[from] crate::codec::CodecError),
}

/// Where the LogStore makes batches durable.
pub trait Storage: Send + 'static {
    /// Writes the batch (compaction, hard state, truncation, entries, in that order) and
    /// syncs it to stable storage before returning.
    fn persist(&mut self, batch: &PersistBatch) -> Result<(), StorageError>;

    /// True when `persist` blocks on real I/O and must run off the async threads.
    fn is_blocking(&self) -> bool;

    /// Durable entries from `from` on (at most `max_entries`, about `max_bytes`, at least
    /// one), for a follower that needs entries no longer kept in memory. `None` when the
    /// log does not hold `from`. Only committed entries are asked for. By default read
    /// through [`Storage::log_reader`].
    fn read_entries(
        &self,
        from: LogIndex,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Option<Vec<Entry>>, StorageError> {
        match self.log_reader() {
            Some(reader) => reader.read_entries(from, max_entries, max_bytes),
            None => Ok(None),
        }
    }

    /// A reader of the log as it is now that works without the storage (on another
    /// thread, while writes go on), when the storage has one.
    fn log_reader(&self) -> Option<Box<dyn LogReader>> {
        None
    }
}

/// Reads old, committed entries of a log without the [`Storage`] that writes it.
pub trait LogReader: Send + 'static {
    /// As [`Storage::read_entries`].
    fn read_entries(
        &self,
        from: LogIndex,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Option<Vec<Entry>>, StorageError>;
}

/// Entries from `from` on in `entries` (ordered, contiguous), bounded as
/// [`Storage::read_entries`] says.
pub(crate) fn slice_entries(
    entries: &[Entry],
    from: LogIndex,
    max_entries: usize,
    max_bytes: usize,
) -> Option<Vec<Entry>> {
    let first = entries.first()?.index;
    if from < first {
        return None;
    }
    let start = (from - first) as usize;
    let mut out = Vec::new();
    let mut bytes = 0;
    for e in entries.get(start..)?.iter().take(max_entries) {
        bytes += e.approx_size();
        if !out.is_empty() && bytes > max_bytes {
            break;
        }
        out.push(e.clone());
    }
    (!out.is_empty()).then_some(out)
}

/// Makes the log start after `to` (Figure 13, steps 6-7): entries after it stay only if the
/// log holds `to` with the same term; otherwise the whole log is discarded. A point at or
/// before the current start changes nothing.
pub fn compact_entries(entries: &mut Vec<Entry>, start: &mut LogPoint, to: LogPoint) {
    if to.index <= start.index {
        return;
    }
    // Entries are in index order: find the point by binary search (a replay meets
    // thousands of these records).
    let at = entries.partition_point(|e| e.index < to.index);
    if entries
        .get(at)
        .is_some_and(|e| e.index == to.index && e.term == to.term)
    {
        entries.drain(..=at);
    } else {
        entries.clear();
    }
    *start = to;
}

/// Drops the entries from index `from` on (`entries` are in index order).
pub fn truncate_entries(entries: &mut Vec<Entry>, from: LogIndex) {
    let keep = entries.partition_point(|e| e.index < from);
    entries.truncate(keep);
}

/// Applies `batch` to an in-memory image of durable state (used by MemStorage).
pub(crate) fn apply_batch_to(state: &mut InitialState, batch: &PersistBatch) {
    if let Some(to) = batch.compact_to {
        compact_entries(&mut state.entries, &mut state.start, to);
        state.disk_start = state.start;
    }
    if let Some(hs) = batch.hard_state {
        state.hard_state = hs;
    }
    if let Some(from) = batch.truncate_from {
        truncate_entries(&mut state.entries, from);
    }
    for e in &batch.entries {
        if let Some(first_new) = state.entries.iter().position(|x| x.index >= e.index) {
            state.entries.truncate(first_new);
        }
        state.entries.push(e.clone());
    }
}

/// Makes `state`'s log start after `to` (see [`compact_entries`]).
pub fn compact_log(state: &mut InitialState, to: LogPoint) {
    compact_entries(&mut state.entries, &mut state.start, to);
}
