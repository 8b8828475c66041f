//! The single writer: group commit, decisions in journal order, pruning, the size budget.

use super::group::Group;
use super::lookup::{replay, replay_horizon, JournalLookup};
use super::schema::{meta, used_bytes};
use super::{Accepted, DeadLetter, JournalState, SubmitError};
use crate::config::{JournalConfig, OnFull};
use crate::metrics::Metrics;
use crate::rules::{Action, DecideContext, Decider, Decision};
use crate::txn::Transaction;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tillgate_sdk::ByteSize;
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

/// An answer held back until its group has committed.
enum Pending {
    Submit(oneshot::Sender<Result<Accepted, SubmitError>>, Accepted),
    DeadLetter(oneshot::Sender<Result<(), SubmitError>>),
    Shutdown(oneshot::Sender<()>),
}

/// Counted only once the group has committed.
#[derive(Default)]
struct BatchStats {
    decisions: Vec<Decision>,
    dead_letters: Vec<(String, String)>,
}

enum Recv {
    Cmd(Command),
    Timeout,
    Closed,
}

pub struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Command>,
    committed: watch::Sender<u64>,
    config: JournalConfig,
    sinks: Vec<String>,
    decider: Box<dyn Decider>,
    metrics: Metrics,
    state: Arc<JournalState>,
    next_seq: u64,
    cursors: HashMap<String, u64>,
    runtime: tokio::runtime::Handle,
    last_maintenance: Instant,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Writer {
    pub fn new(
        conn: Connection,
        rx: mpsc::Receiver<Command>,
        config: JournalConfig,
        sinks: Vec<String>,
        decider: Box<dyn Decider>,
        metrics: Metrics,
        state: Arc<JournalState>,
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
        state.used_bytes.store(used_bytes(&conn)?, Ordering::Release);
        *state.cursors.lock().unwrap_or_else(|p| p.into_inner()) = cursors.clone();
        metrics.journal_max_bytes.set(config.max_bytes.get() as i64);
        metrics.journal_last_seq.set((next_seq - 1) as i64);
        // The rules' state is rebuilt by the writer thread before its first command
        // (`run`), not here: the journal is open and the agent READY at once, however long
        // the backlog; the first transactions wait for the rebuild instead.
        state
            .replaying
            .store(replay_horizon(decider.as_ref()).is_some(), Ordering::Release);
        let (committed, _) = watch::channel(next_seq - 1);
        Ok(Writer {
            conn,
            rx,
            committed,
            config,
            sinks,
            decider,
            metrics,
            state,
            next_seq,
            cursors,
            runtime: tokio::runtime::Handle::current(),
            last_maintenance: Instant::now(),
        })
    }

    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
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

    /// Replays the rule horizon into the decider (windows, sessions, lists of what was
    /// seen). A read failure leaves the rules with the state they have, loudly.
    fn rebuild_rules(&mut self) {
        match replay(&self.conn, self.decider.as_mut()) {
            Ok((replayed, took)) => {
                self.state.replayed.store(replayed, Ordering::Release);
                self.state.replay_ms.store(took.as_millis() as u64, Ordering::Release);
                if replayed > 0 {
                    tracing::info!(transactions = replayed, took = ?took, "rule state rebuilt from the journal");
                }
            }
            Err(e) => tracing::error!(error = %e, "rule state NOT rebuilt from the journal: windows start empty"),
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
            self.commit(batch);
            if shutdown {
                break;
            }
            if self.last_maintenance.elapsed() >= self.config.prune_interval.get() {
                self.maintain();
            }
        }
        tracing::debug!("journal writer stopped");
    }

    /// One group commit: everything in `batch` becomes durable together, then is answered.
    fn commit(&mut self, batch: Vec<Command>) {
        let first_seq = self.next_seq;
        let refusal = match self.check_space() {
            Ok(r) => r,
            Err(e) => Some(format!("cannot measure the journal: {e}")),
        };
        let mut pending = Vec::with_capacity(batch.len());
        let mut stats = BatchStats::default();
        self.metrics.commit_batch_rows.observe(batch.len() as f64);
        let result = (|| -> rusqlite::Result<()> {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            let mut group = Group::new(&self.conn)?;
            for cmd in batch {
                match cmd {
                    Command::Submit { txn, reply } => {
                        if let Some(first) = group.previous(&txn.txn_id)? {
                            pending.push(Pending::Submit(
                                reply,
                                Accepted {
                                    seq: first.seq,
                                    duplicate: true,
                                    decision: first,
                                },
                            ));
                            continue;
                        }
                        if let Some(reason) = &refusal {
                            self.metrics.journal_full_refusals.inc();
                            let _ = reply.send(Err(SubmitError::Full(reason.clone())));
                            continue;
                        }
                        let seq = self.next_seq;
                        let lookup = JournalLookup(&self.conn);
                        let cx = DecideContext {
                            seq,
                            lookup: &lookup,
                            replaying: false,
                        };
                        let decision = self.decider.decide(&txn, &cx);
                        let (record, used) = group.journal(&txn, seq, &decision)?;
                        self.next_seq += used;
                        stats.decisions.push(decision);
                        let accepted = Accepted {
                            seq,
                            duplicate: false,
                            decision: record,
                        };
                        pending.push(Pending::Submit(reply, accepted));
                    }
                    Command::DeadLetter { letter, reply } => {
                        if let Some(reason) = &refusal {
                            self.metrics
                                .dead_letters_lost
                                .with_label_values(&[&letter.source])
                                .inc();
                            let _ = reply.send(Err(SubmitError::Full(reason.clone())));
                            continue;
                        }
                        self.conn
                            .prepare_cached(
                                "INSERT INTO dead_letters(received_ms, source, reason, raw) VALUES (?1, ?2, ?3, ?4)",
                            )?
                            .execute(params![now_ms(), letter.source, letter.reason, letter.raw])?;
                        stats.dead_letters.push((letter.source, letter.reason));
                        pending.push(Pending::DeadLetter(reply));
                    }
                    Command::Advance { sink, seq } => {
                        self.conn
                            .prepare_cached(
                                "INSERT INTO cursors(sink, seq, updated_ms) VALUES (?1, ?2, ?3)
                                 ON CONFLICT(sink) DO UPDATE SET seq = MAX(seq, excluded.seq), updated_ms = excluded.updated_ms",
                            )?
                            .execute(params![sink, seq as i64, now_ms()])?;
                        let c = self.cursors.entry(sink).or_insert(0);
                        *c = (*c).max(seq);
                    }
                    Command::Shutdown { reply } => pending.push(Pending::Shutdown(reply)),
                    Command::Ping { reply } => drop(reply.send(())),
                    Command::Reload { mut decider, reply } => {
                        // Replay sees this group's rows so far: the new rules start exactly
                        // where the old ones stand.
                        match replay(&self.conn, decider.as_mut()) {
                            Ok((n, took)) => {
                                tracing::info!(transactions = n, took = ?took, "rules reloaded; state rebuilt from the journal");
                                self.decider = decider;
                                let _ = reply.send(Ok(n));
                            }
                            Err(e) => drop(reply.send(Err(format!("replay failed: {e}")))),
                        }
                    }
                }
            }
            if self.next_seq != first_seq {
                self.conn
                    .prepare_cached(
                        "INSERT INTO meta(key, value) VALUES ('next_seq', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute([self.next_seq as i64])?;
            }
            drop(group);
            let t = Instant::now();
            self.conn.execute_batch("COMMIT")?;
            self.metrics.commit_seconds.observe(t.elapsed().as_secs_f64());
            Ok(())
        })();

        if let Err(e) = result {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.next_seq = first_seq;
            tracing::error!(error = %e, "journal commit failed; the group was answered with 503");
            // The rules saw this group's transactions, the journal does not have them:
            // rebuild their state from what is journaled, as a restart would.
            self.decider.reset();
            if let Err(e) = replay(&self.conn, self.decider.as_mut()) {
                tracing::error!(error = %e, "rule state could not be rebuilt after a failed commit");
            }
            let msg = e.to_string();
            for p in pending {
                match p {
                    Pending::Submit(reply, _) => drop(reply.send(Err(SubmitError::Storage(msg.clone())))),
                    Pending::DeadLetter(reply) => drop(reply.send(Err(SubmitError::Storage(msg.clone())))),
                    Pending::Shutdown(reply) => drop(reply.send(())),
                }
            }
            return;
        }

        self.publish(stats);
        for p in pending {
            match p {
                Pending::Submit(reply, accepted) => drop(reply.send(Ok(accepted))),
                Pending::DeadLetter(reply) => drop(reply.send(Ok(()))),
                Pending::Shutdown(reply) => drop(reply.send(())),
            }
        }
    }

    /// After a commit: counters, cursors and the committed watermark.
    fn publish(&mut self, stats: BatchStats) {
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
        for (source, reason) in &stats.dead_letters {
            self.metrics
                .dead_letters
                .with_label_values(&[source, reason_class(reason)])
                .inc();
        }
        *self.state.cursors.lock().unwrap_or_else(|p| p.into_inner()) = self.cursors.clone();
        let last = self.next_seq - 1;
        self.state.last_seq.store(last, Ordering::Release);
        self.metrics.journal_last_seq.set(last as i64);
        self.committed.send_replace(last);
    }

    /// `None` when there is room; otherwise why input is refused. Evicts when configured.
    fn check_space(&mut self) -> rusqlite::Result<Option<String>> {
        let max = self.config.max_bytes.get();
        let mut used = used_bytes(&self.conn)?;
        self.state.used_bytes.store(used, Ordering::Release);
        self.metrics.journal_bytes.set(used as i64);
        if used < max {
            self.state.full.store(false, Ordering::Release);
            return Ok(None);
        }
        if self.config.on_full == OnFull::EvictOldest {
            // Make room for a while, not one batch: 10 % under the budget.
            while used >= max - max / 10 {
                let evicted = self.conn.execute(
                    "DELETE FROM records WHERE seq IN (SELECT seq FROM records ORDER BY seq LIMIT 1000)",
                    [],
                )? as u64;
                self.conn.execute(
                    "DELETE FROM txn_ids WHERE seq IN (SELECT seq FROM txn_ids ORDER BY seq LIMIT 1000)",
                    [],
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
                used = used_bytes(&self.conn)?;
            }
            self.state.used_bytes.store(used, Ordering::Release);
            if used < max {
                return Ok(None);
            }
        }
        self.state.full.store(true, Ordering::Release);
        let slowest = self
            .sinks
            .iter()
            .map(|s| (s.as_str(), self.cursors.get(s).copied().unwrap_or(0)))
            .min_by_key(|(_, c)| *c);
        let behind = match slowest {
            Some((sink, cursor)) => format!(
                "; sink `{sink}` has not acknowledged {} records yet",
                (self.next_seq - 1).saturating_sub(cursor)
            ),
            None => String::new(),
        };
        Ok(Some(format!(
            "journal full: {} of {} (journal.max_bytes) in use{behind}; new transactions are refused until \
             the sinks catch up (check the uplink) or journal.max_bytes is raised",
            ByteSize(used),
            ByteSize(max),
        )))
    }

    /// Prunes rows every sink has passed and retention allows; expires idempotency keys
    /// and dead letters.
    fn maintain(&mut self) {
        self.last_maintenance = Instant::now();
        if let Err(e) = self.prune() {
            tracing::warn!(error = %e, "journal pruning failed; will retry");
        }
        if let Ok(used) = used_bytes(&self.conn) {
            self.state.used_bytes.store(used, Ordering::Release);
            self.metrics.journal_bytes.set(used as i64);
        }
    }

    fn prune(&mut self) -> rusqlite::Result<()> {
        let now = now_ms();
        let passed = self
            .sinks
            .iter()
            .map(|s| self.cursors.get(s).copied().unwrap_or(0))
            .min()
            .unwrap_or(u64::MAX);
        let passed = passed.min(self.next_seq - 1) as i64;
        // Rows the rules would replay after a restart are kept even when shipped.
        let keep = replay_horizon(self.decider.as_ref())
            .unwrap_or_default()
            .max(self.config.retention.get());
        let cutoff = now - keep.as_millis() as i64;
        // Received order and seq order agree closely; the first young row bounds the delete.
        let young: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM records WHERE seq <= ?1 AND received_ms >= ?2 ORDER BY seq LIMIT 1",
                params![passed, cutoff],
                |r| r.get(0),
            )
            .optional()?;
        let upto = young.map_or(passed, |y| y - 1);
        const CHUNK: i64 = 50_000;
        let first: i64 = self
            .conn
            .query_row("SELECT COALESCE(MIN(seq), 0) FROM records", [], |r| r.get(0))?;
        let pruned = self
            .conn
            .execute("DELETE FROM records WHERE seq <= ?1", [upto.min(first + CHUNK)])?;
        self.metrics.journal_pruned.inc_by(pruned as u64);

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
        self.conn
            .execute("DELETE FROM dead_letters WHERE received_ms < ?1", [dl_cutoff])?;
        Ok(())
    }
}

/// What a dead-letter reason is, for a bounded metrics label.
fn reason_class(reason: &str) -> &'static str {
    if reason.contains("full card number") {
        "pan"
    } else if reason.contains("malformed JSON") || reason.contains("expected a JSON object") {
        "malformed"
    } else if reason.contains("bytes; the limit") || reason.contains("body exceeds") {
        "too_large"
    } else {
        "invalid"
    }
}
