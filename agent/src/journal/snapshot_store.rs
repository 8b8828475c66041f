//! Where the rule-state snapshot is written: its own SQLite file beside the journal
//! (`<journal>-rule-state`, same table as [`super::snapshots`] describes), by its own
//! thread.
//!
//! Why not the journal file: a unit is megabytes with ~100k live keys, and storing it
//! there held SQLite's one write lock through the write and its fsync. Under another
//! tenant's I/O that was the journal writer waiting 32–256 ms, every decision with it.
//! Here the writer only encodes a unit and hands it over; this thread stores it. The
//! writer encodes the next unit only once the last one is stored ([`SnapshotStore::busy`]),
//! so at most one encoded unit waits in memory.
//!
//! Jobs run in the order they were sent, so a `forget` sent after a store is never undone
//! by it. A unit's row names the journal sequence it holds; the journal keeps its rows,
//! so a unit stored late is still exact. Dropping the store finishes the job in hand and
//! joins the thread.

use super::schema::{meta, META_TABLE};
use super::snapshots::{forget_all, forget_others, load, save};
use crate::config::Durability;
use crate::metrics::Metrics;
use crate::rules::snapshot::{Snapshot, UnitSnapshot};
use rusqlite::{Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tillgate_sdk::ByteSize;

/// The snapshot file of the journal at `journal`.
pub fn path_for(journal: &Path) -> PathBuf {
    let mut p = journal.as_os_str().to_owned();
    p.push("-rule-state");
    PathBuf::from(p)
}

/// Bytes the snapshot file and its WAL take on disk (counted against
/// `journal.max_bytes`).
pub fn disk_bytes(journal: &Path) -> u64 {
    let file = path_for(journal);
    let mut wal = file.as_os_str().to_owned();
    wal.push("-wal");
    [file.as_path(), Path::new(&wal)]
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

enum Job {
    Store(UnitSnapshot, &'static str),
    Forget(String),
    ForgetOthers(Vec<String>),
    ForgetAll,
    Flush(Sender<()>),
}

/// The writer's handle on the snapshot thread.
#[derive(Debug)]
pub struct SnapshotStore {
    jobs: Option<Sender<Job>>,
    storing: Arc<AtomicBool>,
    /// The writer's own connection, for reading the snapshot at a start (`None`: no file).
    reader: Option<Connection>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Store(..) => "store",
            Job::Forget(_) => "forget",
            Job::ForgetOthers(_) => "forget_others",
            Job::ForgetAll => "forget_all",
            Job::Flush(_) => "flush",
        })
    }
}

/// How long a store waits for another process holding the file (a shutdown stores every
/// unit, so this bounds it).
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) fn open_file(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // First, so the pragmas below wait for another connection too.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Before the table exists: a replaced unit's pages go back to the file system, so
    // the file's length (what the budget counts) is the state it holds.
    conn.pragma_update(None, "auto_vacuum", "FULL")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Fsync => "FULL",
            Durability::Os => "NORMAL",
        },
    )?;
    // A unit's old pages are not kept in the WAL after a checkpoint.
    conn.pragma_update(None, "journal_size_limit", 0)?;
    replace_table_without_state_last(&conn)?;
    conn.execute_batch(UNIT_TABLE)?;
    conn.execute_batch(META_TABLE)?;
    Ok(conn)
}

/// The units, one row each. The state is the last column so that it can be written
/// through SQLite's incremental blob I/O without SQLite holding a copy of it (`save`: a
/// zero-filled blob is made whole in memory when the row is built unless nothing follows
/// it). Bound as a parameter instead, a unit of tens of MB was in memory three times
/// while it was stored (heaptrack, BENCHMARKS.md "Ten minutes at 5,000 txn/s").
const UNIT_TABLE: &str = "
CREATE TABLE IF NOT EXISTS rule_snapshots (
    unit        TEXT    PRIMARY KEY,
    fingerprint TEXT    NOT NULL,
    through_seq INTEGER NOT NULL,
    taken_ms    INTEGER NOT NULL,
    sha256      TEXT    NOT NULL,
    state       BLOB    NOT NULL
);
";

