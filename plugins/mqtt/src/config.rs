//! `[mqtt]` in `tillgate.toml`: the broker, the session, the topics, TLS.

use crate::topic::{Template, TemplateError};
use serde::Deserialize;
use std::path::PathBuf;
use tillgate_sdk::{ByteSize, HumanDuration, Secret};

/// `[mqtt]`: the store broker terminals publish to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Connect at all; an absent `[mqtt]` section means no.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Broker host name or address (the TLS server name unless `tls.server_name`).
    #[serde(default = "default_host")]
    pub host: String,
    /// 1883 for plain TCP, 8883 with `[mqtt.tls]`, when not given.
    #[serde(default)]
    pub port: Option<u16>,
    /// The session's identity at the broker: keep it stable, it is what the broker
    /// keeps queued messages under while the agent is away.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    #[serde(default)]
    pub username: Option<String>,
    /// `{ file = ... }` or `{ env = ... }`; needs `username`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// PINGREQ interval when idle.
    #[serde(default = "default_keep_alive")]
    pub keep_alive: HumanDuration,
    /// MQTT 5 session expiry: how long the broker keeps the subscriptions and queues
    /// QoS 1 transactions while the agent is away. 0 means a clean session each time.
    #[serde(default = "default_session_expiry")]
    pub session_expiry: HumanDuration,
    /// Topic templates to subscribe to. `{store_id}` and `{terminal_id}` are whole
    /// topic levels, subscribed as `+` and checked against the payload; `+` and `#`
    /// may be used for levels that are not checked.
    #[serde(default = "default_subscribe")]
    pub subscribe: Vec<String>,
    /// QoS of the subscriptions and of what the agent publishes: 1 (acknowledged after
    /// the journal commit) or 0 (at most once: no acknowledgement to hold back).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Where each decision goes (MQTT 5 requests with a response topic get it there).
    #[serde(default = "default_decision_topic")]
    pub decision_topic: String,
    /// Where the reason for a refused payload goes.
    #[serde(default = "default_error_topic")]
    pub error_topic: String,
    /// Where an MQTT 5 request may ask for its answer (its response topic): templates
    /// with `{store_id}`, `{terminal_id}`, `+` and `#`; the placeholders must be the
    /// requesting terminal's own. Any other response topic is ignored (counted, logged)
    /// and the answer goes to `decision_topic` / `error_topic`.
    #[serde(default = "default_response_topics")]
    pub response_topics: Vec<String>,
    /// The largest MQTT packet the agent accepts, announced to the broker (MQTT 5
    /// Maximum Packet Size): a payload above `intake.max_txn_bytes` but within this is
    /// received, refused on the error topic, dead-lettered (head only) and
    /// acknowledged; the broker discards larger ones without sending them (MQTT 5
    /// §3.1.2.11.4), so set the broker's own limit (mosquitto `max_packet_size`) to
    /// the same value to refuse them to the terminal.
    #[serde(default = "default_max_packet_bytes")]
    pub max_packet_bytes: ByteSize,
    /// Where alerts (rule hits, reporting windows) go; `{store_id}` only.
    #[serde(default = "default_alert_topic")]
    pub alert_topic: String,
    /// Publish alerts from the journal (a sink with its own cursor: none lost).
    #[serde(default = "yes")]
    pub alerts: bool,
    /// Unacknowledged transactions the broker may send at once (MQTT 5 receive
    /// maximum): a flood waits at the broker instead of in the agent's memory.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u16,
    /// Publishes (decisions, errors, alerts) not yet acknowledged by the broker; when
    /// full, intake waits.
    #[serde(default = "default_max_unacked_publishes")]
    pub max_unacked_publishes: usize,
    /// Reconnect backoff: first wait, doubled (with jitter) up to `reconnect_max`.
    #[serde(default = "default_reconnect_initial")]
    pub reconnect_initial: HumanDuration,
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max: HumanDuration,
    /// Give up a TCP/TLS connect or CONNACK after this long.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// TLS to the broker; absent means plain TCP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `[mqtt.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) the broker's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM client certificate chain and key, for mutual TLS (both or neither).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

fn yes() -> bool {
    true
}
fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_client_id() -> String {
    "tillgate".into()
}
fn default_keep_alive() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_session_expiry() -> HumanDuration {
    HumanDuration::secs(7 * 24 * 3600)
}
fn default_subscribe() -> Vec<String> {
    vec!["tillgate/v1/{store_id}/{terminal_id}/txn".into()]
}
fn default_qos() -> u8 {
    1
}
fn default_decision_topic() -> String {
    "tillgate/v1/{store_id}/{terminal_id}/decision".into()
}
fn default_error_topic() -> String {
    "tillgate/v1/{store_id}/{terminal_id}/error".into()
}
fn default_response_topics() -> Vec<String> {
    vec!["tillgate/v1/{store_id}/{terminal_id}/#".into()]
}
fn default_max_packet_bytes() -> ByteSize {
    ByteSize::mib(2)
}
fn default_alert_topic() -> String {
    "tillgate/v1/{store_id}/alerts".into()
}
fn default_max_in_flight() -> u16 {
    256
}
fn default_max_unacked_publishes() -> usize {
    1024
}
fn default_reconnect_initial() -> HumanDuration {
    HumanDuration::millis(200)
}
fn default_reconnect_max() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}

