//! MQTT at its limits: large baskets, payloads over the limit, and response topics a
//! terminal may not name. A real mosquitto and the real agent binary.

use serde_json::Value;
use std::time::Duration;
use tillgate_testkit::{
    basket, dead_letter_rows, scratch_dir, txn, Agent, AgentOptions, Broker, BrokerOptions, Terminal,
};

async fn await_connected(agent: &Agent) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = agent.status_json().await["mqtt"].clone();
        if m["state"] == "connected" && m["subscribed"] == true {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "MQTT not connected: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// rumqttc's default 10 KiB read limit used to break the connection on a 26 KiB basket,
/// and the persistent session redelivered it forever, holding back every transaction
/// behind it. Baskets up to the 64 KiB limit are decided; a 1 MiB payload is refused
/// on the error topic, dead-lettered (its head only) and acknowledged; one beyond the
/// packet size the agent announced is discarded by the broker; intake goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_baskets_are_decided_and_an_oversize_payload_is_refused_while_intake_goes_on() {
    let dir = scratch_dir();
    let broker = Broker::start(&dir.join("broker"), &BrokerOptions::default());
    let opts = AgentOptions {
        extra_toml: broker.agent_toml("tillgate-e2e-baskets"),
        ..AgentOptions::default()
    };
    let agent = Agent::start(&dir.join("agent"), &opts);
    await_connected(&agent).await;
    let t = Terminal::connect(broker.port, "store-1", "till-1").await;
    for (i, kib) in [10usize, 26, 40, 63].into_iter().enumerate() {
        let b = basket(&format!("basket-{i}"), "till-1", kib * 1024);
        let size = serde_json::to_vec(&b).unwrap().len();
        assert!(size <= 64 * 1024 && size > (kib - 1) * 1024, "basket of {size} bytes");
        t.publish(&b).await;
    }
    let topic = t.txn_topic();
    let big = serde_json::to_vec(&basket("basket-1mib", "till-1", 1024 * 1024)).unwrap();
    t.publish_raw(&topic, big.clone()).await;
    // Over the 2 MiB packet size the agent announces: the broker never sends it.
    let huge = serde_json::to_vec(&basket("basket-3mib", "till-1", 3 * 1024 * 1024)).unwrap();
    t.publish_raw(&topic, huge).await;
    t.publish(&txn("after-the-big-ones", "till-1", 100)).await;
    assert!(
        t.await_decisions(Duration::from_secs(30), None).await,
        "undecided: {:?}\n{}",
        t.undecided(),
        agent.log()
    );
    wait_for("an error for the 1 MiB payload", Duration::from_secs(10), || {
        !t.errors().is_empty()
    })
    .await;
    let errors = t.errors();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0]["error"], "too_large", "{}", errors[0]);
    assert!(
        errors[0]["message"].as_str().unwrap().contains("intake.max_txn_bytes"),
        "{}",
        errors[0]
    );
    let status: Value = agent.status_json().await;
    assert_eq!(
        status["mqtt"]["in_flight"], 0,
        "everything acknowledged: {}",
        status["mqtt"]
    );
    assert_eq!(
        status["mqtt"]["connects"], 1,
        "the connection never broke: {}",
        status["mqtt"]
    );
    let journal = agent.journal();
    agent.terminate();
    let letters = dead_letter_rows(&journal);
    assert_eq!(letters.len(), 1, "one dead letter");
    let (class, _, raw, size) = &letters[0];
    assert_eq!(class, "too_large");
    assert_eq!(*size as usize, big.len(), "the dead letter records the input's size");
    assert_eq!(raw.len(), 64 * 1024, "only the head is kept");
    assert_eq!(&raw[..1024], &big[..1024]);
}

/// A response topic is where the agent publishes on a client's word: only topics in
/// the requesting terminal's own namespace are honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_topic_outside_the_terminals_namespace_is_not_published_to() {
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let dir = scratch_dir();
    let broker = Broker::start(&dir.join("broker"), &BrokerOptions::default());
    let opts = AgentOptions {
        extra_toml: broker.agent_toml("tillgate-e2e-response"),
        ..AgentOptions::default()
    };
    let agent = Agent::start(&dir.join("agent"), &opts);
    await_connected(&agent).await;
    let (client, mut el) = AsyncClient::new(MqttOptions::new("spy", "127.0.0.1", broker.port), 10);
    client.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            match ev {
                Event::Incoming(Packet::SubAck(_)) => drop(tx.send(None)),
                Event::Incoming(Packet::Publish(p)) => drop(tx.send(Some(p))),
                _ => {}
            }
        }
    });
    assert!(rx.recv().await.unwrap().is_none(), "subscribed");
    let cases = [
        ("payments/refund/approve", "tillgate/v1/store-1/till-1/decision"),
        (
            "tillgate/v1/store-1/till-2/decision",
            "tillgate/v1/store-1/till-1/decision",
        ),
        (
            "tillgate/v1/store-1/till-1/replies",
            "tillgate/v1/store-1/till-1/replies",
        ),
    ];
    for (i, (asked, expected)) in cases.into_iter().enumerate() {
        let props = PublishProperties {
            response_topic: Some(asked.into()),
            correlation_data: Some(format!("req-{i}").into_bytes().into()),
            ..Default::default()
        };
        let body = serde_json::to_vec(&txn(&format!("resp-{i}"), "till-1", 100)).unwrap();
        client
            .publish_with_properties("tillgate/v1/store-1/till-1/txn", QoS::AtLeastOnce, false, body, props)
            .await
            .unwrap();
        let answer = loop {
            let p = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("an answer within 10 s")
                .unwrap()
                .unwrap();
            let topic = String::from_utf8_lossy(&p.topic).into_owned();
            if topic.ends_with("/txn") || topic.ends_with("/alerts") {
                continue;
            }
            break (topic, p);
        };
        assert_eq!(answer.0, expected, "asked for {asked}");
        let body: Value = serde_json::from_slice(&answer.1.payload).unwrap();
        assert_eq!(body["txn_id"], format!("resp-{i}"));
    }
    let metrics = agent.metrics_text().await;
    assert!(
        metrics.contains("tillgate_mqtt_response_topic_refused_total 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("response_topic"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    agent.terminate();
}
