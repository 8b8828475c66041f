//! Actions, modes and the decision: the strongest enforced action wins.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the terminal is told to do. Ordered: `Allow < Review < Block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Review,
    Block,
}

impl Action {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Review => "review",
            Action::Block => "block",
        }
    }
}

/// Whether a rule can change the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Its action counts.
    #[default]
    Enforce,
    /// Logged and shipped, never changes the decision: how new rules are tuned safely.
    Shadow,
}

/// Where a rule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// At the gateway, on its store's transactions.
    #[default]
    Store,
    /// In the cloud, over every store's transactions (`tillgate rules export`: Flink
    /// SQL). The gateway checks it and never evaluates it: one store's share of a
    /// chain-wide pattern would fire wrongly or never.
    Chain,
}

/// How bad a hit is, for alert routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

/// One rule that fired, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleHit {
    pub id: String,
    pub action: Action,
    pub mode: Mode,
    pub severity: Severity,
    pub reason: String,
    /// The rule's window aggregates at this transaction (empty for single-transaction rules).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aggregates: BTreeMap<String, serde_json::Value>,
}

/// A reporting window that closed: shipped as an alert, never part of a decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportHit {
    pub report: String,
    pub severity: Severity,
    /// The key's values joined by `/`.
    pub key: String,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub aggregates: BTreeMap<String, serde_json::Value>,
    /// Closed before its end because the report reached `max_keys` (its aggregates
    /// cover only the events seen so far).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub closed_early: bool,
}

/// The outcome for one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub action: Action,
    /// Every rule that fired, shadow ones included.
    pub hits: Vec<RuleHit>,
    /// Reporting windows this transaction's event time closed.
    pub reports: Vec<ReportHit>,
}

impl Decision {
    /// The strongest action among enforce-mode hits; `allow` when none.
    pub fn from_hits(hits: Vec<RuleHit>) -> Self {
        let action = hits
            .iter()
            .filter(|h| h.mode == Mode::Enforce)
            .map(|h| h.action)
            .max()
            .unwrap_or(Action::Allow);
        Decision {
            action,
            hits,
            reports: Vec::new(),
        }
    }
}
