//! The pipeline between COMMIT and the answers (`durable.rs`), driven through a sync
//! that the test opens and closes: no answer, no watermark and nothing for the sinks
//! before its group's sync; the writer writes the next group meanwhile; after a failed
//! sync nothing is acknowledged and the journal reports itself failed.

use super::durable::SyncFn;
use super::*;
use crate::config::JournalConfig;
use crate::rules::{Engine, RulePack};
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

fn txn(id: &str) -> Transaction {
    let raw = format!(
        r#"{{"txn_id":"{id}","store_id":"s1","terminal_id":"p1","occurred_at":"{}","type":"sale","total_minor":100,"currency":"USD"}}"#,
        chrono::Utc::now().to_rfc3339(),
    );
    crate::txn::parse(raw.as_bytes(), chrono::Utc::now()).unwrap()
}

/// A sync that says when it is entered and returns what the test permits (the one a
/// journal makes as it opens passes at once).
struct Gate {
    entered: Receiver<()>,
    permit: Sender<std::io::Result<()>>,
}

fn gated() -> (SyncFn, Gate) {
    let (entered_tx, entered) = channel();
    let (permit, permits) = channel::<std::io::Result<()>>();
    let mut opened = false;
    let sync: SyncFn = Box::new(move || {
        if !std::mem::replace(&mut opened, true) {
            return Ok(());
        }
        let _ = entered_tx.send(());
        permits.recv().unwrap_or(Ok(()))
    });
    (sync, Gate { entered, permit })
}

impl Gate {
    /// Blocks (off the runtime) until the sync thread is inside a sync.
    async fn wait_entered(&self) {
        let entered = &self.entered;
        tokio::task::block_in_place(|| entered.recv_timeout(Duration::from_secs(60)))
            .expect("the sync thread entered a sync");
    }
}

fn open(dir: &std::path::Path, sync: SyncFn, metrics: Metrics) -> Journal {
    Journal::start(
        &dir.join("j.db"),
        &JournalConfig::default(),
        Vec::new(),
        Box::new(Engine::new(RulePack::default(), None, Duration::ZERO)),
        VideoLinks::none(),
        metrics,
        Some(sync),
    )
    .unwrap()
}

