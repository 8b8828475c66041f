//! The MQTT plugin's metrics (`tillgate_mqtt_*`: the agent's registry adds the
//! `tillgate_` prefix) and its status.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Counters and gauges under `tillgate_mqtt_*`.
#[derive(Debug, Clone)]
pub struct MqttMetrics {
    /// 1 while a session is up.
    pub connected: IntGauge,
    /// Connection attempts by outcome (`connected`, `failed`).
    pub connections: IntCounterVec,
    /// Transactions received, by outcome (`decided`, `rejected`, `refused`).
    pub received: IntCounterVec,
    /// Received on a topic no `subscribe` template matches (still journaled when valid).
    pub unmatched_topic: IntCounter,
    /// Received, not yet acknowledged to the broker.
    pub in_flight: IntGauge,
    /// Messages published, by kind (`decision`, `error`, `alert`).
    pub published: IntCounterVec,
    /// Publishes the broker refused (error reason code in PUBACK), by kind.
    pub publish_refused: IntCounterVec,
    /// Publishes waiting for the broker's PUBACK.
    pub unacked_publishes: IntGauge,
    /// Subscriptions the broker refused.
    pub subscribe_failures: IntCounter,
    /// Requests whose response topic was outside `mqtt.response_topics`.
    pub response_topic_refused: IntCounter,
    /// Connections on which the broker sent more than `max_in_flight` unacknowledged
    /// transactions (it ignores MQTT 5 Receive Maximum).
    pub overflows: IntCounter,
    /// Deliveries left unacknowledged for redelivery because of such an overflow.
    pub left_for_redelivery: IntCounter,
    /// Deliveries beyond `max_in_flight` that no session can redeliver (QoS 0, or a
    /// clean session): lost.
    pub overflow_lost: IntCounter,
}

impl MqttMetrics {
    /// Creates and registers the metrics; a second registration in the same registry
    /// (a test starting the plugin twice) reuses nothing and is reported.
    pub fn register(registry: &Registry) -> prometheus::Result<MqttMetrics> {
        let m = MqttMetrics {
            connected: IntGauge::new("mqtt_connected", "1 while the MQTT session is up")?,
            connections: IntCounterVec::new(
                Opts::new("mqtt_connections_total", "MQTT connection attempts by outcome"),
                &["outcome"],
            )?,
            received: IntCounterVec::new(
                Opts::new("mqtt_received_total", "Transactions received over MQTT, by outcome"),
                &["outcome"],
            )?,
            unmatched_topic: IntCounter::new(
                "mqtt_unmatched_topic_total",
                "Messages on a topic no subscribe template matches",
            )?,
            in_flight: IntGauge::new(
                "mqtt_in_flight",
                "Transactions received and not yet acknowledged to the broker",
            )?,
            published: IntCounterVec::new(
                Opts::new("mqtt_published_total", "Messages published, by kind"),
                &["kind"],
            )?,
            publish_refused: IntCounterVec::new(
                Opts::new(
                    "mqtt_publish_refused_total",
                    "Publishes the broker answered with an error reason code, by kind",
                ),
                &["kind"],
            )?,
            unacked_publishes: IntGauge::new(
                "mqtt_unacked_publishes",
                "Publishes waiting for the broker's acknowledgement",
            )?,
            subscribe_failures: IntCounter::new("mqtt_subscribe_failures_total", "Subscriptions the broker refused")?,
            response_topic_refused: IntCounter::new(
                "mqtt_response_topic_refused_total",
                "Requests whose response topic was outside mqtt.response_topics",
            )?,
            overflows: IntCounter::new(
                "mqtt_receive_maximum_overflows_total",
                "Connections on which the broker sent more than max_in_flight unacknowledged transactions",
            )?,
            overflow_lost: IntCounter::new(
                "mqtt_overflow_lost_total",
                "Deliveries beyond max_in_flight lost because QoS 0 or a clean session cannot redeliver them",
            )?,
            left_for_redelivery: IntCounter::new(
                "mqtt_left_for_redelivery_total",
                "Deliveries left unacknowledged over max_in_flight, to come again on a fresh connection",
            )?,
        };
        registry.register(Box::new(m.connected.clone()))?;
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.received.clone()))?;
        registry.register(Box::new(m.unmatched_topic.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.published.clone()))?;
        registry.register(Box::new(m.publish_refused.clone()))?;
        registry.register(Box::new(m.unacked_publishes.clone()))?;
        registry.register(Box::new(m.subscribe_failures.clone()))?;
        registry.register(Box::new(m.response_topic_refused.clone()))?;
        registry.register(Box::new(m.overflows.clone()))?;
        registry.register(Box::new(m.left_for_redelivery.clone()))?;
        registry.register(Box::new(m.overflow_lost.clone()))?;
        Ok(m)
    }
}

/// Where the MQTT connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, strum::Display, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum MqttState {
    /// The first connection is being made.
    #[default]
    Connecting,
    /// Connected (and subscribed once `subscribed` is true).
    Connected,
    /// Renewing the connection on purpose (after an overflow of the in-flight window).
    Reconnecting,
    /// The connection was lost or refused; retrying after a backoff.
    Disconnected,
    /// Closed at shutdown.
    Stopped,
    /// The connection task died (a bug): MQTT is down until a restart.
    Failed,
}

/// What `tillgate status` shows about MQTT.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MqttStatus {
    pub state: MqttState,
    pub broker: String,
    pub client_id: String,
    /// Whether the broker resumed the previous session at the last connect.
    pub session_resumed: bool,
    pub subscriptions: Vec<String>,
    /// The broker acknowledged every subscription of this session (SUBACK): only then do
    /// transactions published to the store's topics reach the agent.
    #[serde(default)]
    pub subscribed: bool,
    /// The last connection error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Connections made since start.
    pub connects: u64,
    pub in_flight: usize,
    pub unacked_publishes: usize,
}

/// Shared, updated by the connection task.
#[derive(Debug, Default)]
pub struct StatusCell(Mutex<MqttStatus>);

impl StatusCell {
    pub fn update(&self, f: impl FnOnce(&mut MqttStatus)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn snapshot(&self) -> MqttStatus {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
