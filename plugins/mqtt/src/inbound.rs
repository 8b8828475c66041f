//! One received transaction: submitted in arrival order, answered on its terminal's
//! decision topic (or the MQTT 5 response topic), acknowledged to the broker only
//! once the agent's verdict is durable.

use crate::acks::{AckWindow, Ticket};
use crate::config::Topics;
use crate::metrics::MqttMetrics;
use crate::outbox::{Message, Outbox};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tillgate_sdk::pan::redact_text;
use tillgate_sdk::{Ingest, PendingVerdict, Submission, Verdict};

/// Source name in metrics and dead letters.
pub const SOURCE: &str = "mqtt";

/// How much of a payload over the agent's limit is kept (for its dead letter).
const OVERSIZE_HEAD: usize = 64 * 1024;

/// Messages taken and not yet finished (journaled or refused, answered, acknowledged),
/// bounded by `max_in_flight` whatever Receive Maximum the broker honours: beyond it
/// the connection takes nothing (see `connection::Overflow`), so a flood waits in the
/// broker, not in the agent's memory.
#[derive(Debug)]
pub struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    max: usize,
}

impl InFlight {
    pub fn new(max: usize) -> Self {
        InFlight {
            count: std::sync::atomic::AtomicUsize::new(0),
            max,
        }
    }

    /// At the bound: take nothing more until a message is finished.
    pub fn full(&self) -> bool {
        self.count.load(Ordering::Acquire) >= self.max
    }

    /// The bound, `max_in_flight`.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Messages in flight now.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Nothing in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn enter(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    fn leave(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What every message's handling shares.
pub struct Inbound {
    pub ingest: Arc<dyn Ingest>,
    pub outbox: Arc<Outbox>,
    pub topics: Topics,
    pub qos: QoS,
    pub metrics: MqttMetrics,
    /// Set when the agent stops: refused messages stop retrying and stay unacknowledged.
    pub stopping: Arc<AtomicBool>,
    /// Refused transactions take turns retrying (see [`Inbound::retry_in_line`]).
    pub retry_line: tokio::sync::Mutex<()>,
    /// Messages being handled (`max_in_flight`).
    pub in_flight: Arc<InFlight>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// Where the answer to one message goes.
#[derive(Debug, Clone)]
struct ReplyTo {
    topic: String,
    response_topic: Option<String>,
    correlation_data: Option<Bytes>,
}

/// A taken message, kept until its verdict is answered.
struct Taken {
    reply: ReplyTo,
    /// The payload, or only its head when it is over the limit.
    payload: Bytes,
    size: usize,
    store_id: Option<String>,
    terminal_id: Option<String>,
}

impl Inbound {
    /// Submits `publish` (in arrival order: the caller awaits this before taking the
    /// next message) and spawns the wait for its verdict.
    pub async fn receive(self: &Arc<Self>, window: &Arc<AckWindow>, publish: Publish) {
        let ticket = (publish.qos != QoS::AtMostOnce).then(|| window.push(&publish));
        self.metrics.in_flight.inc();
        self.in_flight.enter();
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        let (store_id, terminal_id) = self.origin(&topic);
        let reply = self.reply_to(publish.properties.as_ref(), topic, &store_id, &terminal_id);
        // A payload over the limit is refused whole; only its head is kept, copied, so
        // the packet's buffer goes now and in-flight memory stays within the limit.
        let size = publish.payload.len();
        let keep = if size > self.ingest.max_txn_bytes() {
            size.min(OVERSIZE_HEAD)
        } else {
            size
        };
        let payload = Bytes::copy_from_slice(&publish.payload[..keep]);
        drop(publish);
        let pending = self
            .ingest
            .submit(submission(&payload, size, &store_id, &terminal_id))
            .await;
        let taken = Taken {
            reply,
            payload,
            size,
            store_id,
            terminal_id,
        };
        tokio::spawn(self.clone().conclude(taken, pending, window.clone(), ticket));
    }

    /// The store and terminal the topic names, by the first `mqtt.subscribe` template
    /// that matches it.
    fn origin(&self, topic: &str) -> (Option<String>, Option<String>) {
        let captures = self.topics.subscribe.iter().find_map(|t| t.capture(topic));
        if captures.is_none() {
            self.metrics.unmatched_topic.inc();
            tracing::warn!(
                topic = %redact_text(topic),
                "MQTT message on a topic no `mqtt.subscribe` template matches; journaled without the topic check"
            );
        }
        let captures = captures.unwrap_or_default();
        (
            captures.store_id.map(str::to_string),
            captures.terminal_id.map(str::to_string),
        )
    }

    /// Where the answer goes: the request's response topic when `mqtt.response_topics`
    /// allows it for this terminal, else the default topics.
    fn reply_to(
        &self,
        props: Option<&PublishProperties>,
        topic: String,
        store_id: &Option<String>,
        terminal_id: &Option<String>,
    ) -> ReplyTo {
        let response_topic = props.and_then(|p| p.response_topic.clone()).filter(|t| {
            // Never a topic the agent takes transactions from: it would answer itself.
            let allowed = valid_publish_topic(t)
                && !self.topics.subscribe.iter().any(|s| s.capture(t).is_some())
                && self
                    .topics
                    .response
                    .iter()
                    .any(|r| r.allows(t, store_id.as_deref(), terminal_id.as_deref()));
            if !allowed {
                self.metrics.response_topic_refused.inc();
                tracing::warn!(
                    response_topic = %redact_text(t),
                    "an MQTT request named a response topic outside mqtt.response_topics; answered on the default topic"
                );
            }
            allowed
        });
        // Copied, not sliced: a slice would keep the packet's whole read buffer alive.
        ReplyTo {
            topic,
            response_topic,
            correlation_data: props
                .and_then(|p| p.correlation_data.as_ref())
                .map(|c| Bytes::copy_from_slice(&c[..c.len().min(1024)])),
        }
    }

