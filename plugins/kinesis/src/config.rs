//! `[kinesis]` in `tillgate.toml`: streams, region, batching, aggregation, shard limits,
//! order and credentials.

use crate::partition::PartitionKeyTemplate;
use serde::Deserialize;
pub use tillgate_aws::IotConfig;
use tillgate_sdk::{ByteSize, Channel, HumanDuration};

/// Kinesis Data Streams' own limits (DESIGN.md, "Kinesis Data Streams facts").
pub mod limits {
    /// Records in one PutRecords call.
    pub const REQUEST_RECORDS: usize = 500;
    /// Bytes in one PutRecords call (data + partition keys), the safe default.
    pub const REQUEST_BYTES: u64 = 5 * 1024 * 1024;
    /// Bytes in one record (data + partition key) for a stream with default settings.
    pub const RECORD_BYTES: u64 = 1024 * 1024;
    /// The largest maximum record size a stream can be configured with.
    pub const RECORD_BYTES_CEILING: u64 = 10 * 1024 * 1024;
    /// Write capacity of one shard.
    pub const SHARD_RECORDS_PER_SECOND: u32 = 1_000;
    pub const SHARD_BYTES_PER_SECOND: u64 = 1024 * 1024;
    /// Partition keys are 1 to 256 Unicode characters.
    pub const PARTITION_KEY_CHARS: usize = 256;
}

/// `[kinesis]`: ship journal channels to Kinesis Data Streams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisConfig {
    /// Ship at all; an absent `[kinesis]` section means no.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// AWS region, e.g. `eu-west-1`; when absent, the SDK's chain (`AWS_REGION`, profile).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint override (a VPC endpoint, a test endpoint); `AWS_ENDPOINT_URL` also works.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Which channel goes to which stream; at least one.
    pub streams: StreamsConfig,
    /// The partition key: `{store_id}`, `{terminal_id}`, `{txn_id}`, `{channel}` and
    /// literal text. Order is kept per partition key.
    #[serde(default = "default_partition_key")]
    pub partition_key: String,
    /// `per_key`: strict order per partition key (one Kinesis record per shard per
    /// request, a failed record holds back its shard). `relaxed`: up to
    /// `max_request_records` per shard per request; a retried record may land after
    /// later ones.
    #[serde(default)]
    pub order: Order,
    /// KPL aggregation: many journal records in one Kinesis record, per shard.
    #[serde(default = "yes")]
    pub aggregation: bool,
    /// Largest aggregated record; closed at the largest multiple of 25,000 bytes below
    /// it so that no PUT payload unit is paid for a sliver.
    #[serde(default = "default_aggregate_max_bytes")]
    pub aggregate_max_bytes: ByteSize,
    /// Records per PutRecords call (≤ 500).
    #[serde(default = "default_request_records")]
    pub max_request_records: usize,
    /// Bytes per PutRecords call (≤ 5 MiB).
    #[serde(default = "default_request_bytes")]
    pub max_request_bytes: ByteSize,
    /// The stream's maximum record size (1 MiB unless the stream was configured larger).
    #[serde(default = "default_record_bytes")]
    pub max_record_bytes: ByteSize,
    /// Journal records per shipment (read from the journal at once); a shipment is
    /// acknowledged when Kinesis has every record in it. Each shard's last aggregate of a
    /// shipment is partly filled: fewer, larger shipments waste fewer PUT payload units
    /// while a backlog drains (20,000 × 400 B ≈ 8 MB held per stream).
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
    /// How long to wait for more records before shipping a small batch.
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
    /// This gateway's write budget per shard (1,000 records/s and 1 MiB/s per shard in
    /// Kinesis; divide when several gateways write to one stream).
    #[serde(default = "default_shard_records")]
    pub shard_records_per_second: u32,
    #[serde(default = "default_shard_bytes")]
    pub shard_bytes_per_second: ByteSize,
    /// Fraction of the shard budget to use (0 < headroom ≤ 1).
    #[serde(default = "default_headroom")]
    pub shard_headroom: f64,
    /// Give up one PutRecords call after this long (a time-out is ambiguous: the
    /// records are sent again and counted).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// Retries of failed records inside one shipment: first wait, doubled with jitter.
    #[serde(default = "default_retry_initial")]
    pub retry_initial_backoff: HumanDuration,
    #[serde(default = "default_retry_max")]
    pub retry_max_backoff: HumanDuration,
    /// After this many failed attempts of one record in a shipment, the shipment
    /// reports an error (the sink runner backs off and tries again; nothing is dropped).
    #[serde(default = "default_attempts")]
    pub max_attempts_per_shipment: u32,
    /// Refresh the shard map at least this often (also on a resharding seen in answers).
    #[serde(default = "default_shard_map_refresh")]
    pub shard_map_refresh: HumanDuration,
    /// AWS IoT Core credentials provider (X.509); absent means the SDK's default chain
    /// (environment, profile, container credentials as Greengrass hands them out,
    /// instance metadata).
    #[serde(default)]
    pub iot: Option<IotConfig>,
}

/// `[kinesis.streams]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    #[serde(default)]
    pub transactions: Option<String>,
    #[serde(default)]
    pub decisions: Option<String>,
    #[serde(default)]
    pub alerts: Option<String>,
}

impl StreamsConfig {
    /// (channel, stream name) for each configured stream.
    pub fn pairs(&self) -> Vec<(Channel, &str)> {
        [
            (Channel::Transactions, &self.transactions),
            (Channel::Decisions, &self.decisions),
            (Channel::Alerts, &self.alerts),
        ]
        .into_iter()
        .filter_map(|(c, s)| s.as_deref().map(|s| (c, s)))
        .collect()
    }
}

