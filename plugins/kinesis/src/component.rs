//! `[kinesis]` as a component: one sink per configured stream, `kinesis-<channel>`.

use crate::{KinesisConfig, KinesisSink};
use tillgate_sdk::{CheckContext, Component, ComponentConfig, ConfigError, Sink, SinkSet, StartContext};

impl ComponentConfig for KinesisConfig {
    fn section(&self) -> &'static str {
        "kinesis"
    }

    fn enabled(&self) -> bool {
        self.enabled
    }

    /// Streams, limits and the partition key; the IoT certificate files are read.
    fn check(&self, _cx: &CheckContext) -> Result<(), ConfigError> {
        crate::check(self)
    }

    fn sink_names(&self) -> Vec<String> {
        self.streams
            .pairs()
            .into_iter()
            .map(|(channel, _)| KinesisSink::name_for(channel))
            .collect()
    }

    /// The AWS client is made on the first shipment: an offline gateway starts.
    fn start(&self, cx: StartContext<'_>) -> Result<Box<dyn Component>, String> {
        let sinks = crate::sinks(self, cx.registry).map_err(|e| format!("kinesis: {e}"))?;
        Ok(Box::new(SinkSet(
            sinks.into_iter().map(|s| Box::new(s) as Box<dyn Sink>).collect(),
        )))
    }
}
