//! `[kinesis.iot]` / `[video.iot]`: where the AWS IoT Core credentials provider is and
//! which certificate the thing presents.

use serde::Deserialize;
use std::path::PathBuf;
use tillgate_sdk::{ConfigError, HumanDuration};

/// `[kinesis.iot]`, `[video.iot]`: temporary credentials from the AWS IoT Core credentials provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IotConfig {
    /// The account's credentials endpoint (`aws iot describe-endpoint --endpoint-type
    /// iot:CredentialProvider`), host name or `https://host[:port]`.
    pub endpoint: String,
    /// The IoT role alias that names the IAM role.
    pub role_alias: String,
    /// The thing name sent as `x-amzn-iot-thingname`.
    pub thing_name: String,
    /// The thing's certificate and private key (PEM).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA bundle for the endpoint; absent means the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Fetch new credentials this long before the old ones expire.
    #[serde(default = "default_refresh_before")]
    pub refresh_before: HumanDuration,
}

impl IotConfig {
    /// Checks the section below `section` (`kinesis`, `video`): the files are read now.
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let err = |key: &str, message: String| ConfigError::at(section, format!("iot.{key}"), message);
        for (key, value) in [
            ("endpoint", &self.endpoint),
            ("role_alias", &self.role_alias),
            ("thing_name", &self.thing_name),
        ] {
            if value.trim().is_empty() {
                return Err(err(key, "is empty".into()));
            }
        }
        if self.endpoint.starts_with("http://") {
            return Err(err(
                "endpoint",
                "must use https: the credentials provider authenticates the thing by its certificate".into(),
            ));
        }
        let files = [("cert_file", Some(&self.cert_file)), ("key_file", Some(&self.key_file))];
        for (key, path) in files.into_iter().chain([("ca_file", self.ca_file.as_ref())]) {
            if let Some(path) = path {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))?;
                if !text.contains("-----BEGIN ") {
                    return Err(err(key, format!("{} is not a PEM file", path.display())));
                }
            }
        }
        Ok(())
    }
}

fn default_refresh_before() -> HumanDuration {
    HumanDuration::secs(300)
}
