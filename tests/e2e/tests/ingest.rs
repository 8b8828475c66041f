//! Functional end-to-end tests of the decision endpoint, with the real binary.

use serde_json::{json, Value};
use std::collections::HashSet;
use tillgate_testkit::{
    archive_lines, archive_txn_ids, dead_letters, journal_txn_ids, post, post_ndjson, txn, Agent, AgentOptions,
};

fn client() -> reqwest::Client {
    tillgate_testkit::http_client_builder()
        .pool_max_idle_per_host(16)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_transactions_from_eight_clients_reach_the_archive_exactly_once() {
    let tmp = tempfile_dir();
    let agent = Agent::start(&tmp, &AgentOptions::default());
    let url = agent.url();
    let mut tasks = Vec::new();
    for c in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut acked = Vec::new();
            for i in 0..1250 {
                let id = format!("c{c}-{i}");
                let body = txn(&id, &format!("till-{c}"), 100 + i).to_string();
                let (status, answer) = post(&client, &url, body).await.expect("agent answers");
                assert_eq!(status, 200, "{answer}");
                assert_eq!(answer["txn_id"], json!(id));
                assert!(answer["seq"].as_u64().unwrap() > 0);
                assert!(answer["decided_in_us"].is_u64());
                acked.push(id);
            }
            acked
        }));
    }
    let mut acked = HashSet::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert_eq!(acked.len(), 10_000);
    // Every 200 has its journal row, while the agent is still running.
    let journaled = journal_txn_ids(&agent.journal());
    assert!(
        acked.is_subset(&journaled),
        "{} acknowledged but not journaled",
        acked.difference(&journaled).count()
    );

    let archive = agent.archive();
    let status = agent.terminate();
    assert!(status.success(), "drain must exit 0, got {status}");
    let counts = archive_txn_ids(&archive);
    assert_eq!(counts.len(), 10_000, "every txn archived");
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dups.is_empty(), "archived more than once after a clean drain: {dups:?}");
    assert!(acked.iter().all(|id| counts.contains_key(id)));
    // Unknown fields are kept, the agent's stamps are added, and per-terminal order holds.
    let lines = archive_lines(&archive, "transactions");
    assert_eq!(lines[0]["vendor_extension"], json!({"lane": 3}));
    assert!(lines[0]["received_at"].is_string() && lines[0]["clock_skew"] == json!(false));
    let mut last_seq_per_terminal = std::collections::HashMap::new();
    for l in &lines {
        let seq = l["seq"].as_u64().unwrap();
        let prev = last_seq_per_terminal.insert(l["terminal_id"].as_str().unwrap().to_string(), seq);
        assert!(prev.is_none_or(|p| p < seq), "per-terminal order broken at {l}");
    }
    assert_eq!(archive_lines(&archive, "decisions").len(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_txn_id_returns_the_first_decision() {
    let tmp = tempfile_dir();
    let agent = Agent::start(&tmp, &AgentOptions::default());
    let c = client();
    let (s1, first) = post(&c, &agent.url(), txn("dup-1", "till-1", 250_000).to_string())
        .await
        .unwrap();
    assert_eq!(s1, 200);
    assert_eq!(first["decision"], "review", "{first}");
    assert_eq!(first["rules"][0]["id"], "high-amount-sale");
    // Same txn_id, different content: the first decision comes back, nothing is re-counted.
    let (s2, again) = post(&c, &agent.url(), txn("dup-1", "till-1", 500).to_string())
        .await
        .unwrap();
    assert_eq!(s2, 200);
    assert_eq!(again["decision"], first["decision"]);
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(again["duplicate"], json!(true));
    // Inside one batch too.
    let line = txn("dup-2", "till-1", 100).to_string();
    let (s3, answers) = post_ndjson(&c, &agent.url(), format!("{line}\n{line}\n"))
        .await
        .unwrap();
    assert_eq!(s3, 200);
    assert_eq!(answers[0]["seq"], answers[1]["seq"]);
    assert_eq!(answers[1]["duplicate"], json!(true));
    let journaled = journal_txn_ids(&agent.journal());
    assert_eq!(journaled.len(), 2);
    let metrics = agent.metrics_text().await;
    assert!(
        metrics.contains("tillgate_transactions_total{outcome=\"duplicate\",source=\"http\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_specific_4xx_and_a_dead_letter_and_the_agent_keeps_serving() {
    let tmp = tempfile_dir();
    let agent = Agent::start(&tmp, &AgentOptions::default());
    let c = client();
    let url = agent.url();
    let mut missing = txn("bad-3", "till-1", 100);
    missing.as_object_mut().unwrap().remove("currency");
    let mut pan = txn("bad-5", "till-1", 100);
    pan["card"]["token"] = json!("4111 1111 1111 1111");
    let mut wrong = txn("bad-2", "till-1", 100);
    wrong["total_minor"] = json!(19.99);
    wrong["type"] = json!("refund");
    let mut big = txn("bad-4", "till-1", 100);
    big["notes"] = json!("x".repeat(70 * 1024));
    let cases: Vec<(String, u16, Vec<&str>)> = vec![
        ("{\"txn_id\": \"bad-1\", ".into(), 400, vec!["malformed JSON at line 1"]),
        (
            wrong.to_string(),
            400,
            vec![
                "total_minor",
                "decimal",
                "type",
                "unknown transaction type",
                "refund",
                "sale, return",
            ],
        ),
        (
            missing.to_string(),
            400,
            vec!["currency", "required but missing", "ISO 4217"],
        ),
        (big.to_string(), 413, vec!["65536-byte limit"]),
        (pan.to_string(), 400, vec!["card.token", "full card number"]),
        ("[1,2]".into(), 400, vec!["expected a JSON object", "an array"]),
    ];
    for (body, want_status, needles) in &cases {
        let (status, answer) = post(&c, &url, body.clone()).await.unwrap();
        assert_eq!(status, *want_status, "{answer}");
        let text = answer.to_string();
        for n in needles {
            assert!(text.contains(n), "answer lacks {n:?}: {text}");
        }
    }
    let (status, answer) = post(&c, &url, txn("good-1", "till-1", 100).to_string()).await.unwrap();
    assert_eq!((status, answer["decision"].as_str()), (200, Some("allow")));

    let letters = dead_letters(&agent.journal());
    assert_eq!(letters.len(), cases.len(), "one dead letter per bad input");
    assert!(letters
        .iter()
        .all(|(source, reason, _)| source == "http" && !reason.is_empty()));
    let all_raw: Vec<u8> = letters.iter().flat_map(|(_, _, raw)| raw.clone()).collect();
    let all_raw = String::from_utf8_lossy(&all_raw);
    assert!(
        !all_raw.contains("4111 1111 1111 1111"),
        "a PAN reached the dead-letter table"
    );
    assert!(all_raw.contains("1111"), "the last four digits are kept for diagnosis");
    let journaled = journal_txn_ids(&agent.journal());
    assert_eq!(journaled, HashSet::from(["good-1".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_batch_answers_each_line_in_order() {
    let tmp = tempfile_dir();
    let agent = Agent::start(&tmp, &AgentOptions::default());
    let c = client();
    let mut denied = txn("b-2", "till-1", 100);
    denied["card"]["token"] = json!("tok_stolen_0001");
    let body = format!(
        "{}\n{}\nnot json\n{}\n",
        txn("b-1", "till-1", 100),
        denied,
        txn("b-3", "till-1", 300_000)
    );
    let (status, answers) = post_ndjson(&c, &agent.url(), body).await.unwrap();
    assert_eq!(status, 200);
    let got: Vec<(Value, Value)> = answers
        .iter()
        .map(|a| (a["status"].clone(), a["decision"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (json!(200), json!("allow")),
            (json!(200), json!("block")),
            (json!(400), Value::Null),
            (json!(200), json!("review")),
        ]
    );
    assert_eq!(answers[2]["line"], json!(3));
    assert_eq!(dead_letters(&agent.journal()).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_required_when_configured() {
    let tmp = tempfile_dir();
    std::fs::write(tmp.join("token"), "s3cret\n").unwrap();
    let opts = AgentOptions {
        http_toml: format!("token = {{ file = \"{}\" }}", tmp.join("token").display()),
        ..Default::default()
    };
    let agent = Agent::start(&tmp, &opts);
    let c = client();
    let (status, answer) = post(&c, &agent.url(), txn("t-1", "till-1", 100).to_string())
        .await
        .unwrap();
    assert_eq!(status, 401, "{answer}");
    let resp = c
        .post(format!("{}/v1/transactions", agent.url()))
        .bearer_auth("s3cret")
        .body(txn("t-1", "till-1", 100).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let health = c.get(format!("{}/healthz", agent.url())).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200, "health stays open for probes");
}

fn tempfile_dir() -> std::path::PathBuf {
    tillgate_testkit::scratch_dir()
}
