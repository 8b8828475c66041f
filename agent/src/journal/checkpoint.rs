//! WAL checkpoints off the commit path, and a WAL that is started over when steady
//! writes keep it growing.
//!
//! With SQLite's automatic checkpoint, the COMMIT that crosses 1000 WAL pages copies the
//! WAL into the database file and fsyncs it, inside the writer: a terminal waiting on
//! that group sees a latency spike of several milliseconds. The writer therefore runs
//! with `wal_autocheckpoint = 0`, and this thread checkpoints from its own connection
//! (PASSIVE: it never blocks the writer or readers).
//!
//! A PASSIVE checkpoint alone does not bound the WAL. SQLite starts the WAL over from its
//! beginning only when a write begins after a checkpoint copied *every* frame; under
//! steady writes new frames arrive while it copies, so that never happens and the file
//! grows for as long as the load lasts (1 GB in 20 s at 18,000 transactions per second
//! here). So the writer, between groups, when the WAL is past its limit, checkpoints it
//! itself ([`Writer::restart_long_wal`]): no commit can arrive meanwhile, so every frame
//! is copied, and the next commit starts the WAL over and cuts the file back to
//! `journal_size_limit`. The writer's checkpoint holds every decision back, and what
//! it costs is the pages it finds left to copy (about two distinct pages per
//! transaction, 482 pages and 8–12 ms after 50 ms of writes at 5,000 txn/s: the p99 of
//! decisions). So once the WAL is past its limit this thread passes again at once,
//! each pass copying what arrived during the last, until at most [`CAUGHT_UP_FRAMES`]
//! are left; then it says so ([`WalRestart::caught_up`]) and only then does the writer
//! checkpoint. Should this thread fall behind or die, the writer checkpoints anyway once
//! the WAL is past twice its limit.

use super::budget::wal_size;
use super::schema::wal_limit;
use super::writer::Writer;
use rusqlite::Connection;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the WAL is folded back into the database.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// The least time between two of the writer's checkpoints: one that copied every frame
/// may still not start the WAL over (a reader that began before it keeps its place), and
/// the writer must not checkpoint after every group meanwhile.
const RETRY_AFTER: Duration = Duration::from_millis(20);

/// When more than this share of the WAL's limit was written since the last pass, writes
/// are steady and the next pass comes after [`BUSY_INTERVAL`]: the writer's restart then
/// finds little left to copy.
const BUSY_SHARE: u64 = 16;

/// The pause between passes while writes are steady.
const BUSY_INTERVAL: Duration = Duration::from_millis(50);

/// Past its limit, the WAL is caught up when at most this many frames are left to copy.
const CAUGHT_UP_FRAMES: i64 = 32;

/// Past its limit and not caught up: the pause between passes (a reader holding old
/// frames keeps the WAL from catching up; this keeps the thread from spinning then).
const CATCH_UP_INTERVAL: Duration = Duration::from_millis(1);

/// Runs until `stop` is signalled or dropped, then makes a last checkpoint. Sets
/// `caught_up` when the writer's checkpoint would find little left to copy.
pub fn run(path: &Path, durability_full: bool, wal_limit: u64, caught_up: Arc<AtomicBool>, stop: Receiver<()>) {
    let conn = match Connection::open(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "journal checkpointer cannot open the journal; the WAL will grow until restart");
            return;
        }
    };
    let _ = conn.pragma_update(None, "synchronous", if durability_full { "FULL" } else { "NORMAL" });
    let _ = conn.busy_timeout(Duration::from_secs(5));
    let page_size: u64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
        .map_or(4096, |p| p.max(512) as u64);
    let mut wait = INTERVAL;
    let mut pace = Pace::default();
    loop {
        let last = matches!(stop.recv_timeout(wait), Ok(()) | Err(RecvTimeoutError::Disconnected));
        // (busy, frames in the WAL, frames copied into the database)
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        }) {
            Ok((frames, copied)) => {
                let (next, done) = pace.after_pass(frames, copied, page_size, wal_limit);
                caught_up.store(done, Ordering::Release);
                wait = next;
            }
            Err(e) => {
                wait = INTERVAL;
                tracing::warn!(error = %e, "journal checkpoint failed; will retry");
            }
        }
        if last {
            return;
        }
    }
}

/// When the next pass comes, from what the last ones saw.
#[derive(Debug)]
struct Pace {
    frames_before: i64,
    copied_before: i64,
    at: Instant,
    /// Past the limit, while passes copy nothing (a reader holds old frames): doubles
    /// from [`CATCH_UP_INTERVAL`] up to [`BUSY_INTERVAL`].
    stalled: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            frames_before: 0,
            copied_before: 0,
            at: Instant::now(),
            stalled: CATCH_UP_INTERVAL,
        }
    }
}

