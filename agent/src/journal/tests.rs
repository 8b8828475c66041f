use super::*;
use crate::config::{JournalConfig, OnFull};
use crate::rules::{Engine, RulePack};
use crate::txn::RejectionClass;
use tillgate_sdk::{ByteSize, Channel, HumanDuration};

fn txn(id: &str) -> Transaction {
    let raw = format!(
        r#"{{"txn_id":"{id}","store_id":"s1","terminal_id":"p1","occurred_at":"{}","type":"sale","total_minor":100,"currency":"USD","pad":"{}"}}"#,
        chrono::Utc::now().to_rfc3339(),
        "x".repeat(400)
    );
    crate::txn::parse(raw.as_bytes(), chrono::Utc::now()).unwrap()
}

fn open(dir: &std::path::Path, config: &JournalConfig, sinks: &[&str]) -> Journal {
    open_counted(dir, config, sinks, Metrics::new())
}

/// [`open`], counting in `metrics`.
fn open_counted(dir: &std::path::Path, config: &JournalConfig, sinks: &[&str], metrics: Metrics) -> Journal {
    Journal::open(
        &dir.join("j.db"),
        config,
        sinks.iter().map(|s| s.to_string()).collect(),
        Box::new(Engine::new(RulePack::default(), None, std::time::Duration::ZERO)),
        VideoLinks::none(),
        metrics,
    )
    .unwrap()
}

/// A snapshot file beside `dir`'s journal that already takes `bytes` (a table of its own).
fn snapshot_file_with_ballast(dir: &std::path::Path, bytes: usize) {
    rusqlite::Connection::open(super::snapshot_store::path_for(&dir.join("j.db")))
        .unwrap()
        .execute_batch(&format!(
            "CREATE TABLE ballast(b BLOB); INSERT INTO ballast VALUES (zeroblob({bytes}));"
        ))
        .unwrap();
}

fn fast_prune() -> JournalConfig {
    JournalConfig {
        retention: HumanDuration::secs(0),
        prune_interval: HumanDuration::millis(20),
        ..JournalConfig::default()
    }
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 2 s");
}

