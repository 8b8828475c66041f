//! Once-only publication: an alert is claimed before it is published and marked
//! published after, in a DynamoDB table keyed by the alert's id.
//!
//! The order never loses an alert: a claim whose publisher died (Lambda's time-out, a
//! crash) before marking it is taken over once its lease has passed, so the worst case
//! is a second message after a crash between publish and mark, never none.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use std::sync::Mutex;

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Ours to publish.
    Granted,
    /// Published before: drop it.
    AlreadyPublished,
    /// Another invocation holds it and its lease has not run out: try again later.
    HeldElsewhere,
}

/// The claims store.
#[async_trait]
pub trait Claims: Send + Sync {
    async fn claim(&self, alert_id: &str, now_ms: i64) -> Result<Claim, String>;
    async fn mark_published(&self, alert_id: &str) -> Result<(), String>;
    /// Gives a claim back after a failed publish, so a retry need not wait for the lease.
    async fn release(&self, alert_id: &str) -> Result<(), String>;
}

const PUBLISHING: &str = "publishing";
const PUBLISHED: &str = "published";

/// The table: `alert_id` (S, key), `state`, `claimed_at` (ms), `expires_at` (s, TTL).
#[derive(Debug, Clone)]
pub struct DynamoClaims {
    pub client: aws_sdk_dynamodb::Client,
    pub table: String,
    /// How long a claim may stay unpublished before another invocation takes it over
    /// (at least the function's time-out).
    pub lease_ms: i64,
    /// How long a published id is remembered (at least the alerts stream's retention:
    /// no redelivery can come later).
    pub remember_s: i64,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("DynamoDB {what}: {e}")
}

#[async_trait]
impl Claims for DynamoClaims {
    async fn claim(&self, alert_id: &str, now_ms: i64) -> Result<Claim, String> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("alert_id", AttributeValue::S(alert_id.into()))
            .item("state", AttributeValue::S(PUBLISHING.into()))
            .item("claimed_at", AttributeValue::N(now_ms.to_string()))
            .item(
                "expires_at",
                AttributeValue::N((now_ms / 1000 + self.remember_s).to_string()),
            )
            .condition_expression("attribute_not_exists(alert_id)")
            .send()
            .await;
        match put {
            Ok(_) => return Ok(Claim::Granted),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
            Err(e) => return Err(err("PutItem", aws_sdk_dynamodb::error::DisplayErrorContext(e))),
        }
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("alert_id", AttributeValue::S(alert_id.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| err("GetItem", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?
            .item
            .unwrap_or_default();
        let state = item.get("state").and_then(|v| v.as_s().ok()).map(String::as_str);
        if state == Some(PUBLISHED) {
            return Ok(Claim::AlreadyPublished);
        }
        let claimed_at = item.get("claimed_at").and_then(|v| v.as_n().ok()).cloned();
        let stale = claimed_at
            .as_deref()
            .and_then(|n| n.parse::<i64>().ok())
            .is_none_or(|at| now_ms - at >= self.lease_ms);
        if !stale {
            return Ok(Claim::HeldElsewhere);
        }
        // Take the stale claim over, unless someone else just did.
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("alert_id", AttributeValue::S(alert_id.into()))
            .update_expression("SET claimed_at = :now, #s = :publishing")
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()))
            .expression_attribute_values(":publishing", AttributeValue::S(PUBLISHING.into()));
        update = match claimed_at {
            Some(old) => update
                .condition_expression("claimed_at = :old AND #s = :publishing")
                .expression_attribute_values(":old", AttributeValue::N(old)),
            None => update
                .condition_expression("attribute_not_exists(claimed_at) AND #s <> :published")
                .expression_attribute_values(":published", AttributeValue::S(PUBLISHED.into())),
        };
        match update.send().await {
            Ok(_) => Ok(Claim::Granted),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(Claim::HeldElsewhere)
            }
            Err(e) => Err(err("UpdateItem", aws_sdk_dynamodb::error::DisplayErrorContext(e))),
        }
    }

    async fn mark_published(&self, alert_id: &str) -> Result<(), String> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("alert_id", AttributeValue::S(alert_id.into()))
            .update_expression("SET #s = :published")
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":published", AttributeValue::S(PUBLISHED.into()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err("UpdateItem", aws_sdk_dynamodb::error::DisplayErrorContext(e)))
    }

    async fn release(&self, alert_id: &str) -> Result<(), String> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("alert_id", AttributeValue::S(alert_id.into()))
            .condition_expression("#s = :publishing")
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":publishing", AttributeValue::S(PUBLISHING.into()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err("DeleteItem", aws_sdk_dynamodb::error::DisplayErrorContext(e)))
    }
}

/// Claims in memory, with the same rules: for tests and for a local run without a table.
#[derive(Debug, Default)]
pub struct MemoryClaims {
    /// id → (published, claimed_at)
    entries: Mutex<HashMap<String, (bool, i64)>>,
    pub lease_ms: i64,
}

impl MemoryClaims {
    pub fn new(lease_ms: i64) -> Self {
        MemoryClaims {
            entries: Mutex::default(),
            lease_ms,
        }
    }
}

#[async_trait]
impl Claims for MemoryClaims {
    async fn claim(&self, alert_id: &str, now_ms: i64) -> Result<Claim, String> {
        let mut entries = self.entries.lock().expect("claims lock");
        match entries.get(alert_id).copied() {
            None => {
                entries.insert(alert_id.into(), (false, now_ms));
                Ok(Claim::Granted)
            }
            Some((true, _)) => Ok(Claim::AlreadyPublished),
            Some((false, at)) if now_ms - at >= self.lease_ms => {
                entries.insert(alert_id.into(), (false, now_ms));
                Ok(Claim::Granted)
            }
            Some((false, _)) => Ok(Claim::HeldElsewhere),
        }
    }

    async fn mark_published(&self, alert_id: &str) -> Result<(), String> {
        if let Some(entry) = self.entries.lock().expect("claims lock").get_mut(alert_id) {
            entry.0 = true;
        }
        Ok(())
    }

    async fn release(&self, alert_id: &str) -> Result<(), String> {
        let mut entries = self.entries.lock().expect("claims lock");
        if entries.get(alert_id).is_some_and(|e| !e.0) {
            entries.remove(alert_id);
        }
        Ok(())
    }
}
