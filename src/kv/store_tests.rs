use super::*;
use crate::kv::{ClientSession, MemStoreDisk, SESSION_TTL_MS};

fn put(k: &str, v: &str, session: Option<(&str, u64)>) -> Command {
    Command {
        op: KvOp::Put {
            key: k.into(),
            value: v.as_bytes().to_vec(),
        },
        session: session.map(|(c, seq)| ClientSession {
            client_id: c.into(),
            seq,
        }),
        stamp_ms: 0,
    }
}

/// `cmd` as a leader stamped it at log time `ms`.
fn at(ms: u64, mut cmd: Command) -> Command {
    cmd.stamp_ms = ms;
    cmd
}

fn item(index: LogIndex, cmd: &Command) -> ApplyItem<'_> {
    ApplyItem {
        index,
        term: 1,
        command: Some(cmd),
        membership: None,
    }
}

/// `cmds` as consecutive entries from index `first`.
fn items_from(cmds: &[Command], first: LogIndex) -> Vec<ApplyItem<'_>> {
    cmds.iter()
        .enumerate()
        .map(|(i, c)| item(first + i as u64, c))
        .collect()
}

fn mem() -> (MemStoreDisk, StoreDisk) {
    let m = MemStoreDisk::default();
    (m.clone(), StoreDisk::Mem(m))
}

#[test]
fn put_get_delete_and_applied_point_move_together() {
    let (_, disk) = mem();
    let (mut kv, applied) = KvStore::open(&disk, 1 << 20).unwrap();
    assert_eq!(applied, LogPoint::default());
    let a = put("a", "1", None);
    let del = Command {
        op: KvOp::Delete { key: "a".into() },
        session: None,
        stamp_ms: 0,
    };
    let r = kv
        .apply(&[item(1, &a), item(2, &del), item(3, &del)], false)
        .unwrap();
    assert_eq!(r[0], Some(ApplyOutcome::Applied(ApplyResult::Put, 1)));
    assert_eq!(
        r[1],
        Some(ApplyOutcome::Applied(
            ApplyResult::Deleted { existed: true },
            2
        ))
    );
    assert_eq!(
        r[2],
        Some(ApplyOutcome::Applied(
            ApplyResult::Deleted { existed: false },
            3
        ))
    );
    assert_eq!(kv.get("a").unwrap(), None);
    assert_eq!(kv.applied().unwrap(), LogPoint { index: 3, term: 1 });
}

#[test]
fn retried_request_applies_once() {
    let (_, disk) = mem();
    let (mut kv, _) = KvStore::open(&disk, 1 << 20).unwrap();
    let first = put("a", "1", Some(("c", 1)));
    kv.apply(&[item(1, &first), item(2, &put("a", "2", None))], false)
        .unwrap();
    // The retry of seq 1 arrives after another write: it must not apply again.
    let r = kv.apply(&[item(3, &first)], false).unwrap();
    assert_eq!(
        r[0],
        Some(ApplyOutcome::Applied(ApplyResult::Put, 1)),
        "the original index"
    );
    assert_eq!(kv.get("a").unwrap(), Some(b"2".to_vec()));
}

/// Thesis §6.3: a session that has expired can no longer tell a retry from a new request,
/// so its requests are refused, never applied. Only a session's first request opens one.
#[test]
fn an_expired_session_refuses_its_requests_instead_of_applying_them_twice() {
    let (_, disk) = mem();
    let (mut kv, _) = KvStore::open(&disk, 1 << 20).unwrap();
    let t0 = 1_000_000;
    kv.apply(
        &[
            item(1, &at(t0, put("a", "1", Some(("c", 1))))),
            item(2, &at(t0, put("a", "2", Some(("c", 2))))),
        ],
        false,
    )
    .unwrap();
    // Within the TTL, a retry of seq 2 is answered from the session.
    let retry = at(t0 + SESSION_TTL_MS, put("a", "2", Some(("c", 2))));
    assert_eq!(
        kv.apply(&[item(3, &retry)], false).unwrap()[0],
        Some(ApplyOutcome::Applied(ApplyResult::Put, 2))
    );
    // Another client writes an hour and a bit later: c's session expires.
    let later = t0 + 2 * SESSION_TTL_MS + 1;
    kv.apply(&[item(4, &at(later, put("b", "1", Some(("d", 1)))))], false)
        .unwrap();
    assert!(kv.session("c").unwrap().is_none(), "c expired");
    assert!(kv.session("d").unwrap().is_some());
    // c's retry of seq 2 and its next request are refused, and change nothing.
    kv.apply(&[item(5, &at(later, put("a", "x", None)))], false)
        .unwrap();
    for (i, seq) in [(6, 2), (7, 3)] {
        let r = kv
            .apply(
                &[item(i, &at(later, put("a", "3", Some(("c", seq)))))],
                false,
            )
            .unwrap();
        assert_eq!(r[0], Some(ApplyOutcome::SessionExpired), "seq {}", seq);
    }
    assert_eq!(kv.get("a").unwrap(), Some(b"x".to_vec()));
    assert!(kv.session("c").unwrap().is_none(), "refusals open nothing");
    // A new session (seq 1) works.
    let r = kv
        .apply(&[item(8, &at(later, put("a", "4", Some(("c", 1)))))], false)
        .unwrap();
    assert_eq!(r[0], Some(ApplyOutcome::Applied(ApplyResult::Put, 8)));
}

