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
        payload: Payload::Command(vec![7; 100].into()),
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
    let (seg, end);
    {
        let (mut st, _) = open(&dir);
        st.persist(&batch(1, None, None, vec![e(1, 1)])).unwrap();
        st.persist(&batch(2, None, None, vec![e(2, 1)])).unwrap();
        seg = st.active_path();
        end = st.active_len as usize;
    }
    let full = fs::read(&seg).unwrap();
    // Crash mid-write: the last few bytes of the last batch never made it, so that batch
    // was never acknowledged and goes as a whole. (The file ends there, as on a file
    // system that cannot allocate a segment's space ahead.)
    fs::write(&seg, &full[..end - 3]).unwrap();
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
    let (seg, n);
    {
        let (mut st, _) = open(&dir);
        st.persist(&batch(1, None, None, vec![e(1, 1)])).unwrap();
        let vote = HardState {
            current_term: 2,
            voted_for: Some(3),
        };
        st.persist(&batch(2, Some(vote), None, vec![])).unwrap();
        seg = st.active_path();
        n = st.active_len as usize;
    }
    // The flip is in the last acknowledged batch; the space allocated ahead follows it.
    let mut bytes = fs::read(&seg).unwrap();
    assert!(bytes.len() >= n);
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
        before = st.active_len as usize;
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

/// An entry whose payload names its index and term, so a read of the wrong copy shows.
fn tagged(index: LogIndex, term: u64, size: usize) -> Entry {
    let mut data = vec![0u8; size.max(16)];
    data[..8].copy_from_slice(&index.to_le_bytes());
    data[8..16].copy_from_slice(&term.to_le_bytes());
    Entry {
        index,
        term,
        payload: Payload::Command(data.into()),
    }
}

/// Reads `from..` until `to` with `read_entries`, as a Replicator would.
fn read_all(st: &FileStorage, from: LogIndex, to: LogIndex, max: usize) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut next = from;
    while next <= to {
        let got = st
            .read_entries(next, max, 64 * 1024)
            .unwrap()
            .unwrap_or_else(|| panic!("index {} not readable", next));
        assert_eq!(got[0].index, next);
        next = got.last().unwrap().index + 1;
        out.extend(got.into_iter().filter(|e| e.index <= to));
    }
    out
}

