//! Shipping one shard's share of a shipment: pack, wait for the shard's budget, put,
//! retry only what failed.
//!
//! One task per shard, one request in flight per shard. With `order = "per_key"` each
//! request carries one Kinesis record for the shard, so a record that fails holds back
//! everything after it on that shard: a later record cannot land before an earlier one
//! of the same key (PutRecords fails records individually, so two records of one shard in
//! one call could land out of order).

use crate::client::{CallError, Kinesis, PutResult};
use crate::config::Order;
use crate::metrics::KinesisMetrics;
use crate::plan::{put_units, Entry, Oversize, Packing, Routed};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tillgate_aws::limiter::ShardBudget;
use tillgate_sdk::Backoff;

/// What every shard task of one sink shares.
#[derive(Debug)]
pub struct Ctx {
    pub stream: String,
    pub kinesis: Kinesis,
    pub metrics: KinesisMetrics,
    pub packing: Packing,
    pub order: Order,
    pub max_request_records: usize,
    pub max_request_bytes: usize,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub max_attempts: u32,
    /// Lifetime totals for the aggregation ratio.
    pub user_total: AtomicU64,
    pub kinesis_total: AtomicU64,
}

/// Why a shard task stopped before shipping everything.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ShardFailure {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Oversize(#[from] Oversize),
    #[error("{records} Kinesis records still failing after {attempts} attempts, last: {code}: {message}")]
    Records {
        records: usize,
        attempts: u32,
        code: String,
        message: String,
    },
}

impl ShardFailure {
    /// Failures that retrying will not heal by itself.
    pub fn persistent(&self) -> bool {
        match self {
            ShardFailure::Oversize(_) => true,
            ShardFailure::Call(e) => e.persistent(),
            ShardFailure::Records { .. } => false,
        }
    }
}

/// What a shard task did.
#[derive(Debug)]
pub struct ShardReport {
    pub shard_id: String,
    pub budget: ShardBudget,
    /// Journal seqs Kinesis stored.
    pub delivered: Vec<u64>,
    /// Kinesis records stored on another shard than predicted (the map is stale): the
    /// shard they landed on and their journal records (seq, hash key).
    pub misrouted: Vec<(String, Vec<(u64, u128)>)>,
    pub failure: Option<ShardFailure>,
}

