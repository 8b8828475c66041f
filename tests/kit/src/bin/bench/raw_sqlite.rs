//! Raw SQLite, no agent: the limits the journal's figures sit beside.

use super::sample_payloads;
use anyhow::Result;
use serde_json::{json, Value};
use std::time::Instant;

/// The physical floor of a durable answer: one small row per commit, WAL and
/// synchronous=FULL, back to back. A decision needs at least one such commit, and often
/// waits for the one in progress first.
pub fn raw_commit_latency(commits: usize) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let conn = rusqlite::Connection::open(dir.path().join("floor.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE t (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")?;
    let body = sample_payloads(1).remove(0);
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
    let started = Instant::now();
    for i in 0..commits {
        let t = Instant::now();
        conn.execute(
            "INSERT INTO t(seq, body) VALUES (?1, ?2)",
            rusqlite::params![i as i64, body],
        )?;
        h.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    let s = started.elapsed().as_secs_f64();
    Ok(json!({
        "commits": commits,
        "commits_per_s": commits as f64 / s,
        "p50_us": h.value_at_quantile(0.5),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
    }))
}

/// Raw SQLite, no agent: prepared inserts in batches of 512 transactions, WAL and
/// synchronous=FULL. `same_rows` writes what the journal writes per transaction (its
/// row, its decision row, its idempotency key with a unique index); otherwise one row.
pub fn raw_sqlite(n: usize, same_rows: bool) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let conn = rusqlite::Connection::open(dir.path().join("raw.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE records (seq INTEGER PRIMARY KEY, channel INTEGER NOT NULL, txn_id TEXT NOT NULL,
                               partition_key TEXT NOT NULL, received_ms INTEGER NOT NULL, body BLOB NOT NULL);
         CREATE TABLE txn_ids (seq INTEGER PRIMARY KEY, txn_id TEXT NOT NULL UNIQUE,
                               received_ms INTEGER NOT NULL, decision BLOB NOT NULL);",
    )?;
    let payloads = sample_payloads(n);
    let decision = br#"{"txn_id":"bench-000000","store_id":"store-001","terminal_id":"till-001","seq":1,"decision":"allow","rules":[],"decided_at":"2026-11-27T11:40:00.000Z"}"#;
    let started = Instant::now();
    let mut seq = 0i64;
    for (chunk_no, chunk) in payloads.chunks(512).enumerate() {
        let tx = conn.unchecked_transaction()?;
        {
            let mut rec = tx.prepare_cached(
                "INSERT INTO records(seq, channel, txn_id, partition_key, received_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut ids =
                tx.prepare_cached("INSERT INTO txn_ids(seq, txn_id, received_ms, decision) VALUES (?1, ?2, ?3, ?4)")?;
            for (i, p) in chunk.iter().enumerate() {
                let id = format!("bench-{}", chunk_no * 512 + i);
                seq += 1;
                rec.execute(rusqlite::params![seq, 0, id, "store-001/till-001", 0, p])?;
                if same_rows {
                    ids.execute(rusqlite::params![seq, id, 0, &decision[..]])?;
                    seq += 1;
                    rec.execute(rusqlite::params![seq, 1, id, "store-001/till-001", 0, &decision[..]])?;
                }
            }
        }
        tx.commit()?;
    }
    let s = started.elapsed().as_secs_f64();
    Ok(json!({ "txns": n, "seconds": s, "txns_per_s": n as f64 / s, "rows_per_txn": if same_rows { 3 } else { 1 } }))
}
