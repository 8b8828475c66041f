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

use super::snapshots::{forget_all, forget_others, load, save};
use crate::config::Durability;
use crate::metrics::Metrics;
use crate::rules::snapshot::{Snapshot, UnitSnapshot};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The table, as in the journal file (where older agents kept it).
const TABLE: &str = "
CREATE TABLE IF NOT EXISTS rule_snapshots (
    unit        TEXT    PRIMARY KEY,
    fingerprint TEXT    NOT NULL,
    through_seq INTEGER NOT NULL,
    taken_ms    INTEGER NOT NULL,
    state       BLOB    NOT NULL,
    sha256      TEXT    NOT NULL
);
";

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
    /// The writer's own connection, for reading the snapshot at a start.
    reader: Connection,
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

fn open(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Fsync => "FULL",
            Durability::Os => "NORMAL",
        },
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // A unit's old pages are not kept in the WAL after a checkpoint.
    conn.pragma_update(None, "journal_size_limit", 0)?;
    conn.execute_batch(TABLE)?;
    Ok(conn)
}

impl SnapshotStore {
    /// Opens the snapshot file of the journal at `journal` and starts its thread. Rows an
    /// older agent kept in the journal file (`journal`, open in `journal_conn`) move here
    /// once.
    pub fn open(
        journal: &Path,
        journal_conn: &Connection,
        durability: Durability,
        metrics: Metrics,
    ) -> rusqlite::Result<Self> {
        let path = path_for(journal);
        let reader = open(&path, durability)?;
        move_old_rows(journal_conn, &reader)?;
        let conn = open(&path, durability)?;
        let (jobs, rx) = channel();
        let storing = Arc::new(AtomicBool::new(false));
        let flag = storing.clone();
        let thread = std::thread::Builder::new()
            .name("rule-snapshots".into())
            .spawn(move || run(&conn, &rx, &flag, &metrics))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(SnapshotStore {
            jobs: Some(jobs),
            storing,
            reader,
            thread: Some(thread),
        })
    }

    /// The stored snapshot (see [`load`]).
    pub fn load(&self) -> rusqlite::Result<Option<Snapshot>> {
        load(&self.reader)
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

/// Moves the rows an older agent kept in the journal file, when this file has none.
fn move_old_rows(journal_conn: &Connection, store: &Connection) -> rusqlite::Result<()> {
    let old: i64 = journal_conn.query_row("SELECT COUNT(*) FROM rule_snapshots", [], |r| r.get(0))?;
    if old == 0 {
        return Ok(());
    }
    let here: i64 = store.query_row("SELECT COUNT(*) FROM rule_snapshots", [], |r| r.get(0))?;
    if here == 0 {
        if let Some(snapshot) = load(journal_conn)? {
            store.execute_batch("BEGIN IMMEDIATE")?;
            for unit in &snapshot.units {
                save(store, unit)?;
            }
            store.execute_batch("COMMIT")?;
        }
    }
    journal_conn.execute("DELETE FROM rule_snapshots", [])?;
    Ok(())
}

fn run(conn: &Connection, jobs: &Receiver<Job>, storing: &AtomicBool, metrics: &Metrics) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Store(unit, why) => {
                store_unit(conn, &unit, why, metrics);
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
            Job::Flush(done) => drop(done.send(())),
        }
    }
}

/// Stores `unit` in its own SQLite transaction. A failure is logged and counted, and the
/// unit's old row deleted (a row left behind would hold the replay's start back).
fn store_unit(conn: &Connection, unit: &UnitSnapshot, why: &str, metrics: &Metrics) {
    let started = Instant::now();
    let stored = conn.execute_batch("BEGIN IMMEDIATE").and_then(|()| {
        save(conn, unit)
            .and_then(|()| conn.execute_batch("COMMIT"))
            .inspect_err(|_| drop(conn.execute_batch("ROLLBACK")))
    });
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
    let bytes: i64 = conn
        .query_row("SELECT COALESCE(SUM(length(state)), 0) FROM rule_snapshots", [], |r| {
            r.get(0)
        })
        .unwrap_or(0);
    metrics.rule_snapshot_bytes.set(bytes);
}
