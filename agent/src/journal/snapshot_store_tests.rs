//! The snapshot file beside the journal: decisions never wait for a unit's write, rows
//! an older agent kept in the journal file move over, and the file counts against the
//! journal's budget.

use super::snapshot_store::SnapshotStore;
use super::snapshot_tests::{config, engine, filled, open, open_counted, stream, PACK};
use super::*;
use std::sync::atomic::Ordering;

fn store_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("j.db-rule-state")
}

/// Another process holds the snapshot file's write lock, so no unit can be stored:
/// every transaction is still decided and answered, and the units are stored once the
/// lock is let go. (Written in the journal file, each unit held the writer for its
/// write; under I/O contention that was 32–256 ms of every decision.)
#[tokio::test(flavor = "multi_thread")]
async fn decisions_do_not_wait_for_a_snapshot_write() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(5);
    let metrics = Metrics::new();
    let j = open_counted(dir.path(), &config, engine(dir.path(), PACK), metrics.clone());
    assert!(j.ping().await);
    let blocker = rusqlite::Connection::open(store_path(dir.path())).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Few enough to be answered well inside the store's busy timeout (1 s), which the
    // round's first job (deleting removed rules' rows) spends before the store waits.
    for t in stream(3, 50) {
        // Answered only once committed with its decision.
        j.submit(t).await.unwrap();
    }
    assert!(
        metrics.rule_snapshot_seconds.get_sample_count() >= 1,
        "a unit was handed over"
    );
    assert_eq!(
        metrics.rule_snapshot_store_seconds.get_sample_count(),
        0,
        "no unit could be stored while the lock was held"
    );
    blocker.execute_batch("COMMIT").unwrap();
    let last = j.last_seq();
    j.close().await;
    assert!(metrics.rule_snapshot_store_seconds.get_sample_count() >= 1);
    assert_eq!(metrics.rule_snapshot_failures.get(), 0);
    let j = open(dir.path(), &config, engine(dir.path(), PACK));
    assert!(j.ping().await);
    assert_eq!(j.state().restored_from_snapshot.load(Ordering::Acquire), last);
    assert_eq!(j.state().replayed.load(Ordering::Acquire), 0);
    j.close().await;
}

/// A journal from an agent that kept the snapshot in the journal file: the rows move to
/// the snapshot file at the start and are used.
#[tokio::test(flavor = "multi_thread")]
async fn rows_kept_in_the_journal_file_move_to_the_snapshot_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(1_000_000);
    let j = filled(dir.path(), &config, 4, 50).await;
    let last = j.last_seq();
    j.close().await;
    // As an older agent left it: the rows in the journal file, no snapshot file.
    let conn = rusqlite::Connection::open(dir.path().join("j.db")).unwrap();
    conn.execute(
        "ATTACH DATABASE ?1 AS store",
        [store_path(dir.path()).to_str().unwrap()],
    )
    .unwrap();
    let moved = conn
        .execute(
            "INSERT INTO main.rule_snapshots(unit, fingerprint, through_seq, taken_ms, state, sha256)
             SELECT unit, fingerprint, through_seq, taken_ms, state, sha256 FROM store.rule_snapshots",
            [],
        )
        .unwrap();
    assert!(moved >= 4, "{moved} units");
    conn.execute_batch("DETACH DATABASE store").unwrap();
    drop(conn);
    std::fs::remove_file(store_path(dir.path())).unwrap();
    let j = open(dir.path(), &config, engine(dir.path(), PACK));
    assert!(j.ping().await);
    assert_eq!(j.state().restored_from_snapshot.load(Ordering::Acquire), last);
    assert_eq!(j.state().replayed.load(Ordering::Acquire), 0);
    j.close().await;
    let left: i64 = rusqlite::Connection::open(dir.path().join("j.db"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM rule_snapshots", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "the journal file keeps no snapshot rows");
}

/// The snapshot file's bytes are counted against `journal.max_bytes`.
#[tokio::test(flavor = "multi_thread")]
async fn the_snapshot_file_counts_against_the_journal_budget() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(1_000_000);
    let j = filled(dir.path(), &config, 5, 50).await;
    j.close().await;
    let on_disk = snapshot_store::disk_bytes(&dir.path().join("j.db"));
    assert!(on_disk > 0);
    let j = open(dir.path(), &config, engine(dir.path(), PACK));
    assert!(j.ping().await);
    let counted = j.state().used_bytes.load(Ordering::Acquire);
    let pages = j.reader().unwrap().used_bytes().unwrap();
    let wal = budget::wal_size(&dir.path().join("j.db"));
    assert!(
        counted >= pages + wal + on_disk,
        "counted {counted}, pages {pages} + WAL {wal} + snapshot file {on_disk}"
    );
    j.close().await;
}

