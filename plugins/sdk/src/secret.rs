//! Secrets come from a file or an environment variable, never from the config itself.

use serde::Deserialize;
use std::path::PathBuf;

/// `{ file = "/etc/tillgate/token" }` or `{ env = "TILLGATE_TOKEN" }`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub file: Option<PathBuf>,
    pub env: Option<String>,
}

impl Secret {
    /// Reads the secret; the error says where it looked.
    pub fn read(&self) -> Result<String, String> {
        let value = match (&self.file, &self.env) {
            (Some(path), None) => {
                std::fs::read_to_string(path).map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?
            }
            (None, Some(var)) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?,
            _ => return Err("give exactly one of `file` or `env`".into()),
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(value)
    }
}
