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
        payload: Payload::Command(vec![7; 100]),
    }
}

fn batch(seq: u64, hs: Option<HardState>, trunc: Option<u64>, es: Vec<Entry>) -> PersistBatch {
    PersistBatch {
        seq,
        compact_to: None,
        hard_state: hs,
        truncate_from: trunc,
        last_index: es.last().map_or(0, |e| e.index),
        entries: es,
    }
}

fn compact(seq: u64, index: LogIndex, term: u64) -> PersistBatch {
    PersistBatch {
        seq,
        compact_to: Some(LogPoint { index, term }),
        ..Default::default()
    }
}

fn open(dir: &Path) -> (FileStorage, InitialState) {
    FileStorage::open(dir, DEFAULT_SEGMENT_BYTES).unwrap()
}

#[test]
fn persist_and_reload_with_truncation() {
    let dir = tmpdir("reload");
    let hs = HardState {
        current_term: 3,
        voted_for: Some(2),
    };
    {
        let (mut st, init) = open(&dir);
        assert_eq!(init, InitialState::default());
        st.persist(&batch(1, Some(hs), None, vec![e(1, 1), e(2, 1), e(3, 1)]))
            .unwrap();
        st.persist(&batch(2, None, Some(2), vec![e(2, 3)])).unwrap();
        st.persist(&batch(3, None, None, vec![e(3, 3)])).unwrap();
    }
    let (_, init) = open(&dir);
    assert_eq!(init.hard_state, hs);
    assert_eq!(init.entries, vec![e(1, 1), e(2, 3), e(3, 3)]);
    // Every open starts a segment that carries the hard state on its own.
    let (st, init) = open(&dir);
    assert_eq!(init.hard_state, hs);
    assert_eq!(st.segment_count(), 3);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn torn_tail_is_dropped_and_corruption_is_reported_with_offset() {
    let dir = tmpdir("torn");
    let seg;
    {
        let (mut st, _) = open(&dir);
        st.persist(&batch(1, None, None, vec![e(1, 1)])).unwrap();
        st.persist(&batch(2, None, None, vec![e(2, 1)])).unwrap();
        seg = st.active_path();
    }
    let full = fs::read(&seg).unwrap();
    // Crash mid-write: the last few bytes of the last batch never made it, so that batch
    // was never acknowledged and goes as a whole.
    fs::write(&seg, &full[..full.len() - 3]).unwrap();
    let (mut st, init) = open(&dir);
    assert_eq!(init.entries, vec![e(1, 1)]);
    // The segment was cut back, so the log continues cleanly.
    st.persist(&batch(2, None, None, vec![e(2, 2)])).unwrap();
    drop(st);
    let (_, init) = open(&dir);
    assert_eq!(init.entries, vec![e(1, 1), e(2, 2)]);

    // A flipped byte in the first record of a segment that is not the newest is
    // corruption, named with the file and offset.
    let mut bytes = fs::read(&seg).unwrap();
    bytes[10] ^= 0x55;
    fs::write(&seg, &bytes).unwrap();
    match FileStorage::open(&dir, DEFAULT_SEGMENT_BYTES) {
        Err(StorageError::Corrupt {
            path: p, offset, ..
        }) => {
            assert_eq!(p, seg);
            assert_eq!(offset, 0);
        }
        other => panic!("expected corruption, got {:?}", other.map(|(_, s)| s)),
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn segments_rotate_and_compaction_deletes_whole_old_segments() {
    let dir = tmpdir("segments");
    let (mut st, _) = FileStorage::open(&dir, 4096).unwrap();
    for i in 0..100u64 {
        st.persist(&batch(i + 1, None, None, vec![e(i + 1, 1)]))
            .unwrap();
    }
    let before = st.segment_count();
    assert!(before > 3, "only {} segments", before);
    st.persist(&compact(101, 80, 1)).unwrap();
    let after = st.segment_count();
    assert!(after < before && after >= 1, "{} -> {}", before, after);
    drop(st);
    let (_, init) = FileStorage::open(&dir, 4096).unwrap();
    assert_eq!(init.start, LogPoint { index: 80, term: 1 });
    assert_eq!(init.entries.first().map(|e| e.index), Some(81));
    assert_eq!(init.last_index(), 100);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn crash_inside_segment_deletion_loads_the_same_log() {
    let dir = tmpdir("delcrash");
    let (mut st, _) = FileStorage::open(&dir, 4096).unwrap();
    for i in 0..100u64 {
        st.persist(&batch(i + 1, None, None, vec![e(i + 1, 1)]))
            .unwrap();
    }
    let old: Vec<PathBuf> = st.segments.iter().map(|s| s.path.clone()).collect();
    // Keep copies of the segments compaction will delete, then put back all but the
    // oldest: as if the node died after the first deletion.
    let copies: Vec<(PathBuf, Vec<u8>)> = old
        .iter()
        .map(|p| (p.clone(), fs::read(p).unwrap()))
        .collect();
    st.persist(&compact(101, 80, 1)).unwrap();
    drop(st);
    let (_, clean) = FileStorage::open(&dir, 4096).unwrap();
    for (p, bytes) in copies.iter().skip(1) {
        if !p.exists() {
            fs::write(p, bytes).unwrap();
        }
    }
    let (_, crashed) = FileStorage::open(&dir, 4096).unwrap();
    assert_eq!(crashed.start, clean.start);
    assert_eq!(crashed.entries, clean.entries);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn snapshot_that_disagrees_discards_the_log_across_segments() {
    let dir = tmpdir("discard");
    let (mut st, _) = FileStorage::open(&dir, 4096).unwrap();
    for i in 0..60u64 {
        st.persist(&batch(i + 1, None, None, vec![e(i + 1, 1)]))
            .unwrap();
    }
    // A snapshot at 70 (term 5): the log does not hold it, so everything goes.
    st.persist(&compact(61, 70, 5)).unwrap();
    st.persist(&batch(62, None, None, vec![e(71, 5)])).unwrap();
    drop(st);
    let (_, init) = FileStorage::open(&dir, 4096).unwrap();
    assert_eq!(init.start, LogPoint { index: 70, term: 5 });
    assert_eq!(init.entries, vec![e(71, 5)]);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn old_format_directory_is_refused_with_what_to_do() {
    let dir = tmpdir("oldformat");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("raft.log"), b"old").unwrap();
    match FileStorage::open(&dir, DEFAULT_SEGMENT_BYTES) {
        Err(e @ StorageError::Unusable { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("raft.log") && msg.contains("empty data directory"),
                "{}",
                msg
            );
        }
        other => panic!("expected a refusal, got {:?}", other.map(|(_, s)| s)),
    }
    let _ = fs::remove_dir_all(&dir);
}

/// The latest vote, synced and acknowledged, then damaged on disk: the node must refuse to
/// start rather than forget the vote (and perhaps vote twice in that term).
#[test]
fn a_damaged_last_vote_is_corruption_not_a_torn_tail() {
    let dir = tmpdir("vote-flip");
    let seg;
    {
        let (mut st, _) = open(&dir);
        st.persist(&batch(1, None, None, vec![e(1, 1)])).unwrap();
        let vote = HardState {
            current_term: 2,
            voted_for: Some(3),
        };
        st.persist(&batch(2, Some(vote), None, vec![])).unwrap();
        seg = st.active_path();
    }
    let mut bytes = fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0x01;
    fs::write(&seg, &bytes).unwrap();
    match FileStorage::open(&dir, DEFAULT_SEGMENT_BYTES) {
        Err(StorageError::Corrupt { path, reason, .. }) => {
            assert_eq!(path, seg);
            assert!(reason.contains("complete batch"), "{}", reason);
        }
        other => panic!("expected corruption, got {:?}", other.map(|(_, s)| s)),
    }
    let _ = fs::remove_dir_all(&dir);
}

/// A crash while a large batch was written, its pages reaching the disk out of order: the
/// end of the batch is there, a sector in its middle is not. It was never acknowledged:
/// dropped with a warning, and the node starts with what came before.
#[test]
fn a_large_last_batch_with_a_hole_is_a_torn_tail() {
    let dir = tmpdir("hole");
    let seg;
    let before;
    {
        let (mut st, _) = open(&dir);
        st.persist(&batch(1, None, None, vec![e(1, 1)])).unwrap();
        seg = st.active_path();
        before = fs::read(&seg).unwrap().len();
        st.persist(&batch(2, None, None, (2..60).map(|i| e(i, 1)).collect()))
            .unwrap();
    }
    let mut bytes = fs::read(&seg).unwrap();
    let hole = before.div_ceil(512) * 512 + 1024;
    bytes[hole..hole + 512].fill(0);
    fs::write(&seg, &bytes).unwrap();
    let (_, init) = open(&dir);
    assert_eq!(init.entries, vec![e(1, 1)]);
    let _ = fs::remove_dir_all(&dir);
}
