//! A journal record as it is handed to sinks.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The stream a record belongs to. Sinks subscribe to channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// POS transactions as received (validated, stamped with `received_at` and `seq`).
    Transactions,
    /// One decision per transaction: allow / review / block and the rules that fired.
    Decisions,
    /// Alerts raised by rules (rule hits, reporting windows).
    Alerts,
}

impl Channel {
    /// Every channel, in journal code order.
    pub const ALL: [Channel; 3] = [Channel::Transactions, Channel::Decisions, Channel::Alerts];

    /// The stable integer stored in the journal.
    pub fn code(self) -> i64 {
        match self {
            Channel::Transactions => 0,
            Channel::Decisions => 1,
            Channel::Alerts => 2,
        }
    }

    /// Inverse of [`Channel::code`].
    pub fn from_code(code: i64) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The name used in config, metrics and file names.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Transactions => "transactions",
            Channel::Decisions => "decisions",
            Channel::Alerts => "alerts",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown channel `{s}`; allowed: transactions, decisions, alerts"))
    }
}

/// One committed journal row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Journal sequence number: strictly increasing across all channels.
    pub seq: u64,
    /// Which stream this record belongs to.
    pub channel: Channel,
    /// The transaction this record is about (the downstream idempotency key).
    pub txn_id: String,
    /// Ordering key, `{store_id}/{terminal_id}` by default; order is kept per key.
    pub partition_key: String,
    /// When the agent received the transaction, milliseconds since the Unix epoch.
    pub received_ms: i64,
    /// The JSON document to ship, exactly as journaled.
    pub body: Bytes,
}
