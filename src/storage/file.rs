//! The on-disk log: `data_dir/raft.log`, an append-only file of checksummed records
//! (hard state, entries, truncations), replayed on start. One `sync_data` per batch.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use log::{info, warn};
use serde::{Deserialize, Serialize};

use super::record::{read_records, RecordReadOutcome, RecordWriter};
use super::{InitialState, Storage, StorageError};
use crate::codec;
use crate::raft::{Entry, HardState, LogIndex, PersistBatch};

const LOG_FILE: &str = "raft.log";

/// One record of the log file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
enum Record {
    HardState(HardState),
    TruncateFrom(LogIndex),
    Entry(Entry),
}

/// The log file of one node.
pub struct FileStorage {
    path: PathBuf,
    file: File,
    /// Reused encode buffer.
    buf: Vec<u8>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl FileStorage {
    /// Opens (or creates) the log in `dir` and replays it. A torn record at the tail is
    /// dropped with a warning; any other damage is an error naming the file and offset.
    pub fn open(dir: &Path) -> Result<(FileStorage, InitialState), StorageError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(LOG_FILE);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_err(&path))?;
        if !existed {
            sync_dir(dir)?;
        }
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io_err(&path))?;
        let (records, outcome) = read_records(&data);
        let mut state = InitialState::default();
        for (offset, payload) in records {
            let record: Record = codec::decode(payload).map_err(|e| StorageError::Corrupt {
                path: path.clone(),
                offset,
                reason: e.to_string(),
            })?;
            replay(&mut state, record).map_err(|reason| StorageError::Corrupt {
                path: path.clone(),
                offset,
                reason,
            })?;
        }
        match outcome {
            RecordReadOutcome::Clean => {}
            RecordReadOutcome::TornTail { offset, reason } => {
                warn!(
                    "{}: dropping torn record at byte offset {} ({}): a crash interrupted its write",
                    path.display(),
                    offset,
                    reason
                );
                file.set_len(offset).map_err(io_err(&path))?;
                file.sync_all().map_err(io_err(&path))?;
            }
            RecordReadOutcome::Corrupt { offset, reason } => {
                return Err(StorageError::Corrupt {
                    path,
                    offset,
                    reason,
                })
            }
        }
        info!(
            "{}: loaded term {}, vote {:?}, {} log entries",
            path.display(),
            state.hard_state.current_term,
            state.hard_state.voted_for,
            state.entries.len()
        );
        Ok((
            FileStorage {
                path,
                file,
                buf: Vec::new(),
            },
            state,
        ))
    }
}

fn replay(state: &mut InitialState, record: Record) -> Result<(), String> {
    match record {
        Record::HardState(hs) => state.hard_state = hs,
        Record::TruncateFrom(from) => state.entries.retain(|e| e.index < from),
        Record::Entry(entry) => {
            let expected = state.entries.last().map_or(entry.index, |e| e.index + 1);
            if entry.index != expected {
                return Err(format!(
                    "entry index {} does not follow {}",
                    entry.index,
                    expected.saturating_sub(1)
                ));
            }
            state.entries.push(entry);
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Storage for FileStorage {
    fn persist(&mut self, batch: &PersistBatch) -> Result<(), StorageError> {
        self.buf.clear();
        let mut scratch = Vec::new();
        {
            let mut w = RecordWriter::new(&mut self.buf);
            let mut push = |r: &Record| -> Result<(), StorageError> {
                scratch.clear();
                codec::encode_into(&mut scratch, r)?;
                w.push(&scratch);
                Ok(())
            };
            if let Some(hs) = batch.hard_state {
                push(&Record::HardState(hs))?;
            }
            if let Some(from) = batch.truncate_from {
                push(&Record::TruncateFrom(from))?;
            }
            for (i, e) in batch.entries.iter().enumerate() {
                // An append that overlaps earlier entries replaces them: say so explicitly.
                if i == 0 && batch.truncate_from.is_none() {
                    push(&Record::TruncateFrom(e.index))?;
                }
                push(&Record::Entry(e.clone()))?;
            }
        }
        self.file.write_all(&self.buf).map_err(io_err(&self.path))?;
        self.file.sync_data().map_err(io_err(&self.path))?;
        Ok(())
    }

    fn is_blocking(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Payload;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("raftkv-{}-{}", name, std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn e(index: LogIndex, term: u64) -> Entry {
        Entry {
            index,
            term,
            payload: Payload::Noop,
        }
    }

    fn batch(seq: u64, hs: Option<HardState>, trunc: Option<u64>, es: Vec<Entry>) -> PersistBatch {
        PersistBatch {
            seq,
            hard_state: hs,
            truncate_from: trunc,
            last_index: es.last().map_or(0, |e| e.index),
            entries: es,
        }
    }

    #[test]
    fn persist_and_reload_with_truncation() {
        let dir = tmpdir("reload");
        let hs = HardState {
            current_term: 3,
            voted_for: Some(2),
        };
        {
            let (mut st, init) = FileStorage::open(&dir).unwrap();
            assert_eq!(init, InitialState::default());
            st.persist(&batch(1, Some(hs), None, vec![e(1, 1), e(2, 1), e(3, 1)]))
                .unwrap();
            st.persist(&batch(2, None, Some(2), vec![e(2, 3)])).unwrap();
            st.persist(&batch(3, None, None, vec![e(3, 3)])).unwrap();
        }
        let (_, init) = FileStorage::open(&dir).unwrap();
        assert_eq!(init.hard_state, hs);
        assert_eq!(init.entries, vec![e(1, 1), e(2, 3), e(3, 3)]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn torn_tail_is_dropped_and_corruption_is_reported_with_offset() {
        let dir = tmpdir("torn");
        {
            let (mut st, _) = FileStorage::open(&dir).unwrap();
            st.persist(&batch(1, None, None, vec![e(1, 1), e(2, 1)]))
                .unwrap();
        }
        let path = dir.join(LOG_FILE);
        let full = fs::read(&path).unwrap();
        // Crash mid-write: the last few bytes never made it.
        fs::write(&path, &full[..full.len() - 3]).unwrap();
        let (mut st, init) = FileStorage::open(&dir).unwrap();
        assert_eq!(init.entries, vec![e(1, 1)]);
        // The file was cut back, so new appends follow cleanly.
        st.persist(&batch(2, None, None, vec![e(2, 2)])).unwrap();
        drop(st);
        let (_, init) = FileStorage::open(&dir).unwrap();
        assert_eq!(init.entries, vec![e(1, 1), e(2, 2)]);

        // A flipped byte in the first record, with data after it, is corruption.
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 0x55;
        fs::write(&path, &bytes).unwrap();
        match FileStorage::open(&dir) {
            Err(StorageError::Corrupt {
                path: p, offset, ..
            }) => {
                assert_eq!(p, path);
                assert_eq!(offset, 0);
            }
            other => panic!("expected corruption, got {:?}", other.map(|(_, s)| s)),
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
