//! Once-only publication: an alert is claimed before it is published and marked
//! published after, in a DynamoDB table keyed by the alert's id.
//!
//! The order never loses an alert: a claim holds until the deadline of the invocation
//! that made it; one whose publisher died (Lambda's time-out, a crash) before marking
//! it is taken over by the next invocation after that deadline, so the worst case is a
//! second message after a crash between publish and mark, never none. (Lambda retries
//! a failed record until it goes through: the stack sets no retry limit.)

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
    /// Another invocation holds it until its deadline: try again later.
    HeldElsewhere,
}

/// The claims store.
#[async_trait]
pub trait Claims: Send + Sync {
    /// Claims `alert_id` at `now_ms` until `until_ms` (this invocation's deadline).
    async fn claim(&self, alert_id: &str, now_ms: i64, until_ms: i64) -> Result<Claim, String>;
    async fn mark_published(&self, alert_id: &str) -> Result<(), String>;
    /// Gives a claim back after a failed publish, so a retry need not wait for the
    /// holder's deadline.
    async fn release(&self, alert_id: &str) -> Result<(), String>;
}

const PUBLISHING: &str = "publishing";
/// How far two Lambda hosts' clocks may differ: a claim is taken over only this long
/// after its holder's deadline.
pub const CLOCK_ALLOWANCE_MS: i64 = 2_000;
const PUBLISHED: &str = "published";

/// The table: `alert_id` (S, key), `state`, `held_until` (ms: the claiming invocation's
/// deadline), `expires_at` (s, the table's time to live).
#[derive(Debug, Clone)]
pub struct DynamoClaims {
    pub client: aws_sdk_dynamodb::Client,
    pub table: String,
    /// How long a published id is remembered (at least the alerts stream's retention:
    /// no redelivery can come later).
    pub remember_s: i64,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("DynamoDB {what}: {e}")
}

#[async_trait]
impl Claims for DynamoClaims {
    async fn claim(&self, alert_id: &str, now_ms: i64, until_ms: i64) -> Result<Claim, String> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("alert_id", AttributeValue::S(alert_id.into()))
            .item("state", AttributeValue::S(PUBLISHING.into()))
            .item("held_until", AttributeValue::N(until_ms.to_string()))
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
        // Someone claimed it: published, held by a live invocation, or left by a dead one.
        // One conditional update takes it over only in the last case (a missing
        // `held_until`, from a hand-made item, counts as lapsed).
        let takeover = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("alert_id", AttributeValue::S(alert_id.into()))
            .update_expression("SET held_until = :until")
            .condition_expression(
                "attribute_exists(alert_id) AND #s <> :published AND \
                 (attribute_not_exists(held_until) OR held_until <= :now)",
            )
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":until", AttributeValue::N(until_ms.to_string()))
            .expression_attribute_values(":now", AttributeValue::N((now_ms - CLOCK_ALLOWANCE_MS).to_string()))
            .expression_attribute_values(":published", AttributeValue::S(PUBLISHED.into()))
            .send()
            .await;
        match takeover {
            Ok(_) => return Ok(Claim::Granted),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
            Err(e) => return Err(err("UpdateItem", aws_sdk_dynamodb::error::DisplayErrorContext(e))),
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
            .item;
        match item
            .as_ref()
            .and_then(|i| i.get("state"))
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
        {
            Some(PUBLISHED) => Ok(Claim::AlreadyPublished),
            // Held by a live invocation, or released between our two calls: next time.
            _ => Ok(Claim::HeldElsewhere),
        }
    }

    async fn mark_published(&self, alert_id: &str) -> Result<(), String> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("alert_id", AttributeValue::S(alert_id.into()))
            .update_expression("SET #s = :published")
            // Only an existing claim (made with its `expires_at`): never a new item that
            // would live forever.
            .condition_expression("attribute_exists(alert_id)")
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
    /// id → (published, held_until)
    entries: Mutex<HashMap<String, (bool, i64)>>,
}

#[async_trait]
impl Claims for MemoryClaims {
    async fn claim(&self, alert_id: &str, now_ms: i64, until_ms: i64) -> Result<Claim, String> {
        let mut entries = self.entries.lock().expect("claims lock");
        match entries.get(alert_id).copied() {
            Some((true, _)) => Ok(Claim::AlreadyPublished),
            Some((false, held_until)) if now_ms < held_until + CLOCK_ALLOWANCE_MS => Ok(Claim::HeldElsewhere),
            _ => {
                entries.insert(alert_id.into(), (false, until_ms));
                Ok(Claim::Granted)
            }
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
