//! One batch of Kinesis records from the alerts stream.

use crate::alert::Alert;
use crate::claims::{Claim, Claims};
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
    /// alert): retried by Lambda, then handed to the on-failure destination.
    pub unreadable: u64,
    /// Alerts whose claim or publish failed (SNS or DynamoDB unavailable): retried.
    pub failed: u64,
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
        ];
        let values = [
            self.published,
            self.duplicates,
            self.held_elsewhere,
            self.unreadable,
            self.failed,
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

/// Handles every record of `event` in order, publishing each alert once.
pub async fn handle(event: &KinesisEvent, claims: &dyn Claims, topic: &dyn Topic, now_ms: i64) -> Outcome {
    let mut outcome = Outcome::default();
    for record in &event.records {
        let kinesis = &record.kinesis;
        let seq = kinesis.sequence_number.as_str();
        let parts = match tillgate_kpl::deaggregate(&kinesis.partition_key, &kinesis.data.0) {
            Ok(parts) => parts,
            Err(e) => {
                tracing::error!(sequence_number = seq, error = %e, "a record on the alerts stream is not a readable KPL aggregate");
                outcome.unreadable += 1;
                outcome.fail(seq);
                continue;
            }
        };
        for (_, data) in parts {
            let alert = match Alert::parse(&data) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(sequence_number = seq, error = %e, "unreadable alert");
                    outcome.unreadable += 1;
                    outcome.fail(seq);
                    continue;
                }
            };
            let id = alert_id(&data);
            match claims.claim(&id, now_ms).await {
                Ok(Claim::Granted) => match topic.publish(&render(&alert)).await {
                    Ok(()) => {
                        outcome.published += 1;
                        if let Err(e) = claims.mark_published(&id).await {
                            // Published; a redelivery after the lease may send it again.
                            tracing::warn!(alert_id = %id, error = %e, "published, but not marked");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(alert_id = %id, error = %e, "publish failed; Lambda retries the record");
                        if let Err(e) = claims.release(&id).await {
                            tracing::warn!(alert_id = %id, error = %e, "claim kept until its lease ends");
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

#[cfg(test)]
mod tests;
