//! Records the handler can never publish (not a readable KPL aggregate, not an alert):
//! sent with their bytes and the reason to the stack's dead-letter queue, so the shard
//! moves on and an operator can look at them. Retrying them would only stall the shard.

use async_trait::async_trait;
use base64::Engine;
use serde_json::json;
use std::sync::Mutex;

/// One unpublishable record.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub sequence_number: String,
    pub partition_key: String,
    pub reason: String,
    /// The Kinesis record's data (or the one user record that is not an alert).
    pub data: Vec<u8>,
}

impl DeadLetter {
    /// The queue message: JSON with the data in base64, cut to what SQS takes (256 KiB
    /// per message; the bytes beyond 150,000 are dropped and the full length stated).
    pub fn body(&self) -> String {
        const KEPT: usize = 150_000;
        json!({
            "sequence_number": self.sequence_number,
            "partition_key": self.partition_key,
            "reason": self.reason,
            "data_bytes": self.data.len(),
            "data_base64": base64::engine::general_purpose::STANDARD.encode(&self.data[..self.data.len().min(KEPT)]),
        })
        .to_string()
    }
}

#[async_trait]
pub trait DeadLetters: Send + Sync {
    async fn send(&self, letter: &DeadLetter) -> Result<(), String>;
}

/// The stack's SQS dead-letter queue.
#[derive(Debug, Clone)]
pub struct SqsDeadLetters {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
}

#[async_trait]
impl DeadLetters for SqsDeadLetters {
    async fn send(&self, letter: &DeadLetter) -> Result<(), String> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(letter.body())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("SQS SendMessage: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))
    }
}

/// Dead letters kept in memory (tests).
#[derive(Debug, Default)]
pub struct MemoryDeadLetters {
    pub sent: Mutex<Vec<DeadLetter>>,
}

#[async_trait]
impl DeadLetters for MemoryDeadLetters {
    async fn send(&self, letter: &DeadLetter) -> Result<(), String> {
        self.sent.lock().expect("lock").push(letter.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQS takes messages of 256 KiB at most: the largest aggregate Kinesis holds (1 MiB
    /// by default, 10 MiB at most) still fits, cut and with its length stated.
    #[test]
    fn the_largest_record_still_fits_in_one_queue_message() {
        let letter = DeadLetter {
            sequence_number: "4".repeat(56),
            partition_key: "k".repeat(256),
            reason: "r".repeat(1_000),
            data: vec![0xAB; 10 * 1024 * 1024],
        };
        let body = letter.body();
        assert!(body.len() <= 256 * 1024, "{} bytes", body.len());
        assert!(body.contains(&format!("\"data_bytes\":{}", 10 * 1024 * 1024)));
    }
}