#[test]
fn old_entries_are_read_back_from_disk_across_segments() {
    let dir = tmpdir("readback");
    let (mut st, _) = FileStorage::open(&dir, 64 * 1024).unwrap();
    let all: Vec<Entry> = (1..=2000).map(|i| tagged(i, 1, 300)).collect();
    for (n, chunk) in all.chunks(7).enumerate() {
        st.persist(&batch(n as u64 + 1, None, None, chunk.to_vec()))
            .unwrap();
    }
    assert!(st.segment_count() > 5);
    assert_eq!(read_all(&st, 1, 2000, 100), all);
    assert_eq!(read_all(&st, 1234, 1500, 3), all[1233..1500].to_vec());
    // A read goes on into the next segments: from any index, as many as asked (a read
    // that stopped at the end of a segment left a follower one entry further each time).
    for from in 1..=1900 {
        let got = st.read_entries(from, 100, 1 << 20).unwrap().unwrap();
        assert_eq!(got, all[from as usize - 1..from as usize + 99].to_vec());
    }
    assert_eq!(st.read_entries(2001, 10, 1 << 20).unwrap(), None);
    assert_eq!(st.read_entries(0, 10, 1 << 20).unwrap(), None);
    // At least one entry, even when it alone is over the byte budget.
    assert_eq!(st.read_entries(5, 10, 1).unwrap().unwrap().len(), 1);
    // Compacted entries are gone.
    st.persist(&compact(10_000, 900, 1)).unwrap();
    assert_eq!(st.read_entries(900, 10, 1 << 20).unwrap(), None);
    assert_eq!(read_all(&st, 901, 2000, 50), all[900..].to_vec());
    drop(st);
    // After a restart the same reads come from the replayed segment index; the entries the
    // store holds are not loaded into memory but still read from disk.
    let applied = LogPoint {
        index: 1500,
        term: 1,
    };
    let (st, init) = FileStorage::open_after(&dir, 64 * 1024, applied).unwrap();
    assert_eq!(init.start, applied);
    assert_eq!(
        init.disk_start,
        LogPoint {
            index: 900,
            term: 1
        }
    );
    assert_eq!(init.entries, all[1500..].to_vec());
    assert_eq!(read_all(&st, 901, 2000, 50), all[900..].to_vec());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn reads_return_the_live_copy_after_truncations() {
    let dir = tmpdir("readtrunc");
    let (mut st, _) = FileStorage::open(&dir, 8 * 1024).unwrap();
    // Term 1 writes 1..=60; term 2 replaces 41.. in a later segment; within one segment,
    // term 3 replaces 55.. again.
    let t1: Vec<Entry> = (1..=60).map(|i| tagged(i, 1, 400)).collect();
    for (n, c) in t1.chunks(5).enumerate() {
        st.persist(&batch(n as u64 + 1, None, None, c.to_vec()))
            .unwrap();
    }
    let t2: Vec<Entry> = (41..=70).map(|i| tagged(i, 2, 400)).collect();
    st.persist(&batch(100, None, Some(41), t2[..3].to_vec()))
        .unwrap();
    for (n, c) in t2[3..].chunks(4).enumerate() {
        st.persist(&batch(101 + n as u64, None, None, c.to_vec()))
            .unwrap();
    }
    let t3: Vec<Entry> = (55..=65).map(|i| tagged(i, 3, 400)).collect();
    st.persist(&batch(200, None, None, t3.clone())).unwrap();
    let mut want: Vec<Entry> = t1[..40].to_vec();
    want.extend_from_slice(&t2[..14]);
    want.extend_from_slice(&t3);
    assert_eq!(read_all(&st, 1, 65, 100), want);
    assert_eq!(read_all(&st, 43, 60, 2), want[42..60].to_vec());
    drop(st);
    let (st, _) = FileStorage::open(&dir, 8 * 1024).unwrap();
    assert_eq!(read_all(&st, 1, 65, 100), want);
    assert_eq!(st.read_entries(66, 10, 1 << 20).unwrap(), None);
    let _ = fs::remove_dir_all(&dir);
}

/// Random appends, truncations (anywhere in the log), restarts and compactions, against a
/// model: every live index reads back as the copy the model holds.
#[test]
fn reads_match_a_model_under_random_histories() {
    use rand::{Rng, SeedableRng};
    for seed in 0..16u64 {
        let dir = tmpdir(&format!("readmodel{}", seed));
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let seg = 4096 + rng.gen_range(0..16_384);
        let (mut st, _) = FileStorage::open(&dir, seg).unwrap();
        let mut model: Vec<Entry> = Vec::new();
        let mut start = 0u64;
        let mut term = 1u64;
        for step in 0..300u64 {
            match rng.gen_range(0..10) {
                0 if model.len() > 2 => {
                    // Truncate somewhere after the start and append in a new term.
                    let last = model.last().unwrap().index;
                    let x = rng.gen_range(start + 1..=last);
                    term += 1;
                    let n = rng.gen_range(0..6);
                    let es: Vec<Entry> = (x..x + n).map(|i| tagged(i, term, 200)).collect();
                    st.persist(&batch(step, None, Some(x), es.clone())).unwrap();
                    model.retain(|e| e.index < x);
                    model.extend(es);
                }
                1 => {
                    drop(st);
                    st = FileStorage::open(&dir, seg).unwrap().0;
                }
                2 if model.len() > 20 && rng.gen_bool(0.3) => {
                    let to = model[rng.gen_range(0..model.len() / 2)].clone();
                    st.persist(&compact(step, to.index, to.term)).unwrap();
                    model.retain(|e| e.index > to.index);
                    start = to.index;
                }
                _ => {
                    let next = model.last().map_or(start, |e| e.index) + 1;
                    let n = rng.gen_range(1..8);
                    let es: Vec<Entry> = (next..next + n)
                        .map(|i| tagged(i, term, rng.gen_range(16..900)))
                        .collect();
                    st.persist(&batch(step, None, None, es.clone())).unwrap();
                    model.extend(es);
                }
            }
            if let (Some(first), Some(last)) = (model.first(), model.last()) {
                let from = rng.gen_range(first.index..=last.index);
                let max = rng.gen_range(1..50);
                assert_eq!(
                    read_all(&st, from, last.index, max),
                    model[(from - first.index) as usize..].to_vec(),
                    "seed {} step {}",
                    seed,
                    step
                );
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

/// A segment that began while uncommitted entries ended the log, and then cut them: once
/// compaction deletes the segments before it, its start lies above that truncation. The
/// log still replays, from the compaction recorded after it.
#[test]
fn a_truncation_below_the_oldest_segments_start_replays() {
    let dir = tmpdir("cutbelow");
    let (mut st, _) = FileStorage::open(&dir, 4096).unwrap();
    // Entries over the segment size: every batch starts a new segment.
    for i in 1..=37 {
        st.persist(&batch(i, None, None, vec![tagged(i, 1, 5000)]))
            .unwrap();
    }
    let t2: Vec<Entry> = (20..=45).map(|i| tagged(i, 2, 100)).collect();
    st.persist(&batch(100, None, Some(20), t2.clone())).unwrap();
    st.persist(&compact(101, 42, 2)).unwrap();
    drop(st);
    let (st, init) = FileStorage::open(&dir, 4096).unwrap();
    assert_eq!(init.start, LogPoint { index: 42, term: 2 });
    assert_eq!(init.entries, t2[23..].to_vec());
    assert_eq!(read_all(&st, 43, 45, 10), t2[23..].to_vec());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_log_reader_reads_its_moment_while_the_log_goes_on() {
    let dir = tmpdir("reader-view");
    let (mut st, _) = FileStorage::open(&dir, 64 * 1024).unwrap();
    let all: Vec<Entry> = (1..=1500).map(|i| tagged(i, 1, 300)).collect();
    for (n, chunk) in all[..1000].chunks(7).enumerate() {
        st.persist(&batch(n as u64 + 1, None, None, chunk.to_vec()))
            .unwrap();
    }
    let view = st.log_reader();
    // More entries, partly into the view's active segment: the view ends where it did.
    for (n, chunk) in all[1000..].chunks(7).enumerate() {
        st.persist(&batch(1000 + n as u64, None, None, chunk.to_vec()))
            .unwrap();
    }
    let tail = view.read_entries(950, 1000, 1 << 30).unwrap().unwrap();
    assert_eq!(tail, all[949..1000].to_vec());
    assert_eq!(view.read_entries(1001, 10, 1 << 20).unwrap(), None);
    // Compaction deletes old segments (in the background): a read from the view gets the
    // entries if the file is still there, otherwise None; never an error.
    st.persist(&compact(5000, 1200, 1)).unwrap();
    for from in [1, 300, 700] {
        match view.read_entries(from, 50, 1 << 20).unwrap() {
            None => {}
            Some(got) => assert_eq!(got, all[from as usize - 1..from as usize + 49].to_vec()),
        }
    }
    assert_eq!(
        st.read_entries(1300, 5, 1 << 20).unwrap().unwrap(),
        all[1299..1304].to_vec()
    );
    drop(st);
    let _ = fs::remove_dir_all(&dir);
}

/// Segments are allocated ahead (`create_segment`): the space after the last batch reads
/// as zeros and is not log. A closed segment is cut to what it holds; after a crash the
/// newest one still has its allocated space, which replay takes as the end (and cuts),
/// while a batch torn inside that space is still dropped as never acknowledged.
#[test]
fn space_allocated_ahead_reads_as_the_end_of_the_log() {
    let dir = tmpdir("ahead");
    let seg_bytes = 8 * 1024;
    let mut written: Vec<(PathBuf, u64)> = Vec::new();
    let last;
    {
        let (mut st, _) = FileStorage::open(&dir, seg_bytes).unwrap();
        let mut i = 1;
        while st.segment_count() < 4 {
            st.persist(&batch(i, None, None, vec![e(i, 1)])).unwrap();
            let now = (st.active_path(), st.active_len);
            match written.last_mut() {
                Some(w) if w.0 == now.0 => *w = now,
                _ => written.push(now),
            }
            i += 1;
        }
        last = i - 1;
        // The newest segment's file holds its space ahead of what is written, where the
        // file system can allocate it (ext4, tmpfs, xfs).
        let (active, len) = written.last().unwrap().clone();
        let on_disk = fs::metadata(&active).unwrap().len();
        assert!(on_disk >= len, "{} < {}", on_disk, len);
        if cfg!(target_os = "linux") {
            assert!(
                on_disk >= seg_bytes,
                "segment not allocated ahead: {}",
                on_disk
            );
        }
    }
    // Closed segments are exactly as long as their batches.
    for (path, len) in &written[..written.len() - 1] {
        assert_eq!(
            fs::metadata(path).unwrap().len(),
            *len,
            "{}",
            path.display()
        );
    }
    // The crash left the newest segment with its space: replay reads every entry and
    // cuts the segment to what it holds.
    let (mut st, init) = FileStorage::open(&dir, seg_bytes).unwrap();
    assert_eq!(init.entries.len() as u64, last);
    assert_eq!(init.entries.last(), Some(&e(last, 1)));
    let (crashed, len) = written.last().unwrap();
    assert_eq!(fs::metadata(crashed).unwrap().len(), *len);

    // A large batch torn inside the allocated space: its last sectors never reached the
    // disk (zeros, like the space after them). It was never acknowledged and goes.
    let big: Vec<Entry> = (last + 1..last + 40).map(|i| e(i, 1)).collect();
    st.persist(&batch(1000, None, None, big)).unwrap();
    let seg = st.active_path();
    let end = st.active_len as usize;
    drop(st);
    let mut bytes = fs::read(&seg).unwrap();
    let from = (end - 1) / 512 * 512;
    bytes[from..end].fill(0);
    fs::write(&seg, &bytes).unwrap();
    let (_, init) = FileStorage::open(&dir, seg_bytes).unwrap();
    assert_eq!(init.entries.last(), Some(&e(last, 1)));
    let _ = fs::remove_dir_all(&dir);
}
