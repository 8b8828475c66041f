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
//! A failed fdatasync is the end of this process: Linux reports a write-back error once
//! and may drop the pages it could not write, so no later fdatasync can confirm them
//! (nor the frames after them: WAL frames are checksum-chained). That group, every group
//! waiting and every later one is answered [`SubmitError::NotDurable`], the watermark
//! stays where the disk last confirmed it, and the journal reports itself failed, so the
//! agent ends and systemd starts it again. (The restarted agent's own sync cannot see
//! that error any more: rows of those groups that SQLite finds in the WAL are taken as
//! they are.) With `durability = "os"` nothing waits: answers go at once.

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

/// Groups queued for the sync thread besides those it is syncing; the writer waits beyond.
pub const IN_FLIGHT_GROUPS: usize = 4;

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

/// Set with the reason when the journal can take nothing more (read by `Journal::failed`).
pub type FailedFlag = Arc<watch::Sender<Option<String>>>;

/// Where committed groups go to be answered.
pub struct Acknowledger {
    to_sync: Option<SyncSender<Committed>>,
    thread: Option<JoinHandle<()>>,
    /// Shared with the sync thread and kept here too, so that the watermark's sender
    /// outlives a sync thread that died (sinks waiting on it would spin otherwise).
    publisher: Arc<Publisher>,
    watermark: watch::Receiver<u64>,
}

impl Acknowledger {
    /// `sync`: `None` answers at once (the commit is as durable as it gets). Otherwise it
    /// runs once before anything is published: a process started after a kill -9 finds
    /// frames the last one committed but never synced, and sinks must not ship them
    /// before the disk has them.
    pub fn start(
        sync: Option<SyncFn>,
        last_seq: u64,
        state: Arc<JournalState>,
        metrics: Metrics,
        failed: FailedFlag,
    ) -> std::io::Result<Self> {
        let (committed, watermark) = watch::channel(last_seq);
        let publisher = Arc::new(Publisher {
            committed,
            state,
            metrics,
            failed,
        });
        let Some(mut sync) = sync else {
            return Ok(Acknowledger {
                to_sync: None,
                thread: None,
                publisher,
                watermark,
            });
        };
        sync()?;
        let (tx, rx) = sync_channel(IN_FLIGHT_GROUPS);
        let on_thread = publisher.clone();
        let thread = std::thread::Builder::new().name("journal-sync".into()).spawn(move || {
            let failed = on_thread.failed.clone();
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || run(rx, sync, &on_thread)));
            if let Err(panic) = run {
                let why = format!(
                    "the journal's sync thread died: {}",
                    super::panic_message(panic.as_ref())
                );
                tracing::error!("{why}");
                failed.send_replace(Some(why));
            }
        })?;
        Ok(Acknowledger {
            to_sync: Some(tx),
            thread: Some(thread),
            publisher,
            watermark,
        })
    }

    /// The committed watermark: moves only once the disk has the group.
    pub fn watermark(&self) -> watch::Receiver<u64> {
        self.watermark.clone()
    }

    /// Hands a committed group over; waits only when [`IN_FLIGHT_GROUPS`] are queued.
    pub fn acknowledge(&mut self, group: Committed) {
        let Some(tx) = &self.to_sync else {
            self.publisher.answer(vec![group], Ok(()));
            return;
        };
        if let Err(returned) = tx.send(group) {
            // The sync thread is gone (it panicked): nothing can confirm the group.
            let why = SubmitError::NotDurable("the journal's sync thread died".into());
            answer_each(returned.0.pending, &why, &self.publisher.metrics);
        }
    }
}

impl Drop for Acknowledger {
    /// Answers everything handed over (after its sync) before the writer ends.
    fn drop(&mut self) {
        self.to_sync.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers groups and moves the watermark.
struct Publisher {
    committed: watch::Sender<u64>,
    state: Arc<JournalState>,
    metrics: Metrics,
    failed: FailedFlag,
}

impl Publisher {
    /// After a failed sync the watermark stays where the disk last confirmed it.
    fn answer(&self, groups: Vec<Committed>, synced: Result<(), SubmitError>) {
        match synced {
            Ok(()) => {
                // The watermark first: whoever holds an answer finds `last_seq` past it.
                if let Some(last) = groups.last().map(|g| g.through) {
                    self.state.last_seq.store(last, Ordering::Release);
                    self.metrics.journal_last_seq.set(last as i64);
                    self.committed.send_replace(last);
                }
                for group in groups {
                    answer_ok(group.pending);
                }
            }
            Err(why) => {
                for group in groups {
                    answer_each(group.pending, &why, &self.metrics);
                }
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

/// Answers every pending request with `why`; a dead letter not stored is counted.
pub fn answer_each(pending: Vec<Pending>, why: &SubmitError, metrics: &Metrics) {
    for p in pending {
        match p {
            Pending::Submit(reply, _) => drop(reply.send(Err(why.clone()))),
            Pending::DeadLetter(reply, source) => {
                metrics.dead_letters_lost.with_label_values(&[&source]).inc();
                drop(reply.send(Err(why.clone())));
            }
            Pending::Shutdown(reply) => drop(reply.send(())),
        }
    }
}

/// The sync thread: takes every group waiting, one sync for all, then their answers.
/// After a failed sync nothing is synced or acknowledged again (see the module's text).
fn run(rx: Receiver<Committed>, mut sync: SyncFn, publisher: &Publisher) {
    let mut broken: Option<SubmitError> = None;
    while let Ok(first) = rx.recv() {
        let mut groups = vec![first];
        groups.extend(rx.try_iter());
        if let Some(why) = &broken {
            publisher.answer(groups, Err(why.clone()));
            continue;
        }
        let started = Instant::now();
        let synced = sync().map_err(|e| {
            publisher.metrics.journal_sync_failures.inc();
            let why = format!(
                "the disk did not confirm the journal's writes ({e}); nothing more is acknowledged \
                 until the agent restarts"
            );
            tracing::error!(groups = groups.len(), "fdatasync of the journal's WAL failed: {why}");
            publisher
                .failed
                .send_replace(Some(format!("fdatasync of the journal's WAL failed: {e}")));
            SubmitError::NotDurable(why)
        });
        publisher
            .metrics
            .journal_sync_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(why) = &synced {
            broken = Some(why.clone());
        }
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

    /// The inode of the WAL file last synced.
    #[cfg(test)]
    pub fn inode(&self) -> Option<u64> {
        self.open.as_ref().map(|(_, ino)| *ino)
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
            // As SQLite does: a filesystem that cannot open or fsync a directory is
            // used all the same (said once per WAL file).
            if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
                tracing::warn!(error = %e, dir = %dir.display(), "the journal's directory cannot be synced; going on without");
            }
            self.open = Some((file, opened));
        }
        match &self.open {
            Some((file, _)) => file.sync_data(),
            None => Ok(()),
        }
    }
}
