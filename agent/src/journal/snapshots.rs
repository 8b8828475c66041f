//! The rule state's snapshot in the journal database (table `rule_snapshots`): one row
//! per rule and report, each with the journal sequence its state holds.
//!
//! The writer takes it between groups, so each row covers exactly what was committed.
//! Periodically — after `journal.rule_snapshot_transactions` transactions or
//! `journal.rule_snapshot_interval`, whichever first, if anything was decided since — it
//! is renewed **one unit per gap between groups**, each in its own SQLite transaction:
//! decisions wait for one unit's encoding and write, never for the whole state. A start
//! replays from the oldest row's sequence (each unit skips what it holds). At a clean
//! stop every unit is written at once. A crash mid-write leaves the row as it was. Its
//! bytes live in the journal file and count against `journal.max_bytes`.

use super::writer::Writer;
use crate::rules::snapshot::{Snapshot, UnitSnapshot};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::time::Instant;

/// When the next periodic round is due, and what is left of the current one.
#[derive(Debug)]
pub struct SnapshotClock {
    /// Transactions decided since the current (or last) round began.
    pub decided: u64,
    pub last: Instant,
    /// Units still to take in this round (taken from the back).
    pub round: Vec<String>,
    /// Stored bytes per unit, for `tillgate_rule_snapshot_bytes`.
    pub bytes: HashMap<String, usize>,
}

impl Default for SnapshotClock {
    fn default() -> Self {
        SnapshotClock {
            decided: 0,
            last: Instant::now(),
            round: Vec::new(),
            bytes: HashMap::new(),
        }
    }
}

/// Stores `unit`, replacing its previous row (inside the caller's transaction).
pub fn save(conn: &Connection, unit: &UnitSnapshot) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO rule_snapshots(unit, fingerprint, through_seq, taken_ms, state) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(unit) DO UPDATE SET fingerprint = excluded.fingerprint, through_seq = excluded.through_seq,
             taken_ms = excluded.taken_ms, state = excluded.state",
    )?
    .execute(params![
        unit.unit,
        unit.fingerprint,
        unit.through_seq as i64,
        chrono::Utc::now().timestamp_millis(),
        unit.state
    ])?;
    Ok(())
}

/// Deletes the rows of units not in `units` (rules removed or reports renamed).
pub fn forget_others(conn: &Connection, units: &[String]) -> rusqlite::Result<()> {
    let stored: Vec<String> = conn
        .prepare("SELECT unit FROM rule_snapshots")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for gone in stored.iter().filter(|u| !units.contains(u)) {
        conn.execute("DELETE FROM rule_snapshots WHERE unit = ?1", [gone])?;
    }
    Ok(())
}

/// The stored snapshot; `None` when there is none.
pub fn load(conn: &Connection) -> rusqlite::Result<Option<Snapshot>> {
    let units: Vec<UnitSnapshot> = conn
        .prepare("SELECT unit, fingerprint, through_seq, state FROM rule_snapshots WHERE through_seq >= 0")?
        .query_map([], |r| {
            Ok(UnitSnapshot {
                unit: r.get(0)?,
                fingerprint: r.get(1)?,
                through_seq: r.get::<_, i64>(2)? as u64,
                state: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok((!units.is_empty()).then_some(Snapshot { units }))
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
    /// After a group (or a quiet wait): starts a round if one is due, and takes the
    /// round's next unit.
    pub(super) fn snapshot_if_due(&mut self, decided: usize) {
        self.snapshot_clock.decided += decided as u64;
        if self.snapshot_clock.round.is_empty() {
            let clock = &self.snapshot_clock;
            let due = clock.decided > 0
                && (clock.decided >= self.config.rule_snapshot_transactions.get()
                    || clock.last.elapsed() >= self.config.rule_snapshot_interval.get());
            if !due {
                return;
            }
            let mut units = self.decider.snapshot_units();
            if let Err(e) = forget_others(&self.conn, &units) {
                tracing::warn!(error = %e, "snapshots of removed rules could not be deleted");
            }
            self.snapshot_clock.bytes.retain(|u, _| units.contains(u));
            units.reverse();
            self.snapshot_clock.round = units;
            self.snapshot_clock.decided = 0;
            self.snapshot_clock.last = Instant::now();
        }
        if let Some(unit) = self.snapshot_clock.round.pop() {
            self.store_units(Some(&unit), "periodic");
        }
    }

    /// A clean stop: every unit, now, in one SQLite transaction.
    pub(super) fn snapshot_all(&mut self) {
        self.snapshot_clock.round.clear();
        self.store_units(None, "shutdown");
    }

    /// Encodes `unit` (every unit when `None`) as of the last committed transaction and
    /// stores it in its own SQLite transaction. A failure is logged and counted; the
    /// previous rows stay.
    fn store_units(&mut self, unit: Option<&str>, why: &str) {
        let started = Instant::now();
        let through = self.next_seq - 1;
        let encoded = match unit {
            Some(u) => self.decider.snapshot_unit(u, through).map(|s| s.into_iter().collect()),
            None => self.decider.snapshot(through),
        };
        let stored = encoded
            .map_err(|e| format!("the rules' state could not be encoded: {e}"))
            .and_then(|units: Vec<UnitSnapshot>| {
                self.write_units(&units, unit.is_none())
                    .map(|()| units)
                    .map_err(|e| format!("the snapshot could not be stored: {e}"))
            });
        let took = started.elapsed();
        self.metrics.rule_snapshot_seconds.observe(took.as_secs_f64());
        match stored {
            Ok(units) => {
                for u in &units {
                    self.snapshot_clock.bytes.insert(u.unit.clone(), u.state.len());
                }
                let total: usize = self.snapshot_clock.bytes.values().sum();
                self.metrics.rule_snapshot_bytes.set(total as i64);
                tracing::debug!(why, unit, seq = through, took = ?took, "rule state snapshotted");
            }
            Err(e) => {
                self.metrics.rule_snapshot_failures.inc();
                tracing::warn!(why, unit, error = %e, "rule-state snapshot failed; the previous one stays");
            }
        }
    }

    /// Writes `units` in one SQLite transaction; `whole`: they are every unit, so the
    /// rows of any other go.
    fn write_units(&self, units: &[UnitSnapshot], whole: bool) -> rusqlite::Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let written = (|| {
            if whole {
                let names: Vec<String> = units.iter().map(|u| u.unit.clone()).collect();
                forget_others(&self.conn, &names)?;
            }
            for u in units {
                save(&self.conn, u)?;
            }
            self.conn.execute_batch("COMMIT")
        })();
        if written.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        written
    }
}
