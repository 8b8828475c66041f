//! Transaction fields that rules key on or count distinct values of.

use crate::txn::Transaction;

/// A field named in a rule's `key` or in `count_distinct(...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnField {
    CardToken,
    CardBin,
    CustomerId,
    OperatorId,
    TerminalId,
    StoreId,
    Type,
    EntryMode,
}

impl TxnField {
    /// Every field, as written in rule files.
    pub const NAMES: &'static str =
        "card.token, card.bin, customer_id, operator_id, terminal_id, store_id, type, card.entry_mode";

    /// Parses a name from a rule file.
    pub fn parse(s: &str) -> Option<TxnField> {
        Some(match s.trim() {
            "card.token" => TxnField::CardToken,
            "card.bin" => TxnField::CardBin,
            "customer_id" => TxnField::CustomerId,
            "operator_id" => TxnField::OperatorId,
            "terminal_id" => TxnField::TerminalId,
            "store_id" => TxnField::StoreId,
            "type" => TxnField::Type,
            "card.entry_mode" => TxnField::EntryMode,
            _ => return None,
        })
    }

    /// The field's value in `txn`, if present.
    pub fn get(self, txn: &Transaction) -> Option<&str> {
        match self {
            TxnField::CardToken => txn.card.as_ref()?.token.as_deref(),
            TxnField::CardBin => txn.card.as_ref()?.bin.as_deref(),
            TxnField::CustomerId => txn.customer_id.as_deref(),
            TxnField::OperatorId => txn.operator_id.as_deref(),
            TxnField::TerminalId => Some(&txn.terminal_id),
            TxnField::StoreId => Some(&txn.store_id),
            TxnField::Type => Some(txn.txn_type.name()),
            TxnField::EntryMode => txn.card.as_ref()?.entry_mode.map(|m| m.name()),
        }
    }
}

/// A 64-bit hash of a value for `count_distinct`. `DefaultHasher::new()` is the same in
/// every process of one build, so state rebuilt by replay after a restart is identical.
pub fn stable_hash(value: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}
