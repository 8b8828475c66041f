//! The rule state's snapshot (table `rule_snapshots` in the snapshot file beside the
//! journal, see `snapshot_store.rs`): one row per rule and report, each with the journal
//! sequence its state holds.
//!
//! The writer encodes a unit between groups, so each row covers exactly what was
//! committed. Periodically — after `journal.rule_snapshot_transactions` transactions or
//! `journal.rule_snapshot_interval`, whichever first, if anything was decided since — it
//! is renewed **one unit at a time**: the writer encodes one unit in a gap between
//! groups and hands it to the snapshot thread, which stores it in its own SQLite
//! transaction; the next unit is encoded once that one is stored. Decisions wait for one
//! unit's encoding, never for a write. A start replays from the oldest restored unit's
//! sequence (each unit skips what it holds). At a clean stop every unit is written, one
//! transaction each, before the writer ends. A crash mid-write leaves the row as it
//! was; a row whose state no longer matches its SHA-256 is not used. The file's bytes
//! count against `journal.max_bytes`; a unit larger than a quarter of it is not encoded
//! into the file, and the snapshot thread stores none that would take all the units over
//! that quarter (either way its row is deleted, the failure counted).
//!
//! Rules whose state could not be rebuilt are never snapshotted: the rows are deleted,
//! so the next start replays the horizon instead of trusting empty windows.

use super::writer::Writer;
use crate::rules::snapshot::{state_digest, Snapshot, UnitSnapshot};
use rusqlite::{params, Connection, OptionalExtension};
use std::time::Instant;

/// When the next periodic round is due, and what is left of the current one.
#[derive(Debug)]
pub struct SnapshotClock {
    /// Transactions decided since the current (or last) round began.
    pub decided: u64,
    pub last: Instant,
    /// Units still to take in this round (taken from the back).
    pub round: Vec<String>,
    /// A round starts at the next chance (the rules were reloaded).
    pub due_now: bool,
    /// The rules' state is what the journal says (false after a failed rebuild: then
    /// nothing is snapshotted).
    pub state_valid: bool,
}

impl Default for SnapshotClock {
    fn default() -> Self {
        SnapshotClock {
            decided: 0,
            last: Instant::now(),
            round: Vec::new(),
            due_now: false,
            state_valid: true,
        }
    }
}

