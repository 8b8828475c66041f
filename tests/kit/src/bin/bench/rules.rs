//! The rules suite: memory per live key through the whole pack, the snapshot of that
//! state, and the first decision after `kill -9` with a large journal (with the
//! periodic snapshot, and without it: the whole horizon replayed).

use super::*;

pub(crate) fn suite(rt: &tokio::runtime::Runtime, args: &Args) -> Result<()> {
    use tillgate::rules::{load_paths, DecideContext, Decider, Engine, NoOriginals};
    let pack = || load_paths(&[tillgate_testkit::rule_pack()]);

    eprintln!("[rules 1/3] memory per live key: 100,000 customers, cards and operators through the pack");
    let txns = pack_txns(100_000, 100_000);
    let before = rss_kib();
    let mut engine = Engine::new(pack()?, None, Duration::from_secs(3600));
    for (i, t) in txns.iter().enumerate() {
        engine.decide(
            t,
            &DecideContext {
                seq: i as u64,
                lookup: &NoOriginals,
                replaying: false,
            },
        );
    }
    let after = rss_kib();
    let live = engine.live_keys();
    let held = engine.held_events();
    drop(txns);

    eprintln!("[rules 2/3] snapshot of that state: encode, then restore into a fresh engine");
    let started = Instant::now();
    let units = engine.snapshot(100_000).map_err(anyhow::Error::msg)?;
    let take_s = started.elapsed().as_secs_f64();
    let snapshot = tillgate::rules::snapshot::Snapshot { units };
    let mut fresh = Engine::new(pack()?, None, Duration::from_secs(3600));
    let started = Instant::now();
    let restored = fresh.restore(&snapshot);
    let restore_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        restored.complete() && fresh.live_keys() == live,
        "the restore lost state: {restored:?}"
    );
    let snapshot_bytes = snapshot.bytes();
    drop((engine, fresh, snapshot));

    // The journal holds `rows − 1` transactions: with a snapshot every 50,000 the kill
    // comes 49,999 transactions after the last one, the most a start has to replay.
    let rows = args.rebuild_rows.max(2) - 1;
    eprintln!("[rules 3/3] restart: {rows} journal rows, kill -9, first decision; again without the snapshot");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("journal.db");
    let config = JournalConfig {
        max_bytes: tillgate_sdk::ByteSize::gib(16),
        durability: tillgate::config::Durability::Os,
        ..JournalConfig::default()
    };
    let metrics = Metrics::new();
    let built = rt.block_on(async {
        let journal = open_with_pack_counted(&path, &config, metrics.clone())?;
        let started = Instant::now();
        fill_journal(&journal, rows, "j").await?;
        let took = started.elapsed();
        journal.abandon().await;
        anyhow::Ok(took)
    })?;
    // What the writer spends on each periodic snapshot step (one rule's or report's
    // state encoded and handed to the snapshot thread), decisions waiting behind it.
    let pauses = &metrics.rule_snapshot_seconds;
    let pause_mean_s = pauses.get_sample_sum() / pauses.get_sample_count().max(1) as f64;
    let pause_max_bound_s = largest_bucket_used(pauses);
    // What the snapshot thread spends storing each unit (decisions do not wait for it).
    let stores = &metrics.rule_snapshot_store_seconds;
    let store_mean_s = stores.get_sample_sum() / stores.get_sample_count().max(1) as f64;
    let store_max_bound_s = largest_bucket_used(stores);
    // Three starts after the kill (each adds one transaction and is killed again): the
    // figure is their median, on a machine whose CPU and disk are shared.
    let mut starts = Vec::new();
    for k in 1..=3 {
        starts.push(rt.block_on(first_decision(&path, &config, &format!("k{k}")))?);
    }
    let seconds = |r: &serde_json::Value| r["first_decision_seconds"].as_f64().unwrap_or(f64::NAN);
    let mut sorted = starts.clone();
    sorted.sort_by(|a, b| seconds(a).total_cmp(&seconds(b)));
    let after_kill = sorted[1].clone();
    let mut store = path.as_os_str().to_owned();
    store.push("-rule-state");
    let conn = rusqlite::Connection::open(std::path::Path::new(&store))?;
    conn.execute("DELETE FROM rule_snapshots", [])?;
    drop(conn);
    let without = rt.block_on(first_decision(&path, &config, "k-none"))?;
    let results = json!({
        "machine": machine(),
        "command": "make bench (tillgate-bench --suite rules)",
        "date": chrono::Utc::now().to_rfc3339(),
        "memory": {
            "rss_before_kib": before, "rss_after_kib": after, "live_keys_all_rules": live, "held_events": held,
            "bytes_per_live_key": (after.saturating_sub(before) * 1024) as f64 / live.max(1) as f64,
        },
        "snapshot": {
            "live_keys_all_rules": live, "bytes": snapshot_bytes, "bytes_per_live_key": snapshot_bytes as f64 / live.max(1) as f64,
            "take_seconds": take_s, "restore_seconds": restore_s,
        },
        "restart": {
            "journal_rows": rows, "build_seconds": built.as_secs_f64(),
            "snapshot_every_transactions": config.rule_snapshot_transactions.get(),
            "periodic_snapshot_steps": pauses.get_sample_count(), "periodic_snapshot_step_mean_seconds": pause_mean_s,
            "periodic_snapshot_step_max_at_most_seconds": pause_max_bound_s,
            "snapshot_units_stored": stores.get_sample_count(), "snapshot_store_mean_seconds": store_mean_s,
            "snapshot_store_max_at_most_seconds": store_max_bound_s,
            "snapshot_bytes": metrics.rule_snapshot_bytes.get(),
            "after_kill_9": after_kill, "after_kill_9_all_starts": starts, "without_snapshot": without,
        },
    });
    println!("\ntillgate rules benchmark ({} cpus)", results["machine"]["cpus"]);
    println!(
        "memory   {} live keys over all rules, {} events held: {:.0} bytes per live key (RSS {} → {} KiB)",
        live,
        held,
        results["memory"]["bytes_per_live_key"].as_f64().unwrap_or(0.0),
        before,
        after
    );
    println!(
        "snapshot {} bytes ({:.0} per live key): taken in {:.3} s, restored in {:.3} s",
        snapshot_bytes,
        results["snapshot"]["bytes_per_live_key"].as_f64().unwrap_or(0.0),
        take_s,
        restore_s
    );
    println!(
        "snapshot while filling: {} steps (one rule or report each) encoded by the writer in {:.3} s on average, each ≤ {} s (decisions wait); \
         {} stored by the snapshot thread in {:.3} s on average, each ≤ {} s (decisions do not wait); {} bytes",
        pauses.get_sample_count(),
        pause_mean_s,
        pause_max_bound_s,
        stores.get_sample_count(),
        store_mean_s,
        store_max_bound_s,
        metrics.rule_snapshot_bytes.get()
    );
    println!(
        "restart  after kill -9, each of the three starts: {}",
        starts
            .iter()
            .map(|r| format!("{:.2} s", seconds(r)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (name, r) in [("after kill -9 (median)", &after_kill), ("no snapshot", &without)] {
        println!(
            "restart  {rows} journal rows, {name}: first decision {:.2} s after open ({} transactions replayed)",
            r["first_decision_seconds"].as_f64().unwrap_or(0.0),
            r["replayed_transactions"]
        );
    }
    save(&args.out.with_file_name("rules.json"), &results)
}

/// Opens the journal at `path` with the shipped pack, and times the first decision: the
/// rebuild runs before it. Then abandons the journal (no shutdown snapshot).
async fn first_decision(path: &Path, config: &JournalConfig, id: &str) -> Result<serde_json::Value> {
    let started = Instant::now();
    let journal = open_with_pack(path, config)?;
    let mut txn = pack_txns(1, 1).remove(0);
    txn.txn_id = id.to_string();
    journal.submit(txn).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let first = started.elapsed().as_secs_f64();
    let st = journal.state();
    let measured = json!({
        "first_decision_seconds": first,
        "restored_from_seq": st.restored_from_snapshot.load(std::sync::atomic::Ordering::Acquire),
        "replayed_transactions": st.replayed.load(std::sync::atomic::Ordering::Acquire),
        "rebuild_seconds": st.replay_ms.load(std::sync::atomic::Ordering::Acquire) as f64 / 1000.0,
    });
    journal.abandon().await;
    Ok(measured)
}

/// The upper bound of the smallest histogram bucket that holds every sample: the
/// longest sample is at most this.
fn largest_bucket_used(h: &prometheus::Histogram) -> f64 {
    use prometheus::core::Metric;
    let m = h.metric();
    let hist = m.get_histogram();
    let total = hist.get_sample_count();
    hist.get_bucket()
        .iter()
        .find(|b| b.cumulative_count() >= total)
        .map_or(f64::INFINITY, |b| b.upper_bound())
}
