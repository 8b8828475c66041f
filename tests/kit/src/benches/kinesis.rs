//! The Kinesis benchmark: how fast the agent drains a journal backlog into a 16-shard
//! stream at the test kit's fast endpoint, with aggregation, how many PUT payload units
//! it pays against the theoretical minimum, and the CPU it spends per 1,000 records.
//!
//! A backlog is built while the endpoint is down (the agent answers and journals, the
//! sink waits), then the endpoint comes back and the drain is timed from the agent's
//! own counters. Twice: without shard limits (the agent's own ceiling) and with the real
//! per-shard limits (1 MiB/s and 1,000 records/s per shard), whose ceiling is computed.

use crate::checkers::kinesis::{metric, static_credentials_env};
use crate::fakes::kinesis::{FakeKinesis, Faults};
use crate::process::free_port;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const STREAM: &str = "bench";
/// Terminals (partition keys) in the backlog: many, so that 16 or 64 shards share it
/// evenly; with a handful of keys the busiest shard decides (see the ceiling).
const KEYS: usize = 4096;
const HEADROOM: f64 = 0.9;

fn config(dir: &Path, port: u16, endpoint: &str) -> Result<std::path::PathBuf> {
    let path = dir.join("tillgate.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{dir}\"\n[log]\nlevel = \"warn\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
             [journal]\ndurability = \"os\"\nmax_bytes = \"8GiB\"\n[rules]\npaths = [\"{rules}\"]\n\
             [sinks]\nretry_initial_backoff = \"50ms\"\nretry_max_backoff = \"200ms\"\n[sinks.archive]\nenabled = false\n\
             [kinesis]\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\nrequest_timeout = \"10s\"\n\
             shard_headroom = {HEADROOM}\nretry_initial_backoff = \"20ms\"\nretry_max_backoff = \"200ms\"\n\
             [kinesis.streams]\ntransactions = \"{STREAM}\"\n",
            dir = dir.display(),
            rules = crate::rule_pack().display(),
        ),
    )?;
    Ok(path)
}

