//! A plugin's config mistake: the dotted key and what is allowed. The agent adds the
//! file, line and column from the TOML parser's spans.

/// A config problem with its dotted key (`mqtt.decision_topic`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted key from the root of the config, e.g. `mqtt.decision_topic`.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl ConfigError {
    /// A problem with `key` below `section` (`ConfigError::at("mqtt", "qos", …)`).
    pub fn at(section: &str, key: impl AsRef<str>, message: impl Into<String>) -> ConfigError {
        let key = key.as_ref();
        ConfigError {
            key: if key.is_empty() {
                section.to_string()
            } else {
                format!("{section}.{key}")
            },
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_dotted_below_its_section() {
        let e = ConfigError::at("video", "cameras[1].url", "has credentials");
        assert_eq!(e.key, "video.cameras[1].url");
        assert_eq!(e.to_string(), "video.cameras[1].url: has credentials");
        assert_eq!(ConfigError::at("video", "", "x").key, "video");
    }
}
