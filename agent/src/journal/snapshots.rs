//! The rule state's snapshot in the journal database (table `rule_snapshots`): one row
//! per rule and report, all of one journal sequence, replaced whole in one SQLite
//! transaction (a crash leaves the previous snapshot or the new one, never a mix).
//!
//! The writer takes one between groups, so it covers exactly what is committed: after
//! `journal.rule_snapshot_transactions` transactions or `journal.rule_snapshot_interval`
//! (whichever first, and only if something was decided since), and at shutdown. Its
//! bytes live in the journal file and count against `journal.max_bytes`.

use super::writer::Writer;
use crate::rules::snapshot::{Snapshot, UnitSnapshot};
use rusqlite::{params, Connection, OptionalExtension};
use std::time::Instant;

/// When the next periodic snapshot is due.
#[derive(Debug)]
pub struct SnapshotClock {
    /// Transactions decided since the last snapshot.
    pub decided: u64,
    pub last: Instant,
}

impl Default for SnapshotClock {
    fn default() -> Self {
        SnapshotClock {
            decided: 0,
            last: Instant::now(),
        }
    }
}

/// Replaces the stored snapshot with `snapshot` (inside the caller's transaction).
pub fn save(conn: &Connection, snapshot: &Snapshot) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM rule_snapshots", [])?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut insert = conn.prepare_cached(
        "INSERT INTO rule_snapshots(unit, fingerprint, through_seq, taken_ms, state) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for u in &snapshot.units {
        insert.execute(params![
            u.unit,
            u.fingerprint,
            snapshot.through_seq as i64,
            now,
            u.state
        ])?;
    }
    Ok(())
}

/// The stored snapshot; `None` when there is none (or its rows disagree on the sequence,
/// which no writer produces).
pub fn load(conn: &Connection) -> rusqlite::Result<Option<Snapshot>> {
    let rows: Vec<(i64, UnitSnapshot)> = conn
        .prepare("SELECT through_seq, unit, fingerprint, state FROM rule_snapshots")?
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                UnitSnapshot {
                    unit: r.get(1)?,
                    fingerprint: r.get(2)?,
                    state: r.get(3)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let Some(&(through, _)) = rows.first() else {
        return Ok(None);
    };
    if rows.iter().any(|(s, _)| *s != through) || through < 0 {
        return Ok(None);
    }
    Ok(Some(Snapshot {
        through_seq: through as u64,
        units: rows.into_iter().map(|(_, u)| u).collect(),
    }))
}

/// Whether the journal still holds every row after `through` (up to `last_seq`):
/// pruning and eviction delete the oldest rows first, so the first remaining row tells.
pub fn tail_intact(conn: &Connection, through: u64, last_seq: u64) -> rusqlite::Result<bool> {
    if through >= last_seq {
        return Ok(through == last_seq);
    }
    let first: Option<i64> = conn
        .query_row("SELECT MIN(seq) FROM records", [], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(first.is_some_and(|f| f >= 0 && f as u64 <= through + 1))
}

impl Writer {
    /// After a group: a snapshot if enough was decided or enough time passed.
    pub(super) fn snapshot_if_due(&mut self, decided: usize) {
        self.snapshot_clock.decided += decided as u64;
        let clock = &self.snapshot_clock;
        let due = clock.decided > 0
            && (clock.decided >= self.config.rule_snapshot_transactions.get()
                || clock.last.elapsed() >= self.config.rule_snapshot_interval.get());
        if due {
            self.take_snapshot("periodic");
        }
    }

    /// Stores the rules' state as of the last committed transaction, in its own SQLite
    /// transaction. A failure is logged and counted; the previous snapshot stays.
    pub(super) fn take_snapshot(&mut self, why: &str) {
        let started = Instant::now();
        let through = self.next_seq - 1;
        let stored = self
            .decider
            .snapshot()
            .map_err(|e| format!("the rules' state could not be encoded: {e}"))
            .and_then(|units| {
                let snapshot = Snapshot {
                    through_seq: through,
                    units,
                };
                self.store_snapshot(&snapshot)
                    .map(|()| snapshot.bytes())
                    .map_err(|e| format!("the snapshot could not be stored: {e}"))
            });
        self.snapshot_clock = SnapshotClock::default();
        let took = started.elapsed();
        self.metrics.rule_snapshot_seconds.observe(took.as_secs_f64());
        match stored {
            Ok(bytes) => {
                self.metrics.rule_snapshot_bytes.set(bytes as i64);
                tracing::debug!(why, seq = through, bytes, took = ?took, "rule state snapshotted");
            }
            Err(e) => {
                self.metrics.rule_snapshot_failures.inc();
                tracing::warn!(why, error = %e, "rule-state snapshot failed; the previous one stays");
            }
        }
    }

    fn store_snapshot(&self, snapshot: &Snapshot) -> rusqlite::Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match save(&self.conn, snapshot).and_then(|()| self.conn.execute_batch("COMMIT")) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}
