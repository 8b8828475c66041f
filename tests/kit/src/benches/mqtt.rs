//! The MQTT figures for `tillgate-bench --suite mqtt`, each beside the broker's own
//! limit measured in the same run:
//!
//! 1. mosquitto alone: QoS 1 pub → sub rate, 8 publishers → 1 subscriber, the same
//!    payloads, no agent.
//! 2. Through the agent: 8 terminals publish as fast as QoS 1 lets them; the rate is
//!    transactions decided (journaled, ruled, decision published and received) per
//!    second. Each transaction is two broker deliveries (in, and the decision out).
//! 3. Publish-to-decision latency at 5,000 txn/s offered, from each transaction's
//!    scheduled send time to its decision's arrival at the terminal.

use crate::emulators::broker::{Broker, BrokerOptions};
use crate::terminal::Terminal;
use anyhow::{Context, Result};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TERMINALS: usize = 8;

/// A transaction payload of the usual size (≈ 300 bytes).
fn payload(txn_id: &str, terminal: &str, i: usize) -> Value {
    crate::txns::txn(txn_id, terminal, 100 + (i as i64 % 5_000))
}

/// mosquitto's own QoS 1 rate: 8 publishers → 1 subscriber, `n` messages.
pub async fn raw_broker_rate(broker: &Broker, n: usize) -> Result<Value> {
    let mut o = MqttOptions::new("bench-sub", "127.0.0.1", broker.port);
    o.set_inflight(1000);
    let (sub, mut el) = AsyncClient::new(o, 1000);
    sub.subscribe("bench/raw/#", QoS::AtLeastOnce).await?;
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let receiver = tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        let mut got = 0usize;
        let mut last = Instant::now();
        while got < n {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    got += 1;
                    last = Instant::now();
                }
                Ok(_) => {}
                Err(e) => return Err(anyhow::anyhow!("subscriber: {e}")),
            }
        }
        Ok(last)
    });
    subscribed.await.context("subscribed")?;
    let start = Instant::now();
    let mut publishers = Vec::new();
    for p in 0..TERMINALS {
        let mut o = MqttOptions::new(format!("bench-pub-{p}"), "127.0.0.1", broker.port);
        o.set_inflight(200);
        let (client, mut el) = AsyncClient::new(o, 1000);
        let per = n / TERMINALS;
        publishers.push(tokio::spawn(async move {
            let sender = tokio::spawn(async move {
                for i in 0..per {
                    let body = serde_json::to_vec(&payload(&format!("raw-{p}-{i}"), "till", i)).expect("json");
                    client
                        .publish(format!("bench/raw/{p}"), QoS::AtLeastOnce, false, body)
                        .await?;
                }
                anyhow::Ok(())
            });
            let mut acked = 0;
            while acked < per {
                if let Event::Incoming(Packet::PubAck(_)) = el.poll().await? {
                    acked += 1;
                }
            }
            sender.await??;
            anyhow::Ok(())
        }));
    }
    for p in publishers {
        p.await??;
    }
    let last = tokio::time::timeout(Duration::from_secs(120), receiver).await???;
    let secs = (last - start).as_secs_f64();
    Ok(json!({"messages": n, "seconds": secs, "msgs_per_s": n as f64 / secs}))
}

async fn terminals(broker: &Broker, prefix: &str) -> Vec<Arc<Terminal>> {
    let mut out = Vec::new();
    for i in 0..TERMINALS {
        out.push(Arc::new(
            Terminal::connect(broker.port, "store-1", &format!("{prefix}-{i}")).await,
        ));
    }
    out
}