/// Order guarantee, see [`KinesisConfig::order`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    PerKey,
    Relaxed,
}

pub use tillgate_sdk::ConfigError;

/// A config problem with its key below `kinesis`.
pub(crate) fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::at("kinesis", key, message)
}

impl KinesisConfig {
    /// Checks what serde cannot; returns the parsed partition-key template.
    pub fn validate(&self) -> Result<PartitionKeyTemplate, ConfigError> {
        self.validate_streams()?;
        let template = PartitionKeyTemplate::parse(&self.partition_key).map_err(|m| err("partition_key", m))?;
        self.validate_endpoint()?;
        self.validate_limits()?;
        if let Some(iot) = &self.iot {
            iot.validate("kinesis")?;
        }
        Ok(template)
    }

    /// One stream at least, each with a name Kinesis allows.
    fn validate_streams(&self) -> Result<(), ConfigError> {
        let streams = self.streams.pairs();
        if streams.is_empty() {
            return Err(err(
                "streams",
                "names no stream; give at least one of transactions, decisions, alerts",
            ));
        }
        for (channel, name) in &streams {
            let ok = !name.is_empty()
                && name.len() <= 128
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
            if !ok {
                return Err(err(
                    &format!("streams.{channel}"),
                    format!("{name:?} is not a stream name; allowed: 1 to 128 of a-z A-Z 0-9 _ . -"),
                ));
            }
        }
        Ok(())
    }

    /// The endpoint (a URL) and region (a region name), when given.
    fn validate_endpoint(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(err(
                    "endpoint",
                    format!("{endpoint:?} is not a URL; write http://host:port or https://host"),
                ));
            }
        }
        if let Some(region) = &self.region {
            if region.is_empty()
                || !region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(err(
                    "region",
                    format!("{region:?} is not a region name such as \"eu-west-1\""),
                ));
            }
        }
        Ok(())
    }

    /// Batches, requests, records, shard budgets and retries within Kinesis's limits.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.batch_records) {
            return Err(err("batch_records", "allowed: 1 to 100000"));
        }
        if !(1..=limits::REQUEST_RECORDS).contains(&self.max_request_records) {
            return Err(err("max_request_records", "allowed: 1 to 500 (the PutRecords limit)"));
        }
        if self.max_request_bytes.get() < 64 * 1024 || self.max_request_bytes.get() > limits::REQUEST_BYTES {
            return Err(err(
                "max_request_bytes",
                "allowed: 64KiB to 5MiB (the PutRecords limit)",
            ));
        }
        // A journal body is at most 64 KiB plus what the agent stamps on it.
        if self.max_record_bytes.get() < 128 * 1024 || self.max_record_bytes.get() > limits::RECORD_BYTES_CEILING {
            return Err(err(
                "max_record_bytes",
                "allowed: 128KiB to 10MiB (1MiB unless the stream's maximum record size was raised)",
            ));
        }
        if self.aggregate_max_bytes.get() < 1024 || self.aggregate_max_bytes.get() > self.max_record_bytes.get() {
            return Err(err(
                "aggregate_max_bytes",
                format!("allowed: 1KiB to max_record_bytes ({})", self.max_record_bytes),
            ));
        }
        if self.shard_records_per_second == 0 || self.shard_records_per_second > limits::SHARD_RECORDS_PER_SECOND {
            return Err(err(
                "shard_records_per_second",
                "allowed: 1 to 1000 (a shard's write limit)",
            ));
        }
        if self.shard_bytes_per_second.get() < 1024
            || self.shard_bytes_per_second.get() > limits::SHARD_BYTES_PER_SECOND
        {
            return Err(err(
                "shard_bytes_per_second",
                "allowed: 1KiB to 1MiB (a shard's write limit)",
            ));
        }
        if !(self.shard_headroom > 0.0 && self.shard_headroom <= 1.0) {
            return Err(err("shard_headroom", "allowed: more than 0 and at most 1, e.g. 0.9"));
        }
        if self.request_timeout.get().is_zero() {
            return Err(err("request_timeout", "must be more than 0"));
        }
        if self.retry_initial_backoff.get().is_zero() || self.retry_max_backoff < self.retry_initial_backoff {
            return Err(err(
                "retry_max_backoff",
                "must be at least retry_initial_backoff, which must be more than 0",
            ));
        }
        if self.max_attempts_per_shipment == 0 {
            return Err(err("max_attempts_per_shipment", "allowed: 1 or more"));
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
}
fn default_partition_key() -> String {
    "{store_id}/{terminal_id}".into()
}
fn default_aggregate_max_bytes() -> ByteSize {
    ByteSize::kib(50)
}
fn default_request_records() -> usize {
    limits::REQUEST_RECORDS
}
fn default_request_bytes() -> ByteSize {
    ByteSize(limits::REQUEST_BYTES)
}
fn default_record_bytes() -> ByteSize {
    ByteSize(limits::RECORD_BYTES)
}
fn default_batch_records() -> usize {
    20_000
}
fn default_linger() -> HumanDuration {
    HumanDuration::millis(100)
}
fn default_shard_records() -> u32 {
    limits::SHARD_RECORDS_PER_SECOND
}
fn default_shard_bytes() -> ByteSize {
    ByteSize(limits::SHARD_BYTES_PER_SECOND)
}
fn default_headroom() -> f64 {
    0.9
}
fn default_request_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}
fn default_retry_initial() -> HumanDuration {
    HumanDuration::millis(100)
}
fn default_retry_max() -> HumanDuration {
    HumanDuration::secs(5)
}
fn default_attempts() -> u32 {
    10
}
fn default_shard_map_refresh() -> HumanDuration {
    HumanDuration::secs(600)
}
