//! First-pass fraud rules and the decision they produce.
//!
//! Rule files (`spec.rs`) define rules with a CEL `filter` (which transactions feed
//! them), a `key`, a per-event `window` (time, or the last N events), named aggregates
//! and a CEL `when`; and reports (tumbling, hopping, session windows) that raise alerts.
//! The [`Engine`] evaluates them for each new transaction on the journal's writer
//! thread, in journal order: that single-threaded, ordered position is what makes the
//! windowed state deterministic and rebuildable by replaying the journal.

mod aggregate_spec;
mod cel;
mod compiled;
mod decision;
mod denylist;
mod engine;
pub mod export;
mod field;
pub mod report;
pub mod snapshot;
mod spec;
pub mod window;

pub use decision::{Action, Decision, HitAggregates, Mode, ReportHit, RuleHit, Scope, Severity};
pub use denylist::DenyList;
pub use engine::Engine;
pub use field::TxnField;
pub use spec::{load_paths, CompiledReport, CompiledRule, RuleError, RulePack};

use crate::txn::Transaction;
use std::time::Duration;

/// Finds the original sale of a return (by `original_txn_id`).
pub trait OriginalLookup {
    /// The original transaction, if it is still known.
    fn original(&self, txn_id: &str) -> Option<Transaction>;
}

/// A lookup that knows no originals.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoOriginals;

impl OriginalLookup for NoOriginals {
    fn original(&self, _: &str) -> Option<Transaction> {
        None
    }
}

/// What a decision may need besides the transaction.
pub struct DecideContext<'a> {
    /// The transaction's journal sequence number (arrival order).
    pub seq: u64,
    pub lookup: &'a dyn OriginalLookup,
    /// Rebuilding state (a start, a reload, a failed commit): the decision was made
    /// before, and reports that close were already emitted.
    pub replaying: bool,
}

impl std::fmt::Debug for DecideContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecideContext")
            .field("seq", &self.seq)
            .field("replaying", &self.replaying)
            .finish()
    }
}

/// Decides transactions. The journal calls it in journal order.
pub trait Decider: Send + std::fmt::Debug {
    /// The decision for `txn`, the next transaction in journal order.
    fn decide(&mut self, txn: &Transaction, cx: &DecideContext<'_>) -> Decision;

    /// How far back (in event time) a restart must replay to rebuild the state.
    fn replay_span(&self) -> Option<Duration> {
        None
    }

    /// Forgets all state (before a replay rebuilds it).
    fn reset(&mut self) {}

    /// The rules and reports that have state, by snapshot name (`snapshot.rs`); none
    /// for a decider without state.
    fn snapshot_units(&self) -> Vec<String> {
        Vec::new()
    }

    /// The state of `unit` after transaction `through_seq`, for the journal to store.
    /// Called only between transactions; `None` for a unit it does not have.
    fn snapshot_unit(&self, unit: &str, through_seq: u64) -> Result<Option<snapshot::UnitSnapshot>, String> {
        let _ = (unit, through_seq);
        Ok(None)
    }

    /// Every unit's state after transaction `through_seq`.
    fn snapshot(&self, through_seq: u64) -> Result<Vec<snapshot::UnitSnapshot>, String> {
        let mut units = Vec::new();
        for unit in self.snapshot_units() {
            units.extend(self.snapshot_unit(&unit, through_seq)?);
        }
        Ok(units)
    }

    /// Takes the state of every unit whose definition is unchanged from `snapshot` (on a
    /// fresh or reset decider); the others stay empty, to be rebuilt by replay.
    fn restore(&mut self, snapshot: &snapshot::Snapshot) -> snapshot::Restored {
        let _ = snapshot;
        snapshot::Restored::default()
    }
}

#[cfg(test)]
mod tests;
