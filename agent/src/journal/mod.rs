//! The journal: the spine of the agent.
//!
//! One writer thread owns the SQLite connection and commits in groups; a transaction is
//! answered only after its group has committed and the disk confirmed it (invariant 1;
//! `durable.rs`, which syncs one group while the writer writes the next). Records leave only when
//! every sink's cursor has passed them and retention allows (invariant 2). Readers
//! (sink runners, status) open their own read-only connections: WAL lets them read while
//! the writer commits.
//!
//! **API boundary**: nothing outside this module sees a `rusqlite::Connection`.

mod budget;
mod checkpoint;
mod durable;
mod group;
mod lookup;
mod reader;
mod rebuild;
mod records;
mod schema;
mod snapshot_store;
mod snapshots;
mod video_links;
mod writer;

pub use reader::{Backlog, DeadLetterRow, JournalReader, ReadBatch, Sale};
pub use records::{AlertRecord, DecisionRecord};
pub use video_links::{VideoLinks, VideoLocation};

use crate::config::JournalConfig;
use crate::metrics::Metrics;
use crate::rules::Decider;
use crate::txn::{RejectionClass, Transaction};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};
use writer::{Command, Writer};

pub use budget::DEAD_LETTER_HEAD;

/// A rejected input, kept for diagnosis.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// `http`, `mqtt`, ...
    pub source: String,
    /// What kind of rejection (a bounded metrics label).
    pub class: RejectionClass,
    /// The specific reason, as answered to the client (never a card number).
    pub reason: String,
    /// The input's first [`DEAD_LETTER_HEAD`] bytes, card numbers masked by the caller.
    pub raw: Vec<u8>,
    /// How large the input was.
    pub size: usize,
}

/// A journaled transaction's answer.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The transaction's journal sequence number.
    pub seq: u64,
    /// True when this txn_id was seen before: `decision` is the first one.
    pub duplicate: bool,
    /// The decision record as journaled; for a duplicate, the first one.
    pub decision: Arc<DecisionRecord>,
}

/// A queued transaction's answer, to be awaited: see [`Journal::enqueue`].
#[derive(Debug)]
pub struct PendingAnswer(Option<oneshot::Receiver<Result<Accepted, SubmitError>>>);

impl PendingAnswer {
    /// Waits for the commit (or refusal) of the queued transaction.
    pub async fn answer(self) -> Result<Accepted, SubmitError> {
        match self.0 {
            Some(rx) => rx.await.unwrap_or(Err(SubmitError::Closed)),
            None => Err(SubmitError::Closed),
        }
    }
}

/// Why a transaction was not journaled.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    /// The size budget is used up and `on_full = "refuse"`.
    #[error("{0}")]
    Full(String),
    /// The agent is shutting down.
    #[error("the agent is shutting down; retry against it after restart")]
    Closed,
    /// The filesystem holding the journal has no room left (SQLITE_FULL).
    #[error("{0}")]
    DiskFull(String),
    /// SQLite failed (disk error); the transaction was not journaled.
    #[error("journal write failed: {0}")]
    Storage(String),
    /// Committed, but the fdatasync that makes it durable failed: not acknowledged.
    #[error("journal write not confirmed by the disk: {0}")]
    NotDurable(String),
}

/// Errors opening the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite refused to open or migrate the file.
    #[error("cannot open journal {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    /// The data directory could not be created.
    #[error("cannot create {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
}

/// State the writer publishes for status and readers.
#[derive(Debug, Default)]
pub struct JournalState {
    /// Highest sequence number committed and confirmed by the disk (with `durability =
    /// "fsync"`; committed with "os"): what sinks may read up to.
    pub last_seq: AtomicU64,
    /// Bytes counted against `journal.max_bytes` after the last commit (database pages
    /// in use and the WAL, dead letters excluded).
    pub used_bytes: AtomicU64,
    /// The WAL file's size.
    pub wal_bytes: AtomicU64,
    /// Bytes of dead letters (their own budget, `journal.dead_letter_max_bytes`).
    pub dead_letter_bytes: AtomicU64,
    /// Rows evicted unsent, ever (persisted).
    pub evicted: AtomicU64,
    /// The budget is used up right now.
    pub full: AtomicBool,
    /// Each sink's acknowledged position.
    pub cursors: Mutex<HashMap<String, u64>>,
    /// Transactions replayed into the rules at open, and how long it took (ms).
    pub replayed: AtomicU64,
    pub replay_ms: AtomicU64,
    /// The snapshot the start restored the rules from (its sequence; 0: none).
    pub restored_from_snapshot: AtomicU64,
    /// The writer is rebuilding rule state (after READY, or for a rule reload:
    /// transactions wait for it).
    pub replaying: AtomicBool,
    /// Grows with every group and every few replayed transactions: the watchdog's sign
    /// that the writer is working even when a ping waits behind a long replay.
    pub progress: AtomicU64,
}

