//! The pipeline between COMMIT and the answers (`durable.rs`), driven through a sync
//! that the test opens and closes: no answer before its group's sync, the writer writes
//! the next group meanwhile, a failed sync is never acknowledged.

use super::durable::SyncFn;
use super::*;
use crate::config::JournalConfig;
use crate::rules::{Engine, RulePack};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

fn txn(id: &str) -> Transaction {
    let raw = format!(
        r#"{{"txn_id":"{id}","store_id":"s1","terminal_id":"p1","occurred_at":"{}","type":"sale","total_minor":100,"currency":"USD"}}"#,
        chrono::Utc::now().to_rfc3339(),
    );
    crate::txn::parse(raw.as_bytes(), chrono::Utc::now()).unwrap()
}

/// A sync that says when it is entered and returns what the test permits.
struct Gate {
    entered: Receiver<()>,
    permit: Sender<std::io::Result<()>>,
}

fn gated() -> (SyncFn, Gate) {
    let (entered_tx, entered) = channel();
    let (permit, permits) = channel::<std::io::Result<()>>();
    let sync: SyncFn = Box::new(move || {
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
async fn a_failed_sync_is_never_acknowledged_and_a_retry_gets_the_journaled_decision() {
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

    // The terminal retries: the row is in the journal, so the retry gets its decision.
    let retry = tokio::spawn({
        let j = j.clone();
        async move { j.submit(txn("a")).await }
    });
    gate.wait_entered().await;
    gate.permit.send(Ok(())).unwrap();
    let again = retry
        .await
        .unwrap()
        .expect("the retry is acknowledged after a good sync");
    assert!(again.duplicate, "the retry found the journaled transaction");
    drop(gate.permit);
    Arc::into_inner(j).expect("the only handle").close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_is_answered_after_the_sync_of_what_came_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (sync, gate) = gated();
    let j = Arc::new(open(dir.path(), sync, Metrics::new()));
    let first = tokio::spawn({
        let j = j.clone();
        async move { j.submit(txn("a")).await }
    });
    gate.wait_entered().await;
    let closing = tokio::spawn({
        let j = j.clone();
        async move { j.close().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !first.is_finished() && !closing.is_finished(),
        "answered before the sync"
    );
    // Every sync from here on succeeds: the closed gate's sender is dropped.
    gate.permit.send(Ok(())).unwrap();
    drop(gate.permit);
    first.await.unwrap().expect("a acknowledged");
    closing.await.unwrap();
}
