//! The agent's side of the intake contract: raw input from any source → validated,
//! journaled, decided; the answer, the dead letter and the refusal are the same for
//! HTTP and for source plugins (MQTT).

use crate::journal::DEAD_LETTER_HEAD;
use crate::journal::{Accepted, DeadLetter, Journal, SubmitError};
use crate::metrics::Metrics;
use crate::txn::{self, redact_pans, redact_text, FieldError, Rejection, RejectionClass, Transaction};
use async_trait::async_trait;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tillgate_sdk::{Ingest, PendingVerdict, Submission, Verdict};

/// [`Ingest`] over the agent's journal, for source plugins.
#[derive(Debug, Clone)]
pub struct Intake {
    journal: Journal,
    metrics: Metrics,
    /// The agent's drain flag (shared with HTTP): set, every input is refused.
    draining: Arc<AtomicBool>,
    /// `intake.max_txn_bytes`.
    max_txn_bytes: usize,
}

impl Intake {
    pub fn new(journal: Journal, metrics: Metrics, draining: Arc<AtomicBool>, max_txn_bytes: usize) -> Self {
        Intake {
            journal,
            metrics,
            draining,
            max_txn_bytes,
        }
    }
}

/// Parses one input of `size` bytes (of which `raw` may be only the head) under the
/// shared limit.
pub fn parse_input(raw: &[u8], size: usize, limit: usize) -> Result<Transaction, Rejection> {
    if size > limit {
        return Err(Rejection::TooLarge { size, limit });
    }
    txn::parse_limited(raw, chrono::Utc::now(), limit)
}

#[async_trait]
impl Ingest for Intake {
    fn max_txn_bytes(&self) -> usize {
        self.max_txn_bytes
    }

    async fn submit(&self, s: Submission<'_>) -> PendingVerdict {
        let started = Instant::now();
        let state = self.clone();
        if state.draining.load(Ordering::Acquire) {
            return ready(refused(&SubmitError::Closed));
        }
        let parsed = parse_input(s.raw, s.size, self.max_txn_bytes).and_then(|t| check_origin(t, &s));
        let txn = match parsed {
            Ok(t) => t,
            Err(rejection) => {
                let (store_id, terminal_id) = routing_hint(&s);
                let (source, raw, size) = (s.source, head(s.raw).to_vec(), s.size);
                return Box::pin(async move {
                    if let Err(e) = dead_letter(&state.journal, source, &rejection, &raw, size).await {
                        // Not stored: the sender keeps the message and redelivers it later.
                        return refused(&e);
                    }
                    count(&state.metrics, source, "rejected");
                    Verdict::Rejected {
                        store_id,
                        terminal_id,
                        error: rejection.to_json(),
                    }
                });
            }
        };
        let (store_id, terminal_id) = (txn.store_id.clone(), txn.terminal_id.clone());
        let pending = state.journal.enqueue(txn).await;
        let source = s.source;
        Box::pin(async move {
            match pending.answer().await {
                Ok(accepted) => Verdict::Decided {
                    store_id,
                    terminal_id,
                    answer: answer(&state.metrics, source, accepted, started),
                },
                Err(e) => {
                    count(&state.metrics, source, "refused");
                    refused(&e)
                }
            }
        })
    }
}

fn ready(verdict: Verdict) -> PendingVerdict {
    Box::pin(std::future::ready(verdict))
}

