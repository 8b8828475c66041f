//! Sinks: building them from config, and the runner that feeds each one from its cursor.

mod runner;

pub use runner::{DrainSignal, SinkRunner, SinkStatus};

use crate::config::Config;
use tillgate_archive::ArchiveSink;
use tillgate_sdk::Sink;

/// The sinks the config asks for. The archive is the embedded default.
pub fn build(config: &Config) -> Vec<Box<dyn Sink>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(archive) = config.archive() {
        sinks.push(Box::new(ArchiveSink::new("archive", archive)));
    }
    sinks
}
