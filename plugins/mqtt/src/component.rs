//! `[mqtt]` as a component: the broker connection is a source, the alert sink publishes
//! over it, and the connection's status is the `mqtt` section.

use crate::metrics::MqttStatus;
use crate::{AlertSink, Mqtt, MqttConfig};
use async_trait::async_trait;
use serde_json::Value;
use tillgate_sdk::{
    ByteSize, CheckContext, Component, ComponentConfig, ConfigError, Sink, StartContext, StatusSection, StatusView,
};

impl ComponentConfig for MqttConfig {
    fn section(&self) -> &'static str {
        "mqtt"
    }

    fn status_view() -> Option<&'static dyn StatusView> {
        Some(&STATUS_VIEW)
    }

    fn enabled(&self) -> bool {
        self.enabled
    }

    /// The plugin's own checks, and packets large enough for a transaction.
    fn check(&self, cx: &CheckContext) -> Result<(), ConfigError> {
        // Templates, and the password and TLS files read now: a missing file is a config
        // error at start, not a reconnect loop.
        crate::check(self)?;
        // A payload up to the limit, its topic and properties must fit in a packet the
        // broker may send us; larger ones arrive and are refused visibly.
        let least = cx.max_txn_bytes + 64 * 1024;
        if self.max_packet_bytes.get() < least {
            return Err(crate::config::err(
                "max_packet_bytes",
                format!(
                    "{} cannot carry a transaction of intake.max_txn_bytes ({}) with its topic; allowed: at least {}",
                    self.max_packet_bytes,
                    ByteSize(cx.max_txn_bytes),
                    ByteSize(least)
                ),
            ));
        }
        Ok(())
    }

    fn sources(&self) -> Vec<String> {
        vec![format!("mqtt {}", self.broker_url())]
    }

    fn sink_names(&self) -> Vec<String> {
        if self.alerts {
            vec![AlertSink::NAME.to_string()]
        } else {
            Vec::new()
        }
    }

    fn start(&self, cx: StartContext<'_>) -> Result<Box<dyn Component>, String> {
        let (mqtt, alerts) = Mqtt::start(self, cx.ingest.clone(), cx.registry).map_err(|e| format!("mqtt: {e}"))?;
        Ok(Box::new(Running { mqtt, alerts }))
    }
}

/// The connection and, until the agent takes it, the alert sink.
#[derive(Debug)]
struct Running {
    mqtt: Mqtt,
    alerts: Option<AlertSink>,
}

#[async_trait]
impl Component for Running {
    fn take_sinks(&mut self) -> Vec<Box<dyn Sink>> {
        self.alerts
            .take()
            .map(|s| Box::new(s) as Box<dyn Sink>)
            .into_iter()
            .collect()
    }

    fn status(&self) -> Option<StatusSection> {
        let handle = self.mqtt.status_handle();
        Some(StatusSection::new("mqtt", move || {
            serde_json::to_value(handle.get()).unwrap_or_default()
        }))
    }

    fn tasks(&self) -> Vec<(String, tokio::task::AbortHandle)> {
        vec![("mqtt".to_string(), self.mqtt.liveness())]
    }

    fn intake_stopper(&self) -> Option<tillgate_sdk::component::IntakeStopper> {
        let drainer = self.mqtt.drainer();
        Some(Box::new(move || drainer.drain()))
    }

    /// Disconnects, keeping the session, once the alert sink has drained.
    async fn stop(self: Box<Self>) {
        self.mqtt.close().await;
    }
}

/// How `tillgate status` and systemd's STATUS line show the `mqtt` section.
#[derive(Debug)]
pub struct MqttView;

/// Registered by the agent.
pub static STATUS_VIEW: MqttView = MqttView;

impl StatusView for MqttView {
    fn key(&self) -> &'static str {
        "mqtt"
    }

    fn lines(&self, status: &Value) -> Vec<String> {
        let Ok(m) = serde_json::from_value::<MqttStatus>(status.clone()) else {
            return Vec::new();
        };
        vec![format!(
            "mqtt     {:<12} {} as {}  session {}  in flight {}  unacked publishes {}  subscribed {}{}{}",
            m.state,
            m.broker,
            m.client_id,
            if m.session_resumed { "resumed" } else { "new" },
            m.in_flight,
            m.unacked_publishes,
            m.subscriptions.join(", "),
            if m.subscribed { "" } else { " (not acknowledged yet)" },
            m.last_error
                .as_ref()
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default()
        )]
    }

    fn summary(&self, status: &Value) -> Vec<String> {
        serde_json::from_value::<MqttStatus>(status.clone())
            .map(|m| vec![format!("mqtt {}", m.state)])
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MqttState;

    #[test]
    fn the_view_reads_what_the_connection_reports() {
        let status = MqttStatus {
            state: MqttState::Connected,
            broker: "mqtt://127.0.0.1:1883".into(),
            subscribed: true,
            ..MqttStatus::default()
        };
        let json = serde_json::to_value(status).unwrap();
        assert_eq!(MqttView.summary(&json), ["mqtt connected"]);
        assert!(MqttView.lines(&json)[0].starts_with("mqtt     connected    mqtt://127.0.0.1:1883"));
        assert!(MqttView.lines(&Value::Null).is_empty());
    }
}
