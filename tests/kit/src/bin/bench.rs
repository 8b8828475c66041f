//! `tillgate-bench`: the foundation's figures, each beside the physical limit measured in
//! the same run. Prints a table and saves JSON (see BENCHMARKS.md).
//!
//! 1. Journal commit throughput (in process, fsync) vs raw SQLite batched inserts
//!    (WAL + synchronous=FULL, same row sizes, same batch size).
//! 2. Decision latency at 5,000 txn/s offered over HTTP, fsync durability.
//! 3. Maximum sustained rate over HTTP (NDJSON batches, single requests, and the closed
//!    loop of 32 connections).
//! 4. Decision latency at 5,000 txn/s beside a background writer doing fdatasyncs on the
//!    same disk (contention).
//! 5. The same loads against a do-nothing HTTP server and the durable floor (append +
//!    fdatasync, group commit), contended too (`benches/baseline.rs`).
//! 6. Peak RSS of the agent process.

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tillgate::config::JournalConfig;
use tillgate::journal::Journal;
use tillgate::metrics::Metrics;
use tillgate::simulate::{self, Scenario, SimConfig};
use tillgate_testkit::benches::baseline::Contention;
use tillgate_testkit::process::{free_port, run_cli};

#[path = "bench/fill.rs"]
mod fill;
#[path = "bench/http_baselines.rs"]
mod http_baselines;
#[path = "bench/packaging.rs"]
mod packaging;
#[path = "bench/raw_sqlite.rs"]
mod raw_sqlite;
use raw_sqlite::{raw_commit_latency, raw_sqlite};
#[path = "bench/rules.rs"]
mod rules;
use fill::{fill_journal, open_with_pack, open_with_pack_counted, pack_txns};
#[path = "bench/steady.rs"]
mod steady;
#[path = "bench/video.rs"]
mod video;
#[path = "bench/video_events.rs"]
mod video_events;

#[derive(Parser)]
struct Args {
    /// The release `tillgate` binary to measure.
    #[arg(long)]
    bin: PathBuf,
    /// Where to save the JSON results.
    #[arg(long, default_value = "bench-results/foundation.json")]
    out: PathBuf,
    /// Transactions for the journal throughput runs.
    #[arg(long, default_value_t = 200_000)]
    journal_txns: usize,
    /// Seconds per HTTP run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// `foundation` (journal, HTTP), `rules` (memory per key, state rebuild), `mqtt`
    /// (QoS 1 rate and latency through the agent vs mosquitto alone) or `kinesis`
    /// (backlog drain into 16 shards, PUT payload units, CPU per 1,000 records) or
    /// `packaging` (stripped sizes, idle RSS, time to systemd READY with a backlog) or
    /// `video` (CPU per RTSP camera against gst-launch, RSS per camera) or
    /// `video-events` (uplink bytes per camera-hour, events mode vs continuous) or
    /// `steady` (the agent's RSS over minutes at 5,000 txn/s).
    #[arg(long, default_value = "foundation")]
    suite: String,
    /// Messages for the MQTT rate runs (mosquitto alone, and through the agent).
    #[arg(long, default_value_t = 100_000)]
    mqtt_messages: usize,
    /// The aarch64 build for the packaging suite's size figure (skipped when absent).
    #[arg(long)]
    arm64_bin: Option<PathBuf>,
    /// Transactions per drain in the Kinesis suite.
    #[arg(long, default_value_t = 200_000)]
    kinesis_records: usize,
    /// Journal rows for the rules suite's rebuild figure.
    #[arg(long, default_value_t = 1_000_000)]
    rebuild_rows: usize,
    /// Seconds measured per run in the video suite.
    #[arg(long, default_value_t = 60)]
    video_seconds: u64,
    /// Seconds of sales (1/s) in the video-events suite.
    #[arg(long, default_value_t = 600)]
    video_events_seconds: u64,
    /// Minutes at 5,000 txn/s in the steady suite.
    #[arg(long, default_value_t = 10)]
    steady_minutes: u64,
}

