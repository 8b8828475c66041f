//! The video of a flagged sale, from the till to the security team: the real agent with a
//! test-pattern camera covering one till streams to the kit's Kinesis Video endpoint and
//! ships its alerts into the chain stack deployed in moto; the alert handler publishes
//! them to the fraud topic; the stack's subscription passes the one with video to the
//! video analysis queue; the video analysis (`video-from-queue`, the function's handler)
//! takes frames with GetImages from the kit's endpoint (ffmpeg decodes the received
//! fragments), has moto's Rekognition label them and publishes to the security topic.
//!
//! What this cannot check: Rekognition itself (moto answers every DetectLabels with the
//! same canned "Mobile Phone"), GetImages as KVS implements it (the kit's endpoint follows
//! the API reference), the queue's delay and redrive and the Lambda poller (the runner
//! receives and deletes as the poller does; waiting for late video is unit-tested in
//! cloud/video-analysis/src/handler/tests.rs).

use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tillgate_testkit::checkers::video::{kvs_credentials_env, video_toml};
use tillgate_testkit::emulators::kinesis_local::read_stream_with_boto3;
use tillgate_testkit::emulators::moto::{
    alerts_stream, deploy_chain, outputs_by_key, run_alert_handler, run_video_analysis, AlertHandlerTargets, Moto,
};
use tillgate_testkit::fakes::kvs::FakeKvs;
use tillgate_testkit::{post_ndjson, run_cli, txn, Agent, AgentOptions};

const STREAM: &str = "store-1-gateway.lane1";

/// The gateway's config: Kinesis from the stack's outputs, one test-pattern camera on
/// `till-1` with a 2 s + 3 s clip.
fn gateway(outputs: &std::path::Path, moto: &Moto, kvs: &FakeKvs) -> AgentOptions {
    let (code, sections, err) = run_cli(&[
        "cloud",
        "gateway-config",
        "--outputs",
        outputs.to_str().unwrap(),
        "--thing-name",
        "store-1-gateway",
    ]);
    assert_eq!(code, 0, "{err}");
    let kinesis = sections.split("\n[video]").next().unwrap().to_string();
    let camera = "source = \"test\"\nwidth = 320\nheight = 240\nbitrate_kbps = 300\nterminals = [\"till-1\"]";
    let video = video_toml(
        &kvs.url(),
        STREAM,
        camera,
        "fragment_duration = \"1s\"\nclip_before = \"2s\"\nclip_after = \"3s\"",
    );
    let mut env = kvs_credentials_env();
    env.push(("AWS_ENDPOINT_URL".into(), moto.url()));
    env.push(("AWS_REGION".into(), "us-east-1".into()));
    AgentOptions {
        extra_toml: format!("{kinesis}\n{video}"),
        env,
        ..AgentOptions::default()
    }
}

