//! The single writer: group commit, decisions in journal order, pruning, the size budget.

use super::budget::{DeadLetterStore, FullReason};
use super::checkpoint::WalRestart;
use super::durable::{answer_each, Acknowledger, Committed, FailedFlag, Pending, SyncFn};
use super::group::Group;
use super::lookup::JournalLookup;
use super::rebuild::{rebuild, rebuild_from, replay_horizon};
use super::schema::meta;
use super::snapshot_store::SnapshotStore;
use super::snapshots::SnapshotClock;
use super::video_links::VideoLinks;
use super::{Accepted, DeadLetter, JournalState, SubmitError};
use crate::config::JournalConfig;
use crate::metrics::Metrics;
use crate::rules::snapshot::Snapshot;
use crate::rules::{Action, DecideContext, Decider, Decision};
use crate::txn::{RejectionClass, Transaction};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot, watch};

/// What the writer is asked to do.
#[derive(Debug)]
pub enum Command {
    Submit {
        txn: Box<Transaction>,
        reply: oneshot::Sender<Result<Accepted, SubmitError>>,
    },
    DeadLetter {
        letter: DeadLetter,
        reply: oneshot::Sender<Result<(), SubmitError>>,
    },
    Advance {
        sink: String,
        seq: u64,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Answered as soon as the writer reads it: the writer thread is looping (watchdog).
    Ping {
        reply: oneshot::Sender<()>,
    },
    /// Replace the decider (rule reload); it is brought up to date by replay first.
    Reload {
        decider: Box<dyn Decider>,
        reply: oneshot::Sender<Result<u64, String>>,
    },
}

/// What one group wrote: the answers it owes and what to count once it has committed.
#[derive(Default)]
struct GroupOutcome {
    pending: Vec<Pending>,
    decisions: Vec<Decision>,
    dead_letters: Vec<(String, RejectionClass)>,
}

enum Recv {
    Cmd(Command),
    Timeout,
    Closed,
}

/// The writer thread's state. Fields are visible to `budget.rs`, which holds the
/// space-making half of the writer.
pub struct Writer {
    /// Answers each group once the disk has it, while this thread goes on. First, so it
    /// is dropped (its syncs finished) before the connection: were that the last one,
    /// SQLite would delete the WAL under syncs still to come.
    acks: Acknowledger,
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    rx: mpsc::Receiver<Command>,
    pub(super) config: JournalConfig,
    pub(super) sinks: Vec<String>,
    pub(super) decider: Box<dyn Decider>,
    video: VideoLinks,
    pub(super) metrics: Metrics,
    pub(super) state: Arc<JournalState>,
    pub(super) next_seq: u64,
    pub(super) cursors: HashMap<String, u64>,
    pub(super) dead_letters: DeadLetterStore,
    pub(super) full_reason: FullReason,
    runtime: tokio::runtime::Handle,
    last_maintenance: Instant,
    pub(super) snapshot_clock: SnapshotClock,
    pub(super) snapshots: SnapshotStore,
    pub(super) wal_restart: WalRestart,
    faults: Faults,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Writer {
    #[allow(clippy::too_many_arguments)] // each is a part the writer owns from here on
    pub fn new(
        conn: Connection,
        path: PathBuf,
        rx: mpsc::Receiver<Command>,
        config: JournalConfig,
        sinks: Vec<String>,
        decider: Box<dyn Decider>,
        video: VideoLinks,
        metrics: Metrics,
        state: Arc<JournalState>,
        sync: Option<SyncFn>,
        failed: FailedFlag,
    ) -> rusqlite::Result<Self> {
        let max_record: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM records", [], |r| r.get(0))?;
        let max_txn: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM txn_ids", [], |r| r.get(0))?;
        let next_seq = (meta(&conn, "next_seq")?.max(max_record + 1).max(max_txn + 1)).max(1) as u64;
        let cursors: HashMap<String, u64> = conn
            .prepare("SELECT sink, seq FROM cursors")?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<rusqlite::Result<_>>()?;
        state.last_seq.store(next_seq - 1, Ordering::Release);
        state
            .evicted
            .store(meta(&conn, "evicted_records")? as u64, Ordering::Release);
        *state.cursors.lock().unwrap_or_else(|p| p.into_inner()) = cursors.clone();
        metrics.journal_max_bytes.set(config.max_bytes.get() as i64);
        metrics.journal_last_seq.set((next_seq - 1) as i64);
        // The rules' state is rebuilt by the writer thread before its first command
        // (`run`), not here: the journal is open and the agent READY at once, however long
        // the backlog; the first transactions wait for the rebuild instead.
        state
            .replaying
            .store(replay_horizon(decider.as_ref()).is_some(), Ordering::Release);
        let acks = Acknowledger::start(sync, next_seq - 1, state.clone(), metrics.clone(), failed).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("cannot sync the journal's WAL or start its sync thread: {e}")),
            )
        })?;
        let dead_letters = DeadLetterStore::open(&conn, config.dead_letter_max_bytes.get())?;
        let snapshots = SnapshotStore::open(
            &path,
            &conn,
            next_seq - 1,
            config.max_bytes.get() / 4,
            config.durability,
            metrics.clone(),
        );
        let mut writer = Writer {
            conn,
            path,
            rx,
            acks,
            config,
            sinks,
            decider,
            video,
            metrics,
            state,
            next_seq,
            cursors,
            dead_letters,
            full_reason: FullReason::default(),
            runtime: tokio::runtime::Handle::current(),
            last_maintenance: Instant::now(),
            snapshot_clock: SnapshotClock::default(),
            snapshots,
            wal_restart: WalRestart::default(),
            faults: Faults::from_env(),
        };
        writer.measure()?;
        Ok(writer)
    }

    pub fn committed(&self) -> watch::Receiver<u64> {
        self.acks.watermark()
    }

    /// Set by the checkpoint thread when the writer's WAL restart would be short.
    pub fn wal_caught_up(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.wal_restart.caught_up.clone()
    }

    fn recv(&mut self, wait: Duration) -> Recv {
        let rx = &mut self.rx;
        match self
            .runtime
            .block_on(async { tokio::time::timeout(wait, rx.recv()).await })
        {
            Ok(Some(c)) => Recv::Cmd(c),
            Ok(None) => Recv::Closed,
            Err(_) => Recv::Timeout,
        }
    }

    /// Rebuilds the rules' state (windows, sessions, lists of what was seen): from the
    /// snapshot and the journal after it, or the horizon. A read failure leaves the rules
    /// with the state they have, loudly.
    fn rebuild_rules(&mut self) {
        match rebuild(
            &self.conn,
            self.snapshots.load(),
            self.decider.as_mut(),
            &self.state.progress,
            self.next_seq - 1,
        ) {
            Ok(rebuilt) => {
                self.state.replayed.store(rebuilt.replayed, Ordering::Release);
                self.state
                    .replay_ms
                    .store(rebuilt.took.as_millis() as u64, Ordering::Release);
                self.state.restored_from_snapshot.store(
                    rebuilt.snapshot.as_ref().and_then(|r| r.oldest).unwrap_or(0),
                    Ordering::Release,
                );
                self.snapshot_clock.state_valid = true;
                if replay_horizon(self.decider.as_ref()).is_some() {
                    tracing::info!("rule state rebuilt from the journal: {}", rebuilt.describe());
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "rule state NOT rebuilt from the journal: windows start empty");
                self.distrust_rule_state();
            }
        }
        self.state.replaying.store(false, Ordering::Release);
    }

    pub fn run(mut self) {
        self.rebuild_rules();
        let max_rows = self.config.max_batch_rows;
        let delay = self.config.max_batch_delay.get();
        loop {
            let first = match self.recv(self.config.prune_interval.get()) {
                Recv::Cmd(c) => c,
                Recv::Timeout => {
                    self.maintain();
                    // A quiet store still gets its snapshot once the interval is up.
                    self.snapshot_if_due(0);
                    continue;
                }
                Recv::Closed => break,
            };
            let started = Instant::now();
            let mut batch = vec![first];
            while batch.len() < max_rows {
                match self.rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        let left = delay.saturating_sub(started.elapsed());
                        if left.is_zero() {
                            break;
                        }
                        match self.recv(left) {
                            Recv::Cmd(c) => batch.push(c),
                            Recv::Timeout | Recv::Closed => break,
                        }
                    }
                }
            }
            let shutdown = batch.iter().any(|c| matches!(c, Command::Shutdown { .. }));
            self.state.progress.fetch_add(1, Ordering::Relaxed);
            self.faults.before_commit();
            self.commit(batch);
            if shutdown {
                self.snapshot_all();
                break;
            }
            if self.last_maintenance.elapsed() >= self.config.prune_interval.get() {
                self.maintain();
            }
        }
        tracing::debug!("journal writer stopped");
    }

    /// One group commit: everything in `batch` is committed together, then answered once
    /// the disk has it (`durable.rs`) while this thread goes on to the next group.
    fn commit(&mut self, batch: Vec<Command>) {
        let first_seq = self.next_seq;
        let refusal = match self.check_space() {
            Ok(r) => r,
            Err(e) => Some(format!("cannot measure the journal: {e}")),
        };
        self.metrics.commit_batch_rows.observe(batch.len() as f64);
        let mut out = GroupOutcome::default();
        match self.write_group(batch, refusal.as_deref(), &mut out) {
            Ok(()) => {
                self.publish(&out);
                let decided = out.decisions.len();
                self.acks.acknowledge(Committed {
                    pending: out.pending,
                    through: self.next_seq - 1,
                });
                // After the hand-over: answers do not wait for a WAL restart or a snapshot step.
                self.restart_long_wal();
                self.snapshot_if_due(decided);
            }
            Err(e) => self.roll_back(e, first_seq, out.pending),
        }
    }

    /// Writes every command of a group inside one SQLite transaction and commits it.
    fn write_group(
        &mut self,
        batch: Vec<Command>,
        refusal: Option<&str>,
        out: &mut GroupOutcome,
    ) -> rusqlite::Result<()> {
        let first_seq = self.next_seq;
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let conn = &self.conn;
        let mut group = Group::new(conn)?;
        for cmd in batch {
            match cmd {
                Command::Submit { txn, reply } => {
                    if let Some(first) = group.previous(&txn.txn_id)? {
                        let accepted = Accepted {
                            seq: first.seq,
                            duplicate: true,
                            decision: first,
                        };
                        out.pending.push(Pending::Submit(reply, accepted));
                    } else if let Some(reason) = refusal {
                        self.metrics.journal_full_refusals.inc();
                        drop(reply.send(Err(SubmitError::Full(reason.to_string()))));
                    } else {
                        let seq = self.next_seq;
                        let lookup = JournalLookup(conn);
                        let cx = DecideContext {
                            seq,
                            lookup: &lookup,
                            replaying: false,
                        };
                        let decision = self.decider.decide(&txn, &cx);
                        let (record, used) = group.journal(&txn, seq, &decision, &self.video)?;
                        self.next_seq += used;
                        out.decisions.push(decision);
                        let accepted = Accepted {
                            seq,
                            duplicate: false,
                            decision: record,
                        };
                        out.pending.push(Pending::Submit(reply, accepted));
                    }
                }
                Command::DeadLetter { letter, reply } => {
                    // Dead letters have their own budget: a full journal still keeps them.
                    self.dead_letters.store(conn, &letter, now_ms())?;
                    out.dead_letters.push((letter.source.clone(), letter.class));
                    out.pending.push(Pending::DeadLetter(reply, letter.source));
                }
                Command::Advance { sink, seq } => advance(conn, &mut self.cursors, sink, seq)?,
                Command::Shutdown { reply } => out.pending.push(Pending::Shutdown(reply)),
                Command::Ping { reply } => drop(reply.send(())),
                Command::Reload { decider, reply } => {
                    let outcome = reload(conn, &self.state, decider, &mut self.decider, self.next_seq - 1);
                    // A round in progress named the old rules' units; the new rules'
                    // state goes to the snapshot at once, so a crash soon after the
                    // reload restores what the reload built.
                    self.snapshot_clock.round.clear();
                    self.snapshot_clock.due_now = true;
                    drop(reply.send(outcome));
                }
            }
        }
        if self.next_seq != first_seq {
            conn.prepare_cached(
                "INSERT INTO meta(key, value) VALUES ('next_seq', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )?
            .execute([self.next_seq as i64])?;
        }
        drop(group);
        let t = Instant::now();
        self.conn.execute_batch("COMMIT")?;
        self.metrics.commit_seconds.observe(t.elapsed().as_secs_f64());
        Ok(())
    }

    /// A failed group: nothing of it is durable, so nothing of it is acknowledged, and the
    /// rules forget what they saw of it (rebuilt from the journal, as a restart would).
    fn roll_back(&mut self, e: rusqlite::Error, first_seq: u64, pending: Vec<Pending>) {
        let _ = self.conn.execute_batch("ROLLBACK");
        self.next_seq = first_seq;
        let refusal = storage_error(&e, &self.path);
        tracing::error!(error = %e, "journal commit failed; the group was answered with 503");
        let stored = self.snapshots.load();
        match rebuild(
            &self.conn,
            stored,
            self.decider.as_mut(),
            &self.state.progress,
            first_seq - 1,
        ) {
            Ok(_) => self.snapshot_clock.state_valid = true,
            Err(e) => {
                tracing::error!(error = %e, "rule state could not be rebuilt after a failed commit");
                self.distrust_rule_state();
            }
        }
        if let Err(e) = self.dead_letters.reload(&self.conn) {
            tracing::warn!(error = %e, "dead letters could not be measured after a failed commit");
        }
        answer_each(pending, &refusal, &self.metrics);
    }

    /// After a commit: counters and cursors (the watermark moves once the disk has it).
    fn publish(&mut self, stats: &GroupOutcome) {
        // Counted per group, not per transaction: a label lookup per transaction shows up.
        let mut by_action = [0u64; 3];
        for d in &stats.decisions {
            by_action[d.action as usize] += 1;
            for h in &d.hits {
                let mode = if h.mode == crate::rules::Mode::Enforce {
                    "enforce"
                } else {
                    "shadow"
                };
                self.metrics.rule_hits.with_label_values(&[&h.id, mode]).inc();
            }
        }
        for (action, n) in [Action::Allow, Action::Review, Action::Block]
            .into_iter()
            .zip(by_action)
        {
            if n > 0 {
                self.metrics.decisions.with_label_values(&[action.name()]).inc_by(n);
            }
        }
        for (source, class) in &stats.dead_letters {
            self.metrics
                .dead_letters
                .with_label_values(&[source, class.as_str()])
                .inc();
        }
        if self.dead_letters.evicted_in_group > 0 {
            self.metrics
                .dead_letters_evicted
                .inc_by(self.dead_letters.evicted_in_group);
            tracing::warn!(
                evicted = self.dead_letters.evicted_in_group,
                "dead letters over journal.dead_letter_max_bytes: the oldest were deleted"
            );
            self.dead_letters.evicted_in_group = 0;
        }
        *self.state.cursors.lock().unwrap_or_else(|p| p.into_inner()) = self.cursors.clone();
    }

    /// Prunes rows every sink has passed and retention allows; expires idempotency keys
    /// and dead letters.
    fn maintain(&mut self) {
        self.last_maintenance = Instant::now();
        if let Err(e) = self.prune() {
            tracing::warn!(error = %e, "journal pruning failed; will retry");
        }
        if let Err(e) = self.measure() {
            tracing::warn!(error = %e, "journal size could not be measured");
        }
    }

    fn prune(&mut self) -> rusqlite::Result<()> {
        const CHUNK: i64 = 50_000;
        let now = now_ms();
        // Rows the rules would replay after a restart are kept even when shipped.
        let keep = replay_horizon(self.decider.as_ref())
            .unwrap_or_default()
            .max(self.config.retention.get());
        self.prune_shipped(keep, CHUNK)?;

        let idem_cutoff = now - self.config.idempotency_window.get().as_millis() as i64;
        let young: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM txn_ids WHERE received_ms >= ?1 ORDER BY seq LIMIT 1",
                [idem_cutoff],
                |r| r.get(0),
            )
            .optional()?;
        let first: i64 = self
            .conn
            .query_row("SELECT COALESCE(MIN(seq), 0) FROM txn_ids", [], |r| r.get(0))?;
        let upto = young.map_or(i64::MAX, |y| y - 1);
        self.conn
            .execute("DELETE FROM txn_ids WHERE seq <= ?1", [upto.min(first + CHUNK)])?;

        let dl_cutoff = now - self.config.dead_letter_retention.get().as_millis() as i64;
        self.dead_letters.expire(&self.conn, dl_cutoff)
    }
}