/// An older agent's file has the state before the checksum: its units are dropped (the
/// next start rebuilds them by replay) and the table made again with the state last.
fn replace_table_without_state_last(conn: &Connection) -> rusqlite::Result<()> {
    let last: Option<String> = conn
        .query_row(
            "SELECT name FROM pragma_table_info('rule_snapshots') ORDER BY cid DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if last.is_some_and(|c| c != "state") {
        tracing::info!("the rule-state snapshot file is of an older agent: its units are rebuilt by replay once");
        conn.execute_batch("DROP TABLE rule_snapshots")?;
    }
    Ok(())
}

/// Whether `e` says the file is not a sound database (then it is made again); any other
/// error (busy, permissions, a full disk) leaves the file as it is.
fn is_damaged(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// Deletes the snapshot file and its WAL and index.
fn remove_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(Path::new(&p)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(path = ?p, error = %e, "the rule-state snapshot file cannot be deleted: move it aside before the next start, or its units may be restored")
            }
        }
    }
}

impl SnapshotStore {
    /// Opens the snapshot file of the journal at `journal` and starts its thread. Rows an
    /// older agent kept in the journal file (open in `journal_conn`) move here once; units
    /// of another journal, or ahead of this one's `last_seq`, are deleted ([`pair`]). The
    /// units together take at most `share` bytes of state.
    ///
    /// The snapshot only shortens a start, so nothing about it keeps the journal from
    /// opening: a file that is not a sound database is deleted and made again, and if
    /// that fails, or the file cannot be opened for another reason (permissions, a full
    /// disk, another process holding it), the agent runs without snapshots (every start replays the horizon),
    /// saying so.
    pub fn open(
        journal: &Path,
        journal_conn: &Connection,
        last_seq: u64,
        share: u64,
        durability: Durability,
        metrics: Metrics,
    ) -> Self {
        let path = path_for(journal);
        let opened = open_file(&path, durability).or_else(|e| {
            if !is_damaged(&e) {
                return Err(e);
            }
            tracing::warn!(path = %path.display(), error = %e, "the rule-state snapshot file is damaged; it is made again (the next start replays the horizon)");
            remove_files(&path);
            open_file(&path, durability)
        });
        let reader = match opened {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "no rule-state snapshots can be kept: every start replays the rules' horizon");
                return SnapshotStore::without_file();
            }
        };
        if let Err(e) = move_old_rows(journal_conn, &reader) {
            tracing::warn!(error = %e, "the rule-state snapshot kept in the journal file could not be moved; it is not used");
        }
        let journal_id = meta(journal_conn, "journal_id").unwrap_or_default();
        if let Err(e) = pair(&reader, journal_id, last_seq, share) {
            tracing::error!(path = %path.display(), error = %e, "snapshot units that may not belong to this journal could not be deleted: the file is deleted, and this run keeps no snapshots (the next start replays the horizon)");
            drop(reader);
            remove_files(&path);
            return SnapshotStore::without_file();
        }
        truncate_wal(&reader);
        let conn = match open_file(&path, durability) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "no rule-state snapshots can be kept: every start replays the rules' horizon");
                return SnapshotStore::without_file();
            }
        };
        let (jobs, rx) = channel();
        let storing = Arc::new(AtomicBool::new(false));
        let flag = storing.clone();
        let spawned = std::thread::Builder::new()
            .name("rule-snapshots".into())
            .spawn(move || {
                let ran =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&conn, &rx, &flag, &metrics, share)));
                flag.store(false, Ordering::Release);
                if ran.is_err() {
                    tracing::error!("the rule-snapshot thread died: the rules' state is no longer snapshotted");
                }
            });
        match spawned {
            Ok(thread) => SnapshotStore {
                jobs: Some(jobs),
                storing,
                reader: Some(reader),
                thread: Some(thread),
            },
            Err(e) => {
                tracing::error!(error = %e, "the rule-snapshot thread cannot start: every start replays the rules' horizon");
                SnapshotStore::without_file()
            }
        }
    }

    /// A store that keeps nothing (every store is refused and counted).
    fn without_file() -> Self {
        SnapshotStore {
            jobs: None,
            storing: Arc::new(AtomicBool::new(false)),
            reader: None,
            thread: None,
        }
    }

    /// The stored snapshot (see [`load`]).
    pub fn load(&self) -> rusqlite::Result<Option<Snapshot>> {
        match &self.reader {
            Some(r) => load(r),
            None => Ok(None),
        }
    }

    /// A unit handed over is still being stored.
    pub fn busy(&self) -> bool {
        self.storing.load(Ordering::Acquire)
    }

    /// Hands `unit` over to be stored. `false` when the thread is gone.
    pub fn store(&self, unit: UnitSnapshot, why: &'static str) -> bool {
        self.storing.store(true, Ordering::Release);
        let sent = self.send(Job::Store(unit, why));
        if !sent {
            self.storing.store(false, Ordering::Release);
        }
        sent
    }

    /// Deletes `unit`'s row.
    pub fn forget(&self, unit: &str) {
        self.send(Job::Forget(unit.to_string()));
    }

    /// Deletes the rows of units not in `units`.
    pub fn forget_others(&self, units: Vec<String>) {
        self.send(Job::ForgetOthers(units));
    }

    /// Deletes every row.
    pub fn forget_all(&self) {
        self.send(Job::ForgetAll);
    }

    /// Waits until every job sent so far is done.
    pub fn flush(&self) {
        let (done, wait) = channel();
        if self.send(Job::Flush(done)) {
            let _ = wait.recv();
        }
    }

    fn send(&self, job: Job) -> bool {
        let sent = self.jobs.as_ref().is_some_and(|j| j.send(job).is_ok());
        if !sent {
            tracing::error!("the rule-snapshot thread is gone: the rules' state is not snapshotted");
        }
        sent
    }
}

