//! Tags the video at the moment a rule fires: a journal sink on the alerts channel that
//! turns each `rule_hit` alert with a review or block decision into a KVS fragment tag
//! (MKV Tags before the cluster) on the fragment each matching camera is recording now.
//! Alerts older than [`STALE`] (a backlog after a restart) are not tagged: the fragment
//! they belong to is closed, and tagging the current one would point at the wrong video.
//! For an events-mode camera the same alerts open upload windows ([`crate::events`]).

use crate::fragmenter::{MAX_TAG_NAME, MAX_TAG_VALUE};
use async_trait::async_trait;
use serde::Deserialize;
use std::time::Duration;
use tillgate_sdk::{Channel, Record, Sink, SinkError};
use tokio::sync::mpsc;

/// An alert older than this no longer tags video.
pub const STALE: Duration = Duration::from_secs(10);

/// A flagged sale on its way to a camera's fragmenter.
pub type Tag = SaleTag;

/// A review or block decision, as the video remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleTag {
    pub decision: String,
    pub txn_id: String,
    pub terminal: String,
    pub rules: Vec<String>,
}

impl SaleTag {
    /// `tillgate.<decision>.<txn_id>`, cut to KVS's 128 bytes.
    pub fn name(&self) -> String {
        cut(format!("tillgate.{}.{}", self.decision, self.txn_id), MAX_TAG_NAME)
    }

    /// `terminal=<id> rules=<ids>`, cut to KVS's 256 bytes.
    pub fn value(&self) -> String {
        cut(
            format!("terminal={} rules={}", self.terminal, self.rules.join(",")),
            MAX_TAG_VALUE,
        )
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(mut text: String, max: usize) -> String {
    while text.len() > max {
        text.pop();
    }
    text
}

#[derive(Debug, Deserialize)]
struct RuleHitAlert {
    kind: String,
    txn_id: String,
    terminal_id: String,
    decision: String,
    #[serde(default)]
    rules: Vec<serde_json::Value>,
}

/// One camera as the tag sink sees it.
#[derive(Debug, Clone)]
pub struct TagTarget {
    pub camera: String,
    /// Empty: every terminal.
    pub terminals: Vec<String>,
    pub sender: mpsc::Sender<Tag>,
    /// An events-mode camera: alerts also open upload windows in its ring.
    pub events: Option<crate::events::EventsTarget>,
}

/// The `video-tags` sink.
#[derive(Debug)]
pub struct TagSink {
    targets: Vec<TagTarget>,
    tagged: prometheus::IntCounterVec,
}

impl TagSink {
    pub const NAME: &'static str = "video-tags";

    pub fn new(targets: Vec<TagTarget>, tagged: prometheus::IntCounterVec) -> Self {
        TagSink { targets, tagged }
    }
}

/// The flagged sale in an alert (a rule hit decided review or block), and its terminal.
pub fn tag_for(alert: &[u8]) -> Option<(String, Tag)> {
    let a: RuleHitAlert = serde_json::from_slice(alert).ok()?;
    if a.kind != "rule_hit" || !(a.decision == "review" || a.decision == "block") {
        return None;
    }
    let rules: Vec<String> = a
        .rules
        .iter()
        .filter_map(|r| r.get("id").and_then(|v| v.as_str()).map(str::to_string))
        .collect();
    let sale = SaleTag {
        decision: a.decision,
        txn_id: a.txn_id,
        terminal: a.terminal_id.clone(),
        rules,
    };
    Some((a.terminal_id, sale))
}

#[async_trait]
impl Sink for TagSink {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn channels(&self) -> &[Channel] {
        &[Channel::Alerts]
    }

    async fn ship(&mut self, records: &[Record]) -> Result<(), SinkError> {
        for t in &self.targets {
            if let Some(events) = &t.events {
                let windows = records
                    .iter()
                    .filter_map(|r| crate::events::window_for(&r.body, &t.camera))
                    .collect();
                events.ask(&t.camera, windows).await;
            }
        }
        let now = crate::camera::now_ms();
        for r in records {
            if now - r.received_ms > STALE.as_millis() as i64 {
                continue;
            }
            let Some((terminal, tag)) = tag_for(&r.body) else {
                continue;
            };
            for t in &self.targets {
                if t.terminals.is_empty() || t.terminals.contains(&terminal) {
                    // A full queue means the camera task is stuck; the tag is not worth
                    // holding the journal back for.
                    // (The camera task counts `tagged` and `summarised`.)
                    if t.sender.try_send(tag.clone()).is_err() {
                        tracing::warn!(camera = %t.camera, txn = %tag.txn_id, "camera busy; tag dropped");
                        self.tagged.with_label_values(&[t.camera.as_str(), "dropped"]).inc();
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_and_block_alerts_become_tags_within_kvs_limits() {
        let alert = br#"{"kind":"rule_hit","txn_id":"t-1","store_id":"s","terminal_id":"pos-3","seq":4,"decision":"block","rules":[{"id":"velocity","action":"block"},{"id":"amount","action":"review"}]}"#;
        let (terminal, sale) = tag_for(alert).unwrap();
        assert_eq!(terminal, "pos-3");
        assert_eq!(sale.name(), "tillgate.block.t-1");
        assert_eq!(sale.value(), "terminal=pos-3 rules=velocity,amount");
        let allow = br#"{"kind":"rule_hit","txn_id":"t","terminal_id":"p","decision":"allow","rules":[]}"#;
        assert!(tag_for(allow).is_none());
        let long = format!(
            r#"{{"kind":"rule_hit","txn_id":"{}","terminal_id":"{}","decision":"review","rules":[]}}"#,
            "x".repeat(300),
            "y".repeat(300)
        );
        let (_, sale) = tag_for(long.as_bytes()).unwrap();
        assert!(sale.name().len() <= 128 && sale.value().len() <= 256);
    }
}