fn record_count(j: &Journal) -> u64 {
    j.reader().unwrap().backlog(0, &Channel::ALL).unwrap().records
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_stay_until_every_configured_sink_has_passed_them() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), &fast_prune(), &["a", "b"]);
    let seq = j.submit(txn("t1")).await.unwrap().seq;
    j.advance("a", seq + 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(record_count(&j), 2, "sink b has not passed the rows yet");
    j.advance("b", seq + 1).await;
    wait_until(|| record_count(&j) == 0).await;
    j.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sequence_numbers_are_never_reused_after_everything_is_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), &fast_prune(), &["a"]);
    let first = j.submit(txn("t1")).await.unwrap().seq;
    j.advance("a", first + 1).await;
    wait_until(|| record_count(&j) == 0).await;
    j.close().await;
    let j = open(dir.path(), &fast_prune(), &["a"]);
    let next = j.submit(txn("t2")).await.unwrap().seq;
    assert!(next > first + 1, "seq {next} reused after restart (first {first})");
    assert_eq!(j.cursor("a"), first + 1, "cursors survive a restart");
    j.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeat_gets_the_first_decision_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), &JournalConfig::default(), &["a"]);
    let first = j.submit(txn("t1")).await.unwrap();
    j.close().await;
    let j = open(dir.path(), &JournalConfig::default(), &["a"]);
    let again = j.submit(txn("t1")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);
    assert_eq!(again.decision, first.decision);
    j.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refuse_policy_answers_full_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        max_bytes: ByteSize::kib(128),
        ..JournalConfig::default()
    };
    let j = open(dir.path(), &config, &["a"]);
    let mut accepted = 0;
    let refusal = loop {
        match j.submit(txn(&format!("t{accepted}"))).await {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 10_000, "never filled");
    };
    assert!(
        matches!(&refusal, SubmitError::Full(m) if m.contains("journal.max_bytes")),
        "{refusal}"
    );
    assert_eq!(record_count(&j), accepted * 2);
    assert!(j.state().full.load(std::sync::atomic::Ordering::Acquire));
    j.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn evict_policy_deletes_oldest_unsent_rows_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        max_bytes: ByteSize::kib(128),
        on_full: OnFull::EvictOldest,
        ..JournalConfig::default()
    };
    let j = open(dir.path(), &config, &["a"]);
    for i in 0..1_000 {
        j.submit(txn(&format!("t{i}")))
            .await
            .expect("evict_oldest never refuses");
    }
    let evicted = j.state().evicted.load(std::sync::atomic::Ordering::Acquire);
    assert!(evicted > 0);
    assert_eq!(
        record_count(&j) + evicted,
        2_000,
        "every row is either kept or counted as evicted"
    );
    assert_eq!(
        j.reader().unwrap().evicted().unwrap(),
        evicted,
        "the count is persisted for status"
    );
    j.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_taking_one_channel_still_advances_past_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), &JournalConfig::default(), &["a"]);
    j.submit(txn("t1")).await.unwrap();
    j.submit(txn("t2")).await.unwrap();
    let mut r = j.reader().unwrap();
    let batch = r.read_after(0, j.last_seq(), &[Channel::Transactions], 100).unwrap();
    assert_eq!(batch.records.len(), 2);
    assert_eq!(
        batch.scanned_to,
        j.last_seq(),
        "the trailing decision row is scanned past"
    );
    let batch = r.read_after(0, j.last_seq(), &[Channel::Transactions], 1).unwrap();
    assert_eq!(
        batch.scanned_to, batch.records[0].seq,
        "a full batch stops at its last record"
    );
    j.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_delay_gathers_concurrent_transactions_into_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        max_batch_delay: HumanDuration::millis(50),
        ..JournalConfig::default()
    };
    let metrics = Metrics::new();
    let j = open_counted(dir.path(), &config, &["a"], metrics.clone());
    let before = metrics.commit_batch_rows.get_sample_count();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let j = j.clone();
        tasks.push(tokio::spawn(async move { j.submit(txn(&format!("t{i}"))).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let groups = metrics.commit_batch_rows.get_sample_count() - before;
    assert!(
        groups < 20,
        "20 transactions in {groups} commits: the delay should gather them"
    );
    assert_eq!(record_count(&j), 40);
    j.close().await;
}

/// A journal full of rows every sink has shipped does not refuse: they are pruned down
/// to the rules' replay horizon first, whatever `retention` says (the rules here replay
/// nothing), and expired idempotency keys with them.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_journal_prunes_shipped_rows_before_refusing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        max_bytes: ByteSize::kib(256),
        retention: HumanDuration::secs(24 * 3600),
        idempotency_window: HumanDuration::secs(0),
        prune_interval: HumanDuration::secs(3600),
        ..JournalConfig::default()
    };
    let metrics = Metrics::new();
    let j = open_counted(dir.path(), &config, &["a"], metrics.clone());
    for i in 0..3_000 {
        let accepted = j
            .submit(txn(&format!("t{i}")))
            .await
            .unwrap_or_else(|e| panic!("refused at {i} although everything is shipped: {e}"));
        j.advance("a", accepted.seq + 1).await;
    }
    assert!(
        metrics.journal_pressure_pruned.get() > 0,
        "rows were pruned under pressure"
    );
    assert_eq!(metrics.journal_evicted.get(), 0, "nothing unsent was evicted");
    assert!(j.state().used_bytes.load(std::sync::atomic::Ordering::Acquire) < 256 * 1024);
    j.close().await;
}

/// The snapshot file counts against the budget and only rows can go, so under pressure
/// the rows are pruned until rows and snapshot file together are under it: with 96 KiB
/// of a 256 KiB budget in the snapshot file, nothing shipped is refused. (Pruning down
/// to 90 % of the budget in rows alone left the total over it: every input refused.)
#[tokio::test(flavor = "multi_thread")]
async fn a_full_journal_prunes_rows_for_the_snapshot_file_too() {
    let dir = tempfile::tempdir().unwrap();
    snapshot_file_with_ballast(dir.path(), 96 * 1024);
    let config = JournalConfig {
        max_bytes: ByteSize::kib(256),
        idempotency_window: HumanDuration::secs(0),
        prune_interval: HumanDuration::secs(3600),
        ..JournalConfig::default()
    };
    let metrics = Metrics::new();
    let j = open_counted(dir.path(), &config, &["a"], metrics.clone());
    for i in 0..3_000 {
        let accepted = j
            .submit(txn(&format!("t{i}")))
            .await
            .unwrap_or_else(|e| panic!("refused at {i} although everything is shipped: {e}"));
        j.advance("a", accepted.seq + 1).await;
    }
    assert!(
        metrics.journal_pressure_pruned.get() > 0,
        "rows were pruned under pressure"
    );
    j.close().await;
}

