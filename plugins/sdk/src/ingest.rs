//! The intake contract between a source plugin (MQTT, ...) and the agent.
//!
//! A source hands the agent the raw bytes it received; the agent validates them,
//! journals them, decides, and answers with a [`Verdict`] only once that outcome is
//! durable (a decision after its COMMIT, a rejection after its dead letter). A source
//! acknowledges its input to the sender (an MQTT PUBACK) only on a durable verdict, so
//! a message is either in the journal or still the sender's to redeliver.
//!
//! Submission is two-phase so that an ordered source keeps its order without waiting
//! for each commit: [`Ingest::submit`] returns once the input is queued behind every
//! input submitted before it, with a [`PendingVerdict`] to await the durable answer.

use async_trait::async_trait;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;

/// The durable answer to a queued submission, to be awaited.
pub type PendingVerdict = Pin<Box<dyn Future<Output = Verdict> + Send + 'static>>;

/// One input as received by a source.
#[derive(Debug, Clone, Copy)]
pub struct Submission<'a> {
    /// The source's name, for metrics and dead letters: `mqtt`.
    pub source: &'static str,
    /// The payload as received, or only its first bytes when it is larger than
    /// [`Ingest::max_txn_bytes`] (a source need not keep a payload it knows is refused).
    pub raw: &'a [u8],
    /// How large the payload was.
    pub size: usize,
    /// The store the transport says this came from (an MQTT topic level), checked
    /// against the payload's `store_id`.
    pub store_id: Option<&'a str>,
    /// The terminal the transport says this came from, checked against `terminal_id`.
    pub terminal_id: Option<&'a str>,
}

/// The agent's durable answer to a [`Submission`].
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Journaled and decided (or a repeat of a journaled txn_id: `answer.duplicate`).
    Decided {
        /// Where the answer goes.
        store_id: String,
        terminal_id: String,
        /// `{txn_id, decision, rules, seq, decided_in_us[, duplicate]}`, as HTTP answers.
        answer: Value,
    },
    /// Invalid input, stored as a dead letter: `error` says which field, why and what
    /// is allowed (`{error, message, problems: [...]}`). The sender must not resend it.
    Rejected {
        /// Best-effort routing from the transport or whatever of the payload parsed.
        store_id: Option<String>,
        terminal_id: Option<String>,
        error: Value,
    },
    /// Not journaled, nothing stored: the journal is full or the agent is stopping.
    /// The source must not acknowledge; the input stays the sender's to redeliver.
    Refused {
        /// `journal_full`, `disk_full`, `draining`, `storage`.
        code: &'static str,
        message: String,
    },
}

/// The agent side of the intake contract.
#[async_trait]
pub trait Ingest: Send + Sync {
    /// Validates and queues the input behind every earlier submission; the returned
    /// future resolves once the verdict is durable.
    async fn submit(&self, submission: Submission<'_>) -> PendingVerdict;

    /// The largest transaction the agent takes (`intake.max_txn_bytes`); a larger
    /// payload is refused as too large and only its head is kept.
    fn max_txn_bytes(&self) -> usize;
}