/// The agent's allocator (see `agent/src/main.rs`): the rules and foundation suites run
/// the journal and the rules in this process, so their figures are the agent's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let args = Args::parse();
    std::env::set_var("TILLGATE_BIN", &args.bin);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if args.suite == "rules" {
        return rules::suite(&rt, &args);
    }
    if args.suite == "mqtt" {
        return mqtt_suite(&rt, &args);
    }
    if args.suite == "kinesis" {
        return kinesis_suite(&rt, &args);
    }
    if args.suite == "packaging" {
        return packaging::suite(&rt, &args);
    }
    if args.suite == "video" {
        return video::suite(&rt, &args);
    }
    if args.suite == "video-events" {
        return video_events::suite(&rt, &args);
    }
    if args.suite == "steady" {
        return steady::suite(&rt, &args);
    }
    let mut results = json!({
        "machine": machine(),
        "command": "make bench",
        "date": chrono::Utc::now().to_rfc3339(),
    });

    eprintln!("[1/4] raw SQLite batched inserts (WAL, synchronous=FULL, 512 transactions/commit)");
    let raw_same = raw_sqlite(args.journal_txns, true)?;
    let raw_one = raw_sqlite(args.journal_txns, false)?;
    eprintln!("[1/4] raw SQLite commit latency, one row per commit (the fsync floor)");
    let floor = raw_commit_latency(5_000)?;
    eprintln!("[1/4] journal group commit (fsync, rule pack, 8 producers)");
    let journal = rt.block_on(journal_throughput(args.journal_txns))?;
    let per_s = |v: &Value| v["txns_per_s"].as_f64().unwrap_or(f64::NAN);
    results["journal"] = json!({
        "raw_sqlite_same_rows": raw_same,
        "raw_sqlite_one_row": raw_one,
        "raw_sqlite_commit_latency": floor,
        "journal": journal,
        "ratio_to_raw_same_rows": per_s(&journal) / per_s(&raw_same),
        "ratio_to_raw_one_row": per_s(&journal) / per_s(&raw_one),
    });

    let dir = tempfile::tempdir()?;
    let port = free_port();
    let config = write_config(dir.path(), port)?;
    let (code, out, err) = run_cli(&["check-config", config.to_str().unwrap_or_default()]);
    anyhow::ensure!(code == 0, "bench config invalid: {out}{err}");
    let child = start_agent(&args.bin, &config, port)?;
    let url = format!("http://127.0.0.1:{port}");
    let secs = Duration::from_secs(args.seconds);

    eprintln!("[2/6] decision latency at 5,000 txn/s offered (64 terminals, single requests)");
    let at_5k = rt.block_on(simulate::run(sim(&url, 64, 5_000.0, secs, 1, 1), |_| {}));
    eprintln!("[3/6] maximum sustained rate: NDJSON batches of 100, 16 connections");
    let max_batched = rt.block_on(simulate::run(sim(&url, 16, 0.0, secs, 100, 2), |_| {}));
    eprintln!("[3/6] maximum sustained rate: single requests, 64 connections");
    let max_single = rt.block_on(simulate::run(sim(&url, 64, 0.0, secs, 1, 3), |_| {}));
    eprintln!("[3/6] closed loop: single requests, 32 connections");
    let closed_32 = rt.block_on(simulate::run(sim(&url, 32, 0.0, secs, 1, 4), |_| {}));
    eprintln!("[4/6] under contention: 5,000 txn/s with a background writer (64 KiB + fdatasync, same disk)");
    let contention = match Contention::start(dir.path()) {
        Ok(c) => c,
        Err(e) => {
            let _ = stop_agent(child);
            return Err(e);
        }
    };
    let at_5k_contended = rt.block_on(simulate::run(sim(&url, 64, 5_000.0, secs, 1, 5), |_| {}));
    let contention_syncs = contention.syncs();
    drop(contention);
    let rss = stop_agent(child)?;

    results["http"] = json!({
        "at_5000_per_s": at_5k,
        "max_rate_batched_100": max_batched,
        "max_rate_single": max_single,
        "closed_loop_32": closed_32,
        "at_5000_per_s_contended": at_5k_contended,
        "contention_fdatasyncs_per_s": contention_syncs as f64 / secs.as_secs_f64(),
    });
    results["baselines"] = rt.block_on(http_baselines::measure(dir.path(), secs))?;
    results["agent_peak_rss_kib"] = json!(rss);
    print_table(&results);
    save(&args.out, &results)
}

