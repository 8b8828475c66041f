//! Reading journaled transactions back: original sales for returns, and the replay that
//! rebuilds rule state at start and on reload.

use crate::rules::{DecideContext, Decider, OriginalLookup};
use crate::txn::{from_journal, Transaction, CLOCK_SKEW_LIMIT_SECS};
use rusqlite::{Connection, OptionalExtension};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Original sales, looked up by txn_id in the journal (committed or in this group).
pub struct JournalLookup<'c>(pub &'c Connection);

impl OriginalLookup for JournalLookup<'_> {
    fn original(&self, txn_id: &str) -> Option<Transaction> {
        let body: Option<Vec<u8>> = self
            .0
            .prepare_cached("SELECT r.body FROM txn_ids t JOIN records r ON r.seq = t.seq WHERE t.txn_id = ?1")
            .ok()?
            .query_row([txn_id], |r| r.get(0))
            .optional()
            .ok()?;
        body.and_then(|b| from_journal(&b))
    }
}

/// How much journal, in received time, a decider's replay needs: its span plus twice the
/// clock-skew limit (event time may trail received time by that much).
pub fn replay_horizon(decider: &dyn Decider) -> Option<Duration> {
    decider
        .replay_span()
        .map(|s| s + Duration::from_secs(2 * CLOCK_SKEW_LIMIT_SECS as u64))
}

/// Feeds the journal's recent transactions, in journal order, through `decider` so its
/// state is what it was before the restart. Returns (transactions, time taken).
pub fn replay(conn: &Connection, decider: &mut dyn Decider, progress: &AtomicU64) -> rusqlite::Result<(u64, Duration)> {
    let started = Instant::now();
    let Some(horizon) = replay_horizon(decider) else {
        return Ok((0, started.elapsed()));
    };
    let from_ms = chrono::Utc::now().timestamp_millis() - horizon.as_millis() as i64;
    // Received order and seq order agree closely: start at the first young row.
    let first: Option<i64> = conn
        .query_row(
            "SELECT seq FROM records WHERE received_ms >= ?1 ORDER BY seq LIMIT 1",
            [from_ms],
            |r| r.get(0),
        )
        .optional()?;
    let Some(first) = first else {
        return Ok((0, started.elapsed()));
    };
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
    Ok((n, started.elapsed()))
}