/// A snapshot file near the whole budget (a budget lowered under an old one, before its
/// units are checked) costs the rows at most half of it: `evict_oldest` trims the oldest
/// rows, never all of them, and never refuses. (Leaving the file's whole size out of the
/// rows' target made it 0: every row evicted at each fill.)
#[tokio::test(flavor = "multi_thread")]
async fn a_large_snapshot_file_never_makes_evict_oldest_empty_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    snapshot_file_with_ballast(dir.path(), 3800 * 1024);
    // Large enough that eviction's steps (1,000 rows) are a small part of it.
    let config = JournalConfig {
        max_bytes: ByteSize::mib(4),
        on_full: OnFull::EvictOldest,
        durability: crate::config::Durability::Os,
        // The rows, not the idempotency keys, fill the pages.
        idempotency_window: HumanDuration::secs(0),
        ..JournalConfig::default()
    };
    let j = open(dir.path(), &config, &["a"]);
    for i in 0..8_000 {
        j.submit(txn(&format!("t{i}")))
            .await
            .expect("evict_oldest never refuses");
    }
    assert!(j.state().evicted.load(std::sync::atomic::Ordering::Acquire) > 0);
    // Half the budget (2 MiB) less a tenth for the rows: about 1,500 transactions and
    // their decisions, less a step of eviction.
    let kept = record_count(&j);
    assert!(kept >= 1_500, "only {kept} rows kept");
    j.close().await;
}

/// The refusal names what holds the room: here, a sink that has shipped nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_names_the_sink_that_holds_the_room() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        max_bytes: ByteSize::kib(128),
        ..JournalConfig::default()
    };
    let j = open(dir.path(), &config, &["kinesis-transactions"]);
    let mut i = 0;
    let refusal = loop {
        if let Err(e) = j.submit(txn(&format!("u{i}"))).await {
            break e;
        }
        i += 1;
        assert!(i < 10_000, "never filled");
    };
    let text = refusal.to_string();
    assert!(
        text.contains("sink `kinesis-transactions` has not acknowledged"),
        "{text}"
    );
    assert!(text.contains("until the sinks catch up"), "{text}");
    j.close().await;
}

/// The WAL is counted in the budget, and a checkpoint cuts it back.
#[tokio::test(flavor = "multi_thread")]
async fn the_wal_is_counted_and_cut_back_by_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), &fast_prune(), &["a"]);
    for i in 0..500 {
        j.submit(txn(&format!("t{i}"))).await.unwrap();
    }
    let wal_path = dir.path().join("j.db-wal");
    let wal_now = std::fs::metadata(&wal_path).map_or(0, |m| m.len());
    assert!(wal_now > 0, "there is a WAL to count");
    let counted = j.state().used_bytes.load(std::sync::atomic::Ordering::Acquire);
    let pages = j.reader().unwrap().used_bytes().unwrap();
    let snapshot_file = super::snapshot_store::disk_bytes(&dir.path().join("j.db"));
    assert!(
        counted.saturating_sub(snapshot_file) > pages,
        "the WAL is part of what counts ({counted} vs pages {pages})"
    );
    j.close().await;
    // Closing checkpoints; the WAL never stays above its limit.
    let after = std::fs::metadata(&wal_path).map_or(0, |m| m.len());
    assert!(after <= super::schema::WAL_SIZE_LIMIT, "{after}");
}