/// Waits until the endpoint holds video up to `until_ms`.
async fn wait_video_until(kvs: &FakeKvs, until_ms: i64, agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let last = kvs
            .distinct_fragments(STREAM)
            .iter()
            .flat_map(|f| f.fragment.blocks.iter().map(|b| b.timecode_ms as i64))
            .max()
            .unwrap_or(0);
        if last >= until_ms {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "video up to {last}, wanted {until_ms}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The stack sends the fraud topic's messages with video, and only those, to its video
/// queue, delayed as deployed; the function reads that queue and may take frames of the
/// gateways' video streams, label them and publish to the security topic, nothing else.
fn the_video_analysis_is_wired_to_its_queue(found: &Value, out: &HashMap<String, String>) {
    let (queue_url, fraud_topic) = (&out["VideoAnalysisQueueUrl"], &out["FraudAlertsTopicArn"]);
    let subscription = found["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["topic"] == fraud_topic.as_str() && s["protocol"] == "sqs")
        .unwrap_or_else(|| panic!("no queue subscribed to the fraud topic: {found}"));
    assert_eq!(
        subscription["filter_policy"],
        serde_json::json!({"video": [{"exists": true}]})
    );
    assert_eq!(
        found["created_by_api"],
        serde_json::json!(["VideoAnalysisSubscription"])
    );
    // The output names the queue by its AWS URL, the emulator lists it by its own.
    let name = queue_url.rsplit('/').next().unwrap();
    let attributes = found["queue_attributes"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(url, _)| url.ends_with(&format!("/{name}")))
        .map(|(_, a)| a)
        .unwrap_or_else(|| panic!("{name} not among {}", found["queue_attributes"]));
    assert_eq!(attributes["DelaySeconds"], "0", "{attributes}");
    assert_eq!(attributes["VisibilityTimeout"], "720", "{attributes}");
    // After the longest wait for video (settings::MAX_WAIT_MINUTES, 70, the template's
    // VideoWaitMinutes bound) at least three receptions remain to publish the findings
    // before the redrive gives up on the message.
    let redrive: Value = serde_json::from_str(attributes["RedrivePolicy"].as_str().unwrap()).unwrap();
    let receptions = redrive["maxReceiveCount"].as_u64().unwrap();
    let used_by_the_wait = (70 * 60_u64).div_ceil(720);
    assert!(receptions >= used_by_the_wait + 3, "{attributes}");
    let function = &found["functions"]["chain-video-analysis"];
    assert_eq!(
        function["environment"]["SECURITY_TOPIC_ARN"],
        out["SecurityAlertsTopicArn"].as_str()
    );
    let mapping = found["event_source_mappings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["function"].as_str().unwrap_or("").ends_with(":chain-video-analysis"))
        .unwrap_or_else(|| panic!("no mapping for the function: {found}"));
    assert_eq!(mapping["source"], attributes["QueueArn"]);
    assert_eq!(
        mapping["response_types"],
        serde_json::json!(["ReportBatchItemFailures"])
    );
    let role = &found["roles"][function["role"].as_str().unwrap()];
    let mut allowed: BTreeSet<String> = BTreeSet::new();
    for statement in role["policies"][0]["Statement"].as_array().unwrap() {
        let actions = match &statement["Action"] {
            Value::String(a) => vec![a.clone()],
            list => list
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect(),
        };
        for a in actions {
            allowed.insert(format!("{a} on {}", statement["Resource"].as_str().unwrap()));
        }
    }
    let queue_arn = attributes["QueueArn"].as_str().unwrap();
    let log_group = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/chain-video-analysis";
    let expected: BTreeSet<String> = [
        format!("sqs:ReceiveMessage on {queue_arn}"),
        format!("sqs:DeleteMessage on {queue_arn}"),
        format!("sqs:GetQueueAttributes on {queue_arn}"),
        format!("sqs:ChangeMessageVisibility on {queue_arn}"),
        "kinesisvideo:GetDataEndpoint on arn:aws:kinesisvideo:us-east-1:123456789012:stream/*.*/*".into(),
        "kinesisvideo:GetImages on arn:aws:kinesisvideo:us-east-1:123456789012:stream/*.*/*".into(),
        "rekognition:DetectLabels on *".into(),
        format!("sns:Publish on {}", out["SecurityAlertsTopicArn"]),
        format!("logs:CreateLogStream on {log_group}"),
        format!("logs:PutLogEvents on {log_group}"),
    ]
    .into_iter()
    .collect();
    assert_eq!(allowed, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flagged_sale_on_a_covered_till_reaches_the_security_team_with_what_its_video_shows() {
    let dir = tillgate_testkit::scratch_dir();
    let moto = Moto::start(&dir);
    let outputs = dir.join("outputs.json");
    let found = deploy_chain(&moto, &outputs, &["VideoAnalysisDelaySeconds=0"]);
    let out = outputs_by_key(&outputs);
    let video_queue = out["VideoAnalysisQueueUrl"].clone();
    the_video_analysis_is_wired_to_its_queue(&found, &out);
    let security_team = alerts_stream("subscribe", &moto.url(), &out["SecurityAlertsTopicArn"], "");

    // A high sale on the covered till and one on a till no camera covers.
    let kvs = FakeKvs::start().await;
    let agent = Agent::start(&dir.join("agent"), &gateway(&outputs, &moto, &kvs));
    // Video from before the sale's clip: the camera has been recording for 3 s.
    wait_video_until(&kvs, 1, &agent).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_ms = chrono::Utc::now().timestamp_millis();
    let body = format!(
        "{}\n{}\n",
        txn("covered-1", "till-1", 250_000),
        txn("uncovered-1", "till-2", 250_000)
    );
    let (status, answers) = post_ndjson(&tillgate_testkit::http_client(), &agent.url(), body)
        .await
        .unwrap();
    assert_eq!(status, 200, "{answers:?}");
    let after_ms = chrono::Utc::now().timestamp_millis();
    wait_video_until(&kvs, after_ms + 3_000, &agent).await;
    agent.wait_shipped("kinesis-alerts", Duration::from_secs(60)).await;
    agent.stop();

    // The alert of the covered till says where its video is; the other says nothing.
    let url = moto.url();
    let shipped = tokio::task::spawn_blocking(move || read_stream_with_boto3(&url, "chain-alerts"))
        .await
        .unwrap();
    let alerts: Vec<Value> = shipped
        .user_records
        .iter()
        .map(|r| serde_json::from_str(&r.data).unwrap())
        .collect();
    let covered = alerts
        .iter()
        .find(|a| a["txn_id"] == "covered-1")
        .expect("the covered till's alert");
    let video = &covered["video"][0];
    assert_eq!(
        (video["camera"].as_str(), video["stream"].as_str()),
        (Some("cam"), Some(STREAM)),
        "{covered}"
    );
    let (start, end) = (video["start_ms"].as_i64().unwrap(), video["end_ms"].as_i64().unwrap());
    assert_eq!(end - start, 5_000, "2 s before, 3 s after: {covered}");
    assert!(
        (before_ms..=after_ms).contains(&(start + 2_000)),
        "anchored on the moment the sale reached the gateway: {start} for {before_ms}..{after_ms}"
    );
    let uncovered = alerts
        .iter()
        .find(|a| a["txn_id"] == "uncovered-1")
        .expect("the other alert");
    assert!(uncovered.get("video").is_none(), "{uncovered}");

    // The fraud team hears of both; the video queue gets the one with video.
    let fraud = run_alert_handler(&moto.url(), "chain-alerts", &AlertHandlerTargets::from_outputs(&out));
    assert_eq!(fraud["published"].as_u64(), Some(alerts.len() as u64), "{fraud}");
    let analysed = run_video_analysis(&moto.url(), &kvs.url(), &video_queue, &out["SecurityAlertsTopicArn"]);
    assert_eq!(
        (
            analysed["analysed"].as_u64(),
            analysed["failed_messages"].as_array().map(Vec::len)
        ),
        (Some(1), Some(0)),
        "{analysed}"
    );

    // Four frames spread over the clip, decoded from the received video, labelled.
    let served = kvs.served_images();
    assert_eq!(served.len(), 4, "{served:?}");
    for image in &served {
        assert_eq!(image.stream, STREAM);
        assert!((start..=end).contains(&image.at_ms), "{image:?} outside {start}..{end}");
        assert!(image.bytes > 1_000, "a real 320x240 JPEG: {image:?}");
    }
    let messages: Vec<Value> = serde_json::from_str(&alerts_stream("drain", &moto.url(), &security_team, "")).unwrap();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let finding = &messages[0];
    assert_eq!(finding["subject"], "VIDEO store store-1 till till-1: Mobile Phone");
    assert_eq!(finding["attributes"]["txn_id"], "covered-1");
    let text = finding["message"].as_str().unwrap();
    for needle in [
        "REVIEW store store-1 till till-1: high-amount-sale",
        &format!("Camera cam (Kinesis Video stream {STREAM})"),
        "4 frames.",
        "Seen: Mobile Phone in 4 of 4.",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }

    // Handled messages leave the queue (not merely hidden by the visibility timeout).
    assert_eq!(alerts_stream("depth", &moto.url(), &video_queue, ""), "0");
}
