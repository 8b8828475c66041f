//! The chain's cloud stack (cloud/template.yaml): checked by the linters nobody here
//! wrote, deployed into an AWS emulator (moto's server), and a gateway configured from
//! its outputs by `tillgate cloud gateway-config` shipping into it.
//!
//! What moto cannot check (it has no CloudFormation support for them, or ignores the
//! property): Firehose, the Glue database and table, log streams, on-demand stream mode,
//! stream, topic and table encryption, the bucket's lifecycle rules, the table's time to
//! live, the function's architecture; nor can it run the function (that needs Docker)
//! or poll the stream for it. Those are covered by cfn-lint (the resource specification)
//! and checkov (security rules) only; the function's code runs here as
//! `alerts-from-stream`, the same handler over the same stream. Chain rules on Flink are
//! in chain_rules.rs.

use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::process::Command;
use std::time::Duration;
use tillgate_testkit::emulators::kinesis_local::read_stream_with_boto3;
use tillgate_testkit::emulators::moto::{
    alerts_stream, chain_template, cloud_tool, deploy_chain, outputs_by_key, run_alert_handler, AlertHandlerTargets,
    Moto,
};
use tillgate_testkit::{make_tls_files, post_ndjson, run_cli, txn, Agent, AgentOptions, FakeIot};

fn template() -> std::path::PathBuf {
    chain_template()
}

