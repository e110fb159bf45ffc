//! The on-disk Raft log of one node: segment files under `data_dir/log/`.
//!
//! Each segment (`<number>.seg`, numbers increasing) is a sequence of checksummed records
//! (`record.rs`). Its first record is `SegmentStart`: the hard state and the log's last
//! (index, term) when the segment began, so any suffix of the segments replays on its own.
//! One `PersistBatch` is one `write_all` and one `sync_data` on the newest segment. A new
//! segment starts at every open and once the newest passes `segment_bytes`. Compaction
//! records where the log now starts (`Compacted`) and then deletes whole old segments
//! whose entries all lie at or below that point, oldest first; the live log is never
//! rewritten.
//!
//! Recovery: each write is one batch with a header that marks its extent (`record.rs`). An
//! incomplete last batch of the newest segment (a crash mid-write, never acknowledged) is
//! cut away with a warning. Any other damage, anywhere else, is corruption: the node
//! refuses to start and names the file and byte offset.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use log::{debug, info, warn};
use serde::{Deserialize, Serialize};

use super::record::{
    batch_header, read_batches, RecordReadOutcome, RecordWriter, BATCH_HEADER_LEN,
};
use super::{compact_entries, InitialState, Storage, StorageError};
use crate::codec;
use crate::raft::{Entry, HardState, LogIndex, LogPoint, PersistBatch, Term};

/// Where the segments live, under the data directory.
pub const LOG_DIR: &str = "log";
const SEGMENT_EXT: &str = "seg";
/// A segment is closed and a new one started once it holds this many bytes.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Files of the format before segments (one log file and one snapshot of the whole map).
const OLD_FORMAT_FILES: [&str; 2] = ["raft.log", "snapshot.bin"];

/// One record of a segment.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
enum Record {
    HardState(HardState),
    TruncateFrom(LogIndex),
    Entry(Entry),
    /// The log now starts after this point (Figure 13 steps 6-7 on replay).
    Compacted(LogPoint),
    /// First record of every segment.
    SegmentStart {
        hard_state: HardState,
        prev: LogPoint,
    },
}

