//! The alert records a gateway writes on its alerts channel (agent/src/journal/records.rs).
//!
//! Fields added to the agent later are optional here, so alerts from gateways not yet
//! upgraded still read.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// One alert.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Alert {
    /// A decision on which at least one rule fired.
    RuleHit(RuleHitAlert),
    /// A reporting window that closed over its threshold.
    ReportWindow(ReportAlert),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RuleHitAlert {
    pub txn_id: String,
    pub store_id: String,
    pub terminal_id: String,
    pub seq: u64,
    #[serde(default)]
    pub total_minor: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    pub decision: String,
    #[serde(default)]
    pub severity: Option<String>,
    pub rules: Vec<RuleHit>,
    pub event_time: String,
    pub raised_at: String,
    /// Where the sale's video is: one entry per uploading camera that covers the terminal.
    #[serde(default)]
    pub video: Vec<VideoLocation>,
}

/// One camera's video of a sale, as the gateway names it (agent/src/journal/video_links.rs):
/// the Kinesis Video stream and a range of producer timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoLocation {
    pub camera: String,
    pub stream: String,
    pub start_ms: i64,
    pub end_ms: i64,
}

impl VideoLocation {
    /// The `video` message attribute's value: the locations as JSON, for the video
    /// analysis queue's subscription.
    pub fn attribute(all: &[VideoLocation]) -> String {
        serde_json::to_string(all).expect("video locations serialize")
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RuleHit {
    pub id: String,
    pub action: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub aggregates: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReportAlert {
    #[serde(default)]
    pub store_id: Option<String>,
    pub report: String,
    pub severity: String,
    pub key: String,
    pub window_start: String,
    pub window_end: String,
    #[serde(default)]
    pub aggregates: BTreeMap<String, Value>,
    #[serde(default)]
    pub closed_early: bool,
    pub closed_by_txn_id: String,
    pub raised_at: String,
}

impl Alert {
    /// Reads one alert record; the error says what is wrong with it.
    pub fn parse(data: &[u8]) -> Result<Alert, String> {
        serde_json::from_slice(data).map_err(|e| format!("not an alert record: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_hit_as_the_agent_writes_it() {
        let data = br#"{"kind":"rule_hit","txn_id":"t-1","store_id":"s-12","terminal_id":"pos-3","seq":4,
            "total_minor":150000,"currency":"EUR","decision":"block","severity":"high",
            "rules":[{"id":"amount","action":"block","mode":"enforce","severity":"high","reason":"over 1,000"}],
            "event_time":"2026-12-04T10:00:00.000Z","raised_at":"2026-12-04T10:00:00.012Z"}"#;
        let Alert::RuleHit(a) = Alert::parse(data).unwrap() else {
            panic!("a rule hit")
        };
        assert_eq!(
            (a.store_id.as_str(), a.total_minor, a.rules.len()),
            ("s-12", Some(150000), 1)
        );
        assert!(a.video.is_empty());
    }

    #[test]
    fn a_rule_hit_with_its_video() {
        let data = br#"{"kind":"rule_hit","txn_id":"t","store_id":"s","terminal_id":"p","seq":1,
            "decision":"review","rules":[],"event_time":"x","raised_at":"y",
            "video":[{"camera":"lane1","stream":"gw-1.lane1","start_ms":1000,"end_ms":31000}]}"#;
        let Alert::RuleHit(a) = Alert::parse(data).unwrap() else {
            panic!("a rule hit")
        };
        assert_eq!(a.video[0].stream, "gw-1.lane1");
        assert_eq!(
            VideoLocation::attribute(&a.video),
            r#"[{"camera":"lane1","stream":"gw-1.lane1","start_ms":1000,"end_ms":31000}]"#
        );
    }

    #[test]
    fn an_alert_from_a_gateway_without_amounts_still_reads() {
        let data = br#"{"kind":"rule_hit","txn_id":"t","store_id":"s","terminal_id":"p","seq":1,
            "decision":"review","rules":[],"event_time":"x","raised_at":"y"}"#;
        assert!(matches!(Alert::parse(data), Ok(Alert::RuleHit(a)) if a.total_minor.is_none()));
    }

    #[test]
    fn unknown_kinds_and_other_json_are_errors() {
        assert!(Alert::parse(br#"{"kind":"gossip"}"#).unwrap_err().contains("gossip"));
        assert!(Alert::parse(b"\xff\xfe").is_err());
    }
}
