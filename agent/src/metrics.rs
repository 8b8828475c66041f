//! Prometheus metrics: one registry per agent, rendered at `GET /metrics`.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the agent exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Transactions by source and outcome (accepted, duplicate, rejected, refused).
    pub transactions: IntCounterVec,
    /// Decisions by action.
    pub decisions: IntCounterVec,
    /// Rule hits by rule and mode.
    pub rule_hits: IntCounterVec,
    /// From request read to durable answer.
    pub decision_latency: Histogram,
    /// Rows per group commit.
    pub commit_batch_rows: Histogram,
    /// Time spent in COMMIT (writing the group's WAL frames; the fsync is
    /// `journal_sync_seconds`).
    pub commit_seconds: Histogram,
    /// Time one fdatasync of the WAL took (answers wait for it, the writer does not).
    pub journal_sync_seconds: Histogram,
    /// fdatasyncs of the WAL that failed (their groups were answered `not_durable`).
    pub journal_sync_failures: IntCounter,
    /// Time the writer spends taking a rule-state snapshot unit (encoding it; decisions
    /// wait for it).
    pub rule_snapshot_seconds: Histogram,
    /// Time the snapshot thread spends storing a unit (decisions do not wait for it).
    pub rule_snapshot_store_seconds: Histogram,
    /// Bytes of the rule-state snapshot stored in the snapshot file.
    pub rule_snapshot_bytes: IntGauge,
    /// Snapshots that could not be taken or stored.
    pub rule_snapshot_failures: IntCounter,
    /// Bytes counted against `journal.max_bytes` (pages in use and the WAL).
    pub journal_bytes: IntGauge,
    /// The WAL file's size.
    pub journal_wal_bytes: IntGauge,
    /// Restarts of a WAL that outgrew its limit under steady writes, by outcome
    /// (`done`, `busy`, `failed`).
    pub journal_wal_restarts: IntCounterVec,
    /// Time the writer spends restarting the WAL (decisions wait for it).
    pub journal_wal_restart_seconds: Histogram,
    /// Shipped rows pruned before `retention` because the journal was full.
    pub journal_pressure_pruned: IntCounter,
    /// Bytes of stored dead letters (their own budget).
    pub dead_letter_bytes: IntGauge,
    /// Dead letters deleted because their budget was used up.
    pub dead_letters_evicted: IntCounter,
    /// HTTP connections by how they ended or were refused (`closed`, `idle_timeout`,
    /// `header_timeout`, `body_timeout`, `shutdown`).
    pub http_connections: IntCounterVec,
    /// Open HTTP connections.
    pub http_open_connections: IntGauge,
    /// Events a rule's window let go early because a key reached `max_events_per_key`.
    pub rule_events_capped: IntCounterVec,
    /// Report windows closed early because the report reached `max_keys`.
    pub report_windows_evicted: IntCounterVec,
    /// Configured size budget.
    pub journal_max_bytes: IntGauge,
    /// Highest sequence number committed.
    pub journal_last_seq: IntGauge,
    /// Rows deleted unsent because the journal was full (`on_full = "evict_oldest"`).
    pub journal_evicted: IntCounter,
    /// Rows pruned after every sink passed them.
    pub journal_pruned: IntCounter,
    /// Inputs refused because the journal was full.
    pub journal_full_refusals: IntCounter,
    /// Dead letters by source and reason class.
    pub dead_letters: IntCounterVec,
    /// Dead letters that could not be stored (journal full or failing), by source.
    pub dead_letters_lost: IntCounterVec,
    /// Records acknowledged by each sink.
    pub sink_records: IntCounterVec,
    /// Failed shipments by sink.
    pub sink_errors: IntCounterVec,
    /// Records after the sink's cursor.
    pub sink_backlog: IntGaugeVec,
    /// Age of the oldest unsent record, seconds.
    pub sink_oldest_age: IntGaugeVec,
    /// Time per successful shipment.
    pub sink_ship_seconds: HistogramVec,
    /// Rule filters or conditions that failed to evaluate, by rule.
    pub rule_errors: IntCounterVec,
    /// Keys evicted from a rule's state by `max_keys`, by rule.
    pub rule_keys_evicted: IntCounterVec,
    /// Keys held by a rule.
    pub rule_live_keys: IntGaugeVec,
    /// Events older than a report's watermark, left out of its windows.
    pub report_late_events: IntCounterVec,
    /// Rule reloads that failed (the previous rules stay active).
    pub rules_reload_errors: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The registry plugins register their metrics in (names get the `tillgate_` prefix).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A fresh registry with every metric registered.
    ///
    /// Long by nature: one definition per metric, name and help side by side; split, the
    /// names would scatter.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("tillgate".into()), None).expect("valid prefix");
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let m = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let counter = |name: &str, help: &str| {
            let m = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let gauge = |name: &str, help: &str| {
            let m = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let m = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let latency_buckets = exponential_buckets(0.000_05, 2.0, 16).expect("valid buckets");
        let sink_ship_seconds = HistogramVec::new(
            HistogramOpts::new("sink_ship_seconds", "Time per successful shipment").buckets(latency_buckets.clone()),
            &["sink"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(sink_ship_seconds.clone()))
            .expect("unique metric");
        Metrics {
            transactions: counter_vec(
                "transactions_total",
                "Transactions by source and outcome",
                &["source", "outcome"],
            ),
            decisions: counter_vec("decisions_total", "Decisions by action", &["decision"]),
            rule_hits: counter_vec("rule_hits_total", "Rule hits by rule and mode", &["rule", "mode"]),
            decision_latency: histogram(
                "decision_latency_seconds",
                "From request read to durable answer",
                latency_buckets.clone(),
            ),
            commit_batch_rows: histogram(
                "journal_commit_batch_rows",
                "Commands per group commit",
                exponential_buckets(1.0, 2.0, 14).expect("valid buckets"),
            ),
            commit_seconds: histogram(
                "journal_commit_seconds",
                "Time spent in COMMIT (WAL frames written; the fsync is journal_sync_seconds)",
                latency_buckets.clone(),
            ),
            journal_sync_seconds: histogram(
                "journal_sync_seconds",
                "One fdatasync of the journal's WAL: answers wait for it, the writer does not",
                latency_buckets,
            ),
            journal_sync_failures: counter(
                "journal_sync_failures_total",
                "fdatasyncs of the journal's WAL that failed (their groups were answered not_durable)",
            ),
            rule_snapshot_seconds: histogram(
                "rule_snapshot_seconds",
                "Time the journal writer spends encoding a rule-state snapshot unit (decisions wait for it)",
                exponential_buckets(0.001, 2.0, 16).expect("valid buckets"),
            ),
            rule_snapshot_store_seconds: histogram(
                "rule_snapshot_store_seconds",
                "Time the snapshot thread spends storing a rule-state snapshot unit (decisions do not wait for it)",
                exponential_buckets(0.001, 2.0, 16).expect("valid buckets"),
            ),
            rule_snapshot_bytes: gauge(
                "rule_snapshot_bytes",
                "Bytes of the rule-state snapshot stored beside the journal (journal.db-rule-state)",
            ),
            rule_snapshot_failures: counter(
                "rule_snapshot_failures_total",
                "Rule-state snapshots that could not be taken or stored",
            ),
            journal_bytes: gauge(
                "journal_bytes",
                "Journal bytes counted against journal.max_bytes (pages in use and the WAL)",
            ),
            journal_wal_bytes: gauge("journal_wal_bytes", "Journal WAL file size"),
            journal_wal_restarts: counter_vec(
                "journal_wal_restarts_total",
                "Restarts of a WAL that outgrew journal_size_limit, by outcome",
                &["outcome"],
            ),
            journal_wal_restart_seconds: histogram(
                "journal_wal_restart_seconds",
                "Time the journal writer spends restarting a WAL that outgrew its limit",
                exponential_buckets(0.0005, 2.0, 14).expect("valid buckets"),
            ),
            journal_pressure_pruned: counter(
                "journal_pressure_pruned_records_total",
                "Shipped rows pruned before retention because the journal was full",
            ),
            dead_letter_bytes: gauge("dead_letter_bytes", "Bytes of stored dead letters"),
            dead_letters_evicted: counter(
                "dead_letters_evicted_total",
                "Dead letters deleted because journal.dead_letter_max_bytes was used up",
            ),
            http_connections: counter_vec(
                "http_connections_total",
                "HTTP connections by how they ended",
                &["outcome"],
            ),
            http_open_connections: gauge("http_open_connections", "Open HTTP connections"),
            rule_events_capped: counter_vec(
                "rule_events_capped_total",
                "Window events dropped early because a key reached max_events_per_key",
                &["rule"],
            ),
            report_windows_evicted: counter_vec(
                "report_windows_evicted_total",
                "Report windows closed early because the report reached max_keys",
                &["report"],
            ),
            journal_max_bytes: gauge("journal_max_bytes", "Journal size budget"),
            journal_last_seq: gauge(
                "journal_last_seq",
                "Highest sequence number committed and confirmed by the disk",
            ),
            journal_evicted: counter(
                "journal_evicted_records_total",
                "Unsent rows deleted because the journal was full",
            ),
            journal_pruned: counter(
                "journal_pruned_records_total",
                "Rows deleted after every sink passed them",
            ),
            journal_full_refusals: counter(
                "journal_full_refusals_total",
                "Inputs refused because the journal was full",
            ),
            dead_letters: counter_vec(
                "dead_letters_total",
                "Rejected inputs by source and reason",
                &["source", "reason"],
            ),
            dead_letters_lost: counter_vec(
                "dead_letters_lost_total",
                "Rejected inputs whose dead letter could not be stored",
                &["source"],
            ),
            sink_records: counter_vec("sink_records_total", "Records acknowledged by the sink", &["sink"]),
            sink_errors: counter_vec("sink_errors_total", "Failed shipments", &["sink"]),
            sink_backlog: gauge_vec("sink_backlog_records", "Records after the sink's cursor", &["sink"]),
            sink_oldest_age: gauge_vec(
                "sink_oldest_unsent_age_seconds",
                "Age of the oldest record not yet acknowledged",
                &["sink"],
            ),
            sink_ship_seconds,
            rule_errors: counter_vec(
                "rule_errors_total",
                "Rule expressions that failed to evaluate",
                &["rule"],
            ),
            rule_keys_evicted: counter_vec("rule_keys_evicted_total", "Keys evicted by max_keys", &["rule"]),
            rule_live_keys: gauge_vec("rule_live_keys", "Keys held in a rule's windows", &["rule"]),
            report_late_events: counter_vec(
                "report_late_events_total",
                "Events older than the report watermark",
                &["report"],
            ),
            rules_reload_errors: counter("rules_reload_errors_total", "Failed rule reloads (old rules kept)"),
            registry,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}
