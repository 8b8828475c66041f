//! `[sinks.archive]` as a component: one sink, `archive`.

use crate::{ArchiveConfig, ArchiveSink};
use tillgate_sdk::{ByteSize, CheckContext, Component, ComponentConfig, ConfigError, SinkSet, StartContext};

/// The sink's name: its journal cursor, metrics label and status line.
pub const NAME: &str = "archive";

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::at("sinks.archive", key, message)
}

impl ComponentConfig for ArchiveConfig {
    fn section(&self) -> &'static str {
        "sinks.archive"
    }

    fn enabled(&self) -> bool {
        self.enabled
    }

    /// Channels, and a total budget that holds the open files.
    fn check(&self, _cx: &CheckContext) -> Result<(), ConfigError> {
        if self.channels.is_empty() {
            return Err(err("channels", "is empty; allowed: transactions, decisions, alerts"));
        }
        if self.max_file_bytes.get() < 1024 {
            return Err(err("max_file_bytes", "allowed: at least 1KiB"));
        }
        // The files being written (one per channel) are never deleted: the budget must
        // hold them and one complete file besides.
        let least = self.max_file_bytes.get().saturating_mul(self.channels.len() as u64 + 1);
        if self.max_total_bytes.get() < least {
            return Err(err(
                "max_total_bytes",
                format!(
                    "{} cannot hold the {} files being written and one complete file; allowed: at least {} \
                     ((channels + 1) × max_file_bytes)",
                    self.max_total_bytes,
                    self.channels.len(),
                    ByteSize(least)
                ),
            ));
        }
        Ok(())
    }

    fn sink_names(&self) -> Vec<String> {
        vec![NAME.to_string()]
    }

    fn start(&self, cx: StartContext<'_>) -> Result<Box<dyn Component>, String> {
        let mut config = self.clone();
        config.dir = cx.data_path(&self.dir);
        let sink = ArchiveSink::new(NAME, config)
            .with_metrics(cx.registry)
            .map_err(|e| format!("archive metrics: {e}"))?;
        Ok(Box::new(SinkSet(vec![Box::new(sink)])))
    }
}
