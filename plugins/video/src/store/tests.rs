use super::*;

#[test]
fn the_timecode_floor_is_the_newest_end_ever_stored_even_once_every_file_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let open = || FragmentStore::open(dir.path(), 1 << 20, Duration::from_secs(3600), UploadMode::Continuous).unwrap();
    let store = open();
    assert_eq!(store.timecode_floor(), 0);
    store.put(1000, 3000, b"h", b"one").unwrap();
    store.put(3000, 5000, b"h", b"two").unwrap();
    assert_eq!(store.timecode_floor(), 5000);
    // Both acknowledged (kept in sent/): their names give the floor across a restart.
    store.remove(1000).unwrap();
    store.remove(3000).unwrap();
    drop(store);
    let store = open();
    assert_eq!((store.backlog().fragments, store.timecode_floor()), (0, 5000));
    // Every file ages out: the floor file outlives them.
    assert_eq!(store.expire(5000 + 3_600_000 + 1).len(), 2);
    drop(store);
    assert!(dir.path().join(timeline::FLOOR_FILE).exists());
    assert_eq!(open().timecode_floor(), 5000);
    // The floor file lost while fragments remain: their names still give it.
    let store = open();
    store.put(5000, 7000, b"h", b"three").unwrap();
    drop(store);
    fs::remove_file(dir.path().join(timeline::FLOOR_FILE)).unwrap();
    assert_eq!(open().timecode_floor(), 7000);
    // A refused fragment counts too (it was sent).
    let store = open();
    store.dead_letter(5000, "refused").unwrap();
    drop(store);
    assert_eq!(open().timecode_floor(), 7000);
}

#[test]
fn fragments_survive_reopen_and_half_written_ones_vanish() {
    let dir = tempfile::tempdir().unwrap();
    let store = FragmentStore::open(dir.path(), 1 << 20, Duration::from_secs(3600), UploadMode::Continuous).unwrap();
    store.put(1000, 3000, b"h", b"one").unwrap();
    store.put(3000, 5000, b"h", b"two").unwrap();
    fs::write(dir.path().join("0000000005000-0000000007000.mkv.tmp"), b"partial").unwrap();
    drop(store);
    let store = FragmentStore::open(dir.path(), 1 << 20, Duration::from_secs(3600), UploadMode::Continuous).unwrap();
    assert_eq!(store.backlog().fragments, 2);
    assert_eq!(store.backlog().seconds, 4.0);
    assert_eq!(store.next_after(None).unwrap().start_ms, 1000);
    assert_eq!(store.next_after(Some(1000)).unwrap().start_ms, 3000);
    assert!(store.next_after(Some(3000)).is_none());
    assert_eq!(fs::read(&store.next_after(None).unwrap().path).unwrap(), b"hone");
    assert!(!dir.path().join("0000000005000-0000000007000.mkv.tmp").exists());
    assert!(store.remove(1000).unwrap());
    assert!(!store.contains(1000));
}

#[test]
fn the_ring_evicts_oldest_first_when_full_or_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = FragmentStore::open(dir.path(), 10, Duration::from_secs(10), UploadMode::Continuous).unwrap();
    assert!(store.put(1000, 2000, b"", b"aaaa").unwrap().is_empty());
    assert!(store.put(2000, 3000, b"", b"bbbb").unwrap().is_empty());
    let evicted = store.put(3000, 4000, b"", b"cccc").unwrap();
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].0.start_ms, 1000);
    assert_eq!(evicted[0].1, Eviction::Full);
    let expired = store.expire(13_500);
    assert_eq!(expired.iter().map(|e| e.0.start_ms).collect::<Vec<_>>(), vec![2000]);
    assert_eq!(store.backlog().fragments, 1);
}

#[test]
fn refused_fragments_move_to_dead_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = FragmentStore::open(dir.path(), 1 << 20, Duration::from_secs(60), UploadMode::Continuous).unwrap();
    store.put(1000, 2000, b"", b"x").unwrap();
    let path = store.dead_letter(1000, "4006 invalid MKV").unwrap().unwrap();
    assert!(path.exists());
    assert!(fs::read_to_string(path.with_extension("reason.txt"))
        .unwrap()
        .contains("4006"));
    assert_eq!(store.backlog().fragments, 0);
    // Reopening does not pick up dead fragments.
    let store = FragmentStore::open(dir.path(), 1 << 20, Duration::from_secs(60), UploadMode::Continuous).unwrap();
    assert_eq!(store.backlog().fragments, 0);
}