/// Stores `unit`, replacing its previous row (inside the caller's transaction). The
/// row is made with a zero-filled state of the unit's length, which the unit's bytes
/// then overwrite through SQLite's blob I/O: SQLite copies a bound blob, and copies it
/// again into the row it builds, so a unit of tens of MB would be in memory three times.
/// (Into a table whose state is not the last column, the journal's old one, SQLite makes
/// the zero-filled blob whole in memory first: correct, one copy.)
pub fn save(conn: &Connection, unit: &UnitSnapshot) -> rusqlite::Result<()> {
    let row: i64 = conn
        .prepare_cached(
            "INSERT INTO rule_snapshots(unit, fingerprint, through_seq, taken_ms, state, sha256) VALUES (?1, ?2, ?3, ?4, zeroblob(?5), ?6)
             ON CONFLICT(unit) DO UPDATE SET fingerprint = excluded.fingerprint, through_seq = excluded.through_seq,
                 taken_ms = excluded.taken_ms, state = excluded.state, sha256 = excluded.sha256
             RETURNING rowid",
        )?
        .query_row(
            params![
                unit.unit,
                unit.fingerprint,
                unit.through_seq as i64,
                chrono::Utc::now().timestamp_millis(),
                unit.state.len() as i64,
                state_digest(&unit.state)
            ],
            |r| r.get(0),
        )?;
    if unit.state.is_empty() {
        return Ok(());
    }
    let mut state = conn.blob_open(rusqlite::MAIN_DB, "rule_snapshots", "state", row, false)?;
    state.write_at(&unit.state, 0)
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

/// The stored snapshot, without rows whose state does not match its SHA-256; `None`
/// when there is none.
pub fn load(conn: &Connection) -> rusqlite::Result<Option<Snapshot>> {
    let rows: Vec<(UnitSnapshot, String)> = conn
        .prepare("SELECT unit, fingerprint, through_seq, state, sha256 FROM rule_snapshots WHERE through_seq >= 0")?
        .query_map([], |r| {
            Ok((
                UnitSnapshot {
                    unit: r.get(0)?,
                    fingerprint: r.get(1)?,
                    through_seq: r.get::<_, i64>(2)? as u64,
                    state: r.get(3)?,
                },
                r.get(4)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut units = Vec::with_capacity(rows.len());
    for (unit, sha256) in rows {
        if state_digest(&unit.state) == sha256 {
            units.push(unit);
        } else {
            tracing::warn!(unit = %unit.unit, "a stored rule-state snapshot is damaged (checksum); that unit is rebuilt");
        }
    }
    Ok((!units.is_empty()).then_some(Snapshot { units }))
}

/// Deletes every row (the rules' state is not to be trusted).
pub fn forget_all(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM rule_snapshots", []).map(|_| ())
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
    /// After a group (or a quiet wait): starts a round if one is due, and hands the
    /// round's next unit over once the last one is stored.
    pub(super) fn snapshot_if_due(&mut self, decided: usize) {
        self.snapshot_clock.decided += decided as u64;
        if !self.snapshot_clock.state_valid || self.snapshots.busy() {
            return;
        }
        if self.snapshot_clock.round.is_empty() {
            let clock = &self.snapshot_clock;
            let due = clock.due_now
                || (clock.decided > 0
                    && (clock.decided >= self.config.rule_snapshot_transactions.get()
                        || clock.last.elapsed() >= self.config.rule_snapshot_interval.get()));
            if !due {
                return;
            }
            let mut units = self.decider.snapshot_units();
            self.snapshots.forget_others(units.clone());
            units.reverse();
            self.snapshot_clock.round = units;
            self.snapshot_clock.decided = 0;
            self.snapshot_clock.due_now = false;
            self.snapshot_clock.last = Instant::now();
        }
        if let Some(unit) = self.snapshot_clock.round.pop() {
            self.store_unit(&unit, "periodic");
        }
    }

    /// A clean stop: every unit, now, one SQLite transaction each (one that fails
    /// does not take the others with it), each stored before the next is encoded.
    pub(super) fn snapshot_all(&mut self) {
        if !self.snapshot_clock.state_valid {
            return;
        }
        self.snapshot_clock.round.clear();
        let units = self.decider.snapshot_units();
        self.snapshots.forget_others(units.clone());
        for unit in units {
            self.snapshots.flush();
            self.store_unit(&unit, "shutdown");
        }
        self.snapshots.flush();
    }

    /// The rules' state could not be rebuilt: it is not snapshotted, and the stored
    /// rows go, so a start replays the horizon instead.
    pub(super) fn distrust_rule_state(&mut self) {
        self.snapshot_clock.state_valid = false;
        self.snapshot_clock.round.clear();
        self.snapshots.forget_all();
    }

    /// Encodes `unit` as of the last committed transaction and hands it to the snapshot
    /// thread (`snapshot_store.rs`). Decisions wait for the encoding only. A failure is
    /// logged and counted, and the unit's old row deleted (a row left behind would hold
    /// the replay's start back).
    fn store_unit(&mut self, unit: &str, why: &'static str) {
        let started = Instant::now();
        let through = self.next_seq - 1;
        let limit = self.config.max_bytes.get() / 4;
        let handed = match self.decider.snapshot_unit(unit, through) {
            Err(e) => Err(format!("the rules' state could not be encoded: {e}")),
            Ok(None) => Ok(()),
            Ok(Some(u)) if u.state.len() as u64 > limit => Err(format!(
                "{} bytes, over a quarter of journal.max_bytes ({limit}): not stored",
                u.state.len()
            )),
            Ok(Some(u)) => {
                if self.snapshots.store(u, why) {
                    Ok(())
                } else {
                    Err("the snapshot thread is gone".to_string())
                }
            }
        };
        self.metrics
            .rule_snapshot_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = handed {
            self.metrics.rule_snapshot_failures.inc();
            tracing::warn!(why, unit, error = %e, "rule-state snapshot failed; the unit is rebuilt from its horizon after a restart");
            self.snapshots.forget(unit);
        }
    }
}
