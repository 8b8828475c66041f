//! Single-transaction conditions. Each returns the reason it holds, or `None`.

use super::DenyList;
use crate::txn::{EntryMode, Transaction, TxnType};
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;

/// A transaction field that rules can key on or look up in a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum TxnField {
    #[serde(rename = "card.token")]
    CardToken,
    #[serde(rename = "card.bin")]
    CardBin,
    #[serde(rename = "customer_id")]
    CustomerId,
    #[serde(rename = "operator_id")]
    OperatorId,
    #[serde(rename = "terminal_id")]
    TerminalId,
    #[serde(rename = "store_id")]
    StoreId,
    #[serde(rename = "original_txn_id")]
    OriginalTxnId,
}

impl TxnField {
    /// Every field, as written in rule files.
    pub const NAMES: &'static str =
        "card.token, card.bin, customer_id, operator_id, terminal_id, store_id, original_txn_id";

    /// The name in rule files.
    pub fn name(self) -> &'static str {
        match self {
            TxnField::CardToken => "card.token",
            TxnField::CardBin => "card.bin",
            TxnField::CustomerId => "customer_id",
            TxnField::OperatorId => "operator_id",
            TxnField::TerminalId => "terminal_id",
            TxnField::StoreId => "store_id",
            TxnField::OriginalTxnId => "original_txn_id",
        }
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
            TxnField::OriginalTxnId => txn.original_txn_id.as_deref(),
        }
    }
}

/// One test on a single transaction.
#[derive(Debug, Clone)]
pub enum Condition {
    /// The type is one of these.
    TypeIn(HashSet<TxnType>),
    /// `total_minor >= n`.
    TotalAtLeast(i64),
    /// `total_minor <= n`.
    TotalAtMost(i64),
    /// The currency is one of these.
    CurrencyIn(HashSet<String>),
    /// The card's entry mode is one of these.
    EntryModeIn(HashSet<EntryMode>),
    /// The field's value is on the list.
    InList(TxnField, Arc<DenyList>),
    /// The field is absent.
    Missing(TxnField),
}

impl Condition {
    /// Why the condition holds for `txn`, or `None` when it does not.
    pub fn check(&self, txn: &Transaction) -> Option<String> {
        match self {
            Condition::TypeIn(types) => types
                .contains(&txn.txn_type)
                .then(|| format!("type is {}", txn.txn_type.name())),
            Condition::TotalAtLeast(n) => {
                (txn.total_minor >= *n).then(|| format!("total_minor {} >= {n}", txn.total_minor))
            }
            Condition::TotalAtMost(n) => {
                (txn.total_minor <= *n).then(|| format!("total_minor {} <= {n}", txn.total_minor))
            }
            Condition::CurrencyIn(set) => set
                .contains(&txn.currency)
                .then(|| format!("currency is {}", txn.currency)),
            Condition::EntryModeIn(modes) => {
                let mode = txn.card.as_ref()?.entry_mode?;
                modes
                    .contains(&mode)
                    .then(|| format!("entry_mode is {mode:?}").to_lowercase())
            }
            Condition::InList(field, list) => {
                let v = field.get(txn)?;
                list.contains(v)
                    .then(|| format!("{} is on deny list {}", field.name(), list.name()))
            }
            Condition::Missing(field) => field
                .get(txn)
                .is_none()
                .then(|| format!("{} is missing", field.name())),
        }
    }
}
