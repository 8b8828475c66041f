//! Kinesis Data Streams end to end: the real binary ships to the test kit's
//! fault-injecting endpoint (throttling, failed records, 500s, slow answers, outage,
//! resharding) and to kinesis-local; what landed is read back and checked.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tillgate_testkit::checkers::kinesis::{iot_toml, kinesis_toml, metric, static_credentials_env, Landed};
use tillgate_testkit::{make_tls_files, post_ndjson, txn, Agent, AgentOptions, FakeIot, FakeKinesis, FakeTes, Faults};

fn options(extra_toml: String) -> AgentOptions {
    AgentOptions {
        extra_toml,
        env: static_credentials_env(),
        ..AgentOptions::default()
    }
}

/// Posts `per_terminal` transactions from each of `terminals` in NDJSON batches of 50;
/// returns the txn_ids, all acknowledged.
async fn post_all(agent: &Agent, prefix: &str, terminals: usize, per_terminal: usize) -> HashSet<String> {
    let mut tasks = Vec::new();
    for t in 0..terminals {
        let url = agent.url();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let client = tillgate_testkit::http_client();
            let mut ids = Vec::new();
            for chunk in (0..per_terminal).collect::<Vec<_>>().chunks(50) {
                let mut body = String::new();
                for i in chunk {
                    let id = format!("{prefix}-{t}-{i}");
                    body.push_str(&txn(&id, &format!("till-{t}"), 100 + *i as i64).to_string());
                    body.push('\n');
                    ids.push(id);
                }
                let (status, answers) = post_ndjson(&client, &url, body).await.expect("agent answers");
                assert_eq!(status, 200, "{answers:?}");
            }
            ids
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Waits until a KCL-style consumer of `stream` sees every id in `ids`.
async fn wait_landed(fake: &FakeKinesis, stream: &str, ids: &HashSet<String>, within: Duration) -> Landed {
    let deadline = Instant::now() + within;
    loop {
        let (records, _) = fake.consumed(stream);
        let landed = Landed::new(records.into_iter().map(|(_, k, d)| (k, d)));
        let have = landed.txn_ids();
        if ids.is_subset(&have) {
            return landed;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} transactions missing from {stream} after {within:?}; endpoint: {:?}",
            ids.difference(&have).count(),
            ids.len(),
            fake.stats()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_and_resharding_lose_nothing_and_keep_per_key_order() {
    let fake = FakeKinesis::start(&[("txns", 4), ("alerts", 1)]).await;
    fake.set_faults(Faults {
        shard_limits: true,
        record_failure_rate: 0.05,
        http_500_rate: 0.05,
        call_throttle_rate: 0.03,
        slow_rate: 0.03,
        slow_delay: Duration::from_millis(1500),
        outage: false,
    });
    let dir = tillgate_testkit::scratch_dir();
    // Small aggregates so that the run makes many calls and meets every fault.
    let agent = Agent::start(
        &dir,
        &options(kinesis_toml(
            &fake.url(),
            "txns",
            Some("alerts"),
            "aggregate_max_bytes = \"4KiB\"\nbatch_records = 400",
        )),
    );
    let mut ids = post_all(&agent, "a", 8, 400).await;
    fake.split_all("txns");
    ids.extend(post_all(&agent, "b", 8, 400).await);
    let landed = wait_landed(&fake, "txns", &ids, Duration::from_secs(120)).await;

    let stats = fake.stats();
    assert!(
        stats.failed_records > 0 && stats.http_500s > 0 && stats.slow_answers > 0,
        "{stats:?}"
    );
    let metrics = agent.metrics_text().await;
    let ambiguous = metric(&metrics, "tillgate_kinesis_ambiguous_resends_total{stream=\"txns\"}");
    let violations = landed.order_violations();
    assert!(
        violations.is_empty(),
        "per-key order broken: {:?}",
        &violations[..violations.len().min(5)]
    );
    assert!(
        landed.duplicates() as f64 <= ambiguous,
        "{} duplicates but only {ambiguous} records were sent again after ambiguous answers",
        landed.duplicates()
    );
    assert!(
        metric(
            &metrics,
            "tillgate_kinesis_retries_total{code=\"Throttled\",stream=\"txns\"}"
        ) >= 1.0,
        "whole-call throttling retried and counted"
    );
    assert_eq!(fake.open_shards("txns"), 8);
    assert!(
        metric(
            &metrics,
            "tillgate_kinesis_shard_map_refreshes_total{reason=\"resharded\",stream=\"txns\"}"
        ) >= 1.0,
        "the agent noticed the resharding:\n{metrics}"
    );
    assert_eq!(metric(&metrics, "tillgate_kinesis_shards{stream=\"txns\"}"), 8.0);
    assert!(metric(&metrics, "tillgate_kinesis_aggregation_ratio{stream=\"txns\"}") > 1.5);
    // The shipped rule pack raises alerts for this traffic; they reach their stream.
    let alerts = fake.stored("alerts");
    assert!(!alerts.is_empty(), "alerts shipped");
    let status = agent.terminate();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_sixty_seconds_waits_in_the_journal_then_backfills_in_order() {
    let fake = FakeKinesis::start(&[("txns", 2)]).await;
    let dir = tillgate_testkit::scratch_dir();
    let agent = Agent::start(&dir, &options(kinesis_toml(&fake.url(), "txns", None, "")));
    let mut ids = post_all(&agent, "before", 4, 100).await;
    wait_landed(&fake, "txns", &ids, Duration::from_secs(30)).await;

    let outage = Faults {
        outage: true,
        ..Faults::default()
    };
    fake.set_faults(outage);
    let started = Instant::now();
    let during = post_all(&agent, "during", 4, 250).await;
    ids.extend(during.iter().cloned());
    // While the uplink is down the transactions are answered and wait in the journal.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sink = agent.sink_status("kinesis-transactions").await;
    assert!(sink["last_error"].is_string(), "{sink}");
    let landed_so_far = Landed::new(fake.consumed("txns").0.into_iter().map(|(_, k, d)| (k, d)));
    assert!(landed_so_far.txn_ids().is_disjoint(&during));
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(started.elapsed())).await;
    fake.set_faults(Faults::default());

    let landed = wait_landed(&fake, "txns", &ids, Duration::from_secs(60)).await;
    assert!(landed.order_violations().is_empty());
    let metrics = agent.metrics_text().await;
    let ambiguous = metric(&metrics, "tillgate_kinesis_ambiguous_resends_total{stream=\"txns\"}");
    assert!(
        landed.duplicates() as f64 <= ambiguous,
        "{} duplicates",
        landed.duplicates()
    );
    assert!(fake.stats().refused_connections > 0);
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_a_clear_error_and_the_backlog_ships_once_it_exists() {
    let fake = FakeKinesis::start(&[]).await;
    let dir = tillgate_testkit::scratch_dir();
    let agent = Agent::start(&dir, &options(kinesis_toml(&fake.url(), "late-stream", None, "")));
    let ids = post_all(&agent, "m", 2, 100).await;
    let error = agent
        .wait_sink_error("kinesis-transactions", Duration::from_secs(20))
        .await;
    assert!(
        error.contains("stream `late-stream` not found") && error.contains("kinesis.streams"),
        "{error}"
    );
    // Create it (the fake answers CreateStream like Kinesis): the backlog ships.
    let client = tillgate_testkit::http_client();
    let resp = client
        .post(fake.url())
        .header("x-amz-target", "Kinesis_20131202.CreateStream")
        .body(r#"{"StreamName":"late-stream","ShardCount":2}"#)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let landed = wait_landed(&fake, "late-stream", &ids, Duration::from_secs(60)).await;
    assert_eq!(landed.duplicates(), 0);
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_fills_put_payload_units() {
    let fake = Arc::new(FakeKinesis::start(&[("txns", 4)]).await);
    let dir = tillgate_testkit::scratch_dir();
    let agent = Agent::start(
        &dir,
        &options(kinesis_toml(&fake.url(), "txns", None, "linger = \"500ms\"")),
    );
    let ids = post_all(&agent, "u", 8, 1000).await;
    let landed = wait_landed(&fake, "txns", &ids, Duration::from_secs(60)).await;
    assert_eq!(landed.duplicates(), 0);
    let metrics = agent.metrics_text().await;
    let units = metric(&metrics, "tillgate_kinesis_put_payload_units_total{stream=\"txns\"}");
    let bytes = metric(&metrics, "tillgate_kinesis_user_bytes_total{stream=\"txns\"}");
    let minimum = (bytes / 25_000.0).ceil();
    assert!(
        units <= minimum * 1.25 + 8.0,
        "{units} PUT payload units for {bytes} bytes (minimum {minimum})"
    );
    let stored = fake.stored("txns");
    assert!(
        stored.iter().all(|r| r.data.len() <= 50_000),
        "aggregates within the unit-aligned cap"
    );
    agent.stop();
}

/// The kit's IoT endpoint (keys living `lifetime`, only `alias` exists), a Kinesis
/// endpoint that accepts only its keys, and an agent using `[kinesis.iot]` with
/// `configured_alias`.
async fn iot_setup(alias: &str, configured_alias: &str, lifetime: Duration) -> (Agent, FakeIot, FakeKinesis) {
    let dir = tillgate_testkit::scratch_dir();
    let tls = make_tls_files(&dir.join("tls"));
    let iot = FakeIot::start(&tls, alias, lifetime).await;
    let fake = FakeKinesis::start(&[("txns", 2)]).await;
    fake.require_keys(iot.keys.clone());
    let opts = AgentOptions {
        extra_toml: kinesis_toml(
            &fake.url(),
            "txns",
            None,
            &iot_toml(&iot.endpoint(), &tls, configured_alias, "3s"),
        ),
        // No static keys: only the IoT provider can sign.
        env: vec![("AWS_EC2_METADATA_DISABLED".into(), "true".into())],
        ..AgentOptions::default()
    };
    (Agent::start(&dir, &opts), iot, fake)
}

/// Without `ca_file` the IoT credentials endpoint is checked against the gateway's
/// trust store (here `SSL_CERT_FILE`, as OpenSSL and rustls-native-certs read it), not a
/// list of roots compiled into the binary; an endpoint it does not trust is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_iot_endpoint_is_trusted_through_the_gateways_trust_store() {
    let dir = tillgate_testkit::scratch_dir();
    let tls = make_tls_files(&dir.join("tls"));
    let iot = FakeIot::start(&tls, "tillgate-kinesis", Duration::from_secs(600)).await;
    let fake = FakeKinesis::start(&[("txns", 2)]).await;
    fake.require_keys(iot.keys.clone());
    let without_ca: String = iot_toml(&iot.endpoint(), &tls, "tillgate-kinesis", "3s")
        .lines()
        .filter(|l| !l.starts_with("ca_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    let options = |trust_store: Option<&std::path::Path>| {
        let mut env = vec![("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string())];
        // An empty store: nothing is trusted unless the test's CA is put there.
        let store = trust_store.map_or_else(|| "/dev/null".to_string(), |p| p.display().to_string());
        env.push(("SSL_CERT_FILE".into(), store));
        AgentOptions {
            extra_toml: kinesis_toml(&fake.url(), "txns", None, &without_ca),
            env,
            ..AgentOptions::default()
        }
    };

    let untrusting = Agent::start(&dir.join("untrusting"), &options(None));
    post_all(&untrusting, "u", 1, 5).await;
    let error = untrusting
        .wait_sink_error("kinesis-transactions", Duration::from_secs(20))
        .await;
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    untrusting.stop();

    let trusting = Agent::start(&dir.join("trusting"), &options(Some(&tls.ca)));
    let ids = post_all(&trusting, "t", 1, 10).await;
    let landed = wait_landed(&fake, "txns", &ids, Duration::from_secs(30)).await;
    assert_eq!(landed.duplicates(), 0);
    trusting.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iot_credentials_expiring_mid_run_are_refreshed_and_nothing_is_lost() {
    let (agent, iot, fake) = iot_setup("tillgate-kinesis", "tillgate-kinesis", Duration::from_secs(8)).await;
    let mut ids = HashSet::new();
    // 24 s of traffic: three credential lifetimes.
    for round in 0..6 {
        ids.extend(post_all(&agent, &format!("iot{round}"), 2, 50).await);
        wait_landed(&fake, "txns", &ids, Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    let landed = wait_landed(&fake, "txns", &ids, Duration::from_secs(30)).await;
    assert_eq!(landed.duplicates(), 0);
    let issued = iot.issued.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        issued >= 3,
        "credentials fetched {issued} times in 24 s of 8 s lifetimes"
    );
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_role_alias_is_reported_and_the_backlog_waits() {
    let (agent, _iot, fake) = iot_setup("the-right-alias", "a-wrong-alias", Duration::from_secs(600)).await;
    post_all(&agent, "w", 1, 10).await;
    let error = agent
        .wait_sink_error("kinesis-transactions", Duration::from_secs(20))
        .await;
    assert!(error.contains("404") && error.contains("role_alias"), "{error}");
    assert_eq!(agent.sink_status("kinesis-transactions").await["backlog_records"], 10);
    assert!(fake.stored("txns").is_empty());
}

/// Greengrass v2 hands a component its credentials through the token exchange service
/// (container credentials variables): the SDK's default chain must find them, and fetch
/// new ones as they expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greengrass_container_credentials_are_used_and_refreshed() {
    let tes = FakeTes::start(Duration::from_secs(8)).await;
    let fake = FakeKinesis::start(&[("txns", 2)]).await;
    fake.require_keys(tes.keys.clone());
    let dir = tillgate_testkit::scratch_dir();
    let mut env = tes.env();
    env.push(("AWS_EC2_METADATA_DISABLED".into(), "true".into()));
    env.push(("AWS_CONFIG_FILE".into(), "/nonexistent/tillgate-test".into()));
    env.push((
        "AWS_SHARED_CREDENTIALS_FILE".into(),
        "/nonexistent/tillgate-test".into(),
    ));
    let opts = AgentOptions {
        extra_toml: kinesis_toml(&fake.url(), "txns", None, ""),
        env,
        ..AgentOptions::default()
    };
    let agent = Agent::start(&dir, &opts);
    let mut ids = HashSet::new();
    for round in 0..4 {
        ids.extend(post_all(&agent, &format!("gg{round}"), 2, 50).await);
        wait_landed(&fake, "txns", &ids, Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let landed = wait_landed(&fake, "txns", &ids, Duration::from_secs(30)).await;
    assert_eq!(landed.duplicates(), 0);
    let issued = tes.issued.load(std::sync::atomic::Ordering::SeqCst);
    assert!(issued >= 2, "credentials fetched {issued} times over 8 s lifetimes");
    assert_eq!(tes.refused.load(std::sync::atomic::Ordering::SeqCst), 0);
    agent.stop();
}

/// A shard task that panics (a bug, injected in test builds) used to count as
/// delivered: the cursor moved past records Kinesis never got. It is a failed
/// shipment now, retried until every record has landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_shard_task_is_a_failure_and_its_records_are_sent_again() {
    let fake = FakeKinesis::start(&[("txns", 2)]).await;
    let dir = tillgate_testkit::scratch_dir();
    let mut opts = options(kinesis_toml(&fake.url(), "txns", None, ""));
    opts.env.push(("TILLGATE_FAULT_KINESIS_SHARD_PANIC".into(), "1".into()));
    let agent = Agent::start(&dir, &opts);
    let ids = post_all(&agent, "p", 4, 50).await;
    let landed = wait_landed(&fake, "txns", &ids, Duration::from_secs(30)).await;
    assert!(landed.order_violations().is_empty());
    let log = agent.log();
    assert!(
        log.contains("a shard task failed; the shipment is retried"),
        "the fault did not fire (a fault-injection build?):\n{log}"
    );
    agent.stop();
}
