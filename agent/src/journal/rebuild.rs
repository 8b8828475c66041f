//! Bringing the rules' state up to date from the journal: at start, after a failed
//! commit and on reload. The state of every rule and report whose definition is
//! unchanged comes from the latest snapshot (`snapshots.rs`) and replays only the
//! journal after it; the others replay their horizon.

use super::lookup::JournalLookup;
use super::snapshots;
use crate::rules::snapshot::{Restored, Snapshot};
use crate::rules::{DecideContext, Decider};
use crate::txn::{from_journal, CLOCK_SKEW_LIMIT_SECS};
use rusqlite::{Connection, OptionalExtension};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How much journal, in received time, a decider's replay needs: its span plus twice the
/// clock-skew limit (event time may trail received time by that much).
pub fn replay_horizon(decider: &dyn Decider) -> Option<Duration> {
    decider
        .replay_span()
        .map(|s| s + Duration::from_secs(2 * CLOCK_SKEW_LIMIT_SECS as u64))
}

/// What a rebuild did.
#[derive(Debug, Default)]
pub struct Rebuilt {
    /// Transactions fed through the rules.
    pub replayed: u64,
    pub took: Duration,
    /// What came from the snapshot, when some unit did.
    pub snapshot: Option<Restored>,
}

impl Rebuilt {
    /// One line for the log.
    pub fn describe(&self) -> String {
        match &self.snapshot {
            Some(r) => format!(
                "{} of {} rules and reports restored from the snapshot (oldest at seq {}){}; {} transactions replayed in {:?}",
                r.restored.len(),
                r.restored.len() + r.rebuilt.len(),
                r.oldest.unwrap_or_default(),
                if r.rebuilt.is_empty() {
                    String::new()
                } else {
                    format!(" (rebuilt from their horizon: {})", r.rebuilt.join(", "))
                },
                self.replayed,
                self.took
            ),
            None => format!(
                "no usable snapshot; {} transactions of the horizon replayed in {:?}",
                self.replayed, self.took
            ),
        }
    }
}

/// Forgets the decider's state and rebuilds it: from the `stored` snapshot when the
/// journal still holds every row after the oldest unit it restores, then by replay.
/// `last_seq`: the journal's last sequence (a unit claiming more is not used).
pub fn rebuild(
    conn: &Connection,
    stored: rusqlite::Result<Option<Snapshot>>,
    decider: &mut dyn Decider,
    progress: &AtomicU64,
    last_seq: u64,
) -> rusqlite::Result<Rebuilt> {
    let started = Instant::now();
    decider.reset();
    let stored = match stored {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "the rule-state snapshot could not be read; replaying the horizon");
            None
        }
    };
    let stored = stored.map(|mut s| {
        s.units.retain(|u| u.through_seq <= last_seq);
        s
    });
    let mut rebuilt = rebuild_from(conn, decider, progress, stored, Some(last_seq))?;
    rebuilt.took = started.elapsed();
    Ok(rebuilt)
}

/// Restores what `snapshot` holds for the decider's unchanged units (none without one)
/// and replays the rest. With `check_tail` (the journal's last sequence), restored
/// units are kept only if the journal still holds every row after the oldest of them.
pub fn rebuild_from(
    conn: &Connection,
    decider: &mut dyn Decider,
    progress: &AtomicU64,
    snapshot: Option<Snapshot>,
    check_tail: Option<u64>,
) -> rusqlite::Result<Rebuilt> {
    let started = Instant::now();
    let mut restored = snapshot.map(|s| decider.restore(&s)).filter(|r| r.oldest.is_some());
    if let (Some(oldest), Some(last)) = (restored.as_ref().and_then(|r| r.oldest), check_tail) {
        if !snapshots::tail_intact(conn, oldest, last)? {
            tracing::warn!(
                snapshot_seq = oldest,
                "journal rows after the rule-state snapshot are gone (pruned or evicted): replaying the horizon"
            );
            decider.reset();
            restored = None;
        }
    }
    let first = first_to_replay(conn, decider, restored.as_ref())?;
    let replayed = match first {
        Some(first) => replay_from(conn, decider, progress, first)?,
        None => 0,
    };
    Ok(Rebuilt {
        replayed,
        took: started.elapsed(),
        snapshot: restored,
    })
}

/// The first row to replay: right after the snapshot's oldest unit when every unit came
/// from it, else the start of the horizon (or that row, if older). Restored units skip
/// what their snapshot holds.
fn first_to_replay(
    conn: &Connection,
    decider: &dyn Decider,
    restored: Option<&Restored>,
) -> rusqlite::Result<Option<i64>> {
    let Some(horizon) = replay_horizon(decider) else {
        return Ok(None);
    };
    let after = restored.and_then(|r| r.oldest).map(|seq| seq as i64 + 1);
    if restored.is_some_and(Restored::complete) {
        return Ok(after);
    }
    let from_ms = chrono::Utc::now().timestamp_millis() - horizon.as_millis() as i64;
    // Received order and seq order agree closely: start at the first young row.
    let young: Option<i64> = conn
        .query_row(
            "SELECT seq FROM records WHERE received_ms >= ?1 ORDER BY seq LIMIT 1",
            [from_ms],
            |r| r.get(0),
        )
        .optional()?;
    Ok(match (young, after) {
        (Some(y), Some(a)) => Some(y.min(a)),
        (y, a) => y.or(a),
    })
}

/// Feeds the journal's transactions from seq `first` on, in journal order, through
/// `decider`; returns how many.
fn replay_from(
    conn: &Connection,
    decider: &mut dyn Decider,
    progress: &AtomicU64,
    first: i64,
) -> rusqlite::Result<u64> {
    let lookup = JournalLookup(conn);
    let mut stmt = conn.prepare("SELECT seq, body FROM records WHERE seq >= ?1 AND channel = 0 ORDER BY seq")?;
    let mut rows = stmt.query([first])?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let body: Vec<u8> = row.get(1)?;
        match from_journal(&body) {
            Some(txn) => {
                decider.decide(
                    &txn,
                    &DecideContext {
                        seq: seq as u64,
                        lookup: &lookup,
                        replaying: true,
                    },
                );
                n += 1;
                progress.fetch_add(1, Ordering::Relaxed);
            }
            None => tracing::warn!(seq, "journaled transaction could not be read back; skipped in replay"),
        }
    }
    Ok(n)
}