/// Transactions decided per second through the agent, terminals publishing flat out.
pub async fn agent_max_rate(broker: &Broker, n: usize) -> Result<Value> {
    let terms = terminals(broker, "max").await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in &terms {
        let t = t.clone();
        let per = n / TERMINALS;
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                t.publish(&payload(&format!("{}-{i}", t.id), &t.id, i)).await;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let mut last = start;
    for t in &terms {
        anyhow::ensure!(
            t.await_decisions(Duration::from_secs(300), None).await,
            "terminal {} is missing {} decisions",
            t.id,
            t.undecided().len()
        );
        last = last.max(t.first_decision_at().into_values().max().unwrap_or(start));
    }
    let secs = (last - start).as_secs_f64();
    Ok(json!({"transactions": n, "seconds": secs, "txns_per_s": n as f64 / secs}))
}

/// Publish-to-decision latency at `rate` transactions/s offered for `duration`.
pub async fn agent_latency(broker: &Broker, rate: f64, duration: Duration) -> Result<Value> {
    let terms = terminals(broker, "lat").await;
    let per_terminal = rate / TERMINALS as f64;
    let count = (per_terminal * duration.as_secs_f64()) as usize;
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for (k, t) in terms.iter().enumerate() {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut scheduled = Vec::with_capacity(count);
            // Terminals are spread over the interval, not in phase.
            let offset = Duration::from_secs_f64(k as f64 / rate);
            for i in 0..count {
                let at = start + offset + Duration::from_secs_f64(i as f64 / per_terminal);
                tokio::time::sleep_until(at.into()).await;
                let id = format!("{}-{i}", t.id);
                t.publish(&payload(&id, &t.id, i)).await;
                scheduled.push((id, at));
            }
            scheduled
        }));
    }
    let mut scheduled = Vec::new();
    for task in tasks {
        scheduled.push(task.await?);
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    for (t, sent) in terms.iter().zip(scheduled) {
        anyhow::ensure!(
            t.await_decisions(Duration::from_secs(60), None).await,
            "terminal {} is missing {} decisions",
            t.id,
            t.undecided().len()
        );
        let arrived = t.first_decision_at();
        for (id, at) in sent {
            let us = arrived[&id].saturating_duration_since(at).as_micros() as u64;
            hist.record(us.max(1))?;
        }
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({
        "offered_per_s": rate,
        "transactions": hist.len(),
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": hist.max() as f64 / 1000.0,
    }))
}

/// The agent's config for the MQTT runs: fsync journal, the shipped rule pack.
pub fn agent_config(dir: &Path, http_port: u16, broker: &Broker) -> Result<std::path::PathBuf> {
    let path = dir.join("tillgate.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n[log]\nlevel = \"warn\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
             [journal]\ndurability = \"fsync\"\nmax_bytes = \"8GiB\"\n[rules]\npaths = [\"{}\"]\n{}",
            dir.display(),
            crate::rule_pack().display(),
            broker.agent_toml("tillgate-bench"),
        ),
    )?;
    Ok(path)
}

/// Starts a broker for the suite.
pub fn start_broker(dir: &Path) -> Broker {
    Broker::start(dir, &BrokerOptions::default())
}

/// Prints the suite's table (the JSON `tillgate-bench --suite mqtt` saves).
pub fn print_table(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let (raw, max, lat) = (&r["mosquitto_alone"], &r["agent_max_rate"], &r["agent_at_5000_per_s"]);
    println!("\ntillgate MQTT benchmark ({} cpus)", r["machine"]["cpus"]);
    println!(
        "mosquitto alone, QoS 1 pub->sub        {:>9.0} msg/s",
        f(&raw["msgs_per_s"])
    );
    println!(
        "through the agent (journal+rules+reply) {:>9.0} txn/s  = {:.0} % of mosquitto alone  (agent CPU {:.1}s, broker CPU {:.1}s)",
        f(&max["txns_per_s"]),
        f(&r["ratio_to_mosquitto_alone"]) * 100.0,
        f(&max["agent_cpu_s"]),
        f(&max["broker_cpu_s"]),
    );
    println!(
        "publish -> decision at 5,000 txn/s      p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
        f(&lat["p50_ms"]),
        f(&lat["p99_ms"]),
        f(&lat["p999_ms"]),
        f(&lat["max_ms"]),
    );
}