impl Drop for SnapshotStore {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Makes the file the journal's: units another journal left (the file names a different
/// journal id) and units that claim more than this journal holds (`last_seq`: a power
/// cut can take the journal's last commits and leave this file's) are deleted, then the
/// file is stamped with the journal's id. Either kind would otherwise be restored once
/// the journal's sequence passes it. A file without an id (an older agent's) is adopted.
/// Units holding more than `share` bytes of state together (`journal.max_bytes` was
/// lowered) are deleted too.
fn pair(conn: &Connection, journal_id: i64, last_seq: u64, share: u64) -> rusqlite::Result<()> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let paired: Option<i64> = tx
        .query_row("SELECT value FROM meta WHERE key = 'journal_id'", [], |r| r.get(0))
        .optional()?;
    let other_journal = paired.is_some_and(|id| id != journal_id);
    let mut gone = if other_journal {
        tx.execute("DELETE FROM rule_snapshots", [])?
    } else {
        tx.execute("DELETE FROM rule_snapshots WHERE through_seq > ?1", [last_seq as i64])?
    };
    // A budget lowered since: the units are kept only inside their share of it.
    let held: i64 = tx.query_row("SELECT COALESCE(SUM(length(state)), 0) FROM rule_snapshots", [], |r| {
        r.get(0)
    })?;
    if held as u64 > share {
        gone += tx.execute("DELETE FROM rule_snapshots", [])?;
    }
    tx.execute(
        "INSERT INTO meta(key, value) VALUES ('journal_id', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [journal_id],
    )?;
    tx.commit()?;
    if gone > 0 {
        tracing::warn!(
            units = gone,
            journal_seq = last_seq,
            other_journal,
            "rule-state snapshot units of another journal, ahead of this one (a power cut, a journal moved aside or restored) or over their share of a lowered journal.max_bytes were deleted; they are rebuilt by replay"
        );
    }
    Ok(())
}

