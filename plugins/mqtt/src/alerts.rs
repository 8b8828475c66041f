//! The alert sink: alerts (rule hits, reporting windows) from the journal to
//! `tillgate/v1/{store_id}/alerts`, acknowledged to the sink runner only once the
//! broker has acknowledged every one of them.

use crate::outbox::{Message, Outbox, PublishError};
use crate::topic::Template;
use async_trait::async_trait;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tillgate_sdk::{Channel, Record, Sink, SinkError};

/// How long one shipment waits for the broker before the runner retries it (the
/// publishes stay queued; a retry may publish an alert twice: at least once).
const SHIP_TIMEOUT: Duration = Duration::from_secs(10);

/// `Sink` over the MQTT connection's outbox.
#[derive(Debug)]
pub struct AlertSink {
    outbox: Arc<Outbox>,
    topic: Template,
    qos: QoS,
    published: prometheus::IntCounterVec,
}

impl AlertSink {
    /// The sink's name (its cursor in the journal).
    pub const NAME: &'static str = "mqtt-alerts";

    pub fn new(outbox: Arc<Outbox>, topic: Template, qos: QoS, published: prometheus::IntCounterVec) -> Self {
        AlertSink {
            outbox,
            topic,
            qos,
            published,
        }
    }

    /// The alert's store: its `store_id`, else the partition key's first part.
    fn store_of(record: &Record) -> String {
        serde_json::from_slice::<Value>(&record.body)
            .ok()
            .and_then(|v| v.get("store_id").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| record.partition_key.split('/').next().unwrap_or_default().to_string())
    }
}

#[async_trait]
impl Sink for AlertSink {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn channels(&self) -> &[Channel] {
        &[Channel::Alerts]
    }

    async fn ship(&mut self, records: &[Record]) -> Result<(), SinkError> {
        let publish_all = async {
            let mut receipts = Vec::with_capacity(records.len());
            for r in records {
                let message = Message {
                    kind: "alert",
                    topic: self.topic.render(&Self::store_of(r), ""),
                    payload: r.body.clone(),
                    qos: self.qos,
                    properties: PublishProperties {
                        content_type: Some("application/json".into()),
                        payload_format_indicator: Some(1),
                        ..Default::default()
                    },
                };
                receipts.push(self.outbox.publish(message).await.receipt);
            }
            for receipt in receipts {
                match receipt.await {
                    Ok(Ok(())) => self.published.with_label_values(&["alert"]).inc(),
                    Ok(Err(e @ PublishError::Refused { .. })) => return Err(SinkError::Persistent(e.to_string())),
                    Ok(Err(e)) => return Err(SinkError::Transient(e.to_string())),
                    Err(_) => return Err(SinkError::Transient("the MQTT connection closed".into())),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(SHIP_TIMEOUT, publish_all).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::Transient(format!(
                "the MQTT broker has not acknowledged the alerts within {}s (disconnected?)",
                SHIP_TIMEOUT.as_secs()
            ))),
        }
    }
}
