//! First-pass fraud rules and the decision they produce.
//!
//! A [`RuleSet`] is evaluated by the journal's writer thread, in journal order, for each
//! new transaction; that single-threaded, ordered position is where windowed state
//! (per-key aggregates) lives too, so decisions are deterministic and can be replayed.
//! This first cut has single-transaction conditions (amounts, types, entry modes, deny
//! lists); windowed aggregates and CEL conditions slot in as more [`Condition`]s.

mod condition;
mod decision;
mod denylist;
mod load;
pub mod window;

pub use condition::{Condition, TxnField};
pub use decision::{Action, Decision, Mode, RuleHit, Severity};
pub use denylist::DenyList;
pub use load::{load_paths, RuleError};

use crate::txn::Transaction;

/// Decides a transaction. Implemented by [`RuleSet`]; the journal calls it in order.
pub trait Decider: Send {
    /// The decision for `txn`, the next transaction in journal order.
    fn decide(&mut self, txn: &Transaction) -> Decision;
}

/// One rule: when every condition holds, it fires with its action.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pub action: Action,
    pub severity: Severity,
    pub mode: Mode,
    pub conditions: Vec<Condition>,
}

impl Rule {
    /// The hit, if every condition holds.
    pub fn evaluate(&self, txn: &Transaction) -> Option<RuleHit> {
        let mut reasons = Vec::with_capacity(self.conditions.len());
        for c in &self.conditions {
            reasons.push(c.check(txn)?);
        }
        Some(RuleHit {
            id: self.id.clone(),
            action: self.action,
            mode: self.mode,
            severity: self.severity,
            reason: reasons.join("; "),
        })
    }
}

/// The enabled rules, in file order.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// A rule set from already validated rules.
    pub fn new(rules: Vec<Rule>) -> Self {
        RuleSet { rules }
    }

    /// The rules, in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

impl Decider for RuleSet {
    fn decide(&mut self, txn: &Transaction) -> Decision {
        Decision::from_hits(self.rules.iter().filter_map(|r| r.evaluate(txn)).collect())
    }
}

#[cfg(test)]
mod tests;
