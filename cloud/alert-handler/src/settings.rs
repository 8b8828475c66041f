//! The function's environment, as the stack sets it (cloud/template.yaml).

use std::time::Duration;

/// What the handler needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `ALERTS_TOPIC_ARN`: the fraud team's topic.
    pub topic_arn: String,
    /// `CLAIMS_TABLE`: the DynamoDB table of claimed alert ids.
    pub claims_table: String,
    /// `DEAD_LETTER_QUEUE_URL`: where unpublishable records go.
    pub dead_letter_queue_url: String,
    /// `CLAIM_MEMORY_HOURS` (default 168): at least the alerts stream's retention.
    pub remember: Duration,
}

/// Each SDK call's bound: an alert's claim, publish and mark must fit in the handler's
/// deadline margin (handler::DEADLINE_MARGIN_MS), whatever SNS or DynamoDB do.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The SDK's configuration: behaviour pinned to a dated version (the SDK's `latest`
/// moves with upgrades) and every call bounded in time.
pub async fn sdk_config() -> aws_config::SdkConfig {
    bounded_sdk_config(OPERATION_TIMEOUT, ATTEMPT_TIMEOUT, CONNECT_TIMEOUT).await
}

/// The SDK's configuration pinned to the same dated behaviour version, with these bounds
/// on every call (the cloud's other functions pick their own).
pub async fn bounded_sdk_config(operation: Duration, attempt: Duration, connect: Duration) -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(operation)
        .operation_attempt_timeout(attempt)
        .connect_timeout(connect)
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::v2026_01_12())
        .timeout_config(timeouts)
        .load()
        .await
}

impl Settings {
    /// Reads the environment; the error names the variable and what it must hold.
    pub fn from_env() -> Result<Settings, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let required = |name: &str| {
            var(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("{name} is not set"))
        };
        let seconds = |name: &str, default: u64| -> Result<u64, String> {
            match var(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name}={v:?}: expected a whole number above 0")),
            }
        };
        Ok(Settings {
            topic_arn: required("ALERTS_TOPIC_ARN")?,
            claims_table: required("CLAIMS_TABLE")?,
            dead_letter_queue_url: required("DEAD_LETTER_QUEUE_URL")?,
            remember: Duration::from_secs(3600 * seconds("CLAIM_MEMORY_HOURS", 168)?),
        })
    }

    /// The DynamoDB claims, the SNS topic and the SQS dead letters.
    pub fn connect(&self, sdk: &aws_config::SdkConfig) -> Clients {
        Clients {
            claims: crate::claims::DynamoClaims {
                client: aws_sdk_dynamodb::Client::new(sdk),
                table: self.claims_table.clone(),
                remember_s: self.remember.as_secs() as i64,
            },
            topic: crate::topic::SnsTopic {
                client: aws_sdk_sns::Client::new(sdk),
                arn: self.topic_arn.clone(),
            },
            dead_letters: crate::dead_letters::SqsDeadLetters {
                client: aws_sdk_sqs::Client::new(sdk),
                queue_url: self.dead_letter_queue_url.clone(),
            },
        }
    }
}

/// The handler's AWS clients.
#[derive(Debug, Clone)]
pub struct Clients {
    pub claims: crate::claims::DynamoClaims,
    pub topic: crate::topic::SnsTopic,
    pub dead_letters: crate::dead_letters::SqsDeadLetters,
}

impl Clients {
    /// The handler's sinks over these clients and the system clock.
    pub fn sinks(&self) -> crate::handler::Sinks<'_> {
        crate::handler::Sinks {
            claims: &self.claims,
            topic: &self.topic,
            dead_letters: &self.dead_letters,
            clock: &now_ms,
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn a_missing_or_bad_variable_is_named() {
        let e = Settings::from_lookup(lookup(&[("CLAIMS_TABLE", "t")])).unwrap_err();
        assert!(e.contains("ALERTS_TOPIC_ARN"), "{e}");
        let e = Settings::from_lookup(lookup(&[
            ("CLAIMS_TABLE", "t"),
            ("ALERTS_TOPIC_ARN", "arn"),
            ("DEAD_LETTER_QUEUE_URL", "https://q"),
            ("CLAIM_MEMORY_HOURS", "1w"),
        ]))
        .unwrap_err();
        assert!(e.contains("CLAIM_MEMORY_HOURS=\"1w\""), "{e}");
    }

    #[test]
    fn ids_are_remembered_for_a_week_by_default() {
        let s = Settings::from_lookup(lookup(&[
            ("CLAIMS_TABLE", "t"),
            ("ALERTS_TOPIC_ARN", "arn"),
            ("DEAD_LETTER_QUEUE_URL", "https://q"),
        ]))
        .unwrap();
        assert_eq!(s.remember.as_secs(), 7 * 24 * 3600);
    }

    #[test]
    fn one_alerts_calls_fit_in_the_deadline_margin() {
        // claim (up to three calls), publish, mark: five operations at most.
        assert!(5 * OPERATION_TIMEOUT.as_millis() as i64 <= crate::handler::DEADLINE_MARGIN_MS);
    }
}