/// Dead letters keep 64 KiB heads under their own budget, oldest evicted and counted,
/// and a full journal still takes them.
#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_have_their_own_budget_and_keep_only_heads() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        dead_letter_max_bytes: ByteSize::mib(1),
        ..JournalConfig::default()
    };
    let metrics = Metrics::new();
    let j = open_counted(dir.path(), &config, &["a"], metrics.clone());
    let huge = vec![b'x'; 8 * 1024 * 1024];
    for i in 0..40 {
        j.dead_letter(DeadLetter {
            source: "http".into(),
            class: RejectionClass::TooLarge,
            reason: format!("too large #{i}"),
            raw: huge.clone(),
            size: huge.len(),
        })
        .await
        .unwrap();
    }
    let rows = j.reader().unwrap().recent_dead_letters(100).unwrap();
    assert!(rows.len() < 40, "the oldest were evicted");
    assert!(rows.iter().all(|r| r.raw.len() <= DEAD_LETTER_HEAD));
    assert_eq!(rows[0].reason, "too large #39", "the newest stay");
    assert_eq!(metrics.dead_letters_evicted.get() as usize, 40 - rows.len());
    assert!(j.state().dead_letter_bytes.load(std::sync::atomic::Ordering::Acquire) <= 1024 * 1024);
    j.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sale_is_found_by_its_id_and_the_last_minute_is_counted_from_the_newest_back() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), &JournalConfig::default(), &["a"]);
    for id in ["t1", "t2", "t3"] {
        j.submit(txn(id)).await.unwrap();
    }
    let reader = j.reader().unwrap();
    let (received_ms, body) = reader.transaction("t2").unwrap().expect("journaled");
    assert!(String::from_utf8(body).unwrap().contains("\"txn_id\":\"t2\""));
    assert!((chrono::Utc::now().timestamp_millis() - received_ms).abs() < 60_000);
    assert_eq!(reader.transaction("nope").unwrap(), None);
    let minute_ago = chrono::Utc::now().timestamp_millis() - 60_000;
    assert_eq!(reader.count_since(Channel::Decisions, minute_ago, 1000).unwrap(), 3);
    assert_eq!(reader.count_since(Channel::Transactions, minute_ago, 1000).unwrap(), 3);
    // Bounded: reading back at most 2 records counts what those hold.
    assert!(reader.count_since(Channel::Decisions, minute_ago, 2).unwrap() <= 2);
    assert_eq!(
        reader
            .count_since(Channel::Decisions, chrono::Utc::now().timestamp_millis() + 1000, 1000)
            .unwrap(),
        0
    );
    let newest = reader.newest(Channel::Transactions, 2, 1000).unwrap();
    let ids: Vec<String> = newest
        .iter()
        .map(|(_, b)| {
            serde_json::from_slice::<serde_json::Value>(b).unwrap()["txn_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, vec!["t3", "t2"], "newest first");
    assert!(
        reader.newest(Channel::Transactions, 10, 0).unwrap().is_empty(),
        "an empty window"
    );
    j.close().await;
}

/// Under steady writes the WAL is started over and stays near its limit. A PASSIVE
/// checkpoint alone never copies every frame while commits keep arriving, so without the
/// writer's restart the file grows with the load (here to the ~100 MB written).
#[tokio::test(flavor = "multi_thread")]
async fn the_wal_stays_near_its_limit_under_steady_writes() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        max_bytes: ByteSize::mib(32),
        ..fast_prune()
    };
    let limit = super::schema::wal_limit(config.max_bytes.get());
    let metrics = Metrics::new();
    let j = std::sync::Arc::new(open_counted(dir.path(), &config, &[], metrics.clone()));
    let wal_path = dir.path().join("j.db-wal");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                most = most.max(std::fs::metadata(&wal_path).map_or(0, |m| m.len()));
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            most
        })
    };
    let terminals: Vec<_> = (0..16)
        .map(|t| {
            let j = j.clone();
            tokio::spawn(async move {
                for i in 0..2_500 {
                    j.submit(txn(&format!("t{t}-{i}"))).await.unwrap();
                }
            })
        })
        .collect();
    for t in terminals {
        t.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let most = sampler.await.unwrap();
    let restarts = metrics.journal_wal_restarts.with_label_values(&["done"]).get();
    assert!(restarts >= 1, "the load crossed the limit and the WAL was started over");
    assert!(
        most <= 4 * limit,
        "the WAL reached {most} bytes, limit {limit} ({restarts} restarts)"
    );
    std::sync::Arc::try_unwrap(j).ok().unwrap().close().await;
}