/// After each unit the snapshot file's WAL is copied in and emptied: the budget counts
/// the state the file holds, not also the last unit's frames.
#[tokio::test(flavor = "multi_thread")]
async fn the_snapshot_files_wal_is_emptied_after_each_unit() {
    let dir = tempfile::tempdir().unwrap();
    let j = filled(dir.path(), &config(5), 7, 60).await;
    let mut wal = store_path(dir.path()).into_os_string();
    wal.push("-wal");
    let wal_len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // The round goes on between the writer's quiet waits; once it ends, the WAL is empty.
    while wal_len() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the snapshot file's WAL still holds {} bytes",
            wal_len()
        );
        assert!(j.ping().await);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    j.close().await;
}

/// The units together hold at most their share of the budget (a quarter of
/// `journal.max_bytes`): a unit that would take the snapshot over it is not stored (its
/// old row deleted, the failure counted), so the file never claims the room the rows
/// need. Each unit here is under the share; two together are not.
#[test]
fn the_units_together_take_at_most_a_quarter_of_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("j.db");
    let conn = super::schema::open_writer(&journal, 1 << 30).unwrap();
    let metrics = Metrics::new();
    let share = 64 * 1024;
    let store = SnapshotStore::open(
        &journal,
        &conn,
        10,
        share,
        crate::config::Durability::Os,
        metrics.clone(),
    );
    let unit = |name: &str, kib: usize| crate::rules::snapshot::UnitSnapshot {
        unit: name.to_string(),
        through_seq: 10,
        fingerprint: "f".to_string(),
        state: vec![7; kib * 1024],
    };
    let stored = |store: &SnapshotStore| -> Vec<(String, usize)> {
        let mut units: Vec<_> = store
            .load()
            .unwrap()
            .map(|s| s.units.into_iter().map(|u| (u.unit, u.state.len() / 1024)).collect())
            .unwrap_or_default();
        units.sort();
        units
    };
    for (name, kib) in [("rule:a", 40), ("rule:b", 40)] {
        store.store(unit(name, kib), "test");
        store.flush();
    }
    assert_eq!(stored(&store), [("rule:a".to_string(), 40)]);
    assert_eq!(metrics.rule_snapshot_failures.get(), 1);
    // `a` shrinks; then `b` fits beside it.
    for (name, kib) in [("rule:a", 20), ("rule:b", 40)] {
        store.store(unit(name, kib), "test");
        store.flush();
    }
    assert_eq!(stored(&store), [("rule:a".to_string(), 20), ("rule:b".to_string(), 40)]);
    assert_eq!(metrics.rule_snapshot_failures.get(), 1);
}

/// A budget lowered under the stored units: at the next start they are deleted, not
/// kept over their share.
#[test]
fn units_over_a_lowered_share_are_deleted_at_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("j.db");
    let conn = super::schema::open_writer(&journal, 1 << 30).unwrap();
    let metrics = Metrics::new();
    let store = SnapshotStore::open(
        &journal,
        &conn,
        10,
        64 * 1024,
        crate::config::Durability::Os,
        metrics.clone(),
    );
    store.store(
        crate::rules::snapshot::UnitSnapshot {
            unit: "rule:a".to_string(),
            through_seq: 10,
            fingerprint: "f".to_string(),
            state: vec![7; 40 * 1024],
        },
        "test",
    );
    store.flush();
    assert!(store.load().unwrap().is_some());
    drop(store);
    let store = SnapshotStore::open(&journal, &conn, 10, 32 * 1024, crate::config::Durability::Os, metrics);
    assert!(
        store.load().unwrap().is_none(),
        "the unit over the lowered share is gone"
    );
}

/// A journal moved aside (or one that lost its last commits to a power cut) with the
/// snapshot file left behind: its units claim more than the journal holds, so they are
/// deleted at the start instead of being restored once the sequence passes them again.
#[tokio::test(flavor = "multi_thread")]
async fn units_ahead_of_the_journal_are_deleted_at_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(1_000_000);
    let j = filled(dir.path(), &config, 6, 50).await;
    j.close().await;
    for f in ["j.db", "j.db-wal", "j.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    let j = open(dir.path(), &config, engine(dir.path(), PACK));
    assert!(j.ping().await);
    assert_eq!(j.state().restored_from_snapshot.load(Ordering::Acquire), 0);
    let rows: i64 = rusqlite::Connection::open(store_path(dir.path()))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM rule_snapshots", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0, "the old journal's units are gone");
    j.close().await;
}

