//! The POS transaction, schema `pos.txn.v1`: parsing, validation, the card-number guard.

mod validate;

pub use tillgate_sdk::pan::{find_pans, is_pan, luhn_valid, mask, redact_pans, redact_text, PanHit};
pub use validate::{
    cut, from_journal, from_recording, parse, parse_limited, quoted, FieldError, Rejection, RejectionClass,
    MAX_AMOUNT_MINOR, MAX_REASON_BYTES, MAX_TXN_BYTES, SCHEMAS,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The transaction kinds a terminal may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnType {
    Sale,
    Return,
    Void,
    PostVoid,
    NoSale,
    PaidOut,
}

impl TxnType {
    /// Every type, as written in JSON.
    pub const NAMES: [&'static str; 6] = ["sale", "return", "void", "post_void", "no_sale", "paid_out"];

    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            TxnType::Sale => "sale",
            TxnType::Return => "return",
            TxnType::Void => "void",
            TxnType::PostVoid => "post_void",
            TxnType::NoSale => "no_sale",
            TxnType::PaidOut => "paid_out",
        }
    }

    /// Inverse of [`TxnType::name`].
    pub fn from_name(s: &str) -> Option<TxnType> {
        [
            TxnType::Sale,
            TxnType::Return,
            TxnType::Void,
            TxnType::PostVoid,
            TxnType::NoSale,
            TxnType::PaidOut,
        ]
        .into_iter()
        .find(|t| t.name() == s)
    }
}

/// How the card was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryMode {
    Chip,
    Contactless,
    Swipe,
    Fallback,
    Keyed,
}

impl EntryMode {
    /// Every mode, as written in JSON.
    pub const NAMES: [&'static str; 5] = ["chip", "contactless", "swipe", "fallback", "keyed"];

    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            EntryMode::Chip => "chip",
            EntryMode::Contactless => "contactless",
            EntryMode::Swipe => "swipe",
            EntryMode::Fallback => "fallback",
            EntryMode::Keyed => "keyed",
        }
    }

    /// Parse the JSON name.
    pub fn from_name(s: &str) -> Option<EntryMode> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }
}

/// The card fields the rules look at (never a full card number).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Card {
    pub token: Option<String>,
    pub bin: Option<String>,
    pub last4: Option<String>,
    pub entry_mode: Option<EntryMode>,
}

/// A validated transaction. `doc` is the document as received (unknown fields kept);
/// the typed fields are what rules read.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub txn_id: String,
    pub store_id: String,
    pub terminal_id: String,
    pub occurred_at: DateTime<Utc>,
    pub txn_type: TxnType,
    pub total_minor: i64,
    pub currency: String,
    pub operator_id: Option<String>,
    pub customer_id: Option<String>,
    pub card: Option<Card>,
    pub original_txn_id: Option<String>,
    /// The agent's clock when the transaction arrived.
    pub received_at: DateTime<Utc>,
    /// `occurred_at` is more than [`CLOCK_SKEW_LIMIT_SECS`] from `received_at`.
    pub clock_skew: bool,
    /// The journaled document minus its closing brace (see [`Transaction::journal_body`]).
    pub body_head: Vec<u8>,
}

/// Beyond this distance between terminal and agent clocks, windows use `received_at`.
pub const CLOCK_SKEW_LIMIT_SECS: i64 = 120;

impl Transaction {
    /// The time windows use: the terminal's clock unless it is skewed.
    pub fn event_time(&self) -> DateTime<Utc> {
        if self.clock_skew {
            self.received_at
        } else {
            self.occurred_at
        }
    }

    /// Ordering key: per-terminal order is kept from ingest to every sink.
    pub fn partition_key(&self) -> String {
        format!("{}/{}", self.store_id, self.terminal_id)
    }

    /// The journaled document: the input with `received_at`, `clock_skew`,
    /// `event_time_ms` and `seq` added.
    pub fn journal_body(&self, seq: u64) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.body_head.len() + 32);
        body.extend_from_slice(&self.body_head);
        body.extend_from_slice(b",\"seq\":");
        body.extend_from_slice(seq.to_string().as_bytes());
        body.push(b'}');
        body
    }
}

/// RFC 3339 with milliseconds and `Z`, the format the agent writes.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests;
