//! The journal's disk budget: what is counted, what makes room and in which order, and
//! what a refusal says.
//!
//! Counted against `journal.max_bytes`: the database pages in use, the WAL file and the
//! rule-state snapshot file (`snapshot_store.rs`).
//! Dead letters have a budget of their own (`journal.dead_letter_max_bytes`), so a
//! broken terminal cannot take the room valid transactions need. Room is made in this
//! order, each step counted:
//!
//! 1. every `prune_interval`, rows every sink has passed and older than `retention`;
//! 2. under pressure, shipped rows down to the rules' replay horizon, whatever
//!    `retention` says (`journal_pressure_pruned_records_total`);
//! 3. with `on_full = "evict_oldest"` only, the oldest rows, unsent ones included
//!    (`journal_evicted_records_total`, `evicted_records` in status);
//! 4. otherwise new transactions are refused (503, no acknowledgement) with the reason
//!    naming what holds the room: unsent records and their sink, shipped rows kept for
//!    the replay horizon, or a WAL a reader holds.
//!
//! Dead letters keep at most [`DEAD_LETTER_HEAD`] bytes of the input; over their cap
//! the oldest go first (`dead_letters_evicted_total`), and past
//! `dead_letter_retention` they are pruned.

use super::rebuild::replay_horizon;
use super::schema::used_bytes;
use super::snapshot_store;
use super::writer::Writer;
use crate::config::OnFull;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tillgate_sdk::ByteSize;

/// The most of a rejected input a dead letter keeps.
pub const DEAD_LETTER_HEAD: usize = 64 * 1024;

/// What one dead-letter row is counted as besides its reason and raw bytes.
const DEAD_LETTER_ROW: u64 = 64;

/// Rows deleted per statement when making room (short statements keep the WAL small).
const CHUNK: i64 = 1_000;

/// How long a refusal's reason is reused before it is measured again.
const REASON_TTL: Duration = Duration::from_secs(1);

/// The bytes a dead letter is counted as.
pub fn dead_letter_size(reason: &str, raw: &[u8]) -> u64 {
    (reason.len() + raw.len()) as u64 + DEAD_LETTER_ROW
}

/// The bytes every stored dead letter is counted as.
pub fn stored_dead_letter_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn.query_row(
        "SELECT COALESCE(SUM(octet_length(reason) + length(raw)), 0) + COUNT(*) * ?1 FROM dead_letters",
        [DEAD_LETTER_ROW as i64],
        |r| r.get(0),
    )?;
    Ok(n.max(0) as u64)
}

/// The WAL file's size (0 when there is none).
pub fn wal_size(journal: &Path) -> u64 {
    let mut wal = journal.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(Path::new(&wal)).map_or(0, |m| m.len())
}

/// A refusal's reason, measured at most once per [`REASON_TTL`].
#[derive(Debug, Default)]
pub struct FullReason {
    text: Option<(Instant, String)>,
}

impl Writer {
    /// Pages in use minus dead letters: what the loops that make room watch (their own
    /// deletes grow the WAL until the next checkpoint, so the WAL is left out there).
    fn pages_counted(&self) -> rusqlite::Result<u64> {
        Ok(used_bytes(&self.conn)?.saturating_sub(self.dead_letters.bytes))
    }

    /// Measures what counts against `journal.max_bytes` and publishes it.
    pub(super) fn measure(&mut self) -> rusqlite::Result<u64> {
        let pages = self.pages_counted()?;
        let wal = wal_size(&self.path);
        let used = pages + wal + snapshot_store::disk_bytes(&self.path);
        self.state.used_bytes.store(used, Ordering::Release);
        self.state.wal_bytes.store(wal, Ordering::Release);
        self.state
            .dead_letter_bytes
            .store(self.dead_letters.bytes, Ordering::Release);
        self.metrics.journal_bytes.set(used as i64);
        self.metrics.journal_wal_bytes.set(wal as i64);
        self.metrics.dead_letter_bytes.set(self.dead_letters.bytes as i64);
        Ok(used)
    }

