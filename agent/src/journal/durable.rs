//! Answers after the disk: the pipeline between a group's COMMIT and its answers.
//!
//! With `journal.durability = "fsync"` the writer commits with SQLite's
//! `synchronous=NORMAL` (a COMMIT appends the group's frames to the WAL, no fsync) and
//! hands the group's answers here. This thread fdatasyncs the WAL and only then answers
//! and moves the committed watermark the sinks follow; meanwhile the writer decides and
//! writes the next group (issue 14, item 5). One fdatasync covers every frame written
//! before it, so groups that queue here while the disk is busy share one sync.
//!
//! Written by hand because SQLite has no asynchronous commit: `synchronous=FULL` is the
//! same fdatasync of the WAL (plus the directory, once, for a new WAL file), made inside
//! COMMIT on the writer thread.
//!
//! A failed fdatasync answers its groups with [`SubmitError::NotDurable`]: their rows are
//! in the journal as SQLite sees it (a retry gets the journaled decision), but the disk
//! did not confirm them. With `durability = "os"` nothing waits: answers go at once.

use super::{Accepted, JournalState, SubmitError};
use crate::metrics::Metrics;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::{oneshot, watch};

/// Groups written but not yet confirmed by the disk, at most; the writer waits beyond.
const IN_FLIGHT_GROUPS: usize = 4;

/// An answer held back until the disk has its group.
#[derive(Debug)]
pub enum Pending {
    Submit(oneshot::Sender<Result<Accepted, SubmitError>>, Accepted),
    DeadLetter(oneshot::Sender<Result<(), SubmitError>>, String),
    Shutdown(oneshot::Sender<()>),
}

/// One committed group: what it owes and the last sequence it holds.
pub struct Committed {
    pub pending: Vec<Pending>,
    pub through: u64,
}

/// Makes what was committed durable: an fdatasync of the WAL in production.
pub type SyncFn = Box<dyn FnMut() -> std::io::Result<()> + Send>;

/// Where committed groups go to be answered.
pub struct Acknowledger {
    to_sync: Option<SyncSender<Committed>>,
    thread: Option<JoinHandle<()>>,
    /// Without a sync (`durability = "os"`), the writer answers itself.
    inline: Option<Publisher>,
    watermark: watch::Receiver<u64>,
}

impl Acknowledger {
    /// `sync`: `None` answers at once (the commit is as durable as it gets).
    pub fn start(
        sync: Option<SyncFn>,
        last_seq: u64,
        state: Arc<JournalState>,
        metrics: Metrics,
    ) -> std::io::Result<Self> {
        let (committed, watermark) = watch::channel(last_seq);
        let publisher = Publisher {
            committed,
            state,
            metrics,
        };
        let Some(sync) = sync else {
            return Ok(Acknowledger {
                to_sync: None,
                thread: None,
                inline: Some(publisher),
                watermark,
            });
        };
        let (tx, rx) = sync_channel(IN_FLIGHT_GROUPS);
        let thread = std::thread::Builder::new()
            .name("journal-sync".into())
            .spawn(move || run(rx, sync, publisher))?;
        Ok(Acknowledger {
            to_sync: Some(tx),
            thread: Some(thread),
            inline: None,
            watermark,
        })
    }

    /// The committed watermark: moves only once the disk has the group.
    pub fn watermark(&self) -> watch::Receiver<u64> {
        self.watermark.clone()
    }

    /// Hands a committed group over; waits only when [`IN_FLIGHT_GROUPS`] are unconfirmed.
    pub fn acknowledge(&mut self, group: Committed) {
        if let Some(publisher) = &self.inline {
            publisher.answer(vec![group], Ok(()));
            return;
        }
        if let Some(tx) = &self.to_sync {
            if let Err(returned) = tx.send(group) {
                // The sync thread is gone (it panicked): nothing can confirm the group.
                let why = SubmitError::NotDurable("the journal's sync thread died".into());
                answer_each(returned.0.pending, &why, None);
            }
        }
    }
}

