//! The rules suite: memory per live key through the whole pack, and the state rebuild
//! (journal replay) for a large journal.

use super::*;

pub(crate) fn suite(rt: &tokio::runtime::Runtime, args: &Args) -> Result<()> {
    use tillgate::rules::{load_paths, DecideContext, Decider, Engine, NoOriginals};
    let pack = || load_paths(&[tillgate_testkit::rule_pack()]);

    eprintln!("[rules 1/2] memory per live key: 100,000 customers, cards and operators through the pack");
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

    eprintln!(
        "[rules 2/2] state rebuild: {} journal rows, then reopen (replay)",
        args.rebuild_rows
    );
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("journal.db");
    let config = JournalConfig {
        max_bytes: tillgate_sdk::ByteSize::gib(16),
        durability: tillgate::config::Durability::Os,
        ..JournalConfig::default()
    };
    let rows = args.rebuild_rows;
    let built = rt.block_on(async {
        let journal = open_with_pack(&path, &config)?;
        let started = Instant::now();
        fill_journal(&journal, rows, "j").await?;
        let took = started.elapsed();
        journal.close().await;
        anyhow::Ok(took)
    })?;
    let (replayed, replay_ms, open_s) = rt.block_on(async {
        let started = Instant::now();
        let journal = open_with_pack(&path, &config)?;
        let open_s = started.elapsed().as_secs_f64();
        let st = journal.state();
        let r = (
            st.replayed.load(std::sync::atomic::Ordering::Acquire),
            st.replay_ms.load(std::sync::atomic::Ordering::Acquire),
            open_s,
        );
        journal.close().await;
        anyhow::Ok(r)
    })?;
    let results = json!({
        "machine": machine(),
        "command": "make bench (tillgate-bench --suite rules)",
        "date": chrono::Utc::now().to_rfc3339(),
        "memory": {
            "rss_before_kib": before, "rss_after_kib": after, "live_keys_all_rules": live, "held_events": held,
            "bytes_per_live_key": (after.saturating_sub(before) * 1024) as f64 / live.max(1) as f64,
        },
        "rebuild": {
            "journal_rows": rows, "build_seconds": built.as_secs_f64(), "replayed_transactions": replayed,
            "replay_seconds": replay_ms as f64 / 1000.0, "open_seconds": open_s,
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
        "rebuild  {} journal rows: replay {:.2} s ({} transactions), open {:.2} s",
        rows,
        replay_ms as f64 / 1000.0,
        replayed,
        open_s
    );
    save(&args.out.with_file_name("rules.json"), &results)
}