/// A run of simulated terminals; each run has its own `seed`, so its txn_ids are new
/// (a repeat would be answered from the idempotency table without a write).
pub(crate) fn sim(url: &str, terminals: usize, rate: f64, duration: Duration, batch: usize, seed: u64) -> SimConfig {
    SimConfig {
        url: url.into(),
        token: None,
        stores: 4,
        terminals,
        rate,
        duration,
        fraud_rate: 0.02,
        batch,
        seed,
    }
}

/// Transactions as terminals send them, pre-built so only the journal is timed.
fn sample_payloads(n: usize) -> Vec<Vec<u8>> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    (0..n)
        .map(|i| {
            let t = format!("till-{:03}", i % 64);
            simulate::payload(&mut rng, Scenario::Normal, "store-001", &t, &format!("bench-{i}"))
        })
        .collect()
}

async fn journal_throughput(n: usize) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let pack = tillgate::rules::load_paths(&[tillgate_testkit::rule_pack()])?;
    let config = JournalConfig {
        max_bytes: tillgate_sdk::ByteSize::gib(8),
        ..JournalConfig::default()
    };
    let metrics = Metrics::new();
    let journal = Journal::open(
        &dir.path().join("journal.db"),
        &config,
        vec!["archive".into()],
        Box::new(tillgate::rules::Engine::new(
            pack,
            Some(metrics.clone()),
            Duration::from_secs(3600),
        )),
        tillgate::journal::VideoLinks::none(),
        metrics.clone(),
    )?;
    let received = chrono::Utc::now();
    let txns: Vec<_> = sample_payloads(n)
        .iter()
        .map(|p| tillgate::txn::parse(p, received).expect("generated transactions are valid"))
        .collect();
    let chunks = split(txns, 8);
    let writer_cpu_before = thread_cpu_s("journal-writer");
    let process_cpu_before = process_cpu_s();
    let started = Instant::now();
    let ok = submit_all(&journal, chunks).await?;
    let s = started.elapsed().as_secs_f64();
    let writer_cpu = thread_cpu_s("journal-writer") - writer_cpu_before;
    let process_cpu = process_cpu_s() - process_cpu_before;
    journal.close().await;
    anyhow::ensure!(ok == n, "only {ok} of {n} journaled");
    let batches = metrics.commit_batch_rows.get_sample_count();
    // COMMIT writes the WAL frames; the fdatasync after it is on the sync thread.
    let commit_s = metrics.commit_seconds.get_sample_sum();
    let sync_s = metrics.journal_sync_seconds.get_sample_sum();
    let syncs = metrics.journal_sync_seconds.get_sample_count();
    Ok(
        json!({ "txns": n, "seconds": s, "txns_per_s": n as f64 / s, "commits": batches,
               "writer_thread_cpu_us_per_txn": writer_cpu * 1e6 / n as f64,
               "writer_thread_busy": writer_cpu / s,
               "process_cpu_us_per_txn": process_cpu * 1e6 / n as f64,
               "avg_batch": metrics.commit_batch_rows.get_sample_sum() / batches.max(1) as f64,
               "commit_seconds_total": commit_s, "wal_fdatasyncs": syncs, "wal_fdatasync_seconds_total": sync_s, "rows_per_txn": "3 to 4 (transaction, decision, idempotency key, alert when a rule fires)" }),
    )
}

/// CPU seconds (user + system) of this process's threads named `name`.
fn thread_cpu_s(name: &str) -> f64 {
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            total += stat_cpu_s(&std::fs::read_to_string(task.path().join("stat")).unwrap_or_default());
        }
    }
    total
}

