//! The documents the journal writes on the decisions and alerts channels.

use super::video_links::VideoLocation;
use crate::rules::{Action, ReportHit, RuleHit, Severity};
use crate::txn::{rfc3339, Transaction};
use serde::{Deserialize, Serialize};

/// One decision, as journaled on the decisions channel and answered to the terminal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub txn_id: String,
    pub store_id: String,
    pub terminal_id: String,
    /// The transaction's sequence number.
    pub seq: u64,
    pub decision: Action,
    /// Every rule that fired, shadow ones included.
    pub rules: Vec<RuleHit>,
    pub decided_at: String,
}

/// A rule-hit alert on the alerts channel.
#[derive(Debug, Serialize)]
pub struct AlertRecord<'a> {
    pub kind: &'static str,
    pub txn_id: &'a str,
    pub store_id: &'a str,
    pub terminal_id: &'a str,
    pub seq: u64,
    /// The sale's amount, so an alert is actionable without looking the sale up.
    pub total_minor: i64,
    pub currency: &'a str,
    pub decision: Action,
    pub severity: Option<Severity>,
    pub rules: &'a [RuleHit],
    pub event_time: String,
    pub raised_at: &'a str,
    /// Where the video of the sale is (absent when no uploading camera covers its
    /// terminal).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub video: Vec<VideoLocation>,
}

impl<'a> AlertRecord<'a> {
    /// The alert for a decision on which at least one rule fired.
    pub fn rule_hit(txn: &'a Transaction, record: &'a DecisionRecord, video: Vec<VideoLocation>) -> Self {
        AlertRecord {
            kind: "rule_hit",
            txn_id: &txn.txn_id,
            store_id: &txn.store_id,
            terminal_id: &txn.terminal_id,
            seq: record.seq,
            total_minor: txn.total_minor,
            currency: &txn.currency,
            decision: record.decision,
            severity: record.rules.iter().map(|h| h.severity).max(),
            rules: &record.rules,
            event_time: rfc3339(txn.event_time()),
            raised_at: &record.decided_at,
            video,
        }
    }
}

/// A reporting window that closed, on the alerts channel.
#[derive(Debug, Serialize)]
pub struct ReportAlert<'a> {
    pub kind: &'static str,
    /// The gateway's store (from the transaction that closed the window).
    pub store_id: &'a str,
    #[serde(flatten)]
    pub hit: &'a ReportHit,
    pub window_start: String,
    pub window_end: String,
    /// The transaction whose event time moved the watermark past the window's end.
    pub closed_by_txn_id: &'a str,
    pub raised_at: &'a str,
}

impl<'a> ReportAlert<'a> {
    /// The alert for `hit`.
    pub fn new(hit: &'a ReportHit, closed_by: &'a Transaction, raised_at: &'a str) -> Self {
        let ts = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(rfc3339)
                .unwrap_or_default()
        };
        ReportAlert {
            kind: "report_window",
            store_id: &closed_by.store_id,
            hit,
            window_start: ts(hit.window_start_ms),
            window_end: ts(hit.window_end_ms),
            closed_by_txn_id: &closed_by.txn_id,
            raised_at,
        }
    }
}