#[test]
fn log_time_never_goes_backwards_and_sessions_are_never_evicted_early() {
    let (_, disk) = mem();
    let (kv, _) = KvStore::open(&disk, 1 << 20).unwrap();
    let mut kv = kv.with_max_sessions(2);
    let t0 = 5 * SESSION_TTL_MS;
    kv.apply(
        &[
            item(1, &at(t0, put("a", "1", Some(("c", 1))))),
            // A new leader whose clock is far behind: log time stays at t0.
            item(2, &at(0, put("b", "1", Some(("d", 1))))),
        ],
        false,
    )
    .unwrap();
    // The table is full: a third session is refused rather than evicting a live one (whose
    // retries would then apply twice).
    let r = kv
        .apply(&[item(3, &at(t0, put("x", "1", Some(("e", 1)))))], false)
        .unwrap();
    assert_eq!(r[0], Some(ApplyOutcome::TooManySessions));
    assert_eq!(kv.get("x").unwrap(), None);
    // Known sessions go on.
    let r = kv
        .apply(
            &[item(4, &at(t0 + 10, put("a", "2", Some(("c", 2)))))],
            false,
        )
        .unwrap();
    assert_eq!(r[0], Some(ApplyOutcome::Applied(ApplyResult::Put, 4)));
    // Once d has been idle past the TTL (c wrote more recently), e gets its place.
    let t1 = t0 + SESSION_TTL_MS + 1;
    let r = kv
        .apply(&[item(5, &at(t1, put("x", "1", Some(("e", 1)))))], false)
        .unwrap();
    assert_eq!(r[0], Some(ApplyOutcome::Applied(ApplyResult::Put, 5)));
    assert!(kv.session("d").unwrap().is_none());
    assert!(kv.session("c").unwrap().is_some());
}

#[test]
fn crash_loses_unsynced_commits_and_replay_restores_them() {
    let (m, disk) = mem();
    let (mut kv, _) = KvStore::open(&disk, 1 << 20).unwrap();
    let w1 = put("k", "1", Some(("c", 1)));
    let w2 = put("k", "2", Some(("c", 2)));
    kv.apply(&[item(1, &w1)], true).unwrap();
    kv.apply(&[item(2, &w2)], false).unwrap();
    // The process dies: no clean close.
    m.crash();
    drop(kv);
    let (mut kv, applied) = KvStore::open(&disk, 1 << 20).unwrap();
    assert_eq!(applied.index, 1, "the unsynced commit is gone");
    assert_eq!(kv.get("k").unwrap(), Some(b"1".to_vec()));
    // Replaying the log from the durable point gives the same state and session table,
    // and replaying an entry twice changes nothing.
    kv.apply(&[item(2, &w2)], false).unwrap();
    let again = kv.apply(&[item(2, &w2)], false).unwrap();
    assert_eq!(again[0], Some(ApplyOutcome::Applied(ApplyResult::Put, 2)));
    assert_eq!(kv.get("k").unwrap(), Some(b"2".to_vec()));
    assert_eq!(kv.session("c").unwrap().map(|s| s.last_seq), Some(2));
}

fn filled(n: usize) -> (MemStoreDisk, KvStore) {
    let (m, disk) = mem();
    let (mut kv, _) = KvStore::open(&disk, 1 << 20).unwrap();
    let cmds: Vec<Command> = (0..n)
        .map(|i| {
            put(
                &format!("key{:05}", i),
                &"v".repeat(100),
                Some(("c", i as u64 + 1)),
            )
        })
        .collect();
    let items = items_from(&cmds, 1);
    kv.apply(&items, true).unwrap();
    (m, kv)
}

