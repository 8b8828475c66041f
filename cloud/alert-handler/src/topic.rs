//! Where messages go: the fraud team's SNS topic.

use crate::message::Message;
use async_trait::async_trait;
use aws_sdk_sns::types::MessageAttributeValue;
use std::sync::Mutex;

#[async_trait]
pub trait Topic: Send + Sync {
    async fn publish(&self, message: &Message) -> Result<(), String>;
}

/// An SNS topic.
#[derive(Debug, Clone)]
pub struct SnsTopic {
    pub client: aws_sdk_sns::Client,
    pub arn: String,
}

#[async_trait]
impl Topic for SnsTopic {
    async fn publish(&self, message: &Message) -> Result<(), String> {
        let mut request = self
            .client
            .publish()
            .topic_arn(&self.arn)
            .subject(&message.subject)
            .message(&message.body);
        for (name, value) in &message.attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| format!("SNS attribute {name}: {e}"))?;
            request = request.message_attributes(*name, value);
        }
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("SNS Publish: {}", aws_sdk_sns::error::DisplayErrorContext(e)))
    }
}

/// Messages kept in memory (tests, dry runs).
#[derive(Debug, Default)]
pub struct MemoryTopic {
    pub published: Mutex<Vec<Message>>,
    /// Fail this many publishes first (a throttled or unreachable SNS).
    pub fail_next: Mutex<u32>,
}

#[async_trait]
impl Topic for MemoryTopic {
    async fn publish(&self, message: &Message) -> Result<(), String> {
        let mut fail = self.fail_next.lock().expect("lock");
        if *fail > 0 {
            *fail -= 1;
            return Err("SNS Publish: throttled (test)".into());
        }
        self.published.lock().expect("lock").push(message.clone());
        Ok(())
    }
}