/// The same records, borrowed, for writing without copying entries.
#[derive(Serialize)]
enum RecordRef<'a> {
    HardState(&'a HardState),
    TruncateFrom(LogIndex),
    Entry(&'a Entry),
    Compacted(&'a LogPoint),
    SegmentStart {
        hard_state: &'a HardState,
        prev: &'a LogPoint,
    },
}

struct Segment {
    number: u64,
    path: PathBuf,
    /// Highest entry index written to it (its start point when it holds no entry).
    last_index: LogIndex,
}

/// Term boundaries of the durable log: `(first index, term)` runs, so the storage knows the
/// term of its last entry after a truncation without keeping the entries.
#[derive(Default)]
struct TermRuns {
    start: LogPoint,
    runs: Vec<(LogIndex, Term)>,
    last_index: LogIndex,
}

impl TermRuns {
    fn last(&self) -> LogPoint {
        LogPoint {
            index: self.last_index,
            term: self.runs.last().map_or(self.start.term, |r| r.1),
        }
    }
    fn append(&mut self, index: LogIndex, term: Term) {
        if self.runs.last().map(|r| r.1) != Some(term) {
            self.runs.push((index, term));
        }
        self.last_index = index;
    }
    fn truncate_from(&mut self, from: LogIndex) {
        if from > self.last_index {
            return;
        }
        self.runs.retain(|r| r.0 < from);
        self.last_index = from.saturating_sub(1).max(self.start.index);
    }
    fn compact(&mut self, to: LogPoint, kept: bool) {
        if !kept {
            self.runs.clear();
            self.last_index = to.index;
        } else {
            // Runs starting at or before the point collapse into the start.
            let keep_from = self.runs.iter().rposition(|r| r.0 <= to.index);
            if let Some(i) = keep_from {
                let term = self.runs[i].1;
                self.runs.drain(..=i);
                if self.last_index > to.index {
                    self.runs.insert(0, (to.index + 1, term));
                }
            }
        }
        self.start = to;
        self.last_index = self.last_index.max(to.index);
    }
}

/// The log directory of one node.
pub struct FileStorage {
    dir: PathBuf,
    segments: Vec<Segment>,
    file: File,
    active_len: u64,
    segment_bytes: u64,
    hard_state: HardState,
    terms: TermRuns,
    /// Reused encode buffers; `buf` starts with room for the batch header.
    buf: Vec<u8>,
    scratch: Vec<u8>,
    /// Deletes compacted segments in the background, one at a time and in order, so an
    /// unlink of a large file never holds up the next log write.
    deleter: Option<Deleter>,
}

/// A thread that deletes files in the order it is given them.
struct Deleter {
    tx: Option<std::sync::mpsc::Sender<PathBuf>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Deleter {
    fn start() -> Option<Deleter> {
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        let thread = std::thread::Builder::new()
            .name("log-segment-deleter".into())
            .spawn(move || {
                for path in rx {
                    match fs::remove_file(&path) {
                        Ok(()) => info!("{}: deleted", path.display()),
                        Err(e) => warn!("{}: cannot delete: {}", path.display(), e),
                    }
                }
            })
            .ok()?;
        Some(Deleter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Deleter {
    /// Finishes the queued deletions, so that a reopened log never sees a file half-way.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, offset: u64, reason: String) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    }
}

/// What replaying the segments produced.
struct Replay {
    hard_state: HardState,
    start: LogPoint,
    entries: Vec<Entry>,
}

impl Replay {
    fn last_index(&self) -> LogIndex {
        self.entries.last().map_or(self.start.index, |e| e.index)
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{:020}.{}", number, SEGMENT_EXT))
}

/// The segment files in `dir`, oldest first. Other files are ignored.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut out = Vec::new();
    for item in fs::read_dir(dir).map_err(io_err(dir))? {
        let item = item.map_err(io_err(dir))?;
        let path = item.path();
        if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
            continue;
        }
        let number = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok());
        match number {
            Some(n) => out.push((n, path)),
            None => warn!("{}: not a segment name; ignored", path.display()),
        }
    }
    out.sort();
    Ok(out)
}

impl FileStorage {
    /// Opens (or creates) the log under `data_dir` and replays it, with segments of
    /// `segment_bytes`. A torn record at the end of the newest segment is dropped with a
    /// warning; any other damage is an error naming the file and offset.
    pub fn open(
        data_dir: &Path,
        segment_bytes: u64,
    ) -> Result<(FileStorage, InitialState), StorageError> {
        for old in OLD_FORMAT_FILES {
            let p = data_dir.join(old);
            if p.exists() {
                return Err(StorageError::Unusable {
                    path: p,
                    reason: format!(
                        "this data directory was written by an older raftkv (one log file and a \
                         snapshot of the whole map); this version keeps the log in {}/ and the \
                         data in store.redb. Start the node with an empty data directory (move \
                         {} away): it catches up from the leader",
                        LOG_DIR,
                        data_dir.display()
                    ),
                });
            }
        }
        let dir = data_dir.join(LOG_DIR);
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            sync_dir(data_dir)?;
            if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let found = list_segments(&dir)?;
        let mut replay = Replay {
            hard_state: HardState::default(),
            start: LogPoint::default(),
            entries: Vec::new(),
        };
        let mut segments = Vec::new();
        let count = found.len();
        for (i, (number, path)) in found.into_iter().enumerate() {
            let newest = i + 1 == count;
            let last_index = replay_segment(&path, i == 0, newest, &mut replay)?;
            match last_index {
                Some(last_index) => segments.push(Segment {
                    number,
                    path,
                    last_index,
                }),
                // The newest segment lost even its first record: nothing was in it.
                None => fs::remove_file(&path).map_err(io_err(&path))?,
            }
        }
        let mut terms = TermRuns {
            start: replay.start,
            runs: Vec::new(),
            last_index: replay.start.index,
        };
        for e in &replay.entries {
            terms.append(e.index, e.term);
        }
        let next_number = segments.last().map_or(1, |s| s.number + 1);
        let path = segment_path(&dir, next_number);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut storage = FileStorage {
            dir,
            segments,
            file,
            active_len: 0,
            segment_bytes: segment_bytes.max(4096),
            hard_state: replay.hard_state,
            terms,
            buf: vec![0; BATCH_HEADER_LEN],
            scratch: Vec::new(),
            deleter: Deleter::start(),
        };
        storage.segments.push(Segment {
            number: next_number,
            path,
            last_index: storage.terms.last_index,
        });
        storage.start_segment_header()?;
        let len = storage.buf.len() as u64;
        storage.write_buf()?;
        storage.active_len = len;
        sync_dir(&storage.dir)?;
        info!(
            "{}: loaded term {}, vote {:?}, log {}..={} ({} entries in {} segments)",
            storage.dir.display(),
            replay.hard_state.current_term,
            replay.hard_state.voted_for,
            replay.start.index + 1,
            replay.last_index(),
            replay.entries.len(),
            storage.segments.len()
        );
        Ok((
            storage,
            InitialState {
                hard_state: replay.hard_state,
                start: replay.start,
                entries: replay.entries,
            },
        ))
    }

    /// Number of segment files (tests).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn push(&mut self, r: &RecordRef) -> Result<(), StorageError> {
        self.scratch.clear();
        codec::encode_into(&mut self.scratch, r)?;
        RecordWriter::new(&mut self.buf).push(&self.scratch);
        Ok(())
    }

    /// Puts the new segment's first record in the buffer.
    fn start_segment_header(&mut self) -> Result<(), StorageError> {
        let hs = self.hard_state;
        let prev = self.terms.last();
        self.push(&RecordRef::SegmentStart {
            hard_state: &hs,
            prev: &prev,
        })
    }

    fn active_path(&self) -> PathBuf {
        self.segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_else(|| self.dir.clone())
    }

    /// Writes and syncs the buffer to the newest segment.
    fn write_buf(&mut self) -> Result<(), StorageError> {
        let path = self.active_path();
        // The batch header marks where this fsync'd batch ends (record.rs).
        let header = batch_header(&self.buf[BATCH_HEADER_LEN..]);
        self.buf[..BATCH_HEADER_LEN].copy_from_slice(&header);
        self.file.write_all(&self.buf).map_err(io_err(&path))?;
        self.file.sync_data().map_err(io_err(&path))?;
        self.active_len += self.buf.len() as u64;
        self.buf.truncate(BATCH_HEADER_LEN);
        Ok(())
    }

    /// Closes the newest segment and starts the next one (its header goes into the buffer).
    fn rotate(&mut self) -> Result<(), StorageError> {
        let number = self.segments.last().map_or(1, |s| s.number + 1);
        let path = segment_path(&self.dir, number);
        self.file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            number,
            path,
            last_index: self.terms.last_index,
        });
        self.active_len = 0;
        self.start_segment_header()
    }

    /// Deletes old segments whose entries all lie at or below `to`, oldest first; the
    /// newest segment always stays. A crash part-way leaves a suffix, which replays alone.
    fn delete_segments_through(&mut self, to: LogIndex) -> Result<(), StorageError> {
        while self.segments.len() > 1 && self.segments[0].last_index <= to {
            let seg = self.segments.remove(0);
            debug!(
                "{}: to be deleted (log compacted to index {})",
                seg.path.display(),
                to
            );
            // Deleted in order by the deleter thread (here, if it could not start).
            let queued = match self.deleter.as_ref().and_then(|d| d.tx.as_ref()) {
                Some(tx) => tx.send(seg.path.clone()).is_ok(),
                None => false,
            };
            if !queued {
                fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
            }
        }
        Ok(())
    }
}

/// Replays one segment into `replay`. Returns the highest entry index it holds (its start
/// point if none), or `None` for a newest segment with no complete record.
fn replay_segment(
    path: &Path,
    oldest: bool,
    newest: bool,
    replay: &mut Replay,
) -> Result<Option<LogIndex>, StorageError> {
    let data = fs::read(path).map_err(io_err(path))?;
    let (records, outcome) = read_batches(&data);
    match outcome {
        RecordReadOutcome::Clean => {}
        RecordReadOutcome::TornTail { offset, reason } if newest => {
            warn!(
                "{}: dropping an incomplete batch at byte offset {} ({}), left by a crash \
                 mid-write before it was acknowledged",
                path.display(),
                offset,
                reason
            );
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(path))?;
            f.set_len(offset).map_err(io_err(path))?;
            f.sync_all().map_err(io_err(path))?;
        }
        // A segment that is not the newest was complete and synced before the next began.
        RecordReadOutcome::TornTail { offset, reason }
        | RecordReadOutcome::Corrupt { offset, reason } => {
            return Err(corrupt(path, offset, reason))
        }
    }
    if records.is_empty() && newest {
        return Ok(None);
    }
    let mut last_in_segment = None;
    for (i, (offset, payload)) in records.into_iter().enumerate() {
        let record: Record =
            codec::decode(payload).map_err(|e| corrupt(path, offset, e.to_string()))?;
        match record {
            Record::SegmentStart { hard_state, prev } if i == 0 => {
                if oldest {
                    replay.start = prev;
                    replay.entries.clear();
                } else if prev.index != replay.last_index() {
                    return Err(corrupt(
                        path,
                        offset,
                        format!(
                            "segment starts after index {} but the log before it ends at {}",
                            prev.index,
                            replay.last_index()
                        ),
                    ));
                }
                replay.hard_state = hard_state;
                last_in_segment = Some(prev.index);
            }
            _ if i == 0 => {
                return Err(corrupt(
                    path,
                    offset,
                    "segment does not begin with its start record".into(),
                ))
            }
            Record::SegmentStart { .. } => {
                return Err(corrupt(path, offset, "second segment start record".into()))
            }
            Record::HardState(hs) => replay.hard_state = hs,
            Record::TruncateFrom(from) => replay.entries.retain(|e| e.index < from),
            Record::Compacted(to) => compact_entries(&mut replay.entries, &mut replay.start, to),
            Record::Entry(entry) => {
                if entry.index != replay.last_index() + 1 {
                    return Err(corrupt(
                        path,
                        offset,
                        format!(
                            "entry index {} does not follow {}",
                            entry.index,
                            replay.last_index()
                        ),
                    ));
                }
                last_in_segment = Some(last_in_segment.unwrap_or(0).max(entry.index));
                replay.entries.push(entry);
            }
        }
    }
    Ok(last_in_segment)
}