/// What a failed commit is answered with: a full disk says so and where.
fn storage_error(e: &rusqlite::Error, path: &std::path::Path) -> SubmitError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => SubmitError::DiskFull(format!(
            "the disk holding the journal ({}) is full: nothing was acknowledged; free space on it \
             (the journal's own budget, journal.max_bytes, was not reached)",
            path.parent().unwrap_or(path).display()
        )),
        _ => SubmitError::Storage(e.to_string()),
    }
}

/// Faults a test build can inject (`--features fault-injection`); nothing otherwise.
#[derive(Debug, Default)]
struct Faults {
    /// Panic before the Nth group commit (`TILLGATE_FAULT_WRITER_PANIC_AT_GROUP`).
    #[cfg(feature = "fault-injection")]
    panic_at_group: Option<u64>,
    #[cfg(feature = "fault-injection")]
    groups: u64,
}

impl Faults {
    fn from_env() -> Self {
        #[cfg(feature = "fault-injection")]
        {
            let panic_at_group = std::env::var("TILLGATE_FAULT_WRITER_PANIC_AT_GROUP")
                .ok()
                .and_then(|v| v.parse().ok());
            Faults {
                panic_at_group,
                groups: 0,
            }
        }
        #[cfg(not(feature = "fault-injection"))]
        Faults::default()
    }