/// Another journal's snapshot file beside this journal (a backup restored over one of the
/// two, or the files of two gateways mixed up): its units are deleted at the start, not
/// restored, even where their sequences are inside this journal's.
#[tokio::test(flavor = "multi_thread")]
async fn another_journals_snapshot_file_is_not_restored() {
    let this = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let config = config(1_000_000);
    let j = filled(other.path(), &config, 8, 30).await;
    j.close().await;
    let j = filled(this.path(), &config, 9, 60).await;
    j.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let name = format!("j.db-rule-state{suffix}");
        let _ = std::fs::remove_file(this.path().join(&name));
        if other.path().join(&name).exists() {
            std::fs::copy(other.path().join(&name), this.path().join(&name)).unwrap();
        }
    }
    let j = open(this.path(), &config, engine(this.path(), PACK));
    assert!(j.ping().await);
    assert_eq!(j.state().restored_from_snapshot.load(Ordering::Acquire), 0);
    assert_eq!(
        j.state().replayed.load(Ordering::Acquire),
        60,
        "every transaction replayed"
    );
    j.close().await;
}

/// A snapshot file that is not a database does not keep the journal from opening: it is
/// made again, the start replays the horizon, and the next stop stores the state.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_snapshot_file_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(1_000_000);
    let j = filled(dir.path(), &config, 7, 50).await;
    let last = j.last_seq();
    j.close().await;
    for f in ["j.db-rule-state-wal", "j.db-rule-state-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    std::fs::write(store_path(dir.path()), vec![0x5a; 8192]).unwrap();
    let j = open(dir.path(), &config, engine(dir.path(), PACK));
    assert!(j.ping().await);
    assert_eq!(j.state().restored_from_snapshot.load(Ordering::Acquire), 0);
    assert!(
        j.state().replayed.load(Ordering::Acquire) > 0,
        "the horizon was replayed"
    );
    j.close().await;
    let j = open(dir.path(), &config, engine(dir.path(), PACK));
    assert!(j.ping().await);
    assert_eq!(j.state().restored_from_snapshot.load(Ordering::Acquire), last);
    j.close().await;
}

fn unit_of(bytes: usize) -> crate::rules::snapshot::UnitSnapshot {
    crate::rules::snapshot::UnitSnapshot {
        unit: "rule:r".into(),
        fingerprint: "f".into(),
        through_seq: 7,
        state: (0..bytes).map(|i| (i % 251) as u8).collect(),
    }
}

/// A unit's state goes in through SQLite's blob I/O (a zero-filled state of its length,
/// then overwritten): as a new row and as a replaced longer and shorter one, the state
/// reads back whole. (What it saves, two copies of the unit in SQLite's memory while it
/// is stored, is a benchmark figure: BENCHMARKS.md, "Ten minutes at 5,000 txn/s".)
#[test]
fn a_unit_stored_through_blob_io_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let conn = super::snapshot_store::open_file(&store_path(dir.path()), crate::config::Durability::Os).unwrap();
    for bytes in [4 << 20, 6 << 20, 1000, 0] {
        let unit = unit_of(bytes);
        snapshots::save(&conn, &unit).unwrap();
        let stored = snapshots::load(&conn).unwrap();
        if bytes == 0 {
            assert_eq!(stored.expect("a unit").units[0].state.len(), 0);
        } else {
            assert_eq!(stored.expect("a unit").units, vec![unit], "{bytes} bytes");
        }
    }
}

/// An older agent's snapshot file (the state before the checksum) is made again with
/// the state last: its units are rebuilt by replay once, and new ones are stored.
#[test]
fn an_older_agents_snapshot_file_is_made_again_with_the_state_last() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    let older = rusqlite::Connection::open(&path).unwrap();
    older.execute_batch(schema::JOURNAL_RULE_SNAPSHOTS).unwrap();
    older
        .execute(
            "INSERT INTO rule_snapshots(unit, fingerprint, through_seq, taken_ms, state, sha256) VALUES ('rule:old', 'f', 1, 0, x'00', 'x')",
            [],
        )
        .unwrap();
    drop(older);
    let conn = super::snapshot_store::open_file(&path, crate::config::Durability::Os).unwrap();
    let last: String = conn
        .query_row(
            "SELECT name FROM pragma_table_info('rule_snapshots') ORDER BY cid DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(last, "state");
    assert!(
        snapshots::load(&conn).unwrap().is_none(),
        "the older agent's units are gone"
    );
    let unit = unit_of(1000);
    snapshots::save(&conn, &unit).unwrap();
    assert_eq!(snapshots::load(&conn).unwrap().expect("a unit").units, vec![unit]);
    drop(conn);
    let again = super::snapshot_store::open_file(&path, crate::config::Durability::Os).unwrap();
    assert!(
        snapshots::load(&again).unwrap().is_some(),
        "a file of this agent is kept"
    );
}
