//! Kinesis Data Streams for tillgate: journal channels shipped to streams with
//! KPL-compatible aggregation, per-shard rate limits, retries of only the records that
//! failed, and strict order per partition key.
//!
//! Layout: [`config`] (`[kinesis]`), [`sink`] (one sink per stream: a shipment, routed
//! and acknowledged), [`shard_task`] (one shard's share: pack, budget, put, retry),
//! [`plan`] (packing records into Kinesis records), [`aggregate`] (the KPL format,
//! `tillgate-kpl`),
//! [`partition`] (keys and hash keys), [`shards`] (the shard map), [`client`] (the SDK
//! calls and error classes), [`metrics`]. Credentials, the per-shard budget and the
//! HTTPS stack come from `tillgate-aws`, shared with the camera uplink.

/// The KPL format, in its own crate (`tillgate-kpl`) so the cloud's alert handler reads
/// with the code that writes.
pub use tillgate_kpl as aggregate;
pub mod client;
mod component;
pub mod config;
pub mod metrics;
pub mod partition;
pub mod plan;
pub mod shard_task;
pub mod shards;
pub mod sink;

pub use config::{ConfigError, KinesisConfig};
pub use sink::KinesisSink;

use metrics::KinesisMetrics;
use sink::Shared;

/// Checks `[kinesis]` (including that the IoT certificate files can be read).
pub fn check(config: &KinesisConfig) -> Result<(), ConfigError> {
    config.validate().map(|_| ())
}

/// Why the Kinesis sinks could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("Kinesis metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// One sink per configured stream. The AWS client is made on the first shipment, so
/// an offline gateway starts (and journals) without reaching AWS.
pub fn sinks(config: &KinesisConfig, registry: &prometheus::Registry) -> Result<Vec<KinesisSink>, StartError> {
    let template = config.validate()?;
    let metrics = KinesisMetrics::register(registry)?;
    let shared = Shared::new(config.clone(), template, metrics);
    Ok(config
        .streams
        .pairs()
        .into_iter()
        .map(|(channel, stream)| KinesisSink::new(shared.clone(), channel, stream))
        .collect())
}