/// Makes a directory entry change (create, rename, delete) durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Storage for FileStorage {
    fn persist(&mut self, batch: &PersistBatch) -> Result<(), StorageError> {
        self.buf.truncate(BATCH_HEADER_LEN);
        if self.active_len >= self.segment_bytes {
            self.rotate()?;
        }
        if let Some(to) = &batch.compact_to {
            self.push(&RecordRef::Compacted(to))?;
        }
        if let Some(hs) = &batch.hard_state {
            self.push(&RecordRef::HardState(hs))?;
        }
        if let Some(from) = batch.truncate_from {
            self.push(&RecordRef::TruncateFrom(from))?;
        }
        for (i, e) in batch.entries.iter().enumerate() {
            // An append that overlaps earlier entries replaces them: say so explicitly.
            if i == 0 && batch.truncate_from.is_none() {
                self.push(&RecordRef::TruncateFrom(e.index))?;
            }
            self.push(&RecordRef::Entry(e))?;
        }
        if self.buf.len() == BATCH_HEADER_LEN {
            return Ok(());
        }
        self.write_buf()?;
        // The batch is durable; now bring the bookkeeping along, in the batch's order.
        if let Some(to) = batch.compact_to {
            let kept = to.index <= self.terms.start.index
                || (to.index <= self.terms.last_index
                    && self.term_run_at(to.index) == Some(to.term));
            if to.index > self.terms.start.index {
                self.terms.compact(to, kept);
            }
        }
        if let Some(hs) = batch.hard_state {
            self.hard_state = hs;
        }
        if let Some(from) = batch.truncate_from {
            self.terms.truncate_from(from);
        }
        if let Some(first) = batch.entries.first() {
            self.terms.truncate_from(first.index);
        }
        for e in &batch.entries {
            self.terms.append(e.index, e.term);
        }
        if let (Some(seg), Some(last)) = (self.segments.last_mut(), batch.entries.last()) {
            seg.last_index = seg.last_index.max(last.index);
        }
        if let Some(to) = batch.compact_to {
            self.delete_segments_through(to.index)?;
        }
        Ok(())
    }

    fn is_blocking(&self) -> bool {
        true
    }
}

impl FileStorage {
    fn term_run_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.terms.start.index {
            return Some(self.terms.start.term);
        }
        self.terms
            .runs
            .iter()
            .rev()
            .find(|r| r.0 <= index)
            .map(|r| r.1)
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