/// MQTT's largest packet: 268,435,455 bytes (a 4-byte remaining length).
const MAX_MQTT_PACKET: u64 = 268_435_455;

pub use tillgate_sdk::ConfigError;

/// A semantic config error: the key below `mqtt` and what is wrong.
pub(crate) fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::at("mqtt", key, message)
}

/// The topic templates, parsed.
#[derive(Debug, Clone)]
pub struct Topics {
    pub subscribe: Vec<Template>,
    pub decision: Template,
    pub error: Template,
    pub alert: Template,
    /// Where response topics may point.
    pub response: Vec<Template>,
}

impl MqttConfig {
    /// The port, defaulted by transport.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls.is_some() { 8883 } else { 1883 })
    }

    /// `mqtt://host:port` or `mqtts://host:port`, for logs, status and check-config.
    pub fn broker_url(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.host, self.port())
    }

    /// Checks everything serde cannot and parses the topics.
    pub fn validate(&self) -> Result<Topics, ConfigError> {
        self.validate_connection()?;
        self.topics()
    }

    /// Broker, identity, session, flow control and packet size.
    fn validate_connection(&self) -> Result<(), ConfigError> {
        if self.host.trim().is_empty() {
            return Err(err("host", "is empty; give the broker's host name or address"));
        }
        if self.client_id.is_empty() || self.client_id.len() > 128 {
            return Err(err("client_id", "must be 1 to 128 characters"));
        }
        if self.qos > 1 {
            return Err(err(
                "qos",
                format!(
                    "is {}; allowed: 0 or 1 (QoS 1 with the txn_id's idempotency already gives exactly-once journaling)",
                    self.qos
                ),
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(err("password", "is set without `username`"));
        }
        if self.max_in_flight == 0 {
            return Err(err("max_in_flight", "must be at least 1"));
        }
        if self.max_unacked_publishes == 0 {
            return Err(err("max_unacked_publishes", "must be at least 1"));
        }
        if self.keep_alive.get().as_secs() < 5 || self.keep_alive.get().as_secs() > 65_535 {
            return Err(err("keep_alive", "must be between 5s and 65535s"));
        }
        if self.session_expiry.get().as_secs() > u64::from(u32::MAX) {
            return Err(err("session_expiry", "must be at most 4294967295s (MQTT 5 limit)"));
        }
        // Zero would reconnect in a busy loop against a broker that refuses.
        if self.reconnect_initial.get().is_zero() {
            return Err(err("reconnect_initial", "must be more than 0s"));
        }
        if self.reconnect_initial.get() > self.reconnect_max.get() {
            return Err(err("reconnect_initial", "is longer than `reconnect_max`"));
        }
        if let Some(tls) = &self.tls {
            if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
                return Err(err(
                    "tls.client_cert_file",
                    "mutual TLS needs both `client_cert_file` and `client_key_file`",
                ));
            }
        }
        let packet = self.max_packet_bytes.get();
        if !(16 * 1024..=MAX_MQTT_PACKET).contains(&packet) {
            return Err(err(
                "max_packet_bytes",
                format!(
                    "{} is out of range; allowed: 16KiB to 256MiB (MQTT's own limit)",
                    self.max_packet_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The topic templates, parsed: each names only the fields its topic may carry.
    fn topics(&self) -> Result<Topics, ConfigError> {
        if self.subscribe.is_empty() {
            return Err(err("subscribe", "is empty; give at least one topic template"));
        }
        let template = |key: &str, text: &str, filter: bool, allowed: &[&str]| {
            Template::parse(text, filter, allowed).map_err(|e: TemplateError| err(key, format!("`{text}`: {e}")))
        };
        let subscribe = self
            .subscribe
            .iter()
            .map(|t| template("subscribe", t, true, &["store_id", "terminal_id"]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Topics {
            subscribe,
            decision: template(
                "decision_topic",
                &self.decision_topic,
                false,
                &["store_id", "terminal_id"],
            )?,
            error: template("error_topic", &self.error_topic, false, &["store_id", "terminal_id"])?,
            alert: template("alert_topic", &self.alert_topic, false, &["store_id"])?,
            response: self
                .response_topics
                .iter()
                .map(|t| template("response_topics", t, true, &["store_id", "terminal_id"]))
                .collect::<Result<Vec<_>, _>>()?,
        })
    }
}
