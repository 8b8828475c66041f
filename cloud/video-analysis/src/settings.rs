//! The function's environment, as the stack sets it (cloud/template.yaml).

use std::time::Duration;

/// What the function needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `SECURITY_TOPIC_ARN`: the security team's topic.
    pub topic_arn: String,
    /// `VIDEO_WAIT_MINUTES` (default 60, at most [`MAX_WAIT_MINUTES`]): how long after an
    /// alert its video may still arrive (a gateway that was offline backfills); then the
    /// findings go out with what there is.
    pub wait_for_video: Duration,
    /// `FRAMES_PER_CAMERA` (default 4, at most 10): frames spread over each camera's range.
    pub frames_per_camera: usize,
}

/// The longest wait for video: the stack's queue gives a message up after 10 receptions
/// 12 minutes apart (its visibility timeout, from the queue's delay on), so after a wait
/// of 70 minutes at least three receptions remain to publish the findings (one failed
/// call or throttled invocation does not turn them into a dead letter).
pub const MAX_WAIT_MINUTES: u64 = 70;

/// Each SDK call's bound. GetImages decodes video on the service side, so calls get more
/// time than the alert handler's; handler::CALL_MARGIN_MS keeps every call inside the
/// invocation's deadline.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The SDK's configuration: behaviour pinned to a dated version, every call bounded.
pub async fn sdk_config() -> aws_config::SdkConfig {
    tillgate_alert_handler::settings::bounded_sdk_config(OPERATION_TIMEOUT, ATTEMPT_TIMEOUT, CONNECT_TIMEOUT).await
}

impl Settings {
    /// Reads the environment; the error names the variable and what it must hold.
    pub fn from_env() -> Result<Settings, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let number = |name: &str, default: u64, max: u64| -> Result<u64, String> {
            match var(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| format!("{name}={v:?}: expected a whole number from 1 to {max}")),
            }
        };
        Ok(Settings {
            topic_arn: var("SECURITY_TOPIC_ARN")
                .filter(|v| !v.trim().is_empty())
                .ok_or("SECURITY_TOPIC_ARN is not set")?,
            wait_for_video: Duration::from_secs(60 * number("VIDEO_WAIT_MINUTES", 60, MAX_WAIT_MINUTES)?),
            frames_per_camera: number("FRAMES_PER_CAMERA", 4, 10)? as usize,
        })
    }

    /// KVS, Rekognition and the topic.
    pub fn connect(&self, sdk: &aws_config::SdkConfig) -> Clients {
        Clients {
            archive: crate::archive::KvsArchive {
                control: aws_sdk_kinesisvideo::Client::new(sdk),
                sdk: sdk.clone(),
            },
            labeller: crate::labels::Rekognition {
                client: aws_sdk_rekognition::Client::new(sdk),
            },
            topic: tillgate_alert_handler::topic::SnsTopic {
                client: aws_sdk_sns::Client::new(sdk),
                arn: self.topic_arn.clone(),
            },
            settings: self.clone(),
        }
    }
}

/// The function's AWS clients.
#[derive(Debug, Clone)]
pub struct Clients {
    pub archive: crate::archive::KvsArchive,
    pub labeller: crate::labels::Rekognition,
    pub topic: tillgate_alert_handler::topic::SnsTopic,
    pub settings: Settings,
}

impl Clients {
    /// The handler's parts over these clients and the system clock.
    pub fn parts(&self) -> crate::handler::Parts<'_> {
        crate::handler::Parts {
            archive: &self.archive,
            labeller: &self.labeller,
            topic: &self.topic,
            clock: &tillgate_alert_handler::settings::now_ms,
            wait_for_video: self.settings.wait_for_video,
            frames_per_camera: self.settings.frames_per_camera,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Settings, String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_and_errors_name_the_variable() {
        let s = from(&[("SECURITY_TOPIC_ARN", "arn:t")]).unwrap();
        assert_eq!((s.wait_for_video, s.frames_per_camera), (Duration::from_secs(3600), 4));
        assert_eq!(from(&[]).unwrap_err(), "SECURITY_TOPIC_ARN is not set");
        let e = from(&[("SECURITY_TOPIC_ARN", "arn:t"), ("FRAMES_PER_CAMERA", "11")]).unwrap_err();
        assert!(e.contains("FRAMES_PER_CAMERA=\"11\"") && e.contains("1 to 10"), "{e}");
    }

    #[test]
    fn every_call_fits_before_the_deadline_and_a_few_fit_in_the_function_timeout() {
        // Each call is checked against the margin, so a call that starts ends before the
        // deadline; the stack's timeout (120 s) leaves room for several.
        assert!(crate::handler::CALL_MARGIN_MS as u128 > OPERATION_TIMEOUT.as_millis());
        assert!((crate::handler::CALL_MARGIN_MS as u128) < 120_000 / 4);
    }
}