/// Posts `n` transactions as NDJSON from 4 clients; every one must be accepted.
async fn load(url: &str, prefix: &str, n: usize) -> Result<()> {
    let mut tasks = Vec::new();
    let per = n / 4;
    for c in 0..4 {
        let url = url.to_string();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let client = crate::http_client();
            for chunk in (0..per).collect::<Vec<_>>().chunks(500) {
                let mut body = String::with_capacity(chunk.len() * 400);
                for i in chunk {
                    let txn = crate::txn(
                        &format!("{prefix}-{c}-{i}"),
                        &format!("till-{}", (c * per + i) % KEYS),
                        100 + *i as i64,
                    );
                    body.push_str(&txn.to_string());
                    body.push('\n');
                }
                let (status, _) = crate::post_ndjson(&client, &url, body).await?;
                anyhow::ensure!(status == 200, "agent answered {status} while loading");
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn metrics(url: &str) -> Result<String> {
    Ok(crate::http_client()
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The agent's Kinesis counters at one moment (Prometheus text).
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    user_records: f64,
    user_bytes: f64,
    put_units: f64,
    kinesis_records: f64,
    calls: f64,
    seconds_in_calls: f64,
    seconds_in_ship: f64,
    shipments: f64,
}

impl Counters {
    fn read(text: &str) -> Counters {
        let sel = |name: &str| metric(text, &format!("tillgate_kinesis_{name}{{stream=\"{STREAM}\"}}"));
        let kind = |k: &str| {
            metric(
                text,
                &format!("tillgate_kinesis_records_total{{kind=\"{k}\",stream=\"{STREAM}\"}}"),
            )
        };
        let ship = |what: &str| {
            metric(
                text,
                &format!("tillgate_sink_ship_seconds_{what}{{sink=\"kinesis-transactions\"}}"),
            )
        };
        Counters {
            user_records: sel("user_records_total"),
            user_bytes: sel("user_bytes_total"),
            put_units: sel("put_payload_units_total"),
            kinesis_records: kind("aggregated") + kind("raw"),
            calls: sel("request_seconds_count"),
            seconds_in_calls: sel("request_seconds_sum"),
            seconds_in_ship: ship("sum"),
            shipments: ship("count"),
        }
    }

    /// What was added since `from`.
    fn since(self, from: Counters) -> Counters {
        Counters {
            user_records: self.user_records - from.user_records,
            user_bytes: self.user_bytes - from.user_bytes,
            put_units: self.put_units - from.put_units,
            kinesis_records: self.kinesis_records - from.kinesis_records,
            calls: self.calls - from.calls,
            seconds_in_calls: self.seconds_in_calls - from.seconds_in_calls,
            seconds_in_ship: self.seconds_in_ship - from.seconds_in_ship,
            shipments: self.shipments - from.shipments,
        }
    }
}

async fn counters(url: &str) -> Result<Counters> {
    Ok(Counters::read(&metrics(url).await?))
}

/// Waits until the agent reports `records` more user records put than `from`; returns
/// the figures of that drain.
async fn drain(url: &str, pid: u32, records: f64, from: Counters) -> Result<Value> {
    let started = Instant::now();
    let cpu0 = cpu_s(pid);
    let harness0 = cpu_s(std::process::id());
    let deadline = started + Duration::from_secs(600);
    loop {
        let d = Counters::read(&metrics(url).await?).since(from);
        if d.user_records >= records {
            let secs = started.elapsed().as_secs_f64();
            let cpu = cpu_s(pid) - cpu0;
            let minimum_units = (d.user_bytes / PUT_UNIT).ceil();
            return Ok(json!({
                "user_records": d.user_records,
                "seconds": secs,
                "user_records_per_s": d.user_records / secs,
                "user_bytes": d.user_bytes,
                "mib_per_s": d.user_bytes / secs / 1048576.0,
                "kinesis_records": d.kinesis_records,
                "aggregation_ratio": d.user_records / d.kinesis_records,
                "put_payload_units": d.put_units,
                "put_payload_units_minimum": minimum_units,
                "put_units_per_1000_txns": d.put_units / d.user_records * 1000.0,
                "put_units_ratio_to_minimum": d.put_units / minimum_units,
                "agent_cpu_s": cpu,
                "endpoint_and_harness_cpu_s": cpu_s(std::process::id()) - harness0,
                "agent_cpu_ms_per_1000_records": cpu / d.user_records * 1e6,
                "put_records_calls": d.calls,
                "mean_call_ms": d.seconds_in_calls / d.calls * 1000.0,
                "shipments": d.shipments,
                "seconds_in_ship": d.seconds_in_ship,
            }));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "drain did not finish in 600 s ({} of {records})",
            d.user_records
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 25 KB, as the sink counts PUT payload units.
pub const PUT_UNIT: f64 = 25_000.0;

/// One agent shipping to a fresh endpoint with `shards` shards: a backlog of `records`
/// built while the endpoint is down, then drained; `fake_limits` makes the endpoint
/// enforce the per-shard limits too (the agent always keeps to its own budget).
async fn drain_run(bin: &Path, dir: &Path, shards: u32, records: usize, fake_limits: bool) -> Result<Value> {
    std::fs::create_dir_all(dir)?;
    let fake = FakeKinesis::start(&[(STREAM, shards)]).await;
    fake.set_faults(Faults {
        outage: true,
        ..Faults::default()
    });
    let port = free_port();
    let config = config(dir, port, &fake.url())?;
    let mut child = std::process::Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .envs(static_credentials_env())
        .stderr(std::fs::File::create(dir.join("agent.log"))?)
        .spawn()
        .context("start tillgate")?;
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "agent did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    load(&url, "a", records).await?;
    let before = counters(&url).await?;
    fake.set_faults(Faults {
        shard_limits: fake_limits,
        ..Faults::default()
    });
    let mut d = drain(&url, child.id(), records as f64, before).await?;
    // The ceiling: the agent keeps each shard under its budget, and a shipment waits for
    // its busiest shard, so the stream takes budget / (busiest shard's share of bytes);
    // each shard's bucket also starts with one second of budget, which a short drain
    // spends on top: budget x (T + 1 s) over a drain of T.
    let per_shard = fake.bytes_per_shard(STREAM);
    let total: u64 = per_shard.iter().sum();
    let busiest = per_shard.iter().copied().max().unwrap_or(1) as f64 / total.max(1) as f64;
    let budget = 1048576.0 * HEADROOM;
    let per_record = d["user_bytes"].as_f64().unwrap_or(1.0) / d["user_records"].as_f64().unwrap_or(1.0);
    let seconds = d["seconds"].as_f64().unwrap_or(1.0);
    let ceiling = budget * (seconds + 1.0) / seconds / busiest / per_record;
    d["shards"] = json!(shards);
    d["endpoint_enforces_shard_limits"] = json!(fake_limits);
    d["busiest_shard_share"] = json!(busiest);
    d["ceiling_user_records_per_s"] = json!(ceiling);
    d["ratio_to_ceiling"] = json!(d["user_records_per_s"].as_f64().unwrap_or(0.0) / ceiling);
    d["throttled_records_at_endpoint"] = json!(fake.stats().throttled_records);
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    Ok(d)
}

/// Runs the suite; `records` per drain.
pub async fn run(bin: &Path, dir: &Path, records: usize) -> Result<Value> {
    eprintln!("[kinesis 1/2] 16 shards with the real per-shard limits: {records} transactions journaled while the endpoint is down, then drained");
    let limited = drain_run(bin, &dir.join("16"), 16, records, true).await?;
    eprintln!(
        "[kinesis 2/2] 64 shards, {} transactions: the agent's own speed with the shard ceiling far above it",
        records * 3
    );
    let wide = drain_run(bin, &dir.join("64"), 64, records * 3, false).await?;
    Ok(json!({
        "records_per_drain": [records, records * 3],
        "partition_keys": KEYS,
        "shards_16_with_limits": limited,
        "shards_64": wide,
        "endpoint": "test kit fake (same machine, in the harness process)",
    }))
}

/// Prints the figures.
pub fn print_table(r: &Value) {
    for key in ["shards_16_with_limits", "shards_64"] {
        let d = &r[key];
        println!(
            "{key:>22}: {:>9.0} user records/s ({:.1} MiB/s), aggregation {:.0}:1, PUT units {:.3}x minimum, \
             {:.1} ms CPU per 1,000 records, {:.1} ms per call",
            d["user_records_per_s"].as_f64().unwrap_or(0.0),
            d["mib_per_s"].as_f64().unwrap_or(0.0),
            d["aggregation_ratio"].as_f64().unwrap_or(0.0),
            d["put_units_ratio_to_minimum"].as_f64().unwrap_or(0.0),
            d["agent_cpu_ms_per_1000_records"].as_f64().unwrap_or(0.0),
            d["mean_call_ms"].as_f64().unwrap_or(0.0),
        );
    }
    for key in ["shards_16_with_limits", "shards_64"] {
        let d = &r[key];
        println!(
            "{key:>22}: ceiling {:.0} user records/s (1 MiB/s x {HEADROOM} per shard plus 1 s of burst, busiest shard {:.1}% of the bytes); reached {:.0}%",
            d["ceiling_user_records_per_s"].as_f64().unwrap_or(0.0),
            d["busiest_shard_share"].as_f64().unwrap_or(0.0) * 100.0,
            d["ratio_to_ceiling"].as_f64().unwrap_or(0.0) * 100.0
        );
    }
}