#[test]
fn refused_fragments_are_inside_the_budget_and_go_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = FragmentStore::open(dir.path(), 40, Duration::from_secs(3600), UploadMode::Continuous).unwrap();
    store.put(1000, 2000, b"", b"0123456789").unwrap();
    store.dead_letter(1000, "4006").unwrap().unwrap();
    store.put(2000, 3000, b"", b"0123456789").unwrap();
    store.put(3000, 4000, b"", b"0123456789").unwrap();
    assert_eq!(
        store.total_bytes(),
        35,
        "two fragments and a refused one with its reason"
    );
    let evicted = store.put(4000, 5000, b"", b"0123456789").unwrap();
    assert_eq!(
        evicted.iter().map(|(s, why)| (s.start_ms, *why)).collect::<Vec<_>>(),
        vec![(1000, Eviction::DeadFull)],
        "the refused fragment made room before any unsent one"
    );
    assert!(!dir
        .path()
        .join("dead")
        .join("0000000001000-0000000002000.reason.txt")
        .exists());
    assert!(
        store.put(5000, 6000, b"", b"0123456789").unwrap().is_empty(),
        "exactly full"
    );
    let evicted = store.put(6000, 7000, b"", b"0123456789").unwrap();
    assert_eq!(
        evicted.iter().map(|(s, why)| (s.start_ms, *why)).collect::<Vec<_>>(),
        vec![(2000, Eviction::Full)]
    );
    assert!(store.total_bytes() <= 40);
    // A reopened ring counts what dead/ holds.
    store.dead_letter(6000, "4006").unwrap();
    let before = store.total_bytes();
    drop(store);
    let store = FragmentStore::open(dir.path(), 40, Duration::from_secs(3600), UploadMode::Continuous).unwrap();
    assert_eq!(store.total_bytes(), before);
}

#[test]
fn acknowledged_fragments_stay_for_clips_and_make_room_first() {
    let dir = tempfile::tempdir().unwrap();
    // Room for three 4-byte fragments.
    let store = FragmentStore::open(dir.path(), 12, Duration::from_secs(3600), UploadMode::Continuous).unwrap();
    store.put(1000, 2000, b"h", b"one").unwrap();
    store.put(2000, 3000, b"h", b"two").unwrap();
    assert!(store.remove(1000).unwrap());
    assert_eq!(store.backlog().fragments, 1, "acknowledged: out of the backlog");
    assert!(dir.path().join("sent/0000000001000-0000000002000.mkv").exists());
    let covering: Vec<u64> = store.covering(1500, 2500).iter().map(|s| s.start_ms).collect();
    assert_eq!(covering, vec![1000, 2000], "sent and waiting, in order");
    assert_eq!(store.covering(3000, 4000).len(), 0, "an end is exclusive");
    // Kept across a restart.
    drop(store);
    let store = FragmentStore::open(dir.path(), 12, Duration::from_secs(3600), UploadMode::Continuous).unwrap();
    assert_eq!(store.covering(0, 10_000).len(), 2);
    // Over the budget, the acknowledged one goes first, and it is no loss.
    assert!(store.put(3000, 4000, b"h", b"333").unwrap().is_empty());
    let evicted = |e: Vec<(Stored, Eviction)>| e.iter().map(|(s, why)| (s.start_ms, *why)).collect::<Vec<_>>();
    assert_eq!(
        evicted(store.put(4000, 5000, b"h", b"444").unwrap()),
        vec![(1000, Eviction::Sent)]
    );
    assert_eq!(
        evicted(store.put(5000, 6000, b"h", b"555").unwrap()),
        vec![(2000, Eviction::Full)]
    );
    // Acknowledged video ages out with the rest.
    store.remove(3000).unwrap();
    let expired = store.expire(4000 + 3_600_000 + 1);
    assert_eq!(
        expired,
        vec![(store_entry(&dir, "sent", 3000, 4000, 4), Eviction::Sent)]
    );
}

fn store_entry(dir: &tempfile::TempDir, shelf: &str, start: u64, end: u64, bytes: u64) -> Stored {
    Stored {
        start_ms: start,
        end_ms: end,
        bytes,
        path: dir.path().join(shelf).join(format!("{start:013}-{end:013}.mkv")),
    }
}
