//! The steady suite: the agent's memory after minutes at 5,000 txn/s over HTTP (the
//! shipped pack, the bench config, default rule caps), sampled as it goes: what a
//! gateway with 1 GiB has to hold once the rule state has filled.

use super::{machine, pid_cpu_s, pid_rss_kib, save, sim, start_agent, stop_agent, write_config, Args};
use anyhow::Result;
use serde_json::json;
use std::time::{Duration, Instant};
use tillgate::simulate;
use tillgate_testkit::process::free_port;

/// How often RSS is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

pub fn suite(rt: &tokio::runtime::Runtime, args: &Args) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let config = write_config(dir.path(), port)?;
    let child = start_agent(&args.bin, &config, port)?;
    let pid = child.id();
    let url = format!("http://127.0.0.1:{port}");
    let run_for = Duration::from_secs(args.steady_minutes * 60);
    eprintln!(
        "[1/1] {} min at 5,000 txn/s (64 terminals, single requests), RSS every {} s",
        args.steady_minutes,
        SAMPLE_EVERY.as_secs()
    );
    let load = rt.spawn(simulate::run(sim(&url, 64, 5_000.0, run_for, 1, 11), |_| {}));
    let started = Instant::now();
    let mut samples = Vec::new();
    while !load.is_finished() {
        std::thread::sleep(SAMPLE_EVERY);
        if let Ok(kib) = pid_rss_kib(pid) {
            samples.push(json!({ "s": started.elapsed().as_secs(), "rss_kib": kib, "cpu_s": pid_cpu_s(pid) }));
        }
    }
    let report = rt.block_on(load)?;
    let last_rss = pid_rss_kib(pid)?;
    let peak = stop_agent(child)?;
    let results = json!({
        "machine": machine(),
        "command": format!("tillgate-bench --suite steady --steady-minutes {}", args.steady_minutes),
        "date": chrono::Utc::now().to_rfc3339(),
        "minutes": args.steady_minutes,
        "load": report,
        "rss_kib_at_end": last_rss,
        "peak_rss_kib": peak,
        "samples": samples,
    });
    println!(
        "steady {} min at 5,000 txn/s: RSS at the end {} MiB, peak {} MiB (goal ≤ 64 MiB)",
        args.steady_minutes,
        last_rss / 1024,
        peak / 1024
    );
    save(&args.out, &results)
}
