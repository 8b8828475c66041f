//! POS → journal → kinesis-local (the emulator LocalStack uses), read back with boto3
//! and de-aggregated with aws-kinesis-agg: neither reader was written here.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tillgate_testkit::checkers::kinesis::{kinesis_toml, static_credentials_env, Landed};
use tillgate_testkit::emulators::kinesis_local::{read_stream_with_boto3, KinesisLocal};
use tillgate_testkit::{journal_bodies, post_ndjson, txn, Agent, AgentOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_reach_kinesis_local_aggregated_and_byte_for_byte() {
    let dir = tillgate_testkit::scratch_dir();
    let local = KinesisLocal::start("txns:4", &dir);
    let opts = AgentOptions {
        extra_toml: kinesis_toml(
            &local.url(),
            "txns",
            None,
            "request_timeout = \"10s\"\nlinger = \"300ms\"",
        ),
        env: static_credentials_env(),
        ..AgentOptions::default()
    };
    let agent = Agent::start(&dir, &opts);
    let client = tillgate_testkit::http_client();
    let mut ids = HashSet::new();
    for batch in 0..20 {
        let mut body = String::new();
        for i in 0..100 {
            let id = format!("kl-{batch}-{i}");
            body.push_str(&txn(&id, &format!("till-{}", i % 8), 100 + i).to_string());
            body.push('\n');
            ids.insert(id);
        }
        let (status, answers) = post_ndjson(&client, &agent.url(), body).await.unwrap();
        assert_eq!(status, 200, "{answers:?}");
    }
    // Shipped once the sink's cursor passed every record.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sink = agent.sink_status("kinesis-transactions").await;
        if sink["backlog_records"] == 0 && sink["last_success_ms"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not shipped in 120 s: {sink}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let read = tokio::task::spawn_blocking({
        let url = local.url();
        move || read_stream_with_boto3(&url, "txns")
    })
    .await
    .unwrap();
    assert_eq!(read.user_records.len(), 2000, "every transaction once");
    assert!(read.aggregated_kinesis_records > 0);
    assert!(
        read.kinesis_records < 200,
        "{} Kinesis records for 2,000 transactions: aggregation",
        read.kinesis_records
    );
    assert!(
        read.user_records.iter().all(|r| r.aggregated),
        "aws-kinesis-agg de-aggregated every record"
    );
    // Byte for byte what the journal holds, and the partition key is the terminal's.
    let bodies = journal_bodies(&agent.journal());
    let mut seen = HashMap::new();
    for r in &read.user_records {
        let v: serde_json::Value = serde_json::from_str(&r.data).unwrap();
        let id = v["txn_id"].as_str().unwrap().to_string();
        assert_eq!(r.data.as_bytes(), bodies[&id].as_slice(), "{id} changed on the way");
        assert_eq!(
            r.partition_key,
            format!("store-1/{}", v["terminal_id"].as_str().unwrap())
        );
        *seen.entry(id).or_insert(0) += 1;
    }
    assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), ids);
    // Per-key order, as a consumer reading each shard in order sees it.
    let landed = Landed::new(
        read.user_records
            .iter()
            .map(|r| (r.partition_key.clone(), r.data.clone().into_bytes())),
    );
    assert!(landed.order_violations().is_empty(), "{:?}", landed.order_violations());
    agent.stop();
}
