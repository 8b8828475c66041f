//! The Kinesis sink: one per configured stream. A shipment (the runner's batch from the
//! sink's cursor) is routed by the shard map and shipped by one task per shard; it is
//! acknowledged only when Kinesis has stored every record in it.
//!
//! When a shipment fails part-way, the records Kinesis already stored are remembered
//! (by journal seq) and skipped when the runner offers the same records again, so a
//! retry re-sends only what is missing: no duplicates from partial failures, and no
//! TTL — a record stays in the journal until Kinesis has it.

use crate::client::{CallError, Kinesis};
use crate::config::KinesisConfig;
use crate::metrics::KinesisMetrics;
use crate::partition::{hash_key, PartitionKeyTemplate};
use crate::plan::{aggregate_cap, Packing, Routed};
use crate::shard_task::{ship_shard, Ctx, ShardFailure};
use crate::shards::ShardMap;
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tillgate_aws::limiter::ShardBudget;
use tillgate_sdk::{Channel, Record, Sink, SinkError};
use tokio::sync::OnceCell;
use tokio::task::JoinSet;

/// What the sinks of one `[kinesis]` section share: config, metrics, the client.
#[derive(Debug)]
pub struct Shared {
    config: KinesisConfig,
    template: PartitionKeyTemplate,
    metrics: KinesisMetrics,
    kinesis: OnceCell<Kinesis>,
}

impl Shared {
    /// Validated config and registered metrics.
    pub fn new(config: KinesisConfig, template: PartitionKeyTemplate, metrics: KinesisMetrics) -> Arc<Self> {
        Arc::new(Shared {
            config,
            template,
            metrics,
            kinesis: OnceCell::new(),
        })
    }
}

/// Ships one journal channel to one stream.
#[derive(Debug)]
pub struct KinesisSink {
    name: String,
    channels: [Channel; 1],
    stream: String,
    shared: Arc<Shared>,
    ctx: Option<Arc<Ctx>>,
    map: Option<Arc<ShardMap>>,
    /// Why the map must be listed again before the next routing.
    refresh: Option<MapRefresh>,
    budgets: HashMap<String, ShardBudget>,
    /// Seqs stored by Kinesis in a shipment that has not completed yet.
    delivered: HashSet<u64>,
}

/// A stale map may be met once per resharding; more rounds in one shipment means the
/// stream keeps changing, and the runner's backoff takes over.
const RESHARD_ROUNDS: usize = 4;

impl KinesisSink {
    /// The sink's name for a channel: its journal cursor, metrics label and status line.
    pub fn name_for(channel: Channel) -> String {
        format!("kinesis-{channel}")
    }

    /// Some aggregates landed on another shard than the map said (the stream was
    /// resharded): the map is listed again, and the sub-records outside the hash range
    /// of the shard their aggregate landed on — which the KCL drops — are forgotten as
    /// delivered, so they go again, routed by the new map.
    async fn forget_misrouted(
        &mut self,
        ctx: &Arc<Ctx>,
        misrouted: Vec<(String, Vec<(u64, u128)>)>,
    ) -> Result<(), SinkError> {
        self.refresh = Some(MapRefresh::Resharded);
        let map = self.ensure_map(ctx).await?;
        let mut again = 0u64;
        for (landed, users) in misrouted {
            let range = map.get(&landed);
            for (seq, hash) in users {
                if range.is_none_or(|r| hash < r.start || hash > r.end) {
                    self.delivered.remove(&seq);
                    again += 1;
                }
            }
        }
        ctx.metrics
            .retries
            .with_label_values(&[&self.stream, "Resharded"])
            .inc_by(again);
        tracing::warn!(stream = %self.stream, shards = map.open_count(), records_sent_again = again,
            "the stream was resharded; shard map refreshed");
        Ok(())
    }

    /// The sink for `channel` → `stream`, named `kinesis-{channel}`.
    pub fn new(shared: Arc<Shared>, channel: Channel, stream: &str) -> Self {
        KinesisSink {
            name: Self::name_for(channel),
            channels: [channel],
            stream: stream.to_string(),
            shared,
            ctx: None,
            map: None,
            refresh: None,
            budgets: HashMap::new(),
            delivered: HashSet::new(),
        }
    }

    async fn ctx(&mut self) -> Result<Arc<Ctx>, SinkError> {
        if let Some(ctx) = &self.ctx {
            return Ok(ctx.clone());
        }
        let config = &self.shared.config;
        let kinesis = self
            .shared
            .kinesis
            .get_or_try_init(|| Kinesis::connect(config))
            .await
            .map_err(SinkError::Persistent)?
            .clone();
        let ctx = Arc::new(Ctx {
            stream: self.stream.clone(),
            kinesis,
            metrics: self.shared.metrics.clone(),
            packing: Packing {
                aggregation: config.aggregation,
                aggregate_cap: aggregate_cap(config.aggregate_max_bytes.get() as usize),
                max_record_bytes: config.max_record_bytes.get() as usize,
            },
            order: config.order,
            max_request_records: config.max_request_records,
            max_request_bytes: config.max_request_bytes.get() as usize,
            retry_initial: config.retry_initial_backoff.get(),
            retry_max: config.retry_max_backoff.get(),
            max_attempts: config.max_attempts_per_shipment,
            user_total: AtomicU64::new(0),
            kinesis_total: AtomicU64::new(0),
        });
        self.ctx = Some(ctx.clone());
        Ok(ctx)
    }

