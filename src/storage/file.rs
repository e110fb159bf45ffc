//! The on-disk state of one node, under `data_dir`:
//! - `raft.log`: an append-only file of checksummed records (hard state, entries,
//!   truncations), replayed on start; one `sync_data` per batch.
//! - `snapshot.bin`: the newest snapshot, one checksummed record. It is written to
//!   `snapshot.tmp`, fsync'd, renamed into place and the directory fsync'd; only then is the
//!   log rewritten (same dance, `raft.log.tmp`) without the entries it covers. A crash at
//!   any point leaves the old or the new snapshot, each with a log that continues it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{info, warn};
use serde::{Deserialize, Serialize};

use super::record::{read_records, RecordReadOutcome, RecordWriter};
use super::{compact_entries, InitialState, Storage, StorageError};
use crate::codec;
use crate::raft::{Entry, HardState, LogIndex, PersistBatch, Snapshot};

const LOG_FILE: &str = "raft.log";
const LOG_TMP: &str = "raft.log.tmp";
const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_TMP: &str = "snapshot.tmp";

/// One record of the log file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
enum Record {
    HardState(HardState),
    TruncateFrom(LogIndex),
    Entry(Entry),
}

/// The data directory of one node.
pub struct FileStorage {
    dir: PathBuf,
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

fn corrupt(path: &Path, offset: u64, reason: String) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    }
}

impl FileStorage {
    /// Opens (or creates) the data directory and loads it. A torn record at the log's tail
    /// is dropped with a warning; any other damage is an error naming the file and offset.
    pub fn open(dir: &Path) -> Result<(FileStorage, InitialState), StorageError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        // Leftovers of a crash in the middle of a snapshot: never renamed, so never used.
        for tmp in [SNAPSHOT_TMP, LOG_TMP] {
            let p = dir.join(tmp);
            if p.exists() {
                warn!("{}: removing unfinished file left by a crash", p.display());
                fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        let snapshot = load_snapshot(&dir.join(SNAPSHOT_FILE))?;
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
        let (hard_state, mut entries, valid_len) = read_log(&path, &mut file)?;
        if let Some(valid_len) = valid_len {
            file.set_len(valid_len).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
        }
        if let Some(s) = &snapshot {
            compact_entries(&mut entries, s.index, s.term);
            if let Some(first) = entries.first() {
                if first.index != s.index + 1 {
                    return Err(corrupt(
                        &path,
                        0,
                        format!(
                            "log starts at index {} but the snapshot ends at {}",
                            first.index, s.index
                        ),
                    ));
                }
            }
        }
        info!(
            "{}: loaded term {}, vote {:?}, snapshot at {}, {} log entries",
            dir.display(),
            hard_state.current_term,
            hard_state.voted_for,
            snapshot.as_ref().map_or(0, |s| s.index),
            entries.len()
        );
        Ok((
            FileStorage {
                dir: dir.to_path_buf(),
                path,
                file,
                buf: Vec::new(),
            },
            InitialState {
                hard_state,
                snapshot,
                entries,
            },
        ))
    }

    /// Writes the snapshot durably under its final name.
    fn write_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let payload = codec::encode(snapshot)?;
        if payload.len() > super::record::MAX_RECORD_LEN {
            return Err(StorageError::Io {
                path: self.dir.join(SNAPSHOT_FILE),
                source: std::io::Error::other(format!(
                    "snapshot of {} bytes exceeds the 4 GiB record limit",
                    payload.len()
                )),
            });
        }
        let mut buf = Vec::new();
        RecordWriter::new(&mut buf).push(&payload);
        let tmp = self.dir.join(SNAPSHOT_TMP);
        write_synced(&tmp, &buf)?;
        let dst = self.dir.join(SNAPSHOT_FILE);
        fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
        sync_dir(&self.dir)
    }

    /// Rewrites the log without the entries `snapshot` covers.
    fn rewrite_log(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let (hard_state, mut entries, _) = read_log(&self.path, &mut self.file)?;
        compact_entries(&mut entries, snapshot.index, snapshot.term);
        let mut buf = Vec::new();
        let mut scratch = Vec::new();
        let mut w = RecordWriter::new(&mut buf);
        let mut push = |r: &Record| -> Result<(), StorageError> {
            scratch.clear();
            codec::encode_into(&mut scratch, r)?;
            w.push(&scratch);
            Ok(())
        };
        push(&Record::HardState(hard_state))?;
        for e in entries {
            push(&Record::Entry(e))?;
        }
        let tmp = self.dir.join(LOG_TMP);
        write_synced(&tmp, &buf)?;
        fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        Ok(())
    }
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), StorageError> {
    let mut f = File::create(path).map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

fn load_snapshot(path: &Path) -> Result<Option<Arc<Snapshot>>, StorageError> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let (records, outcome) = read_records(&data);
    match (records.as_slice(), outcome) {
        ([(_, payload)], RecordReadOutcome::Clean) => {
            let snapshot: Snapshot = codec::decode(payload)
                .map_err(|e| corrupt(path, 0, format!("snapshot does not decode: {}", e)))?;
            Ok(Some(Arc::new(snapshot)))
        }
        (
            _,
            RecordReadOutcome::TornTail { offset, reason }
            | RecordReadOutcome::Corrupt { offset, reason },
        ) => {
            // The snapshot was renamed into place only after an fsync, so damage here is
            // real corruption, never a torn write.
            Err(corrupt(path, offset, reason))
        }
        _ => Err(corrupt(
            path,
            0,
            "expected exactly one snapshot record".into(),
        )),
    }
}

