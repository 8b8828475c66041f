//! MQTT end to end: a real mosquitto on a loopback port, the real agent binary, and
//! terminals speaking MQTT 3.1.1 (or 5 for request/response). A transaction is
//! acknowledged to the broker only after the journal commit, so it is either journaled
//! or redelivered, across broker restarts and agent crashes.

use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tillgate_testkit::{
    dead_letters, journal_rows, journal_txn_ids, make_tls_files, scratch_dir, txn, Agent, AgentOptions, Broker,
    BrokerOptions, Terminal,
};

fn options(broker: &Broker, client_id: &str) -> AgentOptions {
    AgentOptions {
        extra_toml: broker.agent_toml(client_id),
        ..AgentOptions::default()
    }
}

async fn terminals(broker: &Broker, n: usize) -> Vec<Arc<Terminal>> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(Arc::new(
            Terminal::connect(broker.port, "store-1", &format!("till-{i}")).await,
        ));
    }
    out
}

/// Publishes `per_terminal` transactions from every terminal concurrently.
async fn publish_all(terms: &[Arc<Terminal>], per_terminal: usize, prefix: &str) {
    let mut tasks = Vec::new();
    for t in terms {
        let t = t.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_terminal {
                let id = format!("{prefix}-{}-{i}", t.id);
                t.publish(&txn(&id, &t.id, 100 + (i as i64 % 5000))).await;
            }
        }));
    }
    for task in tasks {
        // A stuck publisher is a failure, not a CI run that never ends.
        tokio::time::timeout(Duration::from_secs(180), task)
            .await
            .expect("publishing finished within 180 s")
            .expect("publisher");
    }
}

/// Every terminal has a decision for everything it sent; each on its own topic.
async fn assert_all_decided(terms: &[Arc<Terminal>], timeout: Duration, resend_after: Option<Duration>, agent: &Agent) {
    for t in terms {
        let done = t.await_decisions(timeout, resend_after).await;
        assert!(
            done,
            "terminal {} is missing {} decisions (e.g. {:?}); agent MQTT status {}:\n{}",
            t.id,
            t.undecided().len(),
            t.undecided().first(),
            agent.status_json().await["mqtt"],
            tail(&agent.log())
        );
        assert_eq!(t.misrouted(), 0, "a decision arrived on another terminal's topic");
        let sent = t.sent_ids();
        for (txn_id, ds) in t.decisions() {
            assert!(sent.contains(&txn_id), "{} got a decision for {txn_id}", t.id);
            assert!(ds.iter().all(|d| d["decision"].is_string()), "{ds:?}");
        }
    }
}