fn process_cpu_s() -> f64 {
    stat_cpu_s(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// utime + stime from a /proc stat line, in seconds (USER_HZ = 100 on Linux).
pub(crate) fn stat_cpu_s(stat: &str) -> f64 {
    let after_comm = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Splits `items` into `parts` runs of about equal length.
fn split<T>(items: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let per = items.len().div_ceil(parts.max(1)).max(1);
    let mut it = items.into_iter();
    (0..parts).map(|_| it.by_ref().take(per).collect()).collect()
}

/// One task per chunk, each submitting groups of 256; returns how many were journaled.
async fn submit_all(journal: &Journal, chunks: Vec<Vec<tillgate::txn::Transaction>>) -> Result<usize> {
    let mut tasks = Vec::new();
    for chunk in chunks {
        let j = journal.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0usize;
            let mut rest = chunk.into_iter();
            loop {
                let group: Vec<_> = rest.by_ref().take(256).collect();
                if group.is_empty() {
                    break ok;
                }
                ok += j.submit_many(group).await.iter().filter(|r| r.is_ok()).count();
            }
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await?;
    }
    Ok(ok)
}

fn write_config(dir: &Path, port: u16) -> Result<PathBuf> {
    let path = dir.join("tillgate.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n[log]\nlevel = \"warn\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[journal]\ndurability = \"fsync\"\nmax_bytes = \"8GiB\"\n[rules]\npaths = [\"{}\"]\n",
            dir.display(),
            tillgate_testkit::rule_pack().display()
        ),
    )?;
    Ok(path)
}

fn wait_listening(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "agent did not listen within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// VmRSS of process `pid`, KiB.
pub(crate) fn pid_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS in /proc/<pid>/status")
}

/// CPU seconds (user + system) of process `pid` so far.
pub(crate) fn pid_cpu_s(pid: u32) -> f64 {
    stat_cpu_s(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmHWM in /proc/<pid>/status")
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("model name"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    });
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "os": std::fs::read_to_string("/etc/debian_version").ok().map(|v| format!("Debian {}", v.trim())),
    })
}

fn print_table(r: &Value) {
    let j = &r["journal"];
    println!("\ntillgate foundation benchmark ({} cpus)", r["machine"]["cpus"]);
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let floor = &j["raw_sqlite_commit_latency"];
    println!(
        "floor     raw SQLite 1 row/commit: {:.0} commits/s, p50 {} p99 {} p99.9 {} µs",
        f(&floor["commits_per_s"]),
        floor["p50_us"],
        floor["p99_us"],
        floor["p999_us"]
    );
    println!(
        "journal   {:>9.0} txn/s   raw SQLite same rows {:>9.0} txn/s (ratio {:.2})   raw one row/txn {:>9.0} (ratio {:.2})",
        f(&j["journal"]["txns_per_s"]),
        f(&j["raw_sqlite_same_rows"]["txns_per_s"]),
        f(&j["ratio_to_raw_same_rows"]),
        f(&j["raw_sqlite_one_row"]["txns_per_s"]),
        f(&j["ratio_to_raw_one_row"]),
    );
    for (name, h) in [
        ("5k/s", &r["http"]["at_5000_per_s"]),
        ("max/batch", &r["http"]["max_rate_batched_100"]),
        ("max/single", &r["http"]["max_rate_single"]),
        ("closed/32", &r["http"]["closed_loop_32"]),
        ("5k/s+disk", &r["http"]["at_5000_per_s_contended"]),
        ("nothing5k", &r["baselines"]["do_nothing_at_5000_per_s"]),
        ("nothing/32", &r["baselines"]["do_nothing_closed_loop_32"]),
        ("floor5k", &r["baselines"]["durable_floor_at_5000_per_s"]),
        ("floor/32", &r["baselines"]["durable_floor_closed_loop_32"]),
        ("floor5k+disk", &r["baselines"]["durable_floor_at_5000_per_s_contended"]),
    ] {
        println!(
            "http {:<10} {:>9.0} txn/s decided   client p50 {:>6} p99 {:>6} p99.9 {:>6} µs   agent p50 {:>6} p99 {:>6} p99.9 {:>6} µs",
            name,
            h["throughput_per_s"].as_f64().unwrap_or(0.0),
            h["latency"]["p50_us"],
            h["latency"]["p99_us"],
            h["latency"]["p999_us"],
            h["agent_latency"]["p50_us"],
            h["agent_latency"]["p99_us"],
            h["agent_latency"]["p999_us"],
        );
    }
    println!("agent peak RSS {} KiB", r["agent_peak_rss_kib"]);
}