#[test]
fn snapshot_stream_installs_beside_the_old_store_and_swaps() {
    let (_, mut source) = filled(500);
    let reader = source.snapshot_reader().unwrap();
    assert_eq!(reader.point.index, 500);
    // Writes after the read view began are not in the snapshot.
    let mut source = source;
    source
        .apply(&[item(501, &put("late", "x", None))], false)
        .unwrap();
    let mut chunks = Vec::new();
    reader
        .produce(4096, |c, last| {
            chunks.push((c, last));
            true
        })
        .unwrap();
    assert!(chunks.len() > 5);
    assert!(chunks.iter().rev().skip(1).all(|(_, last)| !last));
    assert!(chunks.last().is_some_and(|(_, last)| *last));

    let (target_mem, mut target) = filled(3);
    let mut inst = target
        .begin_install(LogPoint {
            index: 500,
            term: 1,
        })
        .unwrap();
    for (c, _) in &chunks {
        inst.write_chunk(c).unwrap();
    }
    // Until it is finished the old state stands, also across a crash.
    assert_eq!(target.applied().unwrap().index, 3);
    let mut installed = inst.finish().unwrap();
    drop(target);
    assert_eq!(
        installed.applied().unwrap(),
        LogPoint {
            index: 500,
            term: 1
        }
    );
    assert_eq!(installed.key_count().unwrap(), 500);
    assert_eq!(installed.get("late").unwrap(), None);
    assert_eq!(
        installed.session("c").unwrap().map(|s| s.last_seq),
        Some(500)
    );
    drop(installed);
    target_mem.crash();
    let (mut after_crash, applied) = KvStore::open(&StoreDisk::Mem(target_mem), 1 << 20).unwrap();
    assert_eq!(applied.index, 500, "the swap was durable");
    assert_eq!(after_crash.key_count().unwrap(), 500);
}

/// A follower that installs a snapshot and then applies the same entries as the leader
/// makes the same session decisions: the snapshot carries the sessions and the log time.
#[test]
fn session_expiry_is_the_same_after_a_snapshot_install() {
    let (_, disk) = mem();
    let (mut source, _) = KvStore::open(&disk, 1 << 20).unwrap();
    let t0 = 7 * SESSION_TTL_MS;
    source
        .apply(
            &[
                item(1, &at(t0, put("a", "1", Some(("old", 1))))),
                item(2, &at(t0 + SESSION_TTL_MS, put("b", "1", Some(("new", 1))))),
            ],
            true,
        )
        .unwrap();
    let reader = source.snapshot_reader().unwrap();
    let mut chunks = Vec::new();
    reader
        .produce(4096, |c, _| {
            chunks.push(c);
            true
        })
        .unwrap();
    let (_, target_disk) = mem();
    let (target, _) = KvStore::open(&target_disk, 1 << 20).unwrap();
    let mut inst = target
        .begin_install(LogPoint { index: 2, term: 1 })
        .unwrap();
    for c in &chunks {
        inst.write_chunk(c).unwrap();
    }
    let mut target = inst.finish().unwrap();
    // The next entry is stamped by a leader whose clock is behind: log time (restored
    // from the snapshot, not from this stamp) says "old" has been idle past the TTL.
    let next = [
        at(t0, put("c", "1", None)),
        at(0, put("a", "2", Some(("old", 2)))),
        at(0, put("b", "2", Some(("new", 2)))),
    ];
    let items = items_from(&next, 3);
    // Nothing expires yet at log time t0 + TTL ("old" is idle exactly the TTL)...
    let on_source = source.apply(&items, false).unwrap();
    let on_target = target.apply(&items, false).unwrap();
    assert_eq!(on_source, on_target);
    assert_eq!(
        on_source[1],
        Some(ApplyOutcome::Applied(ApplyResult::Put, 4))
    );
    // ...and one ms later "new" is still live while a request of an unknown session
    // beyond its first is refused on both.
    let late = [
        at(t0 + 2 * SESSION_TTL_MS + 5, put("b", "3", Some(("new", 3)))),
        at(0, put("a", "3", Some(("gone", 4)))),
    ];
    let items = items_from(&late, 6);
    let on_source = source.apply(&items, false).unwrap();
    let on_target = target.apply(&items, false).unwrap();
    assert_eq!(on_source, on_target);
    assert_eq!(on_source[1], Some(ApplyOutcome::SessionExpired));
    assert_eq!(source.dump().unwrap(), target.dump().unwrap());
}

