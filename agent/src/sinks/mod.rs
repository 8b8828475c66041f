//! Sinks: building them from config, and the runner that feeds each one from its cursor.

mod runner;

pub use runner::{DrainSignal, SinkRunner, SinkStatus};

use crate::config::Config;
use tillgate_archive::ArchiveSink;
use tillgate_sdk::Sink;

/// The sinks the config asks for. The archive is the embedded default.
pub fn build(config: &Config, registry: &prometheus::Registry) -> Result<Vec<Box<dyn Sink>>, String> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(archive) = config.archive() {
        let sink = ArchiveSink::new("archive", archive)
            .with_metrics(registry)
            .map_err(|e| format!("archive metrics: {e}"))?;
        sinks.push(Box::new(sink));
    }
    if let Some(kinesis) = config.kinesis() {
        for sink in tillgate_kinesis::sinks(kinesis, registry).map_err(|e| format!("kinesis: {e}"))? {
            sinks.push(Box::new(sink));
        }
    }
    Ok(sinks)
}