/// VmRSS of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn mqtt_suite(rt: &tokio::runtime::Runtime, args: &Args) -> Result<()> {
    use tillgate_testkit::benches::mqtt as mqtt_bench;
    let dir = tempfile::tempdir()?;
    let broker = mqtt_bench::start_broker(&dir.path().join("broker"));
    let n = args.mqtt_messages;
    eprintln!("[mqtt 1/3] mosquitto alone: QoS 1, 8 publishers -> 1 subscriber, {n} messages");
    let raw = rt.block_on(mqtt_bench::raw_broker_rate(&broker, n))?;

    let port = free_port();
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir)?;
    let config = mqtt_bench::agent_config(&agent_dir, port, &broker)?;
    let child = start_agent(&args.bin, &config, port)?;
    std::thread::sleep(Duration::from_millis(300)); // the MQTT session comes up
    let cpu = pid_cpu_s;
    let broker_pid = broker.pid().context("broker running")?;

    eprintln!("[mqtt 2/3] through the agent: 8 terminals flat out, {n} transactions (fsync, rule pack)");
    let (agent_cpu0, broker_cpu0) = (cpu(child.id()), cpu(broker_pid));
    let mut max = rt.block_on(mqtt_bench::agent_max_rate(&broker, n))?;
    max["agent_cpu_s"] = json!(cpu(child.id()) - agent_cpu0);
    max["broker_cpu_s"] = json!(cpu(broker_pid) - broker_cpu0);
    eprintln!(
        "[mqtt 3/3] publish-to-decision latency at 5,000 txn/s offered for {}s",
        args.seconds
    );
    let latency = rt.block_on(mqtt_bench::agent_latency(
        &broker,
        5_000.0,
        Duration::from_secs(args.seconds),
    ))?;
    let rss = stop_agent(child)?;

    let ratio = max["txns_per_s"].as_f64().unwrap_or(f64::NAN) / raw["msgs_per_s"].as_f64().unwrap_or(f64::NAN);
    let results = json!({
        "machine": machine(),
        "command": "make bench (tillgate-bench --suite mqtt)",
        "date": chrono::Utc::now().to_rfc3339(),
        "mosquitto_alone": raw,
        "agent_max_rate": max,
        "ratio_to_mosquitto_alone": ratio,
        "agent_at_5000_per_s": latency,
        "agent_peak_rss_kib": rss,
    });
    mqtt_bench::print_table(&results);
    save(&args.out.with_file_name("mqtt.json"), &results)
}

fn kinesis_suite(rt: &tokio::runtime::Runtime, args: &Args) -> Result<()> {
    use tillgate_testkit::benches::kinesis as kinesis_bench;
    let dir = tempfile::tempdir()?;
    let figures = rt.block_on(kinesis_bench::run(&args.bin, dir.path(), args.kinesis_records))?;
    let results = json!({
        "machine": machine(),
        "command": "make bench (tillgate-bench --suite kinesis)",
        "date": chrono::Utc::now().to_rfc3339(),
        "kinesis": figures,
    });
    kinesis_bench::print_table(&results["kinesis"]);
    save(&args.out.with_file_name("kinesis.json"), &results)
}

/// Writes `results` as pretty JSON to `out`, creating its directory.
fn save(out: &Path, results: &Value) -> Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(results)?)?;
    eprintln!("saved {}", out.display());
    Ok(())
}

/// Starts the agent with `config` (its log next to the config) and waits for its port.
fn start_agent(bin: &Path, config: &Path, port: u16) -> Result<std::process::Child> {
    let log = config.with_file_name("agent.log");
    let child = std::process::Command::new(bin)
        .args(["run", "--config"])
        .arg(config)
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("start tillgate")?;
    wait_listening(port)?;
    Ok(child)
}

/// SIGTERM, wait for the drain; returns the agent's peak RSS (KiB) read just before.
fn stop_agent(mut child: std::process::Child) -> Result<u64> {
    let rss = peak_rss_kib(child.id())?;
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    Ok(rss)
}