/// The transport's store and terminal (MQTT topic levels) must match the payload's:
/// a terminal publishing under another's topic is refused, not silently re-routed.
fn check_origin(txn: Transaction, s: &Submission<'_>) -> Result<Transaction, Rejection> {
    let mut problems = Vec::new();
    for (field, expected, actual) in [
        ("store_id", s.store_id, &txn.store_id),
        ("terminal_id", s.terminal_id, &txn.terminal_id),
    ] {
        if let Some(expected) = expected {
            if expected != actual {
                problems.push(FieldError {
                    field: field.into(),
                    problem: format!(
                        "is {} but the {} topic names {}",
                        txn::quoted(actual),
                        s.source,
                        txn::quoted(expected)
                    ),
                    allowed: format!("{}, the value in the topic it was published to", txn::quoted(expected)),
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(txn)
    } else {
        Err(Rejection::Invalid(problems))
    }
}

/// Where to send a rejection: the transport's store and terminal, else whatever of the
/// payload is a JSON object with string ids.
fn routing_hint(s: &Submission<'_>) -> (Option<String>, Option<String>) {
    let parsed: Option<Value> = (s.raw.len() == s.size)
        .then(|| serde_json::from_slice(s.raw).ok())
        .flatten();
    let from_payload = |key: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    (
        s.store_id.map(str::to_string).or_else(|| from_payload("store_id")),
        s.terminal_id
            .map(str::to_string)
            .or_else(|| from_payload("terminal_id")),
    )
}

fn refused(e: &SubmitError) -> Verdict {
    Verdict::Refused {
        code: refusal_code(e),
        message: e.to_string(),
    }
}

/// The decision as answered: `{txn_id, decision, rules, seq, decided_in_us}`.
pub fn answer(metrics: &Metrics, source: &str, accepted: Accepted, started: Instant) -> Value {
    let elapsed = started.elapsed();
    metrics.decision_latency.observe(elapsed.as_secs_f64());
    count(
        metrics,
        source,
        if accepted.duplicate { "duplicate" } else { "accepted" },
    );
    let d = &accepted.decision;
    let mut v = json!({
        "txn_id": d.txn_id,
        "decision": d.decision,
        "rules": d.rules,
        "seq": accepted.seq,
        "decided_in_us": elapsed.as_micros() as u64,
    });
    if accepted.duplicate {
        v["duplicate"] = json!(true);
    }
    v
}

/// Counts a transaction by source and outcome.
pub fn count(metrics: &Metrics, source: &str, outcome: &str) {
    metrics.transactions.with_label_values(&[source, outcome]).inc();
}

/// The part of an input a dead letter keeps.
pub fn head(raw: &[u8]) -> &[u8] {
    &raw[..raw.len().min(DEAD_LETTER_HEAD)]
}

/// What a dead letter stores of `raw`, an input of `size` bytes (of which `raw` may be
/// only the head): its head with card numbers masked. When the input was cut, digits
/// at the end of the head are masked too: a card number split by the cut would not be
/// recognised, and its first 15 digits are still too many to keep.
pub fn dead_letter_bytes(raw: &[u8], size: usize) -> Vec<u8> {
    let mut out = redact_pans(head(raw));
    if size.max(raw.len()) > out.len() {
        for b in out.iter_mut().rev() {
            match *b {
                b'0'..=b'9' => *b = b'*',
                b' ' | b'-' | b'*' => {}
                _ => break,
            }
        }
    }
    out
}

/// Stores the input's head with card numbers masked; returns once it is durable.
pub async fn dead_letter(
    journal: &Journal,
    source: &str,
    rejection: &Rejection,
    raw: &[u8],
    size: usize,
) -> Result<(), SubmitError> {
    store_dead_letter(journal, source, rejection.class(), rejection.to_string(), raw, size).await
}

/// [`dead_letter`] for a reason that is not a [`Rejection`] (an over-size HTTP body).
pub async fn store_dead_letter(
    journal: &Journal,
    source: &str,
    class: RejectionClass,
    reason: String,
    raw: &[u8],
    size: usize,
) -> Result<(), SubmitError> {
    let letter = DeadLetter {
        source: source.into(),
        class,
        reason: txn::cut(&redact_text(&reason), txn::MAX_REASON_BYTES),
        raw: dead_letter_bytes(raw, size),
        size,
    };
    let stored = journal.dead_letter(letter).await;
    if let Err(e) = &stored {
        tracing::warn!(error = %e, source, "dead letter not stored");
    }
    stored
}

/// The machine-readable reason a transaction was not journaled.
pub fn refusal_code(e: &SubmitError) -> &'static str {
    match e {
        SubmitError::Full(_) => "journal_full",
        SubmitError::DiskFull(_) => "disk_full",
        SubmitError::Closed => "draining",
        SubmitError::Storage(_) => "storage",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A card number cut in two by the 64 KiB head keeps none of its digits, whoever
    /// cut the input first (the HTTP body reader and the MQTT plugin keep heads too).
    #[test]
    fn digits_cut_off_at_the_end_of_a_head_are_masked() {
        let mut input = vec![b' '; DEAD_LETTER_HEAD - 10];
        input.extend_from_slice(b"\"4111111111111111\"}");
        let already_cut = &input[..DEAD_LETTER_HEAD];
        for (raw, size) in [(&input[..], input.len()), (already_cut, input.len())] {
            let kept = dead_letter_bytes(raw, size);
            assert_eq!(kept.len(), DEAD_LETTER_HEAD);
            assert!(
                !kept.iter().any(u8::is_ascii_digit),
                "{}",
                String::from_utf8_lossy(&kept[kept.len() - 20..])
            );
        }
    }
}