    /// `None` when there is room; otherwise why input is refused. Makes room first.
    pub(super) fn check_space(&mut self) -> rusqlite::Result<Option<String>> {
        let max = self.config.max_bytes.get();
        let mut used = self.measure()?;
        if used < max {
            self.state.full.store(false, Ordering::Release);
            self.full_reason = FullReason::default();
            return Ok(None);
        }
        // Still full a moment after the last attempt: making room again (pruning scans,
        // a checkpoint) on every group would only slow the refusals down.
        if let Some((at, text)) = &self.full_reason.text {
            if at.elapsed() < REASON_TTL {
                return Ok(Some(text.clone()));
            }
        }
        // Make room for a while, not for one group: 10 % under the budget. Only rows can
        // go, so the pages' target leaves out what the snapshot file holds (its units take
        // at most a quarter; counted at most half, so rows are never pruned or evicted
        // below 40 % of the budget for its sake).
        let beside = snapshot_store::disk_bytes(&self.path).min(max / 2);
        let target = (max - max / 10).saturating_sub(beside);
        let pruned = self.prune_shipped_until(target)?;
        if pruned > 0 {
            self.metrics.journal_pressure_pruned.inc_by(pruned);
            tracing::debug!(
                pruned,
                "journal full: pruned shipped rows down to the rules' replay horizon (before `retention`)"
            );
        }
        if self.config.on_full == OnFull::EvictOldest {
            self.evict_oldest_until(target)?;
        }
        self.truncate_wal();
        used = self.measure()?;
        // `evict_oldest` never refuses: once the rows (and the snapshot file) are under
        // the budget, a WAL that a reader still holds is folded back by the next checkpoint.
        let evicting = self.config.on_full == OnFull::EvictOldest && self.pages_counted()? + beside < max;
        if used < max || evicting {
            self.state.full.store(false, Ordering::Release);
            return Ok(None);
        }
        self.state.full.store(true, Ordering::Release);
        if let Some((at, text)) = &self.full_reason.text {
            if at.elapsed() < REASON_TTL {
                return Ok(Some(text.clone()));
            }
        }
        let text = self.describe_full(used, max)?;
        self.full_reason.text = Some((Instant::now(), text.clone()));
        Ok(Some(text))
    }

    /// Keeps only what the rules replay after a restart (and their clock-skew margin).
    fn replay_keep(&self) -> Duration {
        replay_horizon(self.decider.as_ref()).unwrap_or_default()
    }

    /// The highest seq every configured sink has acknowledged.
    pub(super) fn shipped_upto(&self) -> i64 {
        let passed = self
            .sinks
            .iter()
            .map(|s| self.cursors.get(s).copied().unwrap_or(0))
            .min()
            .unwrap_or(u64::MAX);
        passed.min(self.next_seq - 1) as i64
    }