    /// Waits for the durable verdict (retrying a refusal in line), answers it, then
    /// lets the PUBACK go.
    async fn conclude(
        self: Arc<Self>,
        taken: Taken,
        pending: PendingVerdict,
        window: Arc<AckWindow>,
        ticket: Option<Ticket>,
    ) {
        let Taken {
            reply,
            payload,
            size,
            store_id,
            terminal_id,
        } = taken;
        let mut verdict = pending.await;
        if let Verdict::Refused { code, message } = &verdict {
            self.metrics.received.with_label_values(&["refused"]).inc();
            let (s, t) = (store_id.as_deref(), terminal_id.as_deref());
            let body = json!({"error": code, "message": message, "retrying": true});
            self.answer_error(&reply, s, t, body, &payload).await;
            verdict = self.retry_in_line(&payload, size, &store_id, &terminal_id).await;
        }
        match verdict {
            Verdict::Refused { .. } => {
                // Stopping: left unacknowledged, the broker redelivers it to the next
                // session.
                self.metrics.in_flight.dec();
                self.in_flight.leave();
                return;
            }
            Verdict::Decided {
                store_id,
                terminal_id,
                answer,
            } => {
                self.metrics.received.with_label_values(&["decided"]).inc();
                let topic = self.topics.decision.render(&store_id, &terminal_id);
                self.publish(&reply, topic, "decision", answer).await;
            }
            Verdict::Rejected {
                store_id,
                terminal_id,
                error,
            } => {
                self.metrics.received.with_label_values(&["rejected"]).inc();
                self.answer_error(&reply, store_id.as_deref(), terminal_id.as_deref(), error, &payload)
                    .await;
            }
        }
        // The answer is queued ahead of the acknowledgement on the same connection, so
        // a broker that has the PUBACK has the answer too.
        if let Some(ticket) = ticket {
            window.done(ticket);
        }
        self.metrics.in_flight.dec();
        self.in_flight.leave();
    }

    /// Submits a refused transaction again until the journal takes it (or the agent
    /// stops, then it returns the refusal). Refused transactions retry one at a time,
    /// in the order they were refused: while the journal is full only the first one
    /// polls it (backoff 100 ms doubling to 5 s), the others wait their turn without
    /// timers, and once there is room each goes through at once.
    async fn retry_in_line(
        &self,
        payload: &[u8],
        size: usize,
        store_id: &Option<String>,
        terminal_id: &Option<String>,
    ) -> Verdict {
        let _turn = self.retry_line.lock().await;
        let mut backoff = Duration::from_millis(100);
        loop {
            let verdict = self
                .ingest
                .submit(submission(payload, size, store_id, terminal_id))
                .await
                .await;
            if !matches!(verdict, Verdict::Refused { .. }) || self.stopping.load(Ordering::Acquire) {
                return verdict;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn answer_error(
        &self,
        reply: &ReplyTo,
        store_id: Option<&str>,
        terminal_id: Option<&str>,
        mut body: Value,
        payload: &[u8],
    ) {
        body["topic"] = json!(redact_text(&reply.topic));
        if let Some(txn_id) = serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| v.get("txn_id").and_then(Value::as_str).map(str::to_string))
        {
            body["txn_id"] = json!(redact_text(&txn_id));
        }
        let topic = self
            .topics
            .error
            .render(store_id.unwrap_or("unknown"), terminal_id.unwrap_or("unknown"));
        self.publish(reply, topic, "error", body).await;
    }

    /// Publishes `body` to the MQTT 5 response topic when the request named one, else
    /// to `topic`.
    async fn publish(&self, reply: &ReplyTo, topic: String, kind: &'static str, body: Value) {
        let properties = PublishProperties {
            correlation_data: reply.correlation_data.clone(),
            content_type: Some("application/json".into()),
            payload_format_indicator: Some(1),
            ..Default::default()
        };
        let message = Message {
            kind,
            topic: reply.response_topic.clone().unwrap_or(topic),
            payload: Bytes::from(body.to_string()),
            qos: self.qos,
            properties,
        };
        // Wait until the answer is in the event loop's channel, so the PUBACK queued
        // after it follows it on the wire. The broker's acknowledgement is not awaited: a
        // refusal is counted and logged by the outbox, and an unacknowledged publish is
        // sent again on the next connection.
        let queued = self.outbox.publish(message).await;
        let _ = queued.handed.await;
        self.metrics.published.with_label_values(&[kind]).inc();
    }
}

fn submission<'a>(
    payload: &'a [u8],
    size: usize,
    store_id: &'a Option<String>,
    terminal_id: &'a Option<String>,
) -> Submission<'a> {
    Submission {
        source: SOURCE,
        raw: payload,
        size,
        store_id: store_id.as_deref(),
        terminal_id: terminal_id.as_deref(),
    }
}

/// A response topic a client may give us: non-empty, no wildcards, no NUL. Publishing
/// to an invalid one would make the broker drop our connection.
fn valid_publish_topic(t: &str) -> bool {
    !t.is_empty() && !t.contains(['+', '#', '\0']) && t.len() <= 65_535
}
