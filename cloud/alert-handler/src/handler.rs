//! One batch of Kinesis records from the alerts stream.

use crate::alert::Alert;
use crate::claims::{Claim, Claims};
use crate::dead_letters::{DeadLetter, DeadLetters};
use crate::message::render;
use crate::topic::Topic;
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use serde_json::json;
use sha2::{Digest, Sha256};

/// What a batch came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Alerts published to the topic.
    pub published: u64,
    /// Alerts published before (a redelivery): dropped.
    pub duplicates: u64,
    /// Alerts another invocation is publishing right now: left for the retry.
    pub held_elsewhere: u64,
    /// Kinesis records or alerts that cannot be read (bad MD5, bad protobuf, not an
    /// alert): sent to the dead-letter queue, never retried.
    pub unreadable: u64,
    /// Alerts whose claim or publish failed (SNS or DynamoDB unavailable), and
    /// unreadable records the dead-letter queue did not take: retried.
    pub failed: u64,
    /// Records left for the retry because the invocation's deadline came near.
    pub out_of_time: u64,
    /// Sequence numbers of the Kinesis records to report as batch item failures.
    pub failed_records: Vec<String>,
}

impl Outcome {
    fn fail(&mut self, sequence_number: &str) {
        if self.failed_records.last().map(String::as_str) != Some(sequence_number) {
            self.failed_records.push(sequence_number.to_string());
        }
    }

    /// The answer Lambda reads (`ReportBatchItemFailures`): it resumes the shard at the
    /// lowest failed sequence number.
    pub fn response(&self) -> KinesisEventResponse {
        let mut response = KinesisEventResponse::default();
        for seq in &self.failed_records {
            let mut failure = KinesisBatchItemFailure::default();
            failure.item_identifier = Some(seq.clone());
            response.batch_item_failures.push(failure);
        }
        response
    }

    /// The counts as one CloudWatch embedded-metric-format log line (Lambda's log
    /// becomes metrics in namespace `tillgate/alerts`, no SDK call).
    pub fn metrics_line(&self, now_ms: i64) -> String {
        let names = [
            "AlertsPublished",
            "DuplicatesDropped",
            "HeldElsewhere",
            "Unreadable",
            "Failed",
            "OutOfTime",
        ];
        let values = [
            self.published,
            self.duplicates,
            self.held_elsewhere,
            self.unreadable,
            self.failed,
            self.out_of_time,
        ];
        let mut line = json!({
            "_aws": {
                "Timestamp": now_ms,
                "CloudWatchMetrics": [{
                    "Namespace": "tillgate/alerts",
                    "Dimensions": [[]],
                    "Metrics": names.iter().map(|n| json!({"Name": n, "Unit": "Count"})).collect::<Vec<_>>(),
                }],
            },
        });
        for (name, value) in names.iter().zip(values) {
            line[*name] = json!(value);
        }
        line.to_string()
    }
}

/// An alert's id: the SHA-256 of its bytes. A gateway re-ships a journal row byte for
/// byte, and two different alerts differ at least in their journal sequence or time.
pub fn alert_id(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Time kept in hand before the invocation's deadline: one alert's claim (up to three
/// calls), publish and mark, each bounded by the SDK's operation time-out (settings.rs).
pub const DEADLINE_MARGIN_MS: i64 = 15_000;

/// Where the handler sends things, and the clock it reads.
pub struct Sinks<'a> {
    pub claims: &'a dyn Claims,
    pub topic: &'a dyn Topic,
    pub dead_letters: &'a dyn DeadLetters,
    /// Milliseconds since the epoch, now.
    pub clock: &'a (dyn Fn() -> i64 + Sync),
}

impl std::fmt::Debug for Sinks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sinks").finish_non_exhaustive()
    }
}