    /// The last seq that may be deleted as shipped when rows younger than `keep` stay.
    fn prunable_upto(&self, keep: Duration) -> rusqlite::Result<i64> {
        let passed = self.shipped_upto();
        let cutoff = chrono::Utc::now().timestamp_millis() - keep.as_millis() as i64;
        // Received order and seq order agree closely; the first young row bounds it.
        let young: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM records WHERE seq <= ?1 AND received_ms >= ?2 ORDER BY seq LIMIT 1",
                params![passed, cutoff],
                |r| r.get(0),
            )
            .optional()?;
        Ok(young.map_or(passed, |y| y - 1))
    }

    /// Deletes shipped rows (at most `limit` of them) that `keep` no longer holds.
    pub(super) fn prune_shipped(&mut self, keep: Duration, limit: i64) -> rusqlite::Result<u64> {
        let upto = self.prunable_upto(keep)?;
        let first: i64 = self
            .conn
            .query_row("SELECT COALESCE(MIN(seq), 0) FROM records", [], |r| r.get(0))?;
        let pruned = self
            .conn
            .execute("DELETE FROM records WHERE seq <= ?1", [upto.min(first + limit)])? as u64;
        self.metrics.journal_pruned.inc_by(pruned);
        Ok(pruned)
    }

    /// Step 2: expired idempotency keys, then shipped rows beyond the replay horizon,
    /// until the pages are under `target`.
    fn prune_shipped_until(&mut self, target: u64) -> rusqlite::Result<u64> {
        let cutoff = chrono::Utc::now().timestamp_millis() - self.config.idempotency_window.get().as_millis() as i64;
        self.conn
            .execute("DELETE FROM txn_ids WHERE received_ms < ?1", [cutoff])?;
        let keep = self.replay_keep();
        let mut total = 0;
        while self.pages_counted()? >= target {
            let n = self.prune_shipped(keep, CHUNK)?;
            if n == 0 {
                break;
            }
            total += n;
        }
        Ok(total)
    }

    /// Step 3 (`on_full = "evict_oldest"`): the oldest rows, unsent ones included.
    fn evict_oldest_until(&mut self, target: u64) -> rusqlite::Result<()> {
        while self.pages_counted()? >= target {
            let evicted = self.conn.execute(
                "DELETE FROM records WHERE seq IN (SELECT seq FROM records ORDER BY seq LIMIT ?1)",
                [CHUNK],
            )? as u64;
            self.conn.execute(
                "DELETE FROM txn_ids WHERE seq IN (SELECT seq FROM txn_ids ORDER BY seq LIMIT ?1)",
                [CHUNK],
            )?;
            if evicted == 0 {
                break;
            }
            let total = self.state.evicted.fetch_add(evicted, Ordering::AcqRel) + evicted;
            self.conn.execute(
                "INSERT INTO meta(key, value) VALUES ('evicted_records', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [total as i64],
            )?;
            self.metrics.journal_evicted.inc_by(evicted);
            tracing::warn!(
                evicted,
                total,
                "journal full: evicted the oldest rows, unsent ones included (on_full = \"evict_oldest\")"
            );
        }
        Ok(())
    }

    /// Folds the WAL back and cuts the file, so freed room counts as free. A reader in
    /// the middle of a read can keep part of it; the refusal then says so.
    fn truncate_wal(&self) {
        let _ = self.conn.busy_timeout(Duration::from_millis(200));
        // The checkpoint thread's own pass makes this one busy for a few milliseconds.
        for _ in 0..20 {
            match self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0))
            {
                Ok(0) => break,
                Ok(_) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    tracing::debug!(error = %e, "WAL checkpoint under pressure did not complete");
                    break;
                }
            }
        }
        let _ = self.conn.busy_timeout(Duration::from_secs(5));
    }

    /// What holds the room, in the words of the one who has to act.
    fn describe_full(&self, used: u64, max: u64) -> rusqlite::Result<String> {
        let shipped_upto = self.shipped_upto();
        let kept: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM records WHERE seq <= ?1", [shipped_upto], |r| {
                r.get(0)
            })?;
        let mut holders = Vec::new();
        let mut hint = "or journal.max_bytes is raised";
        let slowest = self
            .sinks
            .iter()
            .map(|s| (s.as_str(), self.cursors.get(s).copied().unwrap_or(0)))
            .min_by_key(|(_, c)| *c);
        if let Some((sink, cursor)) = slowest {
            let behind = (self.next_seq - 1).saturating_sub(cursor);
            if behind > 0 {
                holders.push(format!("sink `{sink}` has not acknowledged {behind} records yet"));
                hint =
                    "until the sinks catch up (check the uplink and `tillgate status`) or journal.max_bytes is raised";
            }
        }
        if kept > 0 {
            holders.push(format!(
                "{kept} shipped records are kept for the rules' replay horizon ({})",
                humantime::format_duration(Duration::from_secs(self.replay_keep().as_secs()))
            ));
        }
        let keys: i64 = self.conn.query_row("SELECT COUNT(*) FROM txn_ids", [], |r| r.get(0))?;
        if keys > 0 {
            holders.push(format!(
                "{keys} idempotency keys are kept for journal.idempotency_window ({})",
                self.config.idempotency_window
            ));
        }
        let wal = wal_size(&self.path);
        if wal > max / 4 {
            holders.push(format!(
                "the WAL holds {} (a long read keeps it from being checkpointed)",
                ByteSize(wal)
            ));
        }
        let snapshot = snapshot_store::disk_bytes(&self.path);
        if snapshot > max / 10 {
            holders.push(format!(
                "the rules' state snapshot takes {} (it grows with the rules' live keys)",
                ByteSize(snapshot)
            ));
        }
        if holders.is_empty() {
            holders.push("the database's own pages".into());
        }
        Ok(format!(
            "journal full: {} of {} (journal.max_bytes) in use: {}; new transactions are refused {hint}",
            ByteSize(used),
            ByteSize(max),
            holders.join(", "),
        ))
    }
}