/// Replays the log file: (hard state, entries, Some(valid length) if a torn tail must go).
fn read_log(
    path: &Path,
    file: &mut File,
) -> Result<(HardState, Vec<Entry>, Option<u64>), StorageError> {
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(io_err(path))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data).map_err(io_err(path))?;
    let (records, outcome) = read_records(&data);
    let mut hard_state = HardState::default();
    let mut entries: Vec<Entry> = Vec::new();
    for (offset, payload) in records {
        let record: Record =
            codec::decode(payload).map_err(|e| corrupt(path, offset, e.to_string()))?;
        match record {
            Record::HardState(hs) => hard_state = hs,
            Record::TruncateFrom(from) => entries.retain(|e| e.index < from),
            Record::Entry(entry) => {
                if let Some(last) = entries.last() {
                    if entry.index != last.index + 1 {
                        return Err(corrupt(
                            path,
                            offset,
                            format!("entry index {} does not follow {}", entry.index, last.index),
                        ));
                    }
                }
                entries.push(entry);
            }
        }
    }
    let valid_len = match outcome {
        RecordReadOutcome::Clean => None,
        RecordReadOutcome::TornTail { offset, reason } => {
            warn!(
                "{}: dropping torn record at byte offset {} ({}): a crash interrupted its write",
                path.display(),
                offset,
                reason
            );
            Some(offset)
        }
        RecordReadOutcome::Corrupt { offset, reason } => return Err(corrupt(path, offset, reason)),
    };
    Ok((hard_state, entries, valid_len))
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Storage for FileStorage {
    fn persist(&mut self, batch: &PersistBatch) -> Result<(), StorageError> {
        if let Some(snapshot) = &batch.snapshot {
            // A snapshot from a newer leader arrives with that leader's term: make the term
            // durable first, so a crash after the snapshot is in place never leaves it next
            // to an older term.
            if let Some(hs) = batch.hard_state {
                self.buf.clear();
                let mut scratch = Vec::new();
                codec::encode_into(&mut scratch, &Record::HardState(hs))?;
                RecordWriter::new(&mut self.buf).push(&scratch);
                self.file.write_all(&self.buf).map_err(io_err(&self.path))?;
                self.file.sync_data().map_err(io_err(&self.path))?;
            }
            self.write_snapshot(snapshot)?;
            self.rewrite_log(snapshot)?;
        }
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
        if self.buf.is_empty() {
            return Ok(());
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
            snapshot: None,
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

    fn snap(index: LogIndex, term: u64) -> Arc<Snapshot> {
        let mut kv = crate::kv::KvStore::default();
        kv.apply(
            index,
            &crate::kv::Command {
                op: crate::kv::KvOp::Put {
                    key: "k".into(),
                    value: index.to_string().into_bytes(),
                },
                session: None,
            },
        );
        Arc::new(Snapshot {
            index,
            term,
            members: vec![1, 2, 3],
            kv,
        })
    }

    #[test]
    fn snapshot_compacts_the_log_and_survives_restart() {
        let dir = tmpdir("snap");
        {
            let (mut st, _) = FileStorage::open(&dir).unwrap();
            st.persist(&batch(1, None, None, (1..=10).map(|i| e(i, 1)).collect()))
                .unwrap();
            let mut b = batch(2, None, None, vec![e(11, 2)]);
            b.snapshot = Some(snap(8, 1));
            st.persist(&b).unwrap();
        }
        let (_, init) = FileStorage::open(&dir).unwrap();
        assert_eq!(init.snapshot.as_deref(), Some(&*snap(8, 1)));
        assert_eq!(init.entries, vec![e(9, 1), e(10, 1), e(11, 2)]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn crash_between_snapshot_and_log_rewrite_loads_consistently() {
        let dir = tmpdir("snapcrash");
        {
            let (mut st, _) = FileStorage::open(&dir).unwrap();
            st.persist(&batch(1, None, None, (1..=6).map(|i| e(i, 1)).collect()))
                .unwrap();
            // The snapshot is in place but the log was never rewritten.
            st.write_snapshot(&snap(4, 1)).unwrap();
        }
        // A leftover temp file from an interrupted second snapshot is ignored and removed.
        fs::write(dir.join(SNAPSHOT_TMP), b"half a snapshot").unwrap();
        let (_, init) = FileStorage::open(&dir).unwrap();
        assert_eq!(init.snapshot.map(|s| s.index), Some(4));
        assert_eq!(init.entries, vec![e(5, 1), e(6, 1)]);
        assert!(!dir.join(SNAPSHOT_TMP).exists());

        // A snapshot whose last entry disagrees with the log replaces the whole log.
        fs::remove_file(dir.join(SNAPSHOT_FILE)).unwrap();
        {
            let (mut st, _) = FileStorage::open(&dir).unwrap();
            st.write_snapshot(&snap(5, 3)).unwrap();
        }
        let (_, init) = FileStorage::open(&dir).unwrap();
        assert!(init.entries.is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_snapshot_is_an_error_naming_the_file() {
        let dir = tmpdir("snapcorrupt");
        {
            let (mut st, _) = FileStorage::open(&dir).unwrap();
            st.write_snapshot(&snap(3, 1)).unwrap();
        }
        let path = dir.join(SNAPSHOT_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        match FileStorage::open(&dir) {
            Err(StorageError::Corrupt { path: p, .. }) => assert_eq!(p, path),
            other => panic!("expected corruption, got {:?}", other.map(|(_, s)| s)),
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