impl Pace {
    /// The wait before the next pass, and whether the WAL is past its limit with at most
    /// [`CAUGHT_UP_FRAMES`] left to copy.
    fn after_pass(&mut self, frames: i64, copied: i64, page_size: u64, wal_limit: u64) -> (Duration, bool) {
        if frames < 0 {
            // SQLite answers -1 when another checkpoint (the writer's) holds the lock:
            // nothing was learnt; look again soon.
            return (CATCH_UP_INTERVAL.max(self.stalled), false);
        }
        // Fewer frames, or fewer copied, than before: the WAL was started over since.
        let restarted = frames < self.frames_before || copied < self.copied_before;
        let written = if restarted { frames } else { frames - self.frames_before };
        let progress = restarted || copied > self.copied_before;
        let elapsed = self.at.elapsed().max(Duration::from_millis(1));
        self.frames_before = frames;
        self.copied_before = copied;
        self.at = Instant::now();
        // As the writer measures it: the file's length (a header, then frames of a page
        // and 24 bytes each).
        let size = 32 + frames.max(0) as u64 * (page_size + 24);
        let past_limit = size > wal_limit;
        let done = frames - copied <= CAUGHT_UP_FRAMES;
        if size > 2 * wal_limit && !done {
            // Not catching up (a slow disk): the writer checkpoints now; passes back to
            // back would hold the checkpoint lock it needs.
            return (BUSY_INTERVAL, false);
        }
        if past_limit && !done {
            self.stalled = if progress {
                CATCH_UP_INTERVAL
            } else {
                (self.stalled * 2).min(BUSY_INTERVAL)
            };
            return (self.stalled, false);
        }
        self.stalled = CATCH_UP_INTERVAL;
        // Steady writes: more than a BUSY_SHARE of the limit per INTERVAL, whatever
        // the time since the last pass.
        let per_interval = written.max(0) as u64 * page_size * INTERVAL.as_millis() as u64 / elapsed.as_millis() as u64;
        let wait = if per_interval > wal_limit / BUSY_SHARE {
            BUSY_INTERVAL
        } else {
            INTERVAL
        };
        (wait, past_limit && done)
    }
}

/// When the writer last checkpointed (it waits [`RETRY_AFTER`] after that), and whether
/// the checkpoint thread has copied all but the last few frames.
#[derive(Debug, Default)]
pub struct WalRestart {
    tried: Option<Instant>,
    pub caught_up: Arc<AtomicBool>,
}

impl Writer {
    /// Between groups: when the WAL is past its limit, copies every frame into the
    /// database, so that the next commit starts the WAL over (see the module's text).
    ///
    /// A PASSIVE checkpoint from the writer's own connection: no commit can arrive while
    /// it copies, it never waits (SQLite does not call the busy handler for PASSIVE), and
    /// it waits for the checkpoint thread to have copied all but the last few frames
    /// (up to twice the limit). When that thread is mid-pass, or a reader still reads
    /// frames, not every frame is copied; it is tried again [`RETRY_AFTER`] later.
    pub(super) fn restart_long_wal(&mut self) {
        // Measured here, after the commit: the commit that follows a complete checkpoint
        // is the one that cuts the file back.
        let limit = wal_limit(self.config.max_bytes.get());
        let size = wal_size(&self.path);
        if size <= limit || self.wal_restart.tried.is_some_and(|at| at.elapsed() < RETRY_AFTER) {
            return;
        }
        if !self.wal_restart.caught_up.swap(false, Ordering::AcqRel) && size <= 2 * limit {
            return;
        }
        let started = Instant::now();
        let outcome = match self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        }) {
            Ok((0, frames, copied)) if copied == frames => "done",
            Ok(_) => "busy",
            Err(e) if matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy)) => "busy",
            Err(e) => {
                tracing::warn!(error = %e, "the journal's WAL could not be checkpointed by the writer; will retry");
                "failed"
            }
        };
        self.wal_restart.tried = Some(started);
        self.metrics
            .journal_wal_restart_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.journal_wal_restarts.with_label_values(&[outcome]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;
    const LIMIT: u64 = 16 * 1024 * 1024;
    /// Frames of a WAL just past `LIMIT`.
    const PAST: i64 = (LIMIT / (PAGE + 24)) as i64 + 10;

    #[test]
    fn past_the_limit_passes_come_at_once_until_little_is_left_then_say_so() {
        let mut pace = Pace::default();
        let (wait, caught_up) = pace.after_pass(PAST, PAST - 1_000, PAGE, LIMIT);
        assert_eq!((wait, caught_up), (CATCH_UP_INTERVAL, false));
        let (_, caught_up) = pace.after_pass(PAST + 5, PAST + 5 - CAUGHT_UP_FRAMES, PAGE, LIMIT);
        assert!(
            caught_up,
            "at most CAUGHT_UP_FRAMES left: the writer may restart the WAL"
        );
        let (_, caught_up) = pace.after_pass(PAST / 2, PAST / 2 - CAUGHT_UP_FRAMES, PAGE, LIMIT);
        assert!(!caught_up, "under the limit there is nothing to restart");
    }

    #[test]
    fn passes_that_copy_nothing_back_off_and_past_twice_the_limit_leave_the_writer_room() {
        let mut pace = Pace::default();
        pace.after_pass(PAST, PAST - 1_000, PAGE, LIMIT);
        let waits: Vec<Duration> = (0..8)
            .map(|_| pace.after_pass(PAST, PAST - 1_000, PAGE, LIMIT).0)
            .collect();
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), BUSY_INTERVAL, "{waits:?}");
        let (wait, caught_up) = pace.after_pass(3 * PAST, 3 * PAST - 1_000, PAGE, LIMIT);
        assert_eq!((wait, caught_up), (BUSY_INTERVAL, false));
    }

    #[test]
    fn a_pass_refused_while_the_writer_checkpoints_changes_nothing() {
        let mut pace = Pace::default();
        pace.after_pass(PAST, PAST - 1_000, PAGE, LIMIT);
        let (wait, caught_up) = pace.after_pass(-1, -1, PAGE, LIMIT);
        assert!(!caught_up);
        assert!(wait <= BUSY_INTERVAL);
        assert_eq!((pace.frames_before, pace.copied_before), (PAST, PAST - 1_000));
    }
}