/// Whether `id` is committed in the journal, as any reader sees it.
fn committed_in_sqlite(dir: &std::path::Path, id: &str) -> bool {
    let conn = rusqlite::Connection::open(dir.join("j.db")).unwrap();
    conn.query_row("SELECT COUNT(*) FROM txn_ids WHERE txn_id = ?1", [id], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap()
        == 1
}

async fn wait_for_commit(dir: &std::path::Path, id: &str) {
    for _ in 0..6000 {
        if committed_in_sqlite(dir, id) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} was not committed within 60 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_wait_for_the_disk_while_the_writer_writes_the_next_group() {
    let dir = tempfile::tempdir().unwrap();
    let (sync, gate) = gated();
    let j = Arc::new(open(dir.path(), sync, Metrics::new()));
    let watermark = j.committed();

    let first = tokio::spawn({
        let j = j.clone();
        async move { j.submit(txn("a")).await }
    });
    gate.wait_entered().await;
    assert!(committed_in_sqlite(dir.path(), "a"), "a sync starts after its COMMIT");

    // While the disk holds the first group, the writer decides and commits the next.
    let second = tokio::spawn({
        let j = j.clone();
        async move { j.submit(txn("b")).await }
    });
    wait_for_commit(dir.path(), "b").await;
    assert!(!first.is_finished(), "a was answered before the disk confirmed it");
    assert!(!second.is_finished(), "b was answered before the disk confirmed it");
    assert_eq!(
        *watermark.borrow(),
        0,
        "sinks were told of rows the disk has not confirmed"
    );
    assert_eq!(j.last_seq(), 0);
    let read = j
        .reader()
        .unwrap()
        .read_after(0, j.last_seq(), &tillgate_sdk::Channel::ALL, 100)
        .unwrap();
    assert!(
        read.records.is_empty(),
        "a sink could read rows the disk has not confirmed"
    );
    assert_eq!(read.scanned_to, 0);

    // The first sync covers only the first group: b waits for a sync of its own.
    gate.permit.send(Ok(())).unwrap();
    let a = first.await.unwrap().expect("a acknowledged after its sync");
    gate.wait_entered().await;
    assert!(
        !second.is_finished(),
        "b was answered by a sync that began before its commit"
    );
    let told = *watermark.borrow();
    assert!(
        told >= a.seq,
        "the watermark {told} stays behind a confirmed group (a at {})",
        a.seq
    );

    gate.permit.send(Ok(())).unwrap();
    let b = second.await.unwrap().expect("b acknowledged after its sync");
    assert!(
        b.seq > told,
        "b ({}) was inside the watermark ({told}) before its sync",
        b.seq
    );
    assert!(j.last_seq() >= b.seq);
    drop(gate.permit);
    Arc::into_inner(j).expect("the only handle").close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_that_falls_behind_holds_the_writer_back_after_a_bounded_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (sync, gate) = gated();
    let j = Arc::new(open(dir.path(), sync, Metrics::new()));
    let submit = |id: String| {
        let j = j.clone();
        tokio::spawn(async move { j.submit(txn(&id)).await })
    };
    let mut answers = vec![submit("g0".into())];
    gate.wait_entered().await;
    // One group at a time: g1..g4 queue behind the sync of g0, g5 is committed and the
    // writer waits to hand it over.
    let queued = super::durable::IN_FLIGHT_GROUPS + 1;
    for i in 1..=queued {
        let id = format!("g{i}");
        answers.push(submit(id.clone()));
        wait_for_commit(dir.path(), &id).await;
    }
    let beyond = format!("g{}", queued + 1);
    answers.push(submit(beyond.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !committed_in_sqlite(dir.path(), &beyond),
        "the writer went on past a full queue to the sync thread"
    );
    drop(gate.permit);
    for a in answers {
        a.await.unwrap().expect("acknowledged once the disk caught up");
    }
    Arc::into_inner(j).expect("the only handle").close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_failed_sync_nothing_is_acknowledged_and_the_journal_reports_itself_failed() {
    let dir = tempfile::tempdir().unwrap();
    let (sync, gate) = gated();
    let metrics = Metrics::new();
    let j = Arc::new(open(dir.path(), sync, metrics.clone()));

    let first = tokio::spawn({
        let j = j.clone();
        async move { j.submit(txn("a")).await }
    });
    gate.wait_entered().await;
    gate.permit.send(Err(std::io::Error::other("EIO, injected"))).unwrap();
    let refused = first.await.unwrap().expect_err("a failed sync answered OK");
    assert!(
        matches!(refused, SubmitError::NotDurable(ref why) if why.contains("EIO, injected")),
        "{refused:?}"
    );
    assert_eq!(crate::intake::refusal_code(&refused), "not_durable");
    assert_eq!(metrics.journal_sync_failures.get(), 1);
    let why = tokio::time::timeout(Duration::from_secs(60), j.failed())
        .await
        .expect("the journal reports itself failed, so the agent ends");
    assert!(why.contains("fdatasync"), "{why}");
    assert_eq!(
        j.last_seq(),
        0,
        "the watermark moved past rows the disk did not confirm"
    );

    // Linux may have dropped the pages it could not write: a later sync cannot confirm
    // them, so a retry (or anything else) is not acknowledged either, and no sync is tried.
    let retry = j.submit(txn("a")).await.expect_err("acknowledged after a failed sync");
    assert!(matches!(retry, SubmitError::NotDurable(_)), "{retry:?}");
    let other = j.submit(txn("b")).await.expect_err("acknowledged after a failed sync");
    assert!(matches!(other, SubmitError::NotDurable(_)), "{other:?}");
    assert!(gate.entered.try_recv().is_err(), "a sync was tried after one failed");
    assert_eq!(j.last_seq(), 0);
    drop(gate.permit);
    Arc::into_inner(j).expect("the only handle").close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_is_answered_only_after_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (sync, gate) = gated();
    let j = open(dir.path(), sync, Metrics::new());
    let first = {
        let reply = j.enqueue(txn("a")).await;
        tokio::spawn(async move { reply.answer().await })
    };
    gate.wait_entered().await;
    let (reply, mut shutdown) = tokio::sync::oneshot::channel();
    j.tx.send(writer::Command::Shutdown { reply }).await.unwrap();
    gate.permit.send(Ok(())).unwrap();
    first.await.unwrap().expect("a acknowledged");
    // The shutdown's group waits for a sync of its own.
    gate.wait_entered().await;
    assert!(
        shutdown.try_recv().is_err(),
        "the shutdown was answered before its sync"
    );
    gate.permit.send(Ok(())).unwrap();
    tokio::time::timeout(Duration::from_secs(60), shutdown)
        .await
        .expect("answered after its sync")
        .unwrap();
    drop(gate.permit);
    j.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_journal_with_fsync_durability_syncs_its_wal_and_one_with_os_does_not() {
    use crate::config::Durability;
    for (durability, syncs) in [(Durability::Fsync, true), (Durability::Os, false)] {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let config = JournalConfig {
            durability,
            ..JournalConfig::default()
        };
        let j = Journal::open(
            &dir.path().join("j.db"),
            &config,
            Vec::new(),
            Box::new(Engine::new(RulePack::default(), None, Duration::ZERO)),
            VideoLinks::none(),
            metrics.clone(),
        )
        .unwrap();
        j.submit(txn("a")).await.unwrap();
        let synced = metrics.journal_sync_seconds.get_sample_count() >= 1;
        assert_eq!(synced, syncs, "{durability:?}");
        j.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_journal_syncs_what_it_finds_before_it_publishes_anything() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = calls.clone();
    let sync: SyncFn = Box::new(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    });
    let j = open(dir.path(), sync, Metrics::new());
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1, "no sync at open");
    j.close().await;
}

#[test]
fn the_wal_file_is_opened_again_when_sqlite_made_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("j.db");
    let mut wal = super::durable::WalFile::of(&journal);
    let err = wal.sync().expect_err("no WAL yet");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    std::fs::write(dir.path().join("j.db-wal"), b"first").unwrap();
    wal.sync().unwrap();
    let first = wal.inode().unwrap();
    // A new file in its place (the old one stays open here, so its inode is not reused).
    std::fs::write(dir.path().join("new"), b"second").unwrap();
    std::fs::rename(dir.path().join("new"), dir.path().join("j.db-wal")).unwrap();
    wal.sync().unwrap();
    assert_ne!(wal.inode(), Some(first), "the old file's descriptor was synced");
    let now = std::fs::metadata(dir.path().join("j.db-wal")).unwrap().ino();
    assert_eq!(wal.inode(), Some(now));
}
