//! A journal deciding with the shipped rule pack, and filling it with pack-shaped
//! transactions (the rules and packaging suites).

use super::{split, submit_all};
use anyhow::Result;
use std::path::Path;
use std::time::Duration;
use tillgate::config::JournalConfig;
use tillgate::journal::Journal;
use tillgate::metrics::Metrics;

/// Transactions of the shipped pack's shape, `keys` distinct cards, customers, operators.
pub(crate) fn pack_txns(n: usize, keys: usize) -> Vec<tillgate::txn::Transaction> {
    let now = chrono::Utc::now();
    let at = now.to_rfc3339();
    (0..n)
        .map(|i| {
            let k = i % keys;
            let raw = format!(
                r#"{{"txn_id":"m{i}","store_id":"store-{s}","terminal_id":"till-{t}","operator_id":"op-{k}","customer_id":"cust-{k}","occurred_at":"{at}","type":"sale","total_minor":{a},"currency":"USD","card":{{"token":"tok-{k}","bin":"411111","entry_mode":"chip"}}}}"#,
                s = i % 50,
                t = i % 400,
                a = 100 + i % 5000
            );
            tillgate::txn::parse(raw.as_bytes(), now).expect("valid")
        })
        .collect()
}

/// A journal deciding with the shipped rule pack.
/// Journals `rows` pack transactions (100,000 customers and cards) with ids `{prefix}N`.
pub(crate) async fn fill_journal(journal: &Journal, rows: usize, prefix: &str) -> Result<()> {
    for chunk_start in (0..rows).step_by(50_000) {
        let txns: Vec<_> = pack_txns(50_000.min(rows - chunk_start), 100_000)
            .into_iter()
            .enumerate()
            .map(|(i, mut t)| {
                t.txn_id = format!("{prefix}{}", chunk_start + i);
                t
            })
            .collect();
        let n = txns.len();
        anyhow::ensure!(
            submit_all(journal, split(txns, 8)).await? == n,
            "not every row journaled"
        );
    }
    Ok(())
}

pub(crate) fn open_with_pack(path: &Path, config: &JournalConfig) -> Result<Journal> {
    open_with_pack_counted(path, config, Metrics::new())
}

/// [`open_with_pack`], counting in `metrics`.
pub(crate) fn open_with_pack_counted(path: &Path, config: &JournalConfig, metrics: Metrics) -> Result<Journal> {
    let pack = tillgate::rules::load_paths(&[tillgate_testkit::rule_pack()])?;
    let engine = tillgate::rules::Engine::new(pack, None, Duration::from_secs(3600));
    Ok(Journal::open(
        path,
        config,
        vec![],
        Box::new(engine),
        tillgate::journal::VideoLinks::none(),
        metrics,
    )?)
}