/// Handles the records of `event` in order, publishing each alert once, until
/// [`DEADLINE_MARGIN_MS`] before `deadline_ms` or the first record that must be retried;
/// the records from there on are reported as failures without being touched (Lambda
/// resumes at the lowest one anyway), so nothing after a failure is published out of
/// order or dead-lettered twice.
pub async fn handle(event: &KinesisEvent, sinks: &Sinks<'_>, deadline_ms: i64) -> Outcome {
    let mut outcome = Outcome::default();
    let out_of_time = || (sinks.clock)() >= deadline_ms - DEADLINE_MARGIN_MS;
    for (index, record) in event.records.iter().enumerate() {
        let kinesis = &record.kinesis;
        let seq = kinesis.sequence_number.as_str();
        let must_retry = !outcome.failed_records.is_empty();
        if must_retry || out_of_time() {
            for left in &event.records[index..] {
                if !must_retry {
                    outcome.out_of_time += 1;
                }
                outcome.fail(&left.kinesis.sequence_number);
            }
            break;
        }
        let parts = match tillgate_kpl::deaggregate(&kinesis.partition_key, &kinesis.data.0) {
            Ok(parts) => parts,
            Err(e) => {
                let letter = DeadLetter {
                    sequence_number: seq.to_string(),
                    partition_key: kinesis.partition_key.clone(),
                    reason: format!("not a readable KPL aggregate: {e}"),
                    data: kinesis.data.0.clone(),
                };
                dead_letter(&mut outcome, sinks, letter).await;
                continue;
            }
        };
        for (key, data) in parts {
            if outcome.failed_records.last().map(String::as_str) == Some(seq) {
                break; // this record is retried whole
            }
            if out_of_time() {
                // The whole record again next time; what it published is claimed.
                outcome.out_of_time += 1;
                outcome.fail(seq);
                break;
            }
            let alert = match Alert::parse(&data) {
                Ok(a) => a,
                Err(e) => {
                    let letter = DeadLetter {
                        sequence_number: seq.to_string(),
                        partition_key: key,
                        reason: e,
                        data: data.to_vec(),
                    };
                    dead_letter(&mut outcome, sinks, letter).await;
                    continue;
                }
            };
            let id = alert_id(&data);
            match sinks.claims.claim(&id, (sinks.clock)(), deadline_ms).await {
                Ok(Claim::Granted) => match sinks.topic.publish(&render(&alert)).await {
                    Ok(()) => {
                        outcome.published += 1;
                        if let Err(e) = sinks.claims.mark_published(&id).await {
                            // Published; a redelivery after this deadline may send it again.
                            tracing::warn!(alert_id = %id, error = %e, "published, but not marked");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(alert_id = %id, error = %e, "publish failed; Lambda retries the record");
                        if let Err(e) = sinks.claims.release(&id).await {
                            tracing::warn!(alert_id = %id, error = %e, "claim kept until this deadline");
                        }
                        outcome.failed += 1;
                        outcome.fail(seq);
                    }
                },
                Ok(Claim::AlreadyPublished) => outcome.duplicates += 1,
                Ok(Claim::HeldElsewhere) => {
                    outcome.held_elsewhere += 1;
                    outcome.fail(seq);
                }
                Err(e) => {
                    tracing::warn!(alert_id = %id, error = %e, "claim failed; Lambda retries the record");
                    outcome.failed += 1;
                    outcome.fail(seq);
                }
            }
        }
    }
    outcome
}

/// Sends `letter`; if the queue does not take it, the record is retried instead.
async fn dead_letter(outcome: &mut Outcome, sinks: &Sinks<'_>, letter: DeadLetter) {
    tracing::error!(sequence_number = %letter.sequence_number, reason = %letter.reason, "unpublishable record on the alerts stream");
    match sinks.dead_letters.send(&letter).await {
        Ok(()) => outcome.unreadable += 1,
        Err(e) => {
            tracing::warn!(error = %e, "dead-letter queue refused it; Lambda retries the record");
            outcome.failed += 1;
            outcome.fail(&letter.sequence_number);
        }
    }
}

#[cfg(test)]
mod tests;