    fn budget(&self) -> ShardBudget {
        let c = &self.shared.config;
        ShardBudget::new(
            f64::from(c.shard_records_per_second) * c.shard_headroom,
            c.shard_bytes_per_second.get() as f64 * c.shard_headroom,
        )
    }

    /// Lists the shards when there is no map, when asked to, or when the map is old.
    async fn ensure_map(&mut self, ctx: &Ctx) -> Result<Arc<ShardMap>, SinkError> {
        let reason = match (&self.map, self.refresh) {
            (None, _) => MapRefresh::Start,
            (Some(_), Some(reason)) => reason,
            (Some(map), None) if map.fetched.elapsed() >= self.shared.config.shard_map_refresh.get() => {
                MapRefresh::Timer
            }
            (Some(map), None) => return Ok(map.clone()),
        };
        let map = match ctx.kinesis.list_shards(&self.stream).await {
            Ok(Ok(map)) => Arc::new(map),
            Ok(Err(e)) => return Err(SinkError::Persistent(format!("stream `{}`: {e}", self.stream))),
            Err(e) => return Err(call_error(e)),
        };
        let m = &self.shared.metrics;
        m.shards.with_label_values(&[&self.stream]).set(map.open_count() as i64);
        let label: &'static str = reason.into();
        m.shard_map_refreshes
            .with_label_values(&[self.stream.as_str(), label])
            .inc();
        if reason != MapRefresh::Timer {
            tracing::info!(stream = %self.stream, shards = map.open_count(), reason = label, "shard map listed");
        }
        self.budgets.retain(|id, _| map.get(id).is_some_and(|s| s.open));
        self.refresh = None;
        self.map = Some(map.clone());
        Ok(map)
    }

    fn route(&self, map: &ShardMap, records: &[Record]) -> Vec<(String, Vec<Routed>)> {
        let mut order: Vec<(String, Vec<Routed>)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for r in records {
            if self.delivered.contains(&r.seq) {
                continue;
            }
            let partition_key = self.shared.template.render(r);
            let hash = hash_key(&partition_key);
            let shard = map.shard_for(hash);
            let i = *index.entry(shard.id.as_str()).or_insert_with(|| {
                order.push((shard.id.clone(), Vec::new()));
                order.len() - 1
            });
            order[i].1.push(Routed {
                seq: r.seq,
                partition_key,
                hash,
                data: r.body.clone(),
            });
        }
        order
    }
}

fn call_error(e: CallError) -> SinkError {
    if e.persistent() {
        SinkError::Persistent(e.to_string())
    } else {
        SinkError::Transient(e.to_string())
    }
}

#[async_trait]
impl Sink for KinesisSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn channels(&self) -> &[Channel] {
        &self.channels
    }

    async fn ship(&mut self, records: &[Record]) -> Result<(), SinkError> {
        let ctx = self.ctx().await?;
        for _ in 0..RESHARD_ROUNDS {
            let map = self.ensure_map(&ctx).await?;
            let groups = self.route(&map, records);
            if groups.is_empty() {
                self.delivered.clear();
                return Ok(());
            }
            let mut tasks = JoinSet::new();
            for (shard_id, queue) in groups {
                let budget = self.budgets.remove(&shard_id).unwrap_or_else(|| self.budget());
                tasks.spawn(ship_shard(ctx.clone(), shard_id, queue, budget));
            }
            let mut failure: Option<ShardFailure> = None;
            let mut misrouted = Vec::new();
            let mut crashed = None;
            while let Some(joined) = tasks.join_next().await {
                let report = match joined {
                    Ok(r) => r,
                    Err(e) => {
                        // A panic is a bug. Its records were not (all) stored: the shipment
                        // fails and is retried; what the other shards stored is remembered.
                        // Its budget is lost with it; the next shipment starts a fresh one.
                        tracing::error!(stream = %self.stream, error = %e, "a shard task failed; the shipment is retried");
                        crashed = Some(e.to_string());
                        continue;
                    }
                };
                self.budgets.insert(report.shard_id, report.budget);
                self.delivered.extend(report.delivered);
                misrouted.extend(report.misrouted);
                if failure.is_none() {
                    failure = report.failure;
                }
            }
            if !misrouted.is_empty() {
                self.forget_misrouted(&ctx, misrouted).await?;
                continue;
            }
            if let Some(e) = crashed {
                return Err(SinkError::Transient(format!(
                    "stream `{}`: a shard task failed ({e}); its records are sent again",
                    self.stream
                )));
            }
            if let Some(f) = failure {
                let message = format!("stream `{}`: {f}", self.stream);
                return Err(if f.persistent() {
                    SinkError::Persistent(message)
                } else {
                    SinkError::Transient(message)
                });
            }
            self.delivered.clear();
            return Ok(());
        }
        Err(SinkError::Transient(format!(
            "stream `{}` was resharded again and again during one shipment; trying again",
            self.stream
        )))
    }

    fn linger(&self) -> Duration {
        self.shared.config.linger.get()
    }

    fn batch_records(&self) -> Option<usize> {
        Some(self.shared.config.batch_records)
    }
}

/// Why the shard map is listed again (the `reason` label of
/// `kinesis_shard_map_refreshes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
enum MapRefresh {
    /// No map yet.
    Start,
    /// `shard_map_refresh` passed.
    Timer,
    /// A record landed on another shard than the map said, or a shard closed.
    Resharded,
}
