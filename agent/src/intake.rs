//! The one ingest path: input from any source → validated, journaled, decided. HTTP
//! calls [`Intake`] directly (it parses NDJSON batches on the blocking pool and answers
//! 4xx even when a dead letter cannot be stored); source plugins (MQTT) reach it through
//! the SDK's [`Ingest`]. The answer, the counting, the dead letter and the refusal are
//! the same for all.

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

/// The agent's intake over its journal; [`Ingest`] for source plugins.
#[derive(Debug, Clone)]
pub struct Intake {
    journal: Journal,
    metrics: Metrics,
    /// The agent's drain flag (shared with HTTP): set, every input is refused.
    draining: Arc<AtomicBool>,
    /// `intake.max_txn_bytes`.
    max_txn_bytes: usize,
}

/// A decision on its way: resolves once it is durable.
pub type PendingDecision = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, SubmitError>> + Send>>;

impl Intake {
    pub fn new(journal: Journal, metrics: Metrics, draining: Arc<AtomicBool>, max_txn_bytes: usize) -> Self {
        Intake {
            journal,
            metrics,
            draining,
            max_txn_bytes,
        }
    }

    /// Whether input is taken: not once the agent has begun to stop.
    pub fn check_open(&self) -> Result<(), SubmitError> {
        if self.draining.load(Ordering::Acquire) {
            Err(SubmitError::Closed)
        } else {
            Ok(())
        }
    }

    /// Queues a valid transaction behind everything submitted before it; the returned
    /// future resolves to its answer once the commit that holds it is done. Counted by
    /// source and outcome.
    pub async fn enqueue(&self, source: &'static str, txn: Transaction, started: Instant) -> PendingDecision {
        let pending = self.journal.enqueue(txn).await;
        let metrics = self.metrics.clone();
        Box::pin(async move {
            match pending.answer().await {
                Ok(accepted) => Ok(answer(&metrics, source, accepted, started)),
                Err(e) => {
                    count(&metrics, source, "refused");
                    Err(e)
                }
            }
        })
    }

    /// Many valid transactions, in order, sharing group commits; answers in input order.
    pub async fn decide_many(
        &self,
        source: &'static str,
        txns: Vec<Transaction>,
        started: Instant,
    ) -> Vec<Result<Value, SubmitError>> {
        let mut waiting = Vec::with_capacity(txns.len());
        for txn in txns {
            waiting.push(self.enqueue(source, txn, started).await);
        }
        let mut out = Vec::with_capacity(waiting.len());
        for pending in waiting {
            out.push(pending.await);
        }
        out
    }

    /// A rejected input that its sender will not send again (an HTTP client was
    /// answered 4xx): its dead letter (the head, card numbers masked) stored, then
    /// counted whether or not it could be. `Err` when it could not (logged; a commit
    /// that rolled back counts it in `tillgate_dead_letters_lost_total`).
    pub async fn reject(
        &self,
        source: &str,
        rejection: &Rejection,
        raw: &[u8],
        size: usize,
    ) -> Result<(), SubmitError> {
        let stored = self
            .store_dead_letter(source, rejection.class(), rejection.to_string(), raw, size)
            .await;
        self.count_rejected(source);
        stored
    }

    /// Counts a rejected input (its dead letter is stored apart, or shared with others:
    /// the rejected lines of a batch beyond the first 100).
    pub fn count_rejected(&self, source: &str) {
        count(&self.metrics, source, "rejected");
    }

    /// Stores a dead letter without counting an input (the caller counts: an MQTT
    /// rejection once its letter is stored, an HTTP one whether or not): the head, card
    /// numbers masked; returns once durable.
    pub async fn store_dead_letter(
        &self,
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
        let stored = self.journal.dead_letter(letter).await;
        if let Err(e) = &stored {
            tracing::warn!(error = %e, source, "dead letter not stored");
        }
        stored
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
        if let Err(e) = self.check_open() {
            return ready(refused(&e));
        }
        let parsed = parse_input(s.raw, s.size, self.max_txn_bytes).and_then(|t| check_origin(t, &s));
        let txn = match parsed {
            Ok(t) => t,
            Err(rejection) => {
                let (store_id, terminal_id) = routing_hint(&s);
                let (this, source, raw, size) = (self.clone(), s.source, head(s.raw).to_vec(), s.size);
                return Box::pin(async move {
                    let stored = this
                        .store_dead_letter(source, rejection.class(), rejection.to_string(), &raw, size)
                        .await;
                    if let Err(e) = stored {
                        // Not stored: the sender keeps the message and redelivers it
                        // later, so it is not counted as rejected yet.
                        return refused(&e);
                    }
                    this.count_rejected(source);
                    Verdict::Rejected {
                        store_id,
                        terminal_id,
                        error: rejection.to_json(),
                    }
                });
            }
        };
        let (store_id, terminal_id) = (txn.store_id.clone(), txn.terminal_id.clone());
        let pending = self.enqueue(s.source, txn, started).await;
        Box::pin(async move {
            match pending.await {
                Ok(answer) => Verdict::Decided {
                    store_id,
                    terminal_id,
                    answer,
                },
                Err(e) => refused(&e),
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
fn answer(metrics: &Metrics, source: &str, accepted: Accepted, started: Instant) -> Value {
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
fn count(metrics: &Metrics, source: &str, outcome: &str) {
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

/// The machine-readable reason a transaction was not journaled.
pub fn refusal_code(e: &SubmitError) -> &'static str {
    match e {
        SubmitError::Full(_) => "journal_full",
        SubmitError::DiskFull(_) => "disk_full",
        SubmitError::Closed => "draining",
        SubmitError::Storage(_) => "storage",
        SubmitError::NotDurable(_) => "not_durable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JournalConfig;
    use crate::rules::{Engine, RulePack};

    fn intake_over(dir: &std::path::Path, metrics: &Metrics) -> Intake {
        let journal = Journal::open(
            &dir.join("j.db"),
            &JournalConfig::default(),
            Vec::new(),
            Box::new(Engine::new(RulePack::default(), None, std::time::Duration::ZERO)),
            crate::journal::VideoLinks::none(),
            metrics.clone(),
        )
        .unwrap();
        Intake::new(journal, metrics.clone(), Arc::new(AtomicBool::new(false)), 65_536)
    }

    fn rejected(metrics: &Metrics) -> u64 {
        metrics.transactions.with_label_values(&["mqtt", "rejected"]).get()
    }

    const NOT_A_TRANSACTION: &[u8] = b"{\"txn_id\": 7}";

    fn submission() -> Submission<'static> {
        Submission {
            source: "mqtt",
            raw: NOT_A_TRANSACTION,
            size: NOT_A_TRANSACTION.len(),
            store_id: Some("s1"),
            terminal_id: Some("p1"),
        }
    }

    /// A source's rejected input is counted once its dead letter is stored; when the
    /// letter cannot be stored the sender is refused (it will send again) and nothing
    /// is counted, so a redelivered message is not counted twice.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_source_rejection_counts_only_once_its_dead_letter_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let intake = intake_over(dir.path(), &metrics);

        let verdict = intake.submit(submission()).await.await;
        assert!(matches!(verdict, Verdict::Rejected { .. }), "{verdict:?}");
        assert_eq!(rejected(&metrics), 1);

        intake.journal.close().await;
        let verdict = intake.submit(submission()).await.await;
        assert!(matches!(verdict, Verdict::Refused { .. }), "{verdict:?}");
        assert_eq!(
            rejected(&metrics),
            1,
            "a rejection whose dead letter was lost was counted"
        );
    }

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