/// The dead letters' own budget: heads of at most [`DEAD_LETTER_HEAD`] bytes, the oldest
/// evicted over `journal.dead_letter_max_bytes`.
#[derive(Debug)]
pub struct DeadLetterStore {
    /// What the stored dead letters are counted as.
    pub bytes: u64,
    cap: u64,
    /// Evicted in the open group; counted in metrics once it commits.
    pub evicted_in_group: u64,
}

impl DeadLetterStore {
    /// The store as the journal holds it now.
    pub fn open(conn: &Connection, cap: u64) -> rusqlite::Result<Self> {
        Ok(DeadLetterStore {
            bytes: stored_dead_letter_bytes(conn)?,
            cap,
            evicted_in_group: 0,
        })
    }

    /// Measures again after a rolled-back group.
    pub fn reload(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.bytes = stored_dead_letter_bytes(conn)?;
        self.evicted_in_group = 0;
        Ok(())
    }

    /// Writes `letter` (its head only) inside the open group, evicting the oldest dead
    /// letters first when it would not fit.
    pub fn store(&mut self, conn: &Connection, letter: &super::DeadLetter, received_ms: i64) -> rusqlite::Result<()> {
        let raw = &letter.raw[..letter.raw.len().min(DEAD_LETTER_HEAD)];
        let size = dead_letter_size(&letter.reason, raw);
        self.make_room(conn, size)?;
        conn.prepare_cached(
            "INSERT INTO dead_letters(received_ms, source, class, reason, raw, raw_bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            received_ms,
            letter.source,
            letter.class.as_str(),
            letter.reason,
            raw,
            letter.size as i64
        ])?;
        self.bytes += size;
        Ok(())
    }

    fn make_room(&mut self, conn: &Connection, size: u64) -> rusqlite::Result<()> {
        let mut evicted = 0u64;
        while self.bytes + size > self.cap {
            let oldest: Option<(i64, i64)> = conn
                .query_row(
                    "SELECT id, octet_length(reason) + length(raw) FROM dead_letters ORDER BY id LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((id, bytes)) = oldest else { break };
            conn.execute("DELETE FROM dead_letters WHERE id = ?1", [id])?;
            self.bytes = self.bytes.saturating_sub(bytes.max(0) as u64 + DEAD_LETTER_ROW);
            evicted += 1;
        }
        if evicted > 0 {
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('dead_letters_evicted', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                [evicted as i64],
            )?;
            self.evicted_in_group += evicted;
        }
        Ok(())
    }

    /// Deletes dead letters received before `cutoff_ms` (`dead_letter_retention`).
    pub fn expire(&mut self, conn: &Connection, cutoff_ms: i64) -> rusqlite::Result<()> {
        if conn.execute("DELETE FROM dead_letters WHERE received_ms < ?1", [cutoff_ms])? > 0 {
            self.bytes = stored_dead_letter_bytes(conn)?;
        }
        Ok(())
    }
}
