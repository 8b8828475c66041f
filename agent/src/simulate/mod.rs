//! The POS load generator behind `tillgate simulate` and `tillgate demo`.
//!
//! Each simulated terminal is a sequential client, like a real till: it sends, waits for
//! the decision, and sends the next on its own schedule. Latency is measured from the
//! *scheduled* send time, so a stall shows up in the percentiles instead of hiding
//! (coordinated omission).

mod scenario;

pub use scenario::{payload, Scenario, DENIED_BIN, DENIED_TOKENS};

use hdrhistogram::Histogram;
use rand::{rngs::StdRng, SeedableRng};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Agent base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub token: Option<String>,
    pub stores: usize,
    pub terminals: usize,
    /// Offered transactions per second over all terminals; 0 = as fast as answered.
    pub rate: f64,
    pub duration: Duration,
    /// Share of transactions that carry injected fraud or bad input.
    pub fraud_rate: f64,
    /// Transactions per request; above 1 they go as an NDJSON batch.
    pub batch: usize,
    pub seed: u64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// What happened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimReport {
    pub offered_rate: f64,
    pub terminals: usize,
    pub batch: usize,
    pub elapsed_s: f64,
    pub sent: u64,
    pub decided: u64,
    pub throughput_per_s: f64,
    pub decisions: BTreeMap<String, u64>,
    pub rules_fired: BTreeMap<String, u64>,
    /// Non-200 answers by HTTP status (400 for injected bad input is expected).
    pub refused: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    /// Client-observed, from scheduled send to decision.
    pub latency: Latency,
    /// As the agent reported it (`decided_in_us`).
    pub agent_latency: Latency,
}

#[derive(Default)]
struct Tally {
    sent: u64,
    decided: u64,
    decisions: BTreeMap<String, u64>,
    rules_fired: BTreeMap<String, u64>,
    refused: BTreeMap<u16, u64>,
    transport_errors: u64,
    client: Option<Histogram<u64>>,
    agent: Option<Histogram<u64>>,
}

/// A snapshot for progress displays.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub elapsed: Duration,
    pub sent: u64,
    pub decided: u64,
    pub blocked: u64,
    pub review: u64,
    pub refused: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn latency(h: &Histogram<u64>) -> Latency {
    Latency {
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
    }
}

impl Tally {
    fn record(&mut self, status: u16, body: &Value, client_us: u64) {
        if status != 200 {
            *self.refused.entry(status).or_default() += 1;
            return;
        }
        self.decided += 1;
        let _ = self.client.get_or_insert_with(histogram).record(client_us.max(1));
        if let Some(us) = body["decided_in_us"].as_u64() {
            let _ = self.agent.get_or_insert_with(histogram).record(us.max(1));
        }
        if let Some(d) = body["decision"].as_str() {
            *self.decisions.entry(d.to_string()).or_default() += 1;
        }
        for r in body["rules"].as_array().into_iter().flatten() {
            if let Some(id) = r["id"].as_str() {
                *self.rules_fired.entry(id.to_string()).or_default() += 1;
            }
        }
    }
}

/// Runs the simulation; `progress` is called about twice a second.
pub async fn run(config: SimConfig, mut progress: impl FnMut(Progress)) -> SimReport {
    let client = tillgate_aws::https::client_builder()
        .pool_max_idle_per_host(config.terminals)
        .tcp_nodelay(true)
        .build()
        .expect("HTTP client builds");
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let deadline = started + config.duration;
    let mut tasks = Vec::new();
    for t in 0..config.terminals {
        let cfg = config.clone();
        let client = client.clone();
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            terminal(t, cfg, client, tally, started, deadline).await;
            // When this terminal got its last answer: the run's real end.
            Instant::now()
        }));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while tasks.iter().any(|t| !t.is_finished()) {
        tick.tick().await;
        let t = tally.lock().unwrap_or_else(|p| p.into_inner());
        progress(Progress {
            elapsed: started.elapsed(),
            sent: t.sent,
            decided: t.decided,
            blocked: t.decisions.get("block").copied().unwrap_or(0),
            review: t.decisions.get("review").copied().unwrap_or(0),
            refused: t.refused.values().sum(),
        });
    }
    let mut finished = started;
    for t in tasks {
        if let Ok(at) = t.await {
            finished = finished.max(at);
        }
    }
    let elapsed = (finished - started).as_secs_f64();
    let t = tally.lock().unwrap_or_else(|p| p.into_inner());
    SimReport {
        offered_rate: config.rate,
        terminals: config.terminals,
        batch: config.batch,
        elapsed_s: elapsed,
        sent: t.sent,
        decided: t.decided,
        throughput_per_s: t.decided as f64 / elapsed,
        decisions: t.decisions.clone(),
        rules_fired: t.rules_fired.clone(),
        refused: t.refused.clone(),
        transport_errors: t.transport_errors,
        latency: t.client.as_ref().map(latency).unwrap_or_default(),
        agent_latency: t.agent.as_ref().map(latency).unwrap_or_default(),
    }
}

async fn terminal(
    index: usize,
    cfg: SimConfig,
    client: reqwest::Client,
    tally: Arc<Mutex<Tally>>,
    started: Instant,
    deadline: Instant,
) {
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_add(index as u64));
    let store = format!("store-{:03}", index % cfg.stores.max(1) + 1);
    let terminal = format!("till-{:03}", index + 1);
    let per_terminal = cfg.rate / cfg.terminals as f64;
    let interval = (per_terminal > 0.0).then(|| Duration::from_secs_f64(cfg.batch as f64 / per_terminal));
    // Spread the terminals' first sends over one interval.
    let mut next = started + interval.map_or(Duration::ZERO, |i| i.mul_f64(index as f64 / cfg.terminals as f64));
    let url = format!("{}/v1/transactions", cfg.url.trim_end_matches('/'));
    let mut n = 0u64;
    while next < deadline {
        if let Some(_i) = interval {
            tokio::time::sleep_until(next.into()).await;
        } else {
            next = Instant::now();
        }
        let mut body = Vec::new();
        for _ in 0..cfg.batch {
            n += 1;
            let scenario = Scenario::pick(&mut rng, cfg.fraud_rate);
            let id = format!("{terminal}-{}-{n}", cfg.seed);
            body.extend(payload(&mut rng, scenario, &store, &terminal, &id));
            body.push(b'\n');
        }
        let mut req = client.post(&url).body(body);
        req = req.header(
            "content-type",
            if cfg.batch > 1 {
                "application/x-ndjson"
            } else {
                "application/json"
            },
        );
        if let Some(t) = &cfg.token {
            req = req.bearer_auth(t);
        }
        tally.lock().unwrap_or_else(|p| p.into_inner()).sent += cfg.batch as u64;
        let outcome = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                resp.bytes().await.map(|b| (status, b))
            }
            Err(e) => Err(e),
        };
        let client_us = next.elapsed().as_micros() as u64;
        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok((status, bytes)) if cfg.batch > 1 && status == 200 => {
                for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    let v: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
                    let s = v["status"].as_u64().unwrap_or(0) as u16;
                    t.record(s, &v, client_us);
                }
            }
            Ok((status, bytes)) => {
                let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                for _ in 0..cfg.batch {
                    t.record(status, &v, client_us);
                }
            }
            Err(_) => t.transport_errors += cfg.batch as u64,
        }
        drop(t);
        if let Some(i) = interval {
            next += i;
        }
    }
}
