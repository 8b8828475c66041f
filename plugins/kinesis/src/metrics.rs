//! `tillgate_kinesis_*` metrics (the agent's registry adds the `tillgate_` prefix), all
//! labelled by stream. Backlog and the age of the oldest unsent record are the agent's
//! per-sink gauges (`tillgate_sink_backlog_records{sink="kinesis-transactions"}`).

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Counters and gauges under `tillgate_kinesis_*`.
#[derive(Debug, Clone)]
pub struct KinesisMetrics {
    /// Journal records Kinesis accepted.
    pub user_records: IntCounterVec,
    /// Bytes of those journal records.
    pub user_bytes: IntCounterVec,
    /// Kinesis records accepted, by kind (`aggregated`, `raw`).
    pub kinesis_records: IntCounterVec,
    /// PUT payload units (25 KB) of accepted Kinesis records.
    pub put_units: IntCounterVec,
    /// Journal records per Kinesis record, over the agent's lifetime.
    pub aggregation_ratio: GaugeVec,
    /// PutRecords calls by outcome (`ok`, `partial`, `error`).
    pub requests: IntCounterVec,
    /// Time per PutRecords call, answered or not.
    pub request_seconds: HistogramVec,
    /// Kinesis records sent again, by error code.
    pub retries: IntCounterVec,
    /// Throttling seen (per record or whole call).
    pub throttles: IntCounterVec,
    /// Journal records sent again after an ambiguous outcome (time-out, 5xx, dropped
    /// connection): the only way a duplicate can reach the stream.
    pub ambiguous_resends: IntCounterVec,
    /// Seconds spent waiting for the per-shard budget.
    pub budget_wait: GaugeVec,
    /// Open shards in the current shard map.
    pub shards: IntGaugeVec,
    /// Shard map refreshes, by reason (`start`, `timer`, `resharded`).
    pub shard_map_refreshes: IntCounterVec,
    /// Credential refreshes forced by an expired-token answer.
    pub credential_invalidations: IntCounter,
}

impl KinesisMetrics {
    /// Creates and registers the metrics.
    ///
    /// Long by nature: one definition per metric, name and help side by side; split, the
    /// names would scatter.
    pub fn register(registry: &Registry) -> prometheus::Result<KinesisMetrics> {
        let counter = |name: &str, help: &str, labels: &[&str]| IntCounterVec::new(Opts::new(name, help), labels);
        let m = KinesisMetrics {
            user_records: counter(
                "kinesis_user_records_total",
                "Journal records Kinesis accepted",
                &["stream"],
            )?,
            user_bytes: counter(
                "kinesis_user_bytes_total",
                "Bytes of journal records Kinesis accepted",
                &["stream"],
            )?,
            kinesis_records: counter(
                "kinesis_records_total",
                "Kinesis records accepted, by kind (aggregated, raw)",
                &["stream", "kind"],
            )?,
            put_units: counter(
                "kinesis_put_payload_units_total",
                "PUT payload units (25 KB) of accepted Kinesis records",
                &["stream"],
            )?,
            aggregation_ratio: GaugeVec::new(
                Opts::new(
                    "kinesis_aggregation_ratio",
                    "Journal records per Kinesis record since start",
                ),
                &["stream"],
            )?,
            requests: counter(
                "kinesis_requests_total",
                "PutRecords calls by outcome (ok, partial, error)",
                &["stream", "outcome"],
            )?,
            request_seconds: HistogramVec::new(
                HistogramOpts::new("kinesis_request_seconds", "Time per PutRecords call").buckets(vec![
                    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
                ]),
                &["stream"],
            )?,
            retries: counter(
                "kinesis_retries_total",
                "Kinesis records sent again, by error code",
                &["stream", "code"],
            )?,
            throttles: counter(
                "kinesis_throttles_total",
                "Throttling answers (per record or whole call)",
                &["stream"],
            )?,
            ambiguous_resends: counter(
                "kinesis_ambiguous_resends_total",
                "Journal records sent again after an ambiguous outcome (time-out, 5xx, dropped connection)",
                &["stream"],
            )?,
            budget_wait: GaugeVec::new(
                Opts::new(
                    "kinesis_budget_wait_seconds_total",
                    "Seconds spent waiting for the per-shard write budget",
                ),
                &["stream"],
            )?,
            shards: IntGaugeVec::new(Opts::new("kinesis_shards", "Open shards in the shard map"), &["stream"])?,
            shard_map_refreshes: counter(
                "kinesis_shard_map_refreshes_total",
                "Shard map refreshes, by reason (start, timer, resharded)",
                &["stream", "reason"],
            )?,
            credential_invalidations: IntCounter::new(
                "kinesis_credential_invalidations_total",
                "Credentials dropped after an expired-token answer",
            )?,
        };
        registry.register(Box::new(m.user_records.clone()))?;
        registry.register(Box::new(m.user_bytes.clone()))?;
        registry.register(Box::new(m.kinesis_records.clone()))?;
        registry.register(Box::new(m.put_units.clone()))?;
        registry.register(Box::new(m.aggregation_ratio.clone()))?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.request_seconds.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.throttles.clone()))?;
        registry.register(Box::new(m.ambiguous_resends.clone()))?;
        registry.register(Box::new(m.budget_wait.clone()))?;
        registry.register(Box::new(m.shards.clone()))?;
        registry.register(Box::new(m.shard_map_refreshes.clone()))?;
        registry.register(Box::new(m.credential_invalidations.clone()))?;
        Ok(m)
    }
}