/// Ships `queue` (one shard's records, in journal order).
pub async fn ship_shard(
    ctx: std::sync::Arc<Ctx>,
    shard_id: String,
    queue: Vec<Routed>,
    budget: ShardBudget,
) -> ShardReport {
    #[cfg(feature = "fault-injection")]
    fault::panic_once();
    let mut report = ShardReport {
        shard_id,
        budget,
        delivered: Vec::new(),
        misrouted: Vec::new(),
        failure: None,
    };
    let per_request = match ctx.order {
        Order::PerKey => 1,
        Order::Relaxed => ctx.max_request_records,
    };
    let mut queue = Queue {
        routed: queue,
        at: 0,
        carry: None,
    };
    // Built and not yet stored, in order: failed ones first.
    let mut pending: Vec<Entry> = Vec::new();
    let mut attempts = 0u32;
    let mut backoff = Backoff::new(ctx.retry_initial, ctx.retry_max);
    loop {
        let bytes = match queue.fill(&ctx, &mut pending, per_request) {
            Ok(bytes) => bytes,
            Err(e) => {
                report.failure = Some(e.into());
                return report;
            }
        };
        if pending.is_empty() {
            return report;
        }
        let last = match put(&ctx, &mut report, &pending, bytes).await {
            Ok(results) => {
                let (failed, last, misrouted) = settle(&ctx, &mut report, std::mem::take(&mut pending), results);
                if misrouted {
                    // Stop here: the rest of this queue is routed with a stale map.
                    return report;
                }
                if failed.is_empty() {
                    attempts = 0;
                    backoff.reset();
                    continue;
                }
                pending = failed;
                last.expect("a failed record sets the last failure")
            }
            Err(e) => {
                if book_call_error(&ctx, &e, &pending).await {
                    report.failure = Some(e.into());
                    return report;
                }
                ShardFailure::Call(e)
            }
        };
        attempts += 1;
        if attempts >= ctx.max_attempts {
            report.failure = Some(match last {
                ShardFailure::Records { code, message, .. } => ShardFailure::Records {
                    records: pending.len(),
                    attempts,
                    code,
                    message,
                },
                other => other,
            });
            return report;
        }
        tracing::debug!(stream = %ctx.stream, shard = %report.shard_id, attempts, error = %last, "retrying");
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

/// One shard's records still to pack, and an entry that did not fit the last request.
struct Queue {
    routed: Vec<Routed>,
    at: usize,
    carry: Option<Entry>,
}

impl Queue {
    /// Tops `pending` (failed entries first) up to one request: at most `per_request`
    /// entries within `max_request_bytes`. Returns the request's bytes; an error when
    /// the next record cannot be packed at all and nothing else is pending.
    fn fill(&mut self, ctx: &Ctx, pending: &mut Vec<Entry>, per_request: usize) -> Result<usize, Oversize> {
        let mut bytes: usize = pending.iter().map(Entry::size).sum();
        while pending.len() < per_request {
            let entry = match self.carry.take() {
                Some(e) => e,
                None if self.at < self.routed.len() => match ctx.packing.next_entry(&self.routed[self.at..]) {
                    Ok((entry, n)) => {
                        self.at += n;
                        entry
                    }
                    Err(e) if pending.is_empty() => return Err(e),
                    Err(_) => break,
                },
                None => break,
            };
            if !pending.is_empty() && bytes + entry.size() > ctx.max_request_bytes {
                self.carry = Some(entry);
                break;
            }
            bytes += entry.size();
            pending.push(entry);
        }
        Ok(bytes)
    }
}

/// One PutRecords call, after the shard's budget allows it; both waits are measured.
async fn put(
    ctx: &Ctx,
    report: &mut ShardReport,
    pending: &[Entry],
    bytes: usize,
) -> Result<Vec<PutResult>, CallError> {
    let waited = report.budget.acquire(pending.len(), bytes).await;
    if !waited.is_zero() {
        ctx.metrics
            .budget_wait
            .with_label_values(&[&ctx.stream])
            .add(waited.as_secs_f64());
    }
    let refs: Vec<&Entry> = pending.iter().collect();
    let started = std::time::Instant::now();
    let answer = ctx.kinesis.put_records(&ctx.stream, &refs).await;
    ctx.metrics
        .request_seconds
        .with_label_values(&[&ctx.stream])
        .observe(started.elapsed().as_secs_f64());
    answer
}

/// Counts a failed call and acts on its class (refused credentials are invalidated);
/// `true` when retrying cannot help and the shard stops now.
async fn book_call_error(ctx: &Ctx, e: &CallError, pending: &[Entry]) -> bool {
    ctx.metrics.requests.with_label_values(&[&ctx.stream, "error"]).inc();
    ctx.metrics
        .retries
        .with_label_values(&[&ctx.stream, e.code()])
        .inc_by(pending.len() as u64);
    match e {
        CallError::Credentials(_) => {
            ctx.kinesis.credentials.invalidate().await;
            ctx.metrics.credential_invalidations.inc();
        }
        CallError::Throttled(_) => ctx.metrics.throttles.with_label_values(&[&ctx.stream]).inc(),
        CallError::Ambiguous(_) => {
            let users: usize = pending.iter().map(|e| e.users.len()).sum();
            ctx.metrics
                .ambiguous_resends
                .with_label_values(&[&ctx.stream])
                .inc_by(users as u64);
        }
        CallError::StreamNotFound(_) | CallError::Refused(_) => return true,
        CallError::NotSent(_) => {}
    }
    false
}

/// Books the answer to one call: returns the failed entries (in order), the last
/// failure, and whether a record landed on an unexpected shard.
fn settle(
    ctx: &Ctx,
    report: &mut ShardReport,
    sent: Vec<Entry>,
    results: Vec<PutResult>,
) -> (Vec<Entry>, Option<ShardFailure>, bool) {
    let stream = ctx.stream.as_str();
    let m = &ctx.metrics;
    let mut failed = Vec::new();
    let mut last = None;
    let mut misrouted = false;
    let (mut users, mut kinesis) = (0u64, 0u64);
    for (entry, result) in sent.into_iter().zip(results) {
        match result {
            PutResult::Stored { shard_id } => {
                users += entry.users.len() as u64;
                kinesis += 1;
                m.user_records
                    .with_label_values(&[stream])
                    .inc_by(entry.users.len() as u64);
                m.user_bytes
                    .with_label_values(&[stream])
                    .inc_by(entry.user_bytes as u64);
                let kind = if entry.aggregated() { "aggregated" } else { "raw" };
                m.kinesis_records.with_label_values(&[stream, kind]).inc();
                m.put_units.with_label_values(&[stream]).inc_by(put_units(entry.size()));
                report.delivered.extend(entry.users.iter().map(|u| u.0));
                if shard_id != report.shard_id {
                    misrouted = true;
                    report.misrouted.push((shard_id, entry.users));
                }
            }
            PutResult::Failed { code, message } => {
                m.retries.with_label_values(&[stream, &code]).inc();
                if code == "ProvisionedThroughputExceededException" {
                    m.throttles.with_label_values(&[stream]).inc();
                }
                last = Some(ShardFailure::Records {
                    records: 1,
                    attempts: 0,
                    code,
                    message,
                });
                failed.push(entry);
            }
        }
    }
    let outcome = if failed.is_empty() { "ok" } else { "partial" };
    m.requests.with_label_values(&[stream, outcome]).inc();
    let user_total = ctx.user_total.fetch_add(users, Ordering::Relaxed) + users;
    let kinesis_total = ctx.kinesis_total.fetch_add(kinesis, Ordering::Relaxed) + kinesis;
    if kinesis_total > 0 {
        m.aggregation_ratio
            .with_label_values(&[stream])
            .set(user_total as f64 / kinesis_total as f64);
    }
    (failed, last, misrouted)
}

/// Faults a test build injects (`fault-injection`), by environment variable.
#[cfg(feature = "fault-injection")]
mod fault {
    use std::sync::atomic::{AtomicBool, Ordering};

    static FIRED: AtomicBool = AtomicBool::new(false);

    /// With `TILLGATE_FAULT_KINESIS_SHARD_PANIC` set, the first shard task panics.
    pub fn panic_once() {
        if std::env::var_os("TILLGATE_FAULT_KINESIS_SHARD_PANIC").is_some() && !FIRED.swap(true, Ordering::AcqRel) {
            panic!("fault injected: a Kinesis shard task panics");
        }
    }
}
