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
//! `alerts-from-stream`, the same handler over the same stream.

use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};
use tillgate_testkit::emulators::kinesis_local::read_stream_with_boto3;
use tillgate_testkit::emulators::moto::{
    alert_handler_program, alerts_stream, cloud_tool, run_alert_handler, AlertHandlerTargets, Moto,
};
use tillgate_testkit::{make_tls_files, post_ndjson, repo_root, run_cli, txn, Agent, AgentOptions, FakeIot};

fn template() -> std::path::PathBuf {
    repo_root().join("cloud/template.yaml")
}

/// Deploys the chain stack as `chain` into `moto`, with the alert handler's package
/// uploaded first (the host build: moto stores the package, it never runs it).
fn deploy_chain(moto: &Moto, outputs: &std::path::Path, parameters: &[&str]) -> Value {
    let upload = format!(
        "upload:tillgate-functions/tillgate/alert-handler-arm64.zip={}",
        alert_handler_program("bootstrap").display()
    );
    let mut all = vec!["FunctionCodeBucket=tillgate-functions", upload.as_str()];
    all.extend_from_slice(parameters);
    moto.deploy(&template(), "chain", outputs, &all)
}

/// Where the stack's alert handler publishes, claims and dead-letters.
fn handler_targets(out: &std::collections::HashMap<String, String>) -> AlertHandlerTargets {
    AlertHandlerTargets {
        topic_arn: out["FraudAlertsTopicArn"].clone(),
        claims_table: out["AlertClaimsTableName"].clone(),
        dead_letter_queue_url: out["AlertsDeadLetterQueueUrl"].clone(),
    }
}

