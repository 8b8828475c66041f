//! Actions, modes and the decision: the strongest enforced action wins.

use serde::{Deserialize, Serialize};

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

/// How bad a hit is, for alert routing.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

/// One rule that fired, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHit {
    pub id: String,
    pub action: Action,
    pub mode: Mode,
    pub severity: Severity,
    pub reason: String,
}

/// The outcome for one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// Every rule that fired, shadow ones included.
    pub hits: Vec<RuleHit>,
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
        Decision { action, hits }
    }
}