impl Drop for Acknowledger {
    /// Answers everything handed over (after its sync) before the writer ends.
    fn drop(&mut self) {
        self.to_sync.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the journal's sync thread panicked");
            }
        }
    }
}

/// Answers groups and moves the watermark.
struct Publisher {
    committed: watch::Sender<u64>,
    state: Arc<JournalState>,
    metrics: Metrics,
}

impl Publisher {
    fn answer(&self, groups: Vec<Committed>, synced: Result<(), SubmitError>) {
        // The watermark first (whoever holds an answer finds `last_seq` past it), and
        // even after a failed sync: the rows are in the journal as readers see it, and a
        // sink that waited for them would wait for ever; what a sink ships is at least
        // once, and a retried transaction gets its journaled decision.
        if let Some(last) = groups.last().map(|g| g.through) {
            self.state.last_seq.store(last, Ordering::Release);
            self.metrics.journal_last_seq.set(last as i64);
            self.committed.send_replace(last);
        }
        for group in groups {
            match &synced {
                Ok(()) => answer_ok(group.pending),
                Err(why) => answer_each(group.pending, why, Some(&self.metrics)),
            }
        }
    }
}

fn answer_ok(pending: Vec<Pending>) {
    for p in pending {
        match p {
            Pending::Submit(reply, accepted) => drop(reply.send(Ok(accepted))),
            Pending::DeadLetter(reply, _) => drop(reply.send(Ok(()))),
            Pending::Shutdown(reply) => drop(reply.send(())),
        }
    }
}

/// Answers every pending request with `why`; a lost dead letter is counted when
/// `metrics` is given.
pub fn answer_each(pending: Vec<Pending>, why: &SubmitError, metrics: Option<&Metrics>) {
    for p in pending {
        match p {
            Pending::Submit(reply, _) => drop(reply.send(Err(why.clone()))),
            Pending::DeadLetter(reply, source) => {
                if let Some(m) = metrics {
                    m.dead_letters_lost.with_label_values(&[&source]).inc();
                }
                drop(reply.send(Err(why.clone())));
            }
            Pending::Shutdown(reply) => drop(reply.send(())),
        }
    }
}

/// The sync thread: takes every group waiting, one sync for all, then their answers.
fn run(rx: Receiver<Committed>, mut sync: SyncFn, publisher: Publisher) {
    while let Ok(first) = rx.recv() {
        let mut groups = vec![first];
        groups.extend(rx.try_iter());
        let started = Instant::now();
        let synced = sync().map_err(|e| {
            publisher.metrics.journal_sync_failures.inc();
            tracing::error!(error = %e, groups = groups.len(), "fdatasync of the journal's WAL failed: its groups were not acknowledged");
            SubmitError::NotDurable(format!(
                "the disk did not confirm the journal's write ({e}): not acknowledged; a retry returns \
                 the decision journaled for this transaction"
            ))
        });
        publisher
            .metrics
            .journal_sync_seconds
            .observe(started.elapsed().as_secs_f64());
        publisher.answer(groups, synced);
    }
}

/// The journal's WAL file, synced the way SQLite's `synchronous=FULL` syncs it.
pub struct WalFile {
    path: PathBuf,
    open: Option<(File, u64)>,
}

impl WalFile {
    /// The WAL of the journal at `journal`.
    pub fn of(journal: &Path) -> Self {
        let mut path = journal.as_os_str().to_owned();
        path.push("-wal");
        WalFile {
            path: PathBuf::from(path),
            open: None,
        }
    }

    /// fdatasync of the WAL; a WAL file new to this process (created, or made again
    /// after the last connection closed it) also gets its directory synced, once.
    pub fn sync(&mut self) -> std::io::Result<()> {
        let inode = std::fs::metadata(&self.path)?.ino();
        if self.open.as_ref().map(|(_, ino)| *ino) != Some(inode) {
            let file = File::open(&self.path)?;
            let opened = file.metadata()?.ino();
            let dir = match self.path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            File::open(dir)?.sync_all()?;
            self.open = Some((file, opened));
        }
        match &self.open {
            Some((file, _)) => file.sync_data(),
            None => Ok(()),
        }
    }
}