/// The checkpoint thread and the way to stop it.
type Checkpointer = (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>);

/// Handle to the journal; cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    tx: mpsc::Sender<Command>,
    committed: watch::Receiver<u64>,
    state: Arc<JournalState>,
    path: PathBuf,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    checkpointer: Arc<Mutex<Option<Checkpointer>>>,
    /// Set (with the reason) when the writer thread ended without being asked to, or
    /// the disk did not confirm a write (a failed fdatasync, `durable.rs`).
    failed: watch::Receiver<Option<String>>,
}

impl Journal {
    /// Opens the journal at `path` and starts its writer. `sinks` are the configured
    /// sink names: only their cursors hold rows back from pruning. `video` says which
    /// cameras' video rule-hit alerts point at.
    pub fn open(
        path: &Path,
        config: &JournalConfig,
        sinks: Vec<String>,
        decider: Box<dyn Decider>,
        video: VideoLinks,
        metrics: Metrics,
    ) -> Result<Journal, JournalError> {
        let sync: Option<durable::SyncFn> = match config.durability {
            crate::config::Durability::Fsync => {
                let mut wal = durable::WalFile::of(path);
                Some(Box::new(move || wal.sync()))
            }
            crate::config::Durability::Os => None,
        };
        Self::start(path, config, sinks, decider, video, metrics, sync)
    }

