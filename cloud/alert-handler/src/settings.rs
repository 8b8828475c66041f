//! The function's environment, as the stack sets it (cloud/template.yaml).

use std::time::Duration;

/// What the handler needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `ALERTS_TOPIC_ARN`: the fraud team's topic.
    pub topic_arn: String,
    /// `CLAIMS_TABLE`: the DynamoDB table of claimed alert ids.
    pub claims_table: String,
    /// `CLAIM_LEASE_SECONDS` (default 120): at least the function's time-out.
    pub lease: Duration,
    /// `CLAIM_MEMORY_HOURS` (default 168): at least the alerts stream's retention.
    pub remember: Duration,
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
            lease: Duration::from_secs(seconds("CLAIM_LEASE_SECONDS", 120)?),
            remember: Duration::from_secs(3600 * seconds("CLAIM_MEMORY_HOURS", 168)?),
        })
    }

    /// The DynamoDB claims and the SNS topic, with the SDK's configuration.
    pub fn connect(&self, sdk: &aws_config::SdkConfig) -> (crate::claims::DynamoClaims, crate::topic::SnsTopic) {
        let claims = crate::claims::DynamoClaims {
            client: aws_sdk_dynamodb::Client::new(sdk),
            table: self.claims_table.clone(),
            lease_ms: self.lease.as_millis() as i64,
            remember_s: self.remember.as_secs() as i64,
        };
        let topic = crate::topic::SnsTopic {
            client: aws_sdk_sns::Client::new(sdk),
            arn: self.topic_arn.clone(),
        };
        (claims, topic)
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
            ("CLAIM_LEASE_SECONDS", "2m"),
        ]))
        .unwrap_err();
        assert!(e.contains("CLAIM_LEASE_SECONDS=\"2m\""), "{e}");
    }

    #[test]
    fn defaults_hold_a_lease_of_two_minutes_and_a_week_of_memory() {
        let s = Settings::from_lookup(lookup(&[("CLAIMS_TABLE", "t"), ("ALERTS_TOPIC_ARN", "arn")])).unwrap();
        assert_eq!((s.lease.as_secs(), s.remember.as_secs()), (120, 7 * 24 * 3600));
    }
}