fn assert_journaled_once(journal: &Path, terms: &[Arc<Terminal>]) {
    let sent: HashSet<String> = terms.iter().flat_map(|t| t.sent_ids()).collect();
    let journaled = journal_txn_ids(journal);
    let missing: Vec<&String> = sent.difference(&journaled).take(5).collect();
    assert!(missing.is_empty(), "not journaled: {missing:?}");
    assert_eq!(
        journal_rows(journal, 0),
        sent.len() as u64,
        "each transaction is journaled exactly once"
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transaction_is_journaled_once_and_answered_on_its_terminals_topic() {
    let dir = scratch_dir();
    let broker = Broker::start(&dir.join("broker"), &BrokerOptions::default());
    let agent = Agent::start(&dir.join("agent"), &options(&broker, "tillgate-e2e-volume"));
    await_connected(&agent, 1).await;
    let terms = terminals(&broker, 8).await;
    let per_terminal: usize = std::env::var("MQTT_E2E_PER_TERMINAL").map_or(12_500, |v| v.parse().unwrap());
    publish_all(&terms, per_terminal, "v").await;
    assert_all_decided(&terms, Duration::from_secs(240), None, &agent).await;
    let journal = agent.journal();
    let metrics = agent.metrics_text().await;
    agent.terminate();
    assert_journaled_once(&journal, &terms);
    assert!(
        metrics.contains(&format!(
            "tillgate_transactions_total{{outcome=\"accepted\",source=\"mqtt\"}} {}",
            per_terminal * 8
        )),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("transactions_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_get_an_error_message_and_a_dead_letter() {
    let dir = scratch_dir();
    let broker = Broker::start(&dir.join("broker"), &BrokerOptions::default());
    let agent = Agent::start(&dir.join("agent"), &options(&broker, "tillgate-e2e-bad"));
    await_connected(&agent, 1).await;
    let t = Terminal::connect(broker.port, "store-1", "till-1").await;
    let topic = t.txn_topic();
    t.publish_raw(&topic, b"{not json".to_vec()).await;
    let mut missing = txn("bad-missing", "till-1", 100);
    missing.as_object_mut().unwrap().remove("currency");
    t.publish_raw(&topic, serde_json::to_vec(&missing).unwrap()).await;
    let mut pan = txn("bad-pan", "till-1", 100);
    pan["card"]["token"] = json!("4111 1111 1111 1111");
    t.publish_raw(&topic, serde_json::to_vec(&pan).unwrap()).await;
    // A terminal publishing under another terminal's topic.
    let other = txn("bad-topic", "till-2", 100);
    t.publish_raw(&topic, serde_json::to_vec(&other).unwrap()).await;
    // And a good one after them: the connection carries on.
    t.publish(&txn("good-after-bad", "till-1", 100)).await;
    assert!(
        t.await_decisions(Duration::from_secs(20), None).await,
        "{}",
        tail(&agent.log())
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while t.errors().len() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let errors = t.errors();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    let by_txn = |id: &str| {
        errors
            .iter()
            .find(|e| e["txn_id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert!(
        errors
            .iter()
            .any(|e| e["error"] == "malformed" && e["txn_id"].is_null()),
        "{errors:#?}"
    );
    let missing = by_txn("bad-missing");
    assert_eq!(missing["error"], "invalid");
    assert_eq!(missing["problems"][0]["field"], "currency", "{missing}");
    assert_eq!(missing["topic"], topic);
    assert!(by_txn("bad-pan")["message"]
        .as_str()
        .unwrap()
        .contains("full card number"));
    let wrong = by_txn("bad-topic");
    assert_eq!(wrong["problems"][0]["field"], "terminal_id", "{wrong}");
    assert!(
        wrong["problems"][0]["problem"].as_str().unwrap().contains("till-1"),
        "{wrong}"
    );

    let journal = agent.journal();
    let metrics = agent.metrics_text().await;
    agent.terminate();
    let letters = dead_letters(&journal);
    assert_eq!(letters.len(), 4, "{letters:?}");
    assert!(letters.iter().all(|(source, _, _)| source == "mqtt"));
    assert!(
        letters
            .iter()
            .all(|(_, _, raw)| !String::from_utf8_lossy(raw).contains("4111 1111 1111 1111")),
        "no card number is stored"
    );
    assert!(
        metrics.contains("tillgate_mqtt_received_total{outcome=\"rejected\"} 4"),
        "{metrics}"
    );
    assert_eq!(journal_txn_ids(&journal), HashSet::from(["good-after-bad".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_published_to_the_store_alert_topic() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let dir = scratch_dir();
    let broker = Broker::start(&dir.join("broker"), &BrokerOptions::default());
    let agent = Agent::start(&dir.join("agent"), &options(&broker, "tillgate-e2e-alerts"));
    await_connected(&agent, 1).await;
    let (client, mut el) = AsyncClient::new(MqttOptions::new("lp-console", "127.0.0.1", broker.port), 10);
    client
        .subscribe("tillgate/v1/store-1/alerts", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            match ev {
                Event::Incoming(Packet::SubAck(_)) => tx.send(Value::Null).unwrap(),
                Event::Incoming(Packet::Publish(p)) => tx.send(serde_json::from_slice(&p.payload).unwrap()).unwrap(),
                _ => {}
            }
        }
    });
    assert_eq!(rx.recv().await, Some(Value::Null), "subscribed");
    let t = Terminal::connect(broker.port, "store-1", "till-1").await;
    t.publish(&txn("big-sale", "till-1", 250_000)).await; // high-amount-sale: review
    assert!(t.await_decisions(Duration::from_secs(20), None).await);
    assert_eq!(t.decisions()["big-sale"][0]["decision"], "review");
    let alert = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("an alert within 20 s")
        .unwrap();
    assert_eq!(alert["kind"], "rule_hit");
    assert_eq!(alert["txn_id"], "big-sale");
    assert_eq!(alert["rules"][0]["id"], "high-amount-sale");
    agent.terminate();
}

/// Waits until the agent's MQTT session is up (again) and its subscriptions acknowledged:
/// before that the broker drops what terminals publish (a new session has no
/// subscriptions yet), and under qemu start-up is slow enough for a test to hit that.
/// Waits until the agent holds received transactions not yet acknowledged to the
/// broker (so a fault now strikes mid-stream); returns how many.
async fn await_in_flight(agent: &Agent) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = agent.status_json().await["mqtt"]["in_flight"].as_u64().unwrap_or(0);
        if n > 0 {
            return n;
        }
        assert!(std::time::Instant::now() < deadline, "nothing in flight within 20 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn await_connected(agent: &Agent, connects: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status: Value = agent.status_json().await;
        let m = &status["mqtt"];
        if m["state"] == "connected" && m["subscribed"] == true && m["connects"].as_u64() >= Some(connects) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "MQTT not connected: {}\n{}",
            status["mqtt"],
            tail(&agent.log())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing() {
    let dir = scratch_dir();
    // No persistence and SIGKILL: the broker forgets every session and queued message,
    // the hardest restart. The agent must reconnect and subscribe again by itself;
    // terminals resend what has no answer, as a POS does after its answer timeout.
    let mut broker = Broker::start(&dir.join("broker"), &BrokerOptions::default());
    let agent = Agent::start(&dir.join("agent"), &options(&broker, "tillgate-e2e-broker-restart"));
    await_connected(&agent, 1).await;
    let terms = terminals(&broker, 4).await;
    let publishing = {
        let terms = terms.clone();
        tokio::spawn(async move { publish_all(&terms, 5_000, "b").await })
    };
    // The fault strikes with transactions in the agent's hands, and more still to come.
    let in_flight = await_in_flight(&agent).await;
    broker.restart();
    assert!(
        !publishing.is_finished(),
        "the restart came after the terminals had finished"
    );
    eprintln!("broker restarted with {in_flight} transactions in flight at the agent");
    publishing.await.unwrap();
    await_connected(&agent, 2).await;
    assert_all_decided(&terms, Duration::from_secs(60), Some(Duration::from_secs(2)), &agent).await;
    let journal = agent.journal();
    agent.terminate();
    assert_journaled_once(&journal, &terms);
    let redecided: usize = terms
        .iter()
        .flat_map(|t| t.decisions().into_values())
        .filter(|d| d.len() > 1)
        .count();
    // Resent transactions are answered with their first decision, never decided again.
    for t in &terms {
        for ds in t.decisions().values() {
            assert!(ds
                .iter()
                .all(|d| d["decision"] == ds[0]["decision"] && d["seq"] == ds[0]["seq"]));
        }
    }
    eprintln!("transactions answered more than once after the restart: {redecided}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_kill_9_mid_stream_is_made_good_by_redelivery() {
    let dir = scratch_dir();
    let broker = Broker::start(&dir.join("broker"), &BrokerOptions::default());
    let opts = options(&broker, "tillgate-e2e-agent-crash");
    let agent = Agent::start(&dir.join("agent"), &opts);
    await_connected(&agent, 1).await;
    let terms = terminals(&broker, 4).await;
    let publishing = {
        let terms = terms.clone();
        tokio::spawn(async move { publish_all(&terms, 5_000, "k").await })
    };
    // The crash strikes with transactions in the agent's hands, and more still to come.
    let in_flight = await_in_flight(&agent).await;
    let journal_path = agent.journal();
    agent.kill9();
    assert!(
        !publishing.is_finished(),
        "the crash came after the terminals had finished"
    );
    let journaled_at_crash = journal_txn_ids(&journal_path).len();
    eprintln!("killed with {in_flight} in flight and {journaled_at_crash} journaled");
    assert!(journaled_at_crash < 20_000, "everything was journaled before the crash");
    // Terminals keep publishing into the agent's persistent session while it is down.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let agent = Agent::start(&dir.join("agent"), &opts);
    publishing.await.unwrap();
    // No resending by the terminals: what the crashed agent had not acknowledged, and
    // what arrived while it was down, comes from the broker.
    assert_all_decided(&terms, Duration::from_secs(120), None, &agent).await;
    let journal = agent.journal();
    let status: Value = agent.status_json().await;
    assert_eq!(status["mqtt"]["session_resumed"], true, "{}", status["mqtt"]);
    agent.terminate();
    assert_journaled_once(&journal, &terms);
}

/// TLS options for the agent: the CA, and the client pair for mutual TLS.
fn tls_toml(ca: &Path, client: Option<(&Path, &Path)>) -> String {
    let mut s = format!("\n[mqtt.tls]\nca_file = \"{}\"\n", ca.display());
    if let Some((cert, key)) = client {
        s.push_str(&format!(
            "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            cert.display(),
            key.display()
        ));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls_verify_the_broker_and_present_the_client_certificate() {
    let dir = scratch_dir();
    let tls = make_tls_files(&dir.join("tls"));
    for mutual in [false, true] {
        let broker = Broker::start(
            &dir.join(format!("broker-{mutual}")),
            &BrokerOptions {
                tls: Some(tls.clone()),
                require_client_cert: mutual,
                ..BrokerOptions::default()
            },
        );
        let client = mutual.then_some((tls.client_cert.as_path(), tls.client_key.as_path()));
        let opts = AgentOptions {
            extra_toml: broker.agent_toml(&format!("tillgate-tls-{mutual}")) + &tls_toml(&tls.ca, client),
            ..AgentOptions::default()
        };
        let agent = Agent::start(&dir.join(format!("agent-{mutual}")), &opts);
        await_connected(&agent, 1).await;
        let status: Value = agent.status_json().await;
        assert!(status["mqtt"]["broker"].as_str().unwrap().starts_with("mqtts://"));
        // A TLS terminal (mosquitto_pub, the broker's own client) publishes; the agent answers.
        let payload = serde_json::to_string(&txn(&format!("tls-{mutual}"), "till-1", 100)).unwrap();
        let out = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t"])
            .arg("tillgate/v1/store-1/till-1/txn")
            .arg("--cafile")
            .arg(&tls.ca)
            .args([
                "--cert",
                tls.client_cert.to_str().unwrap(),
                "--key",
                tls.client_key.to_str().unwrap(),
            ])
            .args(["-m", &payload])
            .output()
            .expect("mosquitto_pub runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let journal = agent.journal();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !journal_txn_ids(&journal).contains(&format!("tls-{mutual}")) {
            assert!(std::time::Instant::now() < deadline, "{}", tail(&agent.log()));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        agent.terminate();
    }

    // A broker whose certificate does not chain to the configured CA is refused, and
    // status says why; so is a mutual-TLS broker when the agent has no certificate.
    let broker = Broker::start(
        &dir.join("broker-strict"),
        &BrokerOptions {
            tls: Some(tls.clone()),
            require_client_cert: true,
            ..BrokerOptions::default()
        },
    );
    for (name, ca) in [("wrong-ca", &tls.other_ca), ("no-client-cert", &tls.ca)] {
        let opts = AgentOptions {
            extra_toml: broker.agent_toml(name) + &tls_toml(ca, None),
            ..AgentOptions::default()
        };
        let agent = Agent::start(&dir.join(name), &opts);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            let status: Value = agent.status_json().await;
            if status["mqtt"]["last_error"].is_string() {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "{name}: {}", status["mqtt"]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_ne!(status["mqtt"]["state"], "connected", "{name}");
        eprintln!("{name}: {}", status["mqtt"]["last_error"]);
        agent.terminate();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_requests_are_answered_on_their_response_topic_with_their_correlation_data() {
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let dir = scratch_dir();
    let broker = Broker::start(&dir.join("broker"), &BrokerOptions::default());
    let agent = Agent::start(&dir.join("agent"), &options(&broker, "tillgate-e2e-v5"));
    await_connected(&agent, 1).await;
    let (client, mut el) = AsyncClient::new(MqttOptions::new("till-v5", "127.0.0.1", broker.port), 10);
    // A response topic in the requesting terminal's own namespace (mqtt.response_topics).
    client
        .subscribe("tillgate/v1/store-1/till-1/replies", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            match ev {
                Event::Incoming(Packet::SubAck(_)) => tx.send(None).unwrap(),
                Event::Incoming(Packet::Publish(p)) => tx.send(Some(p)).unwrap(),
                _ => {}
            }
        }
    });
    assert!(rx.recv().await.unwrap().is_none(), "subscribed");
    for (i, body) in [
        serde_json::to_vec(&txn("v5-1", "till-1", 100)).unwrap(),
        b"{broken".to_vec(),
    ]
    .into_iter()
    .enumerate()
    {
        let props = PublishProperties {
            response_topic: Some("tillgate/v1/store-1/till-1/replies".into()),
            correlation_data: Some(format!("req-{i}").into_bytes().into()),
            ..Default::default()
        };
        client
            .publish_with_properties("tillgate/v1/store-1/till-1/txn", QoS::AtLeastOnce, false, body, props)
            .await
            .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a reply within 10 s")
            .unwrap()
            .unwrap();
        let props = reply.properties.expect("reply properties");
        assert_eq!(props.correlation_data.as_deref(), Some(format!("req-{i}").as_bytes()));
        let body: Value = serde_json::from_slice(&reply.payload).unwrap();
        if i == 0 {
            assert_eq!(body["txn_id"], "v5-1");
            assert_eq!(body["decision"], "allow");
        } else {
            assert_eq!(body["error"], "malformed", "{body}");
        }
    }
    agent.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_holds_transactions_at_the_broker_until_there_is_room() {
    let dir = scratch_dir();
    let broker = Broker::start(&dir.join("broker"), &BrokerOptions::default());
    // The archive cannot write (a file stands where its directory should be), so the
    // journal's 256 KiB fill up and stay full until the archive can ship again.
    let blocker = dir.join("blocked-archive");
    std::fs::write(&blocker, "not a directory").unwrap();
    let opts = AgentOptions {
        extra_toml: broker.agent_toml("tillgate-e2e-full") + "alerts = false\n",
        journal_toml:
            "max_bytes = \"256KiB\"\nretention = \"0s\"\nidempotency_window = \"0s\"\nprune_interval = \"100ms\"\n"
                .into(),
        archive_toml: format!("dir = \"{}\"", blocker.display()),
        // The broker (mosquitto ignores Receive Maximum) sends more than max_in_flight
        // while refused transactions wait: the agent leaves the rest for redelivery and
        // reconnects; a transaction whose PUBACK was still queued then comes twice (with
        // no idempotency window here, it is journaled twice: at least once, as promised).
        // Rules without windows: the journal keeps no replay horizon, so shipped rows
        // are pruned at once and room comes back as soon as the archive drains.
        rules: Some(tillgate_testkit::rule_pack().join("20-amounts.toml")),
        ..AgentOptions::default()
    };
    let agent = Agent::start(&dir.join("agent"), &opts);
    await_connected(&agent, 1).await;
    let t = Arc::new(Terminal::connect(broker.port, "store-1", "till-1").await);
    publish_all(std::slice::from_ref(&t), 3_000, "full").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !t.errors().iter().any(|e| e["error"] == "journal_full") {
        assert!(
            std::time::Instant::now() < deadline,
            "no journal_full error:\n{}",
            tail(&agent.log())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refusal = t.errors().into_iter().find(|e| e["error"] == "journal_full").unwrap();
    assert_eq!(refusal["retrying"], true, "{refusal}");
    assert!(
        refusal["message"].as_str().unwrap().contains("journal.max_bytes"),
        "{refusal}"
    );
    let decided_while_full = t.decisions().len();
    assert!(decided_while_full < 3_000, "the journal never filled");
    let status = agent.status_json().await;
    assert!(status["mqtt"]["in_flight"].as_u64() > Some(0), "{}", status["mqtt"]);

    // Room again: the archive can write, ships, the journal prunes, and the agent's
    // retries and the broker's held messages go through. No resending by the terminal.
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir(&blocker).unwrap();
    assert_all_decided(std::slice::from_ref(&t), Duration::from_secs(90), None, &agent).await;
    let archive_dir = blocker.clone();
    agent.terminate();
    let archived = tillgate_testkit::archive_txn_ids(&archive_dir);
    let sent = t.sent_ids();
    let missing: Vec<&String> = sent.iter().filter(|id| !archived.contains_key(*id)).take(5).collect();
    assert!(
        missing.is_empty(),
        "acknowledged by the broker, never archived: {missing:?}"
    );
    let twice = sent.iter().filter(|id| archived.get(*id) > Some(&1)).count();
    eprintln!("archived more than once after a redelivery: {twice}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_comes_from_a_file_and_a_wrong_one_is_reported() {
    let dir = scratch_dir();
    let broker = Broker::start(
        &dir.join("broker"),
        &BrokerOptions {
            user: Some(("tillgate".into(), "s3cret-from-file".into())),
            ..BrokerOptions::default()
        },
    );
    for (name, password, connects) in [("right", "s3cret-from-file\n", true), ("wrong", "guess", false)] {
        let file = dir.join(format!("{name}-password"));
        std::fs::write(&file, password).unwrap();
        let opts = AgentOptions {
            extra_toml: broker.agent_toml(&format!("tillgate-auth-{name}"))
                + &format!(
                    "username = \"tillgate\"\npassword = {{ file = \"{}\" }}\n",
                    file.display()
                ),
            ..AgentOptions::default()
        };
        let agent = Agent::start(&dir.join(name), &opts);
        if connects {
            await_connected(&agent, 1).await;
        } else {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let status = agent.status_json().await;
                if let Some(e) = status["mqtt"]["last_error"].as_str() {
                    assert!(e.contains("refused") && e.contains("mqtt.username/password"), "{e}");
                    assert_ne!(status["mqtt"]["state"], "connected");
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "{}", status["mqtt"]);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        agent.terminate();
    }
}
