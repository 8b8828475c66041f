//! Actions, modes and the decision: the strongest enforced action wins.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

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

/// One rule that fired, and why. Id, reason and aggregate names are shared with the
/// rule (a hit allocates only its list of values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleHit {
    pub id: Arc<str>,
    pub action: Action,
    pub mode: Mode,
    pub severity: Severity,
    pub reason: Arc<str>,
    /// The rule's window aggregates at this transaction (empty for single-transaction rules).
    #[serde(default, skip_serializing_if = "HitAggregates::is_empty")]
    pub aggregates: HitAggregates,
}

/// Aggregate values by name, sorted by name; a JSON object on the wire.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HitAggregates(pub Vec<(Arc<str>, serde_json::Value)>);

impl HitAggregates {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&serde_json::Value> {
        self.0.iter().find(|(n, _)| &**n == name).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &serde_json::Value)> {
        self.0.iter().map(|(n, v)| (&**n, v))
    }
}

impl std::ops::Index<&str> for HitAggregates {
    type Output = serde_json::Value;

    fn index(&self, name: &str) -> &serde_json::Value {
        self.get(name).unwrap_or_else(|| panic!("no aggregate named {name:?}"))
    }
}

impl Serialize for HitAggregates {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for HitAggregates {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
        Ok(HitAggregates(map.into_iter().map(|(n, v)| (n.into(), v)).collect()))
    }
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
