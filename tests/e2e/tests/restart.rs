//! A restart during an attack must not reset what the rules know: `kill -9` in the
//! middle of a stream, restart, continue, and every decision equals the one the
//! uninterrupted run makes (the offline rule tester over the same stream). The state
//! comes back from the last periodic snapshot plus the journal after it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tillgate_testkit::{post, run_cli, scratch_dir, Agent, AgentOptions};

/// A stream with few cards, customers, operators and terminals, so velocity, card
/// testing, refund and shift rules fire again and again across the crash.
fn stream(n: usize) -> Vec<Value> {
    let mut rng = StdRng::seed_from_u64(7);
    let t0 = chrono::Utc::now() - chrono::Duration::seconds(30);
    (0..n)
        .map(|i| {
            let at = t0 + chrono::Duration::milliseconds(i as i64 * 20);
            let kind = match rng.random_range(0..100) {
                0..=79 => "sale",
                80..=87 => "return",
                88..=93 => "void",
                _ => "no_sale",
            };
            let mut t = json!({
                "txn_id": format!("r-{i}"),
                "store_id": "store-1",
                "terminal_id": format!("till-{}", rng.random_range(0..3)),
                "operator_id": format!("op-{}", rng.random_range(0..5)),
                "customer_id": format!("cust-{}", rng.random_range(0..10)),
                "occurred_at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "type": kind,
                "total_minor": if rng.random_bool(0.3) { rng.random_range(50..200) } else { rng.random_range(500..300_000) },
                "currency": "USD",
                "card": {"token": format!("tok-{}", rng.random_range(0..20)), "entry_mode": if rng.random_bool(0.1) { "keyed" } else { "chip" }},
            });
            if kind == "return" && rng.random_bool(0.7) {
                t["original_txn_id"] = json!(format!("r-{}", rng.random_range(0..i.max(1))));
            }
            t
        })
        .collect()
}

fn summary(decision: &Value) -> (String, Vec<String>) {
    let mut rules: Vec<String> = decision["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["id"].as_str().unwrap_or_default().to_string())
        .collect();
    rules.sort();
    (decision["decision"].as_str().unwrap_or_default().to_string(), rules)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_after_kill_9_equal_the_uninterrupted_run() {
    let dir = scratch_dir();
    let txns = stream(2_000);
    let input = dir.join("stream.ndjson");
    std::fs::write(&input, txns.iter().map(|t| t.to_string() + "\n").collect::<String>()).unwrap();

    // The uninterrupted run: the same rules over the same stream, offline.
    let rules = tillgate_testkit::rule_pack();
    let (code, out, err) = run_cli(&[
        "rules",
        "test",
        "--rules",
        rules.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let expected: BTreeMap<String, (String, Vec<String>)> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["txn_id"].as_str().unwrap().to_string(), summary(&v)))
        .collect();
    assert_eq!(expected.len(), txns.len());
    let fired = expected.values().filter(|(_, r)| !r.is_empty()).count();
    assert!(fired > 200, "the stream must make rules fire, {fired} did");

    // A snapshot every 250 transactions: the kill comes after at least two.
    let opts = AgentOptions {
        journal_toml: "rule_snapshot_transactions = 250\n".into(),
        ..AgentOptions::default()
    };
    let mut agent = Agent::start(&dir, &opts);
    let client = tillgate_testkit::http_client();
    let mut got: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let kill_at = 700 + rand::rng().random_range(0..600);
    let mut killed = false;
    let mut i = 0;
    while i < txns.len() {
        if i == kill_at && !killed {
            // Kill while a request is in flight: send it, then kill without waiting.
            let url = agent.url();
            let body = txns[i].to_string();
            let c = client.clone();
            let inflight = tokio::spawn(async move { post(&c, &url, body).await });
            tokio::time::sleep(Duration::from_micros(rand::rng().random_range(0..3000))).await;
            agent.kill9();
            let _ = inflight.await;
            killed = true;
            agent = Agent::start(&dir, &opts);
            // The in-flight transaction is sent again: journaled before the kill, it gets
            // its first decision back; if not, it is decided now.
            continue;
        }
        let (status, answer) = post(&client, &agent.url(), txns[i].to_string())
            .await
            .expect("agent answers");
        assert_eq!(status, 200, "{answer}");
        got.insert(txns[i]["txn_id"].as_str().unwrap().to_string(), summary(&answer));
        i += 1;
    }
    assert!(killed);
    assert!(
        agent.log().contains("rule state rebuilt from the journal")
            && agent.log().contains("restored from the snapshot (oldest at seq"),
        "{}",
        agent.log()
    );
    let differences: Vec<_> = expected
        .iter()
        .filter(|(id, want)| got.get(*id) != Some(want))
        .take(5)
        .collect();
    assert!(
        differences.is_empty(),
        "decisions differ from the uninterrupted run (killed at {kill_at}): {:?}",
        differences
            .iter()
            .map(|(id, want)| (id, want, got.get(*id)))
            .collect::<Vec<_>>()
    );
    agent.stop();
}
