//! A POS terminal speaking MQTT 3.1.1 (as most do): publishes transactions at QoS 1 to
//! `tillgate/v1/{store}/{terminal}/txn` and collects what comes back on its decision
//! and error topics. Like a real terminal it can resend, with the same txn_id, every
//! transaction it has no answer for.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Seen {
    /// txn_id → every decision received for it.
    decisions: HashMap<String, Vec<Value>>,
    /// txn_id → when its first decision arrived.
    first_at: HashMap<String, Instant>,
    errors: Vec<Value>,
    /// Decisions received on a topic that is not this terminal's.
    misrouted: usize,
}

/// One connected terminal.
#[derive(Debug)]
pub struct Terminal {
    pub store: String,
    pub id: String,
    /// Replaced on every reconnect (see [`run`]).
    client: Arc<Mutex<AsyncClient>>,
    seen: Arc<Mutex<Seen>>,
    /// Everything published, by txn_id, for resending.
    sent: Mutex<HashMap<String, Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Terminal {
    /// Connects to the broker on `port` with a persistent session and subscribes to
    /// its decision and error topics (again whenever the session is new).
    pub async fn connect(port: u16, store: &str, id: &str) -> Terminal {
        let mut o = MqttOptions::new(format!("term-{store}-{id}"), "127.0.0.1", port);
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(10));
        o.set_inflight(200);
        // Large baskets and over-size payloads are what some tests send (rumqttc's
        // default is 10 KiB each way).
        o.set_max_packet_size(8 * 1024 * 1024, 8 * 1024 * 1024);
        let (client, eventloop) = new_client(&o);
        let client = Arc::new(Mutex::new(client));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let prefix = format!("tillgate/v1/{store}/{id}/");
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run(o, client.clone(), eventloop, seen.clone(), prefix, ready_tx));
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("terminal subscribed within 10 s")
            .expect("terminal event loop running");
        Terminal {
            store: store.into(),
            id: id.into(),
            client,
            seen,
            sent: Mutex::new(HashMap::new()),
            task,
        }
    }

    /// The topic this terminal publishes transactions to.
    pub fn txn_topic(&self) -> String {
        format!("tillgate/v1/{}/{}/txn", self.store, self.id)
    }

    /// Publishes a transaction at QoS 1 (queued in the client; it waits out outages).
    pub async fn publish(&self, txn: &Value) {
        let bytes = serde_json::to_vec(txn).expect("json");
        let txn_id = txn["txn_id"].as_str().unwrap_or_default().to_string();
        self.sent.lock().unwrap().insert(txn_id, bytes.clone());
        self.publish_raw(&self.txn_topic(), bytes).await;
    }

    /// Publishes any payload to any topic at QoS 1.
    /// A publish that meets a dead connection is lost, as on a real terminal; the
    /// answer timeout ([`Terminal::await_decisions`]) resends it.
    pub async fn publish_raw(&self, topic: &str, payload: Vec<u8>) {
        let client = self.client.lock().unwrap().clone();
        let _ = client.publish(topic, QoS::AtLeastOnce, false, payload).await;
    }

    /// Sent transactions without a decision yet.
    pub fn undecided(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        let sent = self.sent.lock().unwrap();
        sent.keys()
            .filter(|k| !seen.decisions.contains_key(*k))
            .cloned()
            .collect()
    }

    /// Resends, with the same txn_id, every transaction without a decision.
    pub async fn resend_undecided(&self) -> usize {
        let undecided = self.undecided();
        let missing: Vec<(String, Vec<u8>)> = {
            let sent = self.sent.lock().unwrap();
            undecided.into_iter().map(|k| (k.clone(), sent[&k].clone())).collect()
        };
        for (_, bytes) in &missing {
            self.publish_raw(&self.txn_topic(), bytes.clone()).await;
        }
        missing.len()
    }

    /// Waits until every sent transaction has a decision; with `resend_after`, resends
    /// the undecided ones whenever nothing new arrived for that long (a terminal's
    /// answer timeout). Returns false at `timeout`.
    pub async fn await_decisions(&self, timeout: Duration, resend_after: Option<Duration>) -> bool {
        let deadline = Instant::now() + timeout;
        let mut last_progress = Instant::now();
        let mut last_count = usize::MAX;
        while Instant::now() < deadline {
            let missing = self.undecided().len();
            if missing == 0 {
                return true;
            }
            if missing != last_count {
                last_count = missing;
                last_progress = Instant::now();
            } else if resend_after.is_some_and(|r| last_progress.elapsed() > r) {
                self.resend_undecided().await;
                last_progress = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Every decision received, by txn_id.
    pub fn decisions(&self) -> HashMap<String, Vec<Value>> {
        self.seen.lock().unwrap().decisions.clone()
    }

    /// When the first decision for each txn_id arrived.
    pub fn first_decision_at(&self) -> HashMap<String, Instant> {
        self.seen.lock().unwrap().first_at.clone()
    }

    /// Every error message received.
    pub fn errors(&self) -> Vec<Value> {
        self.seen.lock().unwrap().errors.clone()
    }

    /// Decisions that arrived on another terminal's topic (must stay 0).
    pub fn misrouted(&self) -> usize {
        self.seen.lock().unwrap().misrouted
    }

    /// The txn_ids this terminal sent.
    pub fn sent_ids(&self) -> HashSet<String> {
        self.sent.lock().unwrap().keys().cloned().collect()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The terminal's connection loop. A lost connection gets a fresh client and event
/// loop: rumqttc's own reconnect can stay stuck on a packet-id collision from the
/// previous session (its `collision` survives `clean()`), and a terminal that resends
/// unanswered transactions needs none of its queued state anyway.
async fn run(
    options: MqttOptions,
    slot: Arc<Mutex<AsyncClient>>,
    mut eventloop: rumqttc::EventLoop,
    seen: Arc<Mutex<Seen>>,
    prefix: String,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    loop {
        let client = slot.lock().unwrap().clone();
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    // Not awaited here: publishers may have filled the request channel,
                    // and only this loop's polling empties it.
                    let (client, prefix) = (client.clone(), prefix.clone());
                    tokio::spawn(async move {
                        let _ = client.subscribe(format!("{prefix}decision"), QoS::AtLeastOnce).await;
                        let _ = client.subscribe(format!("{prefix}error"), QoS::AtLeastOnce).await;
                    });
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let body: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    let mut seen = seen.lock().unwrap();
                    if p.topic == format!("{prefix}decision") {
                        let txn_id = body["txn_id"].as_str().unwrap_or_default().to_string();
                        seen.first_at.entry(txn_id.clone()).or_insert_with(Instant::now);
                        seen.decisions.entry(txn_id).or_default().push(body);
                    } else if p.topic == format!("{prefix}error") {
                        seen.errors.push(body);
                    } else {
                        seen.misrouted += 1;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (client, fresh) = new_client(&options);
        *slot.lock().unwrap() = client;
        eventloop = fresh;
    }
}

/// A client with TCP_NODELAY, as a POS terminal waiting for its answer should have.
fn new_client(options: &MqttOptions) -> (AsyncClient, rumqttc::EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(options.clone(), 1000);
    eventloop.network_options.set_tcp_nodelay(true);
    (client, eventloop)
}