#[test]
fn the_stack_template_passes_cfn_lint() {
    let out = Command::new(cloud_tool("cfn-lint"))
        .arg(template())
        .output()
        .expect("cfn-lint runs");
    assert!(
        out.status.success(),
        "cfn-lint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// checkov's CloudFormation rules: nothing fails, and each rule the template skips says
/// why in the template (Metadata.checkov.skip[].comment).
#[test]
fn checkov_finds_nothing_and_every_skipped_check_says_why() {
    let out = Command::new(cloud_tool("checkov"))
        .arg("-f")
        .arg(template())
        .args(["--framework", "cloudformation", "--skip-download", "-o", "json"])
        .output()
        .expect("checkov runs");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov printed no JSON ({e}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let summary = &report["summary"];
    let failed: Vec<_> = report["results"]["failed_checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {} {}", c["check_id"], c["resource"], c["check_name"]))
        .collect();
    assert!(failed.is_empty(), "checkov findings: {failed:#?}");
    assert_eq!(summary["parsing_errors"], 0, "{summary}");
    assert!(
        summary["passed"].as_u64().unwrap() >= 20,
        "checkov ran its rules: {summary}"
    );
    for skipped in report["results"]["skipped_checks"].as_array().unwrap() {
        let why = skipped["check_result"]["suppress_comment"].as_str().unwrap_or("");
        assert!(
            why.len() >= 40,
            "{} on {} is skipped without a reason: {why:?}",
            skipped["check_id"],
            skipped["resource"]
        );
    }
}

#[test]
fn shards_are_the_larger_of_bytes_and_records_rounded_up() {
    let (code, out, err) = run_cli(&[
        "cloud",
        "shards",
        "--mib-per-second",
        "2.5",
        "--records-per-second",
        "800",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("3 (") && out.contains("bytes set it"), "{out}");
    let (code, _, err) = run_cli(&["cloud", "shards", "--mib-per-second=-1", "--records-per-second", "0"]);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("--mib-per-second"), "{err}");
}

/// Every IAM action a statement allows, as strings.
fn actions(statement: &Value) -> BTreeSet<String> {
    match &statement["Action"] {
        Value::String(a) => [a.clone()].into(),
        Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
        other => panic!("Action {other}"),
    }
}

fn resources(statement: &Value) -> BTreeSet<String> {
    match &statement["Resource"] {
        Value::String(r) => [r.clone()].into(),
        Value::Array(r) => r.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
        other => panic!("Resource {other}"),
    }
}

/// The gateway's credentials: the role the stack's alias names may write to the three
/// streams and to video streams named after the thing, nothing else; the IoT policy lets
/// a certificate buy them only through that alias.
fn assert_least_privilege(found: &Value, alias: &str) -> String {
    let alias_entry = &found["role_aliases"][alias];
    let role_arn = alias_entry["role_arn"].as_str().expect("the alias names a role");
    assert_eq!(alias_entry["credential_seconds"], 3600);
    let role = &found["roles"][role_arn];
    let trust = &role["trust"]["Statement"][0];
    assert_eq!(trust["Principal"]["Service"], "credentials.iot.amazonaws.com", "{role}");
    let statements: Vec<&Value> = role["policies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["Statement"].as_array().unwrap())
        .collect();
    assert!(statements.iter().all(|s| s["Effect"] == "Allow"));
    let streams: BTreeSet<String> = found["streams"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| s["arn"].as_str().unwrap().to_string())
        .collect();
    let mut allowed = BTreeSet::new();
    for s in &statements {
        let acts = actions(s);
        if acts.iter().all(|a| a.starts_with("kinesis:")) {
            assert_eq!(resources(s), streams, "the chain's three streams only");
        } else {
            assert!(acts.iter().all(|a| a.starts_with("kinesisvideo:")), "{s}");
            let video = resources(s);
            assert_eq!(video.len(), 1);
            let arn = video.into_iter().next().unwrap();
            assert!(
                arn.starts_with("arn:aws:kinesisvideo:us-east-1:")
                    && arn.ends_with(":stream/${credentials-iot:ThingName}.*/*"),
                "video streams named after the thing only: {arn}"
            );
        }
        allowed.extend(acts);
    }
    let expected: BTreeSet<String> = [
        "kinesis:PutRecords",
        "kinesis:ListShards",
        "kinesisvideo:DescribeStream",
        "kinesisvideo:CreateStream",
        "kinesisvideo:GetDataEndpoint",
        "kinesisvideo:PutMedia",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        allowed, expected,
        "exactly what the agent calls (kinesis/client.rs, video/kvs.rs)"
    );
    let policies = found["iot_policies"].as_object().unwrap();
    assert_eq!(policies.len(), 1, "{policies:?}");
    let statement = &policies.values().next().unwrap()["Statement"];
    assert_eq!(statement.as_array().unwrap().len(), 1);
    assert_eq!(
        actions(&statement[0]),
        ["iot:AssumeRoleWithCertificate".to_string()].into()
    );
    assert_eq!(
        resources(&statement[0]),
        [format!("arn:aws:iot:us-east-1:123456789012:rolealias/{alias}")].into()
    );
    role_arn.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_configured_from_the_stack_outputs_ships_into_the_stacks_streams() {
    let dir = tillgate_testkit::scratch_dir();
    let moto = Moto::start(&dir);
    let outputs = dir.join("outputs.json");
    let found = deploy_chain(
        &moto,
        &outputs,
        &[
            "StreamMode=PROVISIONED",
            "TransactionShards=3",
            "VideoRetentionHours=72",
        ],
    );
    assert_eq!(found["streams"]["chain-transactions"]["open_shards"], 3, "{found}");
    for stream in ["chain-decisions", "chain-alerts"] {
        assert_eq!(found["streams"][stream]["open_shards"], 1, "{found}");
    }
    let topics: HashSet<&str> = found["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        topics,
        HashSet::from([
            "arn:aws:sns:us-east-1:123456789012:chain-fraud-alerts",
            "arn:aws:sns:us-east-1:123456789012:chain-security-alerts",
            "arn:aws:sns:us-east-1:123456789012:chain-operations",
        ])
    );
    let lake = outputs_by_key(&outputs)["LakeBucketName"].clone();
    assert!(
        found["buckets"].as_array().unwrap().iter().any(|b| b == lake.as_str()),
        "the lake: {found}"
    );
    assert_least_privilege(&found, "chain-gateway");

    // The cloud team's step: the gateway's sections from the outputs, with the thing's
    // certificate, against the credentials provider (the kit's, standing in for AWS IoT's,
    // knowing only the stack's role alias).
    let tls = make_tls_files(&dir.join("tls"));
    let iot = FakeIot::start(&tls, "chain-gateway", Duration::from_secs(3600)).await;
    let (code, sections, err) = run_cli(&[
        "cloud",
        "gateway-config",
        "--outputs",
        outputs.to_str().unwrap(),
        "--thing-name",
        "store-1-gateway",
        "--credentials-endpoint",
        &iot.endpoint(),
        "--cert-file",
        tls.client_cert.to_str().unwrap(),
        "--key-file",
        tls.client_key.to_str().unwrap(),
        "--ca-file",
        tls.ca.to_str().unwrap(),
        "--camera",
        "till-1=rtsp://127.0.0.1:8554/till-1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(sections.contains("data_retention_hours = 72"), "{sections}");
    assert!(sections.contains("stream = \"store-1-gateway.till-1\""), "{sections}");
    let file = dir.join("gateway.toml");
    std::fs::write(&file, &sections).unwrap();
    let (code, out, err) = run_cli(&["check-config", file.to_str().unwrap()]);
    assert_eq!(
        code, 0,
        "the printed sections are a valid config: {out}{err}\n{sections}"
    );

    // The agent with those sections (cameras left out: no camera runs here), shipping
    // into the emulator's streams with the credentials the alias bought.
    let kinesis_only = sections.split("\n[video]").next().unwrap().to_string();
    let opts = AgentOptions {
        extra_toml: kinesis_only,
        env: vec![
            ("AWS_ENDPOINT_URL".into(), moto.url()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ],
        ..AgentOptions::default()
    };
    let agent = Agent::start(&dir.join("agent"), &opts);
    let client = tillgate_testkit::http_client();
    let mut ids = HashSet::new();
    for batch in 0..5 {
        let mut body = String::new();
        for i in 0..40 {
            let id = format!("cloud-{batch}-{i}");
            body.push_str(&txn(&id, &format!("till-{}", i % 6), 100 + i).to_string());
            body.push('\n');
            ids.insert(id);
        }
        let (status, answers) = post_ndjson(&client, &agent.url(), body).await.unwrap();
        assert_eq!(status, 200, "{answers:?}");
    }
    for sink in ["kinesis-transactions", "kinesis-decisions"] {
        agent.wait_shipped(sink, Duration::from_secs(60)).await;
    }
    assert!(
        iot.issued.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "credentials came through the alias"
    );
    let url = moto.url();
    let read = tokio::task::spawn_blocking(move || read_stream_with_boto3(&url, "chain-transactions"))
        .await
        .unwrap();
    let landed: HashSet<String> = read
        .user_records
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(&r.data).unwrap()["txn_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(read.user_records.len(), ids.len(), "each once");
    assert_eq!(landed, ids);
    assert!(
        read.user_records.iter().all(|r| r.aggregated),
        "KPL aggregates, de-aggregated by aws-kinesis-agg"
    );
    agent.stop();
}

/// The alert handler's wiring: the alerts stream feeds it with partial batch responses,
/// retries until a record goes through (what can never be published goes to the
/// dead-letter queue from the function itself); it may read that stream, claim in its
/// table, publish to the fraud topic and send to its queue, and nothing else.
#[test]
fn the_alert_handler_is_wired_to_the_alerts_stream_retrying_until_records_go_through() {
    let dir = tillgate_testkit::scratch_dir();
    let moto = Moto::start(&dir);
    let outputs = dir.join("outputs.json");
    let found = deploy_chain(&moto, &outputs, &[]);
    let out = outputs_by_key(&outputs);
    let function = &found["functions"]["chain-alert-handler"];
    assert_eq!(function["runtime"], "provided.al2023", "{found}");
    let env = &function["environment"];
    assert_eq!(env["ALERTS_TOPIC_ARN"], out["FraudAlertsTopicArn"].as_str());
    assert_eq!(env["CLAIMS_TABLE"], out["AlertClaimsTableName"].as_str());
    assert_eq!(env["DEAD_LETTER_QUEUE_URL"], out["AlertsDeadLetterQueueUrl"].as_str());
    let mappings: Vec<&Value> = found["event_source_mappings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["function"].as_str().unwrap_or("").ends_with(":chain-alert-handler"))
        .collect();
    assert_eq!(mappings.len(), 1, "{mappings:?}");
    let m = mappings[0];
    assert_eq!(m["source"], found["streams"]["chain-alerts"]["arn"]);
    assert_eq!(m["response_types"], serde_json::json!(["ReportBatchItemFailures"]));
    assert_eq!(
        m["retries"].as_i64(),
        Some(-1),
        "no alert is skipped after some retries: {m}"
    );
    assert!(
        m["on_failure"].as_str().unwrap().contains("AlertsDeadLetterQueue"),
        "{m}"
    );
    assert_eq!(
        found["tables"][out["AlertClaimsTableName"].as_str()]["key"][0]["AttributeName"],
        "alert_id"
    );
    let role = &found["roles"][function["role"].as_str().unwrap()];
    let mut allowed = BTreeSet::new();
    for statement in role["policies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["Statement"].as_array().unwrap())
    {
        let acts = actions(statement);
        let res = resources(statement);
        if acts.contains("sns:Publish") {
            assert_eq!(res, [out["FraudAlertsTopicArn"].clone()].into(), "the fraud topic only");
        }
        if acts.iter().any(|a| a.starts_with("dynamodb:")) {
            assert!(
                res.iter()
                    .all(|r| r.ends_with(&format!("table/{}", out["AlertClaimsTableName"]))),
                "{res:?}"
            );
        }
        if acts.contains("kinesis:GetRecords") {
            assert_eq!(
                res,
                [found["streams"]["chain-alerts"]["arn"].as_str().unwrap().to_string()].into()
            );
        }
        allowed.extend(acts);
    }
    assert!(
        !allowed.iter().any(|a| a.ends_with(":*") || a == "*"),
        "no wildcard actions: {allowed:?}"
    );
}

/// One alert: a high sale at terminal `till` as the agent would journal it.
fn alert_line(n: u32) -> String {
    serde_json::json!({
        "kind": "rule_hit", "txn_id": format!("agg-{n}"), "store_id": "store-9", "terminal_id": "till-2",
        "seq": n, "total_minor": 250_000 + n, "currency": "EUR", "decision": "review", "severity": "medium",
        "rules": [{"id": "high-amount-sale", "action": "review", "mode": "enforce", "severity": "medium", "reason": "large"}],
        "event_time": "2026-12-04T10:00:00.000Z", "raised_at": "2026-12-04T10:00:00.010Z"
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_reaches_the_fraud_teams_queue_once_also_when_its_aggregate_comes_twice() {
    let dir = tillgate_testkit::scratch_dir();
    let moto = Moto::start(&dir);
    let outputs = dir.join("outputs.json");
    deploy_chain(&moto, &outputs, &[]);
    let out = outputs_by_key(&outputs);
    let targets = AlertHandlerTargets::from_outputs(&out);
    let topic = targets.topic_arn.clone();
    let queue = alerts_stream("subscribe", &moto.url(), &topic, "");

    // A gateway configured from the outputs, whose rules flag every fifth sale.
    let (code, sections, err) = run_cli(&[
        "cloud",
        "gateway-config",
        "--outputs",
        outputs.to_str().unwrap(),
        "--thing-name",
        "store-1-gateway",
    ]);
    assert_eq!(code, 0, "{err}");
    let opts = AgentOptions {
        extra_toml: sections,
        env: vec![
            ("AWS_ENDPOINT_URL".into(), moto.url()),
            ("AWS_ACCESS_KEY_ID".into(), "AKIDTEST".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "secret".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ],
        ..AgentOptions::default()
    };
    let agent = Agent::start(&dir.join("agent"), &opts);
    let client = tillgate_testkit::http_client();
    let mut body = String::new();
    for i in 0..30 {
        let amount = if i % 5 == 0 { 250_000 } else { 1_000 + i };
        body.push_str(&txn(&format!("alert-{i}"), "till-1", amount).to_string());
        body.push('\n');
    }
    let (status, answers) = post_ndjson(&client, &agent.url(), body).await.unwrap();
    assert_eq!(status, 200, "{answers:?}");
    agent.wait_shipped("kinesis-alerts", Duration::from_secs(60)).await;
    agent.stop();
    // How many alerts the stream holds, by the independent reader.
    let url = moto.url();
    let shipped = tokio::task::spawn_blocking(move || read_stream_with_boto3(&url, "chain-alerts"))
        .await
        .unwrap();
    let alerts = shipped.user_records.len() as u64;
    assert!(
        alerts >= 6,
        "six high sales flagged, and whatever else the pack saw: {alerts}"
    );

    let first = run_alert_handler(&moto.url(), "chain-alerts", &targets);
    assert_eq!(first["published"], alerts, "{first}");
    assert_eq!(
        (first["unreadable"].as_u64(), first["failed"].as_u64()),
        (Some(0), Some(0)),
        "{first}"
    );
    let messages: Vec<Value> = serde_json::from_str(&alerts_stream("drain", &moto.url(), &queue, "")).unwrap();
    assert_eq!(messages.len() as u64, alerts, "one message per alert");
    let high: Vec<&Value> = messages
        .iter()
        .filter(|m| m["subject"].as_str().unwrap().contains("high-amount-sale"))
        .collect();
    assert_eq!(high.len(), 6, "{messages:#?}");
    for m in &high {
        let text = m["message"].as_str().unwrap();
        for needle in [
            "Store: store-1",
            "Terminal: till-1",
            "Amount: 2500.00 USD",
            "Decision: review",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        assert_eq!(m["attributes"]["decision"], "review");
        assert_eq!(m["attributes"]["store_id"], "store-1");
    }

    // The gateway ships the same aggregates again (an ambiguous failure), and Lambda
    // delivers the stream again (a retry): nothing new reaches the team.
    assert_eq!(
        alerts_stream("redeliver", &moto.url(), "chain-alerts", "")
            .parse::<u64>()
            .unwrap(),
        shipped.kinesis_records
    );
    let again = run_alert_handler(&moto.url(), "chain-alerts", &targets);
    assert_eq!(
        (again["published"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(2 * alerts)),
        "{again}"
    );
    let messages: Vec<Value> = serde_json::from_str(&alerts_stream("drain", &moto.url(), &queue, "")).unwrap();
    assert!(messages.is_empty(), "{messages:#?}");
}

/// Aggregates made by aws-kinesis-agg (the KPL format's independent implementation) are
/// read by the handler; one whose MD5 is broken goes with
/// its bytes and sequence number to the stack's dead-letter queue, nothing of it is
/// published, and it is not retried (the shard moves on).
#[test]
fn aggregates_from_aws_kinesis_agg_are_read_and_a_broken_md5_goes_to_the_dead_letter_queue() {
    let dir = tillgate_testkit::scratch_dir();
    let moto = Moto::start(&dir);
    let outputs = dir.join("outputs.json");
    deploy_chain(&moto, &outputs, &[]);
    let out = outputs_by_key(&outputs);
    let targets = AlertHandlerTargets::from_outputs(&out);
    let topic = targets.topic_arn.clone();
    let queue = alerts_stream("subscribe", &moto.url(), &topic, "");
    let lines: String = (1..=40).map(|n| alert_line(n) + "\n").collect();
    let put: u64 = alerts_stream("put-aggregated", &moto.url(), "chain-alerts", &lines)
        .parse()
        .unwrap();
    assert!(put >= 1);
    let summary = run_alert_handler(&moto.url(), "chain-alerts", &targets);
    assert_eq!(summary["published"], 40, "{summary}");
    let messages: Vec<Value> = serde_json::from_str(&alerts_stream("drain", &moto.url(), &queue, "")).unwrap();
    assert_eq!(messages.len(), 40);
    assert!(messages
        .iter()
        .any(|m| m["message"].as_str().unwrap().contains("Amount: 2500.01 EUR")));

    let corrupt = alerts_stream("put-corrupt", &moto.url(), "chain-alerts", "");
    let summary = run_alert_handler(&moto.url(), "chain-alerts", &targets);
    assert_eq!(summary["unreadable"], 1, "{summary}");
    assert_eq!(
        summary["failed_records"],
        serde_json::json!([]),
        "not retried: {summary}"
    );
    let dead: Vec<Value> = serde_json::from_str(&alerts_stream(
        "drain-raw",
        &moto.url(),
        &targets.dead_letter_queue_url,
        "",
    ))
    .unwrap();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["sequence_number"], corrupt.as_str());
    assert!(dead[0]["reason"].as_str().unwrap().contains("MD5"), "{}", dead[0]);
    assert!(
        dead[0]["data_bytes"].as_u64().unwrap() > 1000,
        "the aggregate's bytes are kept"
    );
    assert_eq!(
        (summary["published"].as_u64(), summary["duplicates"].as_u64()),
        (Some(0), Some(40))
    );
    let messages: Vec<Value> = serde_json::from_str(&alerts_stream("drain", &moto.url(), &queue, "")).unwrap();
    assert!(
        messages.is_empty(),
        "nothing of a broken aggregate is published: {messages:#?}"
    );
}