    #[cfg_attr(not(feature = "fault-injection"), allow(clippy::unused_self))]
    fn before_commit(&mut self) {
        #[cfg(feature = "fault-injection")]
        {
            self.groups += 1;
            if self.panic_at_group == Some(self.groups) {
                panic!("fault injected: the journal writer dies before group {}", self.groups);
            }
        }
    }
}

/// Moves a sink's cursor forward (never back) inside the open transaction.
fn advance(conn: &Connection, cursors: &mut HashMap<String, u64>, sink: String, seq: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO cursors(sink, seq, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(sink) DO UPDATE SET seq = MAX(seq, excluded.seq), updated_ms = excluded.updated_ms",
    )?
    .execute(params![sink, seq as i64, now_ms()])?;
    let c = cursors.entry(sink).or_insert(0);
    *c = (*c).max(seq);
    Ok(())
}

/// New rules take over once their state is up to date: rules and reports whose
/// definition is unchanged carry their state over from the running rules (a snapshot in
/// memory, through `through`, this group's rows so far included); the others replay
/// their horizon, which sees this group's rows too. The new rules start exactly where
/// the old ones stand. The watchdog counts the replay's progress. On failure the running
/// rules stay.
fn reload(
    conn: &Connection,
    state: &JournalState,
    mut decider: Box<dyn Decider>,
    running: &mut Box<dyn Decider>,
    through: u64,
) -> Result<u64, String> {
    let carried = match running.snapshot(through) {
        Ok(units) => Some(Snapshot { units }),
        Err(e) => {
            tracing::warn!(error = %e, "the running rules' state could not be carried over; replaying the horizon");
            None
        }
    };
    state.replaying.store(true, Ordering::Release);
    let rebuilt = rebuild_from(conn, decider.as_mut(), &state.progress, carried, None);
    state.replaying.store(false, Ordering::Release);
    let rebuilt = rebuilt.map_err(|e| format!("replay failed: {e}"))?;
    tracing::info!("rules reloaded: {}", rebuilt.describe());
    *running = decider;
    Ok(rebuilt.replayed)
}