/// Moves the rows an older agent kept in the journal file, when this file has none; the
/// journal's rows are deleted either way (this file's are newer).
fn move_old_rows(journal_conn: &Connection, store: &Connection) -> rusqlite::Result<()> {
    let old: i64 = journal_conn.query_row("SELECT COUNT(*) FROM rule_snapshots", [], |r| r.get(0))?;
    if old == 0 {
        return Ok(());
    }
    let here: i64 = store.query_row("SELECT COUNT(*) FROM rule_snapshots", [], |r| r.get(0))?;
    if here == 0 {
        if let Some(snapshot) = load(journal_conn)? {
            store.execute_batch("BEGIN IMMEDIATE")?;
            let copied = snapshot
                .units
                .iter()
                .try_for_each(|unit| save(store, unit))
                .and_then(|()| store.execute_batch("COMMIT"));
            if let Err(e) = copied {
                let _ = store.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
    journal_conn.execute("DELETE FROM rule_snapshots", [])?;
    Ok(())
}

fn run(conn: &Connection, jobs: &Receiver<Job>, storing: &AtomicBool, metrics: &Metrics, share: u64) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Store(unit, why) => {
                store_unit(conn, &unit, why, metrics, share);
                storing.store(false, Ordering::Release);
            }
            Job::Forget(unit) => {
                if let Err(e) = conn.execute("DELETE FROM rule_snapshots WHERE unit = ?1", [&unit]) {
                    tracing::warn!(error = %e, unit, "a rule-state snapshot could not be deleted");
                }
            }
            Job::ForgetOthers(units) => {
                if let Err(e) = forget_others(conn, &units) {
                    tracing::warn!(error = %e, "snapshots of removed rules could not be deleted");
                }
            }
            Job::ForgetAll => {
                if let Err(e) = forget_all(conn) {
                    tracing::warn!(error = %e, "rule-state snapshots could not be deleted");
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        }
        truncate_wal(conn);
        let bytes: i64 = conn
            .query_row("SELECT COALESCE(SUM(length(state)), 0) FROM rule_snapshots", [], |r| {
                r.get(0)
            })
            .unwrap_or(0);
        metrics.rule_snapshot_bytes.set(bytes);
    }
}

/// Copies the WAL into the file and empties it, so what the budget counts is the state
/// the file holds, not also the last unit's frames (up to a quarter of the budget). One
/// more fsync per unit, on this thread.
fn truncate_wal(conn: &Connection) {
    // The first column says whether another connection kept the checkpoint from finishing.
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)) {
        Ok(0) => {}
        Ok(_) => tracing::debug!(
            "the rule-state snapshot file's WAL is held by another connection; emptied after a later unit"
        ),
        Err(e) => tracing::debug!(error = %e, "the rule-state snapshot file's WAL could not be truncated"),
    }
}

/// Stores `unit` in its own SQLite transaction, unless the units would then take more
/// than `share` bytes of state (a quarter of `journal.max_bytes`: the journal's rows need
/// the rest). A unit not stored is logged and counted, and its old row deleted (a row
/// left behind would hold the replay's start back).
fn store_unit(conn: &Connection, unit: &UnitSnapshot, why: &str, metrics: &Metrics, share: u64) {
    let started = Instant::now();
    let stored = match others_bytes(conn, &unit.unit) {
        Ok(others) if others + unit.state.len() as u64 > share => Err(format!(
            "with it the snapshot would hold {} of state, over its share of journal.max_bytes ({}, a quarter)",
            ByteSize(others + unit.state.len() as u64),
            ByteSize(share)
        )),
        Ok(_) => write(conn, unit).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    metrics
        .rule_snapshot_store_seconds
        .observe(started.elapsed().as_secs_f64());
    match stored {
        Ok(()) => {
            tracing::debug!(why, unit = %unit.unit, seq = unit.through_seq, took = ?started.elapsed(), "rule state snapshotted")
        }
        Err(e) => {
            metrics.rule_snapshot_failures.inc();
            tracing::warn!(why, unit = %unit.unit, error = %e, "rule-state snapshot could not be stored; the unit is rebuilt from its horizon after a restart");
            let _ = conn.execute("DELETE FROM rule_snapshots WHERE unit = ?1", [&unit.unit]);
        }
    }
}

/// Bytes of state the units other than `unit` hold.
fn others_bytes(conn: &Connection, unit: &str) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT COALESCE(SUM(length(state)), 0) FROM rule_snapshots WHERE unit != ?1",
        [unit],
        |r| r.get::<_, i64>(0),
    )
    .map(|b| b as u64)
}

/// `unit`'s row, replaced, in one SQLite transaction.
fn write(conn: &Connection, unit: &UnitSnapshot) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    save(conn, unit)
        .and_then(|()| conn.execute_batch("COMMIT"))
        .inspect_err(|_| drop(conn.execute_batch("ROLLBACK")))
}
