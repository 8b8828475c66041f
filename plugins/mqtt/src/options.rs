//! From `[mqtt]` to rumqttc's connection options: session, credentials, TLS.
//!
//! Every file and secret is read once at start, so a missing CA file or an empty
//! password file is a config error (exit 78) naming the key, not a reconnect loop.

use crate::config::MqttConfig;
use crate::config::{err, ConfigError};
use rumqttc::v5::MqttOptions;
use rumqttc::{TlsConfiguration, Transport};
use std::path::Path;

/// Options for every connection of one agent run.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub options: MqttOptions,
    /// `mqtt://host:port` or `mqtts://host:port`, for logs and status.
    pub broker: String,
}

/// Builds the options, reading the password and TLS files.
pub fn build(config: &MqttConfig) -> Result<ConnectOptions, ConfigError> {
    let port = config.port();
    let mut o = MqttOptions::new(config.client_id.clone(), config.host.clone(), port);
    o.set_keep_alive(config.keep_alive.get());
    // A persistent session: the broker keeps our subscriptions and queues QoS 1
    // transactions while we are away; unacknowledged ones are redelivered.
    let expiry = config.session_expiry.get().as_secs() as u32;
    o.set_clean_start(expiry == 0);
    o.set_session_expiry_interval((expiry > 0).then_some(expiry));
    // Flow control toward us: the broker sends at most this many unacknowledged
    // transactions, and we acknowledge only after the journal commit.
    o.set_receive_maximum(Some(config.max_in_flight));
    o.set_manual_acks(true);
    // rumqttc reads at most 10 KiB per packet unless told, and a larger one breaks the
    // connection (and comes back from the persistent session, forever). Announced to
    // the broker too (MQTT 5 Maximum Packet Size), so it never sends one we cannot read.
    o.set_max_packet_size(Some(config.max_packet_bytes.get() as u32));
    o.set_connection_timeout(config.connect_timeout.get().as_secs().max(1));
    // Decisions are small and wanted now: Nagle's algorithm would hold one back until
    // the previous segment is acknowledged (delayed ACK: up to 40 ms).
    let mut network = o.network_options();
    network.set_tcp_nodelay(true);
    o.set_network_options(network);
    // Every PUBACK and every publish the outbox holds can be queued at once, so
    // `try_*` requests never find the channel full.
    o.set_request_channel_capacity(config.max_unacked_publishes + usize::from(config.max_in_flight) + 16);
    o.set_outgoing_inflight_upper_limit(u16::try_from(config.max_unacked_publishes).unwrap_or(u16::MAX));
    if let Some(user) = &config.username {
        let password = match &config.password {
            Some(secret) => secret.read().map_err(|e| err("password", e))?,
            None => String::new(),
        };
        o.set_credentials(user.clone(), password);
    }
    if let Some(tls) = &config.tls {
        let ca = read_pem(&tls.ca_file, "tls.ca_file", "CERTIFICATE")?;
        let client_auth = match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(cert), Some(key)) => Some((
                read_pem(cert, "tls.client_cert_file", "CERTIFICATE")?,
                read_pem(key, "tls.client_key_file", "PRIVATE KEY")?,
            )),
            _ => None,
        };
        o.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(ConnectOptions {
        options: o,
        broker: config.broker_url(),
    })
}

/// Reads a PEM file and checks it holds a block of the expected kind
/// (`PRIVATE KEY` also matches `RSA PRIVATE KEY` and `EC PRIVATE KEY`).
fn read_pem(path: &Path, key: &str, kind: &str) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let found = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.ends_with(&format!("{kind}-----")));
    if !found {
        return Err(err(key, format!("{} holds no PEM `{kind}` block", path.display())));
    }
    Ok(bytes)
}