    /// [`Journal::open`] with the sync that confirms each group (`None`: answer at once).
    pub(crate) fn start(
        path: &Path,
        config: &JournalConfig,
        sinks: Vec<String>,
        decider: Box<dyn Decider>,
        video: VideoLinks,
        metrics: Metrics,
        sync: Option<durable::SyncFn>,
    ) -> Result<Journal, JournalError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| JournalError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let opened = |source| JournalError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = schema::open_writer(path, config.max_bytes.get()).map_err(opened)?;
        let state = Arc::new(JournalState::default());
        let (tx, rx) = mpsc::channel(config.max_batch_rows * 4);
        let (failed_tx, failed) = watch::channel(None);
        let failed_tx = Arc::new(failed_tx);
        let writer = Writer::new(
            conn,
            path.to_path_buf(),
            rx,
            config.clone(),
            sinks,
            decider,
            video,
            metrics,
            state.clone(),
            sync,
            failed_tx.clone(),
        )
        .map_err(opened)?;
        let committed = writer.committed();
        let caught_up = writer.wal_caught_up();
        let handle = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || {
                // A writer that dies takes every future answer with it: the agent must
                // end (and systemd restart it), not answer 503 forever.
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || writer.run()));
                if let Err(panic) = run {
                    let why = panic_message(panic.as_ref());
                    tracing::error!(panic = %why, "the journal writer died");
                    failed_tx.send_replace(Some(why));
                }
            })
            .map_err(|source| JournalError::Dir {
                path: path.to_path_buf(),
                source,
            })?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let full = config.durability == crate::config::Durability::Fsync;
        let checkpoint_path = path.to_path_buf();
        let wal_limit = schema::wal_limit(config.max_bytes.get());
        let checkpointer = std::thread::Builder::new()
            .name("journal-checkpoint".into())
            .spawn(move || checkpoint::run(&checkpoint_path, full, wal_limit, caught_up, stopped))
            .map_err(|source| JournalError::Dir {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Journal {
            tx,
            committed,
            state,
            path: path.to_path_buf(),
            writer: Arc::new(Mutex::new(Some(handle))),
            checkpointer: Arc::new(Mutex::new(Some((stop, checkpointer)))),
            failed,
        })
    }

    /// Resolves with the reason if the writer thread or the sync thread dies (a panic),
    /// or an fdatasync of the WAL fails: nothing can be acknowledged any more.
    pub async fn failed(&self) -> String {
        let mut rx = self.failed.clone();
        let seen = rx.wait_for(Option::is_some).await.map(|why| why.clone());
        match seen {
            Ok(why) => why.unwrap_or_default(),
            // The sender is gone: the writer ended as asked (a panic sets a reason first).
            Err(_) => std::future::pending().await,
        }
    }

    /// Journals `txn`, decides it, and answers once the decision is durable.
    pub async fn submit(&self, txn: Transaction) -> Result<Accepted, SubmitError> {
        self.submit_many(vec![txn])
            .await
            .pop()
            .expect("one answer per transaction")
    }

    /// Queues `txn` behind everything submitted before it (so inputs from one ordered
    /// source are journaled in their order) and returns the wait for its answer.
    pub async fn enqueue(&self, txn: Transaction) -> PendingAnswer {
        let (reply, rx) = oneshot::channel();
        let sent = self
            .tx
            .send(Command::Submit {
                txn: Box::new(txn),
                reply,
            })
            .await
            .is_ok();
        PendingAnswer(sent.then_some(rx))
    }

    /// Journals many transactions; they share group commits. Answers are in input order.
    pub async fn submit_many(&self, txns: Vec<Transaction>) -> Vec<Result<Accepted, SubmitError>> {
        let mut waiting = Vec::with_capacity(txns.len());
        for txn in txns {
            waiting.push(self.enqueue(txn).await);
        }
        let mut out = Vec::with_capacity(waiting.len());
        for pending in waiting {
            out.push(pending.answer().await);
        }
        out
    }

    /// Stores a dead letter (its first [`DEAD_LETTER_HEAD`] bytes); returns once it is
    /// durable.
    pub async fn dead_letter(&self, mut letter: DeadLetter) -> Result<(), SubmitError> {
        letter.raw.truncate(DEAD_LETTER_HEAD);
        letter.reason = crate::txn::cut(&letter.reason, crate::txn::MAX_REASON_BYTES);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::DeadLetter { letter, reply })
            .await
            .map_err(|_| SubmitError::Closed)?;
        rx.await.unwrap_or(Err(SubmitError::Closed))
    }

    /// Replaces the rules: the new decider is rebuilt by replaying the journal inside the
    /// writer, then takes over from the next transaction. Returns the replayed count.
    pub async fn reload(&self, decider: Box<dyn Decider>) -> Result<u64, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Reload { decider, reply })
            .await
            .map_err(|_| "the journal is closed".to_string())?;
        rx.await.unwrap_or_else(|_| Err("the journal writer stopped".into()))
    }

    /// Resolves once the writer thread has read a command: true when it is alive and
    /// looping, false at once when it is gone.
    pub async fn ping(&self) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Ping { reply }).await.is_err() {
            return false;
        }
        rx.await.is_ok()
    }

    /// Records that `sink` has acknowledged everything up to `seq`. Committed with the
    /// next group; a crash before that only re-sends (at-least-once).
    pub async fn advance(&self, sink: &str, seq: u64) {
        let _ = self
            .tx
            .send(Command::Advance {
                sink: sink.to_string(),
                seq,
            })
            .await;
    }

    /// The cursor of `sink` (0 when it has never acknowledged anything).
    pub fn cursor(&self, sink: &str) -> u64 {
        self.state
            .cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sink)
            .copied()
            .unwrap_or(0)
    }

    /// Wakes when something new is committed and confirmed by the disk.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Published writer state.
    pub fn state(&self) -> &JournalState {
        &self.state
    }

    /// The last sequence number committed and confirmed by the disk (see
    /// [`JournalState::last_seq`]).
    pub fn last_seq(&self) -> u64 {
        self.state.last_seq.load(Ordering::Acquire)
    }

    /// A new read-only connection.
    pub fn reader(&self) -> rusqlite::Result<JournalReader> {
        JournalReader::open(&self.path)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the writer the way `kill -9` leaves the journal: what was committed stays,
    /// no snapshot is taken at the end. For tests and the bench, which need a crash
    /// inside one process; the last handle must be this one, or the writer goes on.
    pub async fn abandon(self) {
        let Journal {
            tx,
            writer,
            checkpointer,
            ..
        } = self;
        drop(tx);
        let handle = writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        let checkpointer = checkpointer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((stop, h)) = checkpointer {
            let _ = stop.send(());
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    /// Commits what is queued and stops the writer. Later submissions get `Closed`.
    pub async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        let checkpointer = self.checkpointer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((stop, h)) = checkpointer {
            let _ = stop.send(());
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod snapshot_store_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;

/// The text of a panic payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}
