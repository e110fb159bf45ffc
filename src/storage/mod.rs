//! Durable state: the Raft log, term and vote (and, later, snapshots).
//!
//! [`FileStorage`] keeps everything in an append-only file of checksummed records under
//! `data_dir`; [`MemStorage`] keeps it in memory for the simulator. Both implement
//! [`Storage`], the seam the LogStore actor writes through.

mod file;
mod mem;
mod record;

pub use file::FileStorage;
pub use mem::{MemDisk, MemStorage};
pub use record::{read_records, RecordReadOutcome, RecordWriter};

use std::path::PathBuf;
use std::sync::Arc;

use crate::raft::{Entry, HardState, LogIndex, PersistBatch, Snapshot, Term};

/// What a node finds on disk when it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    pub hard_state: HardState,
    /// The newest snapshot, if any; `entries` continue right after it.
    pub snapshot: Option<Arc<Snapshot>>,
    pub entries: Vec<Entry>,
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
    #[error("encoding failed: {0}")]
    Codec(#[from] crate::codec::CodecError),
}

/// Where the LogStore makes batches durable.
pub trait Storage: Send + 'static {
    /// Writes the batch (hard state, truncation, entries, in that order) and syncs it to
    /// stable storage before returning.
    fn persist(&mut self, batch: &PersistBatch) -> Result<(), StorageError>;

    /// True when `persist` blocks on real I/O and must run off the async threads.
    fn is_blocking(&self) -> bool;
}

/// Drops the entries a snapshot ending at (`index`, `term`) covers. Entries after it stay
/// only if they continue from it: the log holds `index` with `term` (Figure 13, step 6), or
/// already starts right after it.
pub(crate) fn compact_entries(entries: &mut Vec<Entry>, index: LogIndex, term: Term) {
    let agrees = match entries.iter().find(|e| e.index == index) {
        Some(e) => e.term == term,
        None => entries.first().is_some_and(|e| e.index == index + 1),
    };
    if agrees {
        entries.retain(|e| e.index > index);
    } else {
        entries.clear();
    }
}

/// Applies `batch` to an in-memory image of durable state (used by MemStorage).
pub(crate) fn apply_batch_to(state: &mut InitialState, batch: &PersistBatch) {
    if let Some(snapshot) = &batch.snapshot {
        compact_entries(&mut state.entries, snapshot.index, snapshot.term);
        state.snapshot = Some(snapshot.clone());
    }
    if let Some(hs) = batch.hard_state {
        state.hard_state = hs;
    }
    if let Some(from) = batch.truncate_from {
        state.entries.retain(|e| e.index < from);
    }
    for e in &batch.entries {
        if let Some(first_new) = state.entries.iter().position(|x| x.index >= e.index) {
            state.entries.truncate(first_new);
        }
        state.entries.push(e.clone());
    }
}