/// The stack's outputs by key.
fn outputs_by_key(outputs: &std::path::Path) -> std::collections::HashMap<String, String> {
    let described: Value = serde_json::from_str(&std::fs::read_to_string(outputs).unwrap()).unwrap();
    described["Stacks"][0]["Outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["OutputKey"].as_str().unwrap().to_string(),
                o["OutputValue"].as_str().unwrap().to_string(),
            )
        })
        .collect()
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
    let deadline = Instant::now() + Duration::from_secs(60);
    for sink in ["kinesis-transactions", "kinesis-decisions"] {
        loop {
            let status = agent.sink_status(sink).await;
            if status["backlog_records"] == 0 && status["last_success_ms"].as_i64().unwrap_or(0) > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{sink} not shipped in 60 s: {status}\n{}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
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
    let mappings = found["event_source_mappings"].as_array().unwrap();
    assert_eq!(mappings.len(), 1, "{mappings:?}");
    let m = &mappings[0];
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
    let targets = handler_targets(&out);
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
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sink = agent.sink_status("kinesis-alerts").await;
        if sink["backlog_records"] == 0 && sink["last_success_ms"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alerts not shipped in 60 s: {sink}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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
    let targets = handler_targets(&out);
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

/// Chain rules beyond the shipped two: a conditional aggregate, a count window, min/max/
/// avg, and a rule without a window.
const MORE_CHAIN_RULES: &str = r#"
[[rule]]
id = "refund-share-per-customer"
scope = "chain"
filter = 'has(txn.customer_id)'
key = "customer_id"
window = "30m"
aggregates = { all = "count", refunds = { of = "count", filter = 'txn.type == "return"' }, refunded = { of = "sum(total_minor)", filter = 'txn.type == "return"' } }
when = 'all >= 4 && double(refunds) / double(all) >= 0.5 && refunded > 1000'
action = "review"

[[rule]]
id = "terminal-last-8"
scope = "chain"
key = ["store_id", "terminal_id"]
window = { last = 8 }
aggregates = { low = "min(total_minor)", high = "max(total_minor)", mean = "avg(total_minor)" }
when = 'high - low > 40000 && mean > 9000.0'
action = "review"

[[rule]]
id = "keyed-big-sale"
scope = "chain"
filter = 'txn.type == "sale" && has(txn.card.entry_mode) && txn.card.entry_mode in ["keyed", "fallback"]'
when = 'txn.total_minor >= 50000'
action = "review"

[[report]]
id = "store-sales-hourly"
scope = "chain"
filter = 'txn.type == "sale"'
key = "store_id"
window = { tumbling = "1h" }
aggregates = { sales = "count", takings = "sum(total_minor)" }
when = 'sales >= 20'

[[report]]
id = "card-stores-hopping"
scope = "chain"
key = "card.token"
window = { hopping = "30m", every = "10m" }
aggregates = { stores = "count_distinct(store_id)", uses = "count" }
when = 'stores >= 3'

[[report]]
id = "customer-sessions"
scope = "chain"
filter = 'has(txn.customer_id)'
key = ["store_id", "customer_id"]
window = { session_gap = "15m" }
aggregates = { visits = "count", refunds = { of = "count", filter = 'txn.type == "return"' } }
"#;

/// Recorded chain traffic, journaled as the gateways journal it (`received_at`,
/// `event_time_ms`): `n` transactions in 8 stores, strictly increasing event times (ties
/// would be peers in Flink's RANGE window but not at a gateway), terminal clocks written
/// with offsets (+01:00) or whole seconds as tills do, a small pool of cards and customers
/// so that windows fill, a burst of one card in four stores and one of a customer's seven
/// purchases in a few minutes, and, a day later, one sale that passes every report's
/// filter (its watermark closes every window above at the gateway, as the end of the
/// file does in Flink). Returns the gateway's journal and what the stream delivers: the
/// same with every 40th transaction delivered twice (the gateways ship at least once).
fn chain_traffic(n: usize, seed: u64) -> (String, String) {
    use chrono::{FixedOffset, SecondsFormat};
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut next = move |m: u64| rng.random_range(0..m);
    let start = chrono::DateTime::parse_from_rfc3339("2026-12-04T08:00:00.000Z")
        .unwrap()
        .to_utc();
    let plus_one = FixedOffset::east_opt(3600).unwrap();
    let mut at_ms = 0i64;
    let (mut journal, mut stream) = (String::new(), String::new());
    let mut line = |t: &Value, twice: bool| {
        for _ in 0..if twice { 2 } else { 1 } {
            stream.push_str(&t.to_string());
            stream.push('\n');
        }
        journal.push_str(&t.to_string());
        journal.push('\n');
    };
    for i in 0..=n {
        let flush = i == n;
        at_ms += if flush { 86_400_000 } else { 500 + next(20_000) as i64 };
        let whole_seconds = i % 5 == 0;
        if whole_seconds {
            at_ms += (1000 - at_ms % 1000) % 1000;
        }
        let instant = start + chrono::Duration::milliseconds(at_ms);
        let precision = if whole_seconds {
            SecondsFormat::Secs
        } else {
            SecondsFormat::Millis
        };
        let occurred = if i % 3 == 0 {
            instant.with_timezone(&plus_one).to_rfc3339_opts(precision, true)
        } else {
            instant.to_rfc3339_opts(precision, true)
        };
        let burst = (300..304).contains(&i);
        let store = if burst {
            format!("s{}", i - 299)
        } else {
            format!("s{}", next(8) + 1)
        };
        let card = if burst {
            "tok_burst".to_string()
        } else {
            format!("tok_{}", next(40))
        };
        let kind = match next(20) {
            0..=1 if !flush => "return",
            2 if !flush => "void",
            _ => "sale",
        };
        let entry = if flush {
            "chip"
        } else {
            ["chip", "contactless", "keyed", "swipe", "fallback"][next(5) as usize]
        };
        let mut t = serde_json::json!({
            "txn_id": format!("c-{i:05}"), "store_id": store, "terminal_id": format!("pos-{}", next(3) + 1),
            "occurred_at": occurred, "received_at": instant.to_rfc3339_opts(SecondsFormat::Millis, true),
            "clock_skew": false, "event_time_ms": instant.timestamp_millis(), "seq": i + 1,
            "type": kind, "total_minor": if flush { 100 } else { 100 + next(70_000) as i64 }, "currency": "EUR",
            "card": {"token": if flush { "tok_flush".to_string() } else { card }, "bin": "411111", "last4": "1111", "entry_mode": entry}
        });
        if (600..607).contains(&i) {
            t["customer_id"] = serde_json::json!("cust_burst");
        } else if flush || next(3) > 0 {
            t["customer_id"] = serde_json::json!(format!("cust_{}", next(25)));
        }
        if kind == "return" {
            t["original_txn_id"] = serde_json::json!(format!("c-{:05}", i.saturating_sub(1)));
        }
        // A txn_id is unique in its store's journal only: every 50th reuses the id of
        // the transaction before it, from another store (both count, as at the gateways).
        if i % 50 == 49 {
            t["txn_id"] = serde_json::json!(format!("c-{:05}", i - 1));
            t["store_id"] = serde_json::json!("s-twin");
        }
        line(&t, i % 40 == 7);
    }
    (journal, stream)
}

/// A reported window: (report, key, start, end, its integer figures as JSON text).
fn window_of(w: &Value, id_field: &str, start: i64) -> (String, String, i64, i64, String) {
    let figures: std::collections::BTreeMap<String, i64> = w["aggregates"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_i64().unwrap_or_else(|| panic!("{k} = {v} is not an integer")),
            )
        })
        .collect();
    (
        w[id_field].as_str().unwrap().to_string(),
        w["key"].as_str().unwrap().to_string(),
        start,
        w["window_end_ms"].as_i64().unwrap(),
        format!("{figures:?}"),
    )
}

/// The chain rules and reports, exported to Flink SQL and run by Flink itself over what
/// the stream delivers (duplicates included), flag exactly the (transaction, rule) pairs
/// and report the windows (with their figures) that `tillgate rules test --scope chain`
/// does on the gateways' journal of the same traffic.
#[test]
fn exported_chain_rules_on_flink_flag_what_rules_test_flags() {
    let dir = tillgate_testkit::scratch_dir();
    let rules = dir.join("more-chain.toml");
    std::fs::write(&rules, MORE_CHAIN_RULES).unwrap();
    let shipped = repo_root().join("config/rules/70-chain.toml");
    let (journal, stream) = chain_traffic(1_500, 7);
    let input = dir.join("journal.ndjson");
    std::fs::write(&input, journal).unwrap();
    let delivered = dir.join("stream.ndjson");
    std::fs::write(&delivered, stream).unwrap();
    let rule_args = ["--rules", shipped.to_str().unwrap(), "--rules", rules.to_str().unwrap()];

    let mut args = vec!["rules", "export", "--json"];
    args.extend_from_slice(&rule_args);
    let (code, export, err) = run_cli(&args);
    assert_eq!(code, 0, "{err}");
    let export_file = dir.join("export.json");
    std::fs::write(&export_file, &export).unwrap();

    let mut args = vec![
        "rules",
        "test",
        "--scope",
        "chain",
        "--json",
        "--input",
        input.to_str().unwrap(),
    ];
    args.extend_from_slice(&rule_args);
    let (code, decided, err) = run_cli(&args);
    assert_eq!(code, 0, "{err}");
    // Decision lines name the input line; the journal line names the store.
    let stores: Vec<String> = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["store_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut gateway_view = BTreeSet::new();
    let mut gateway_windows = BTreeSet::new();
    for line in decided.lines().filter(|l| l.starts_with('{')) {
        let d: Value = serde_json::from_str(line).unwrap();
        let store = &stores[d["line"].as_u64().unwrap() as usize - 1];
        for hit in d["rules"].as_array().into_iter().flatten() {
            gateway_view.insert((
                store.clone(),
                d["txn_id"].as_str().unwrap().to_string(),
                hit["id"].as_str().unwrap().to_string(),
            ));
        }
        for w in d["reports"].as_array().into_iter().flatten() {
            gateway_windows.insert(window_of(w, "report", w["window_start_ms"].as_i64().unwrap()));
        }
    }

    let out = Command::new(tillgate_testkit::emulators::kinesis_local::tools_dir().join("flink-venv/bin/python"))
        .arg(repo_root().join("tests/kit/python/flink_rules.py"))
        .arg(&export_file)
        .arg(&delivered)
        .output()
        .expect("PyFlink runs (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "flink_rules.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flink: Value = serde_json::from_slice(&out.stdout).expect("JSON from flink_rules.py");
    let flagged: Vec<Value> = flink["alerts"].as_array().unwrap().clone();
    let flush_ms = serde_json::from_str::<Value>(std::fs::read_to_string(&input).unwrap().lines().last().unwrap())
        .unwrap()["event_time_ms"]
        .as_i64()
        .unwrap();
    // Flink closes every window at the end of the file; the gateway those the flush
    // transaction's watermark passed: all but the flush's own.
    let flink_windows: BTreeSet<_> = flink["reports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["window_start_ms"].as_i64().unwrap() < flush_ms)
        .map(|w| window_of(w, "report_id", w["window_start_ms"].as_i64().unwrap()))
        .collect();
    let reported: BTreeSet<&str> = gateway_windows.iter().map(|w| w.0.as_str()).collect();
    for report in ["store-sales-hourly", "card-stores-hopping", "customer-sessions"] {
        assert!(
            reported.contains(report),
            "the traffic exercises {report}: reported {reported:?}"
        );
    }
    let only_gateway: Vec<_> = gateway_windows.difference(&flink_windows).collect();
    let only_flink: Vec<_> = flink_windows.difference(&gateway_windows).collect();
    assert!(
        only_gateway.is_empty() && only_flink.is_empty(),
        "windows only rules test reported: {only_gateway:?}\nonly Flink: {only_flink:?}"
    );
    let flink_view: BTreeSet<(String, String, String)> = flagged
        .iter()
        .map(|f| {
            (
                f["store_id"].as_str().unwrap().to_string(),
                f["txn_id"].as_str().unwrap().to_string(),
                f["rule_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(flagged.len(), flink_view.len(), "each pair once");

    let fired: BTreeSet<&str> = gateway_view.iter().map(|(_, _, r)| r.as_str()).collect();
    for rule in [
        "card-in-many-stores",
        "customer-velocity-chain",
        "refund-share-per-customer",
        "terminal-last-8",
        "keyed-big-sale",
    ] {
        assert!(fired.contains(rule), "the traffic exercises {rule}: fired {fired:?}");
    }
    let only_gateway: Vec<_> = gateway_view.difference(&flink_view).collect();
    let only_flink: Vec<_> = flink_view.difference(&gateway_view).collect();
    assert!(
        only_gateway.is_empty() && only_flink.is_empty(),
        "only rules test: {only_gateway:?}\nonly Flink: {only_flink:?}"
    );
}