#[test]
fn crash_during_install_leaves_the_old_store() {
    let (_, mut source) = filled(200);
    let mut chunks = Vec::new();
    source
        .snapshot_reader()
        .unwrap()
        .produce(4096, |c, _| {
            chunks.push(c);
            true
        })
        .unwrap();
    let (m, target) = filled(7);
    let mut inst = target
        .begin_install(LogPoint {
            index: 200,
            term: 1,
        })
        .unwrap();
    inst.write_chunk(&chunks[0]).unwrap();
    drop(inst);
    drop(target);
    m.crash();
    let (mut kv, applied) = KvStore::open(&StoreDisk::Mem(m), 1 << 20).unwrap();
    assert_eq!(applied.index, 7);
    assert_eq!(kv.key_count().unwrap(), 7);
}

#[test]
fn garbage_chunk_is_an_error_not_a_panic() {
    let (_, kv) = filled(1);
    let mut inst = kv.begin_install(LogPoint { index: 9, term: 1 }).unwrap();
    assert!(inst.write_chunk(&[0xff; 64]).is_err());
    inst.abandon();
}

#[test]
fn file_store_survives_reopen_and_refuses_a_damaged_file() {
    let dir = std::env::temp_dir().join(format!("raftkv-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let disk = StoreDisk::Dir(dir.clone());
    {
        let (mut kv, _) = KvStore::open(&disk, 1 << 20).unwrap();
        kv.apply(&[item(1, &put("a", "1", None))], true).unwrap();
    }
    let (kv, applied) = KvStore::open(&disk, 1 << 20).unwrap();
    assert_eq!(applied.index, 1);
    assert_eq!(kv.get("a").unwrap(), Some(b"1".to_vec()));
    drop(kv);
    let path = dir.join(crate::kv::STORE_FILE);
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = KvStore::open(&disk, 1 << 20).unwrap_err();
    assert!(err.path.contains("store.redb"), "{}", err);
    let _ = std::fs::remove_dir_all(&dir);
}

fn put_bytes(k: &str, v: Vec<u8>) -> Command {
    Command {
        op: KvOp::Put {
            key: k.into(),
            value: v,
        },
        session: None,
        stamp_ms: 0,
    }
}

fn delete(k: &str) -> Command {
    Command {
        op: KvOp::Delete { key: k.into() },
        session: None,
        stamp_ms: 0,
    }
}

/// A value of `len` bytes that differs from piece to piece and from `seed` to `seed`.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i / 7 % 251) as u8 ^ seed).collect()
}

fn pieces_stored(kv: &mut KvStore) -> u64 {
    let txn = kv.read_view().unwrap();
    txn.open_table(CHUNKS).unwrap().len().unwrap()
}

#[test]
fn large_values_are_stored_in_pieces_and_read_back_whole() {
    let (_, disk) = mem();
    let (mut kv, _) = KvStore::open(&disk, 1 << 20).unwrap();
    let big = pattern(MAX_VALUE_BYTES, 1);
    let edge = pattern(LARGE_VALUE_BYTES + 1, 2);
    let cmds = [
        put_bytes("big", big.clone()),
        put_bytes("edge", edge.clone()),
        put_bytes("small", pattern(LARGE_VALUE_BYTES, 3)),
    ];
    let items = items_from(&cmds, 1);
    kv.apply(&items, false).unwrap();
    // Read inside the open transaction and after its commit.
    assert_eq!(kv.get("big").unwrap(), Some(big.clone()));
    assert_eq!(kv.get("edge").unwrap(), Some(edge.clone()));
    assert_eq!(kv.key_count().unwrap(), 3);
    assert_eq!(kv.get("big").unwrap(), Some(big.clone()));
    let per_big = MAX_VALUE_BYTES.div_ceil(CHUNK_BYTES) as u64;
    assert_eq!(pieces_stored(&mut kv), per_big + 2);

    // A large value replaced by a small one, a small by a large one, a large deleted:
    // no piece is left behind and each key has one value.
    let cmds = [
        put_bytes("big", b"tiny".to_vec()),
        put_bytes("small", big.clone()),
        delete("edge"),
    ];
    let items = items_from(&cmds, 4);
    let r = kv.apply(&items, true).unwrap();
    assert_eq!(
        r[2],
        Some(ApplyOutcome::Applied(
            ApplyResult::Deleted { existed: true },
            6
        ))
    );
    assert_eq!(kv.get("big").unwrap(), Some(b"tiny".to_vec()));
    assert_eq!(kv.get("small").unwrap(), Some(big.clone()));
    assert_eq!(kv.get("edge").unwrap(), None);
    assert_eq!(kv.key_count().unwrap(), 2);
    assert_eq!(pieces_stored(&mut kv), per_big);
    let map = kv.dump().unwrap();
    assert_eq!(map.len(), 2);
    assert_eq!(map["small"], big);
}

#[test]
fn large_values_travel_in_snapshots() {
    let (_, mut source) = filled(20);
    let big = pattern(MAX_VALUE_BYTES, 9);
    let cmds = [
        put_bytes("big", big.clone()),
        put_bytes("key00003", big.clone()),
    ];
    let items = items_from(&cmds, 21);
    source.apply(&items, true).unwrap();
    let reader = source.snapshot_reader().unwrap();
    let mut chunks = Vec::new();
    reader
        .produce(64 * 1024, |c, _| {
            chunks.push(c);
            true
        })
        .unwrap();
    let (_, target) = filled(1);
    let mut inst = target
        .begin_install(LogPoint { index: 22, term: 1 })
        .unwrap();
    for c in &chunks {
        inst.write_chunk(c).unwrap();
    }
    let mut installed = inst.finish().unwrap();
    assert_eq!(installed.dump().unwrap(), source.dump().unwrap());
    assert_eq!(installed.key_count().unwrap(), 21);
    assert_eq!(installed.get("key00003").unwrap(), Some(big));
}

#[test]
fn a_missing_piece_is_reported_with_its_key() {
    let (_, disk) = mem();
    let (mut kv, _) = KvStore::open(&disk, 1 << 20).unwrap();
    kv.apply(&[item(1, &put_bytes("big", pattern(100_000, 4)))], true)
        .unwrap();
    let txn = kv.db.begin_write().unwrap();
    txn.open_table(CHUNKS).unwrap().remove((1, 1)).unwrap();
    txn.commit().unwrap();
    let err = kv.get("big").unwrap_err();
    assert!(err.reason.contains("\"big\""), "{}", err);
    assert!(kv.dump().is_err());
}

#[test]
fn a_version_2_store_opens_and_keeps_its_data() {
    let (_, disk) = mem();
    {
        let (mut kv, _) = KvStore::open(&disk, 1 << 20).unwrap();
        kv.apply(&[item(1, &put("a", "1", None))], true).unwrap();
        // Make it what version 2 wrote: no tables for large values.
        let txn = kv.db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert(FORMAT, 2).unwrap();
        txn.delete_table(LARGE).unwrap();
        txn.delete_table(CHUNKS).unwrap();
        txn.commit().unwrap();
    }
    let (mut kv, applied) = KvStore::open(&disk, 1 << 20).unwrap();
    assert_eq!(applied.index, 1);
    assert_eq!(kv.get("a").unwrap(), Some(b"1".to_vec()));
    kv.apply(&[item(2, &put_bytes("big", pattern(100_000, 5)))], true)
        .unwrap();
    assert_eq!(kv.get("big").unwrap(), Some(pattern(100_000, 5)));
    let txn = kv.read_view().unwrap();
    let format = txn
        .open_table(META)
        .unwrap()
        .get(FORMAT)
        .unwrap()
        .map(|v| v.value());
    assert_eq!(format, Some(FORMAT_VERSION));
    drop(txn);
    // A version it does not know is refused with what to do.
    let txn = kv.db.begin_write().unwrap();
    txn.open_table(META).unwrap().insert(FORMAT, 99).unwrap();
    txn.commit().unwrap();
    drop(kv);
    let err = KvStore::open(&disk, 1 << 20).unwrap_err();
    assert!(err.reason.contains("version 99"), "{}", err);
}

/// redb gives a leaf that holds one large pair a page of the next power of two: stored
/// whole, a 1 MiB value took 2 MiB on disk. In pieces it takes about its size.
#[test]
fn large_values_take_about_their_size_on_disk() {
    let dir = std::env::temp_dir().join(format!("raftkv-store-large-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let disk = StoreDisk::Dir(dir.clone());
    let (mut kv, _) = KvStore::open(&disk, 1 << 20).unwrap();
    let n = 48;
    for i in 0..n {
        let cmd = put_bytes(
            &format!("big-{:03}", (i * 37) % n),
            pattern(MAX_VALUE_BYTES, i as u8),
        );
        kv.apply(&[item(i as u64 + 1, &cmd)], i % 4 == 3).unwrap();
    }
    kv.sync().unwrap();
    let size = std::fs::metadata(dir.join(crate::kv::STORE_FILE))
        .unwrap()
        .len();
    let data = (n * MAX_VALUE_BYTES) as u64;
    assert!(
        size < data * 8 / 5,
        "{} MiB on disk for {} MiB of values",
        size >> 20,
        data >> 20
    );
    drop(kv);
    let _ = std::fs::remove_dir_all(&dir);
}
