//! Feeds one sink from its cursor: read, ship, advance on acknowledgement, retry with
//! backoff. The cursor only moves after `ship` returned `Ok` (at-least-once delivery).

use crate::journal::{Journal, JournalReader, ReadBatch};
use crate::metrics::Metrics;
use serde::Serialize;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tillgate_sdk::Backoff;
use tillgate_sdk::{Channel, Sink};
use tokio::sync::watch;

/// `None` while running; `Some(deadline)` once draining: ship the backlog until then.
pub type DrainSignal = watch::Receiver<Option<Instant>>;

/// What status reports about a sink.
#[derive(Debug, Serialize)]
pub struct SinkStatus {
    pub name: String,
    pub channels: Vec<Channel>,
    /// The last shipment error, cleared by the next success.
    pub last_error: Mutex<Option<String>>,
    /// When the last shipment succeeded, ms since the epoch (0: never).
    pub last_success_ms: AtomicI64,
    /// Failures since the last success.
    pub failures_in_a_row: AtomicU64,
}

/// Runs one sink.
pub struct SinkRunner {
    sink: Box<dyn Sink>,
    journal: Journal,
    metrics: Metrics,
    batch: usize,
    initial_backoff: Duration,
    max_backoff: Duration,
    status: Arc<SinkStatus>,
}

impl std::fmt::Debug for SinkRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkRunner").field("sink", &self.sink.name()).finish()
    }
}

impl SinkRunner {
    /// A runner for `sink`.
    pub fn new(
        sink: Box<dyn Sink>,
        journal: Journal,
        metrics: Metrics,
        batch: usize,
        initial_backoff: Duration,
        max_backoff: Duration,
    ) -> Self {
        let status = Arc::new(SinkStatus {
            name: sink.name().to_string(),
            channels: sink.channels().to_vec(),
            last_error: Mutex::new(None),
            last_success_ms: AtomicI64::new(0),
            failures_in_a_row: AtomicU64::new(0),
        });
        SinkRunner {
            sink,
            journal,
            metrics,
            batch,
            initial_backoff,
            max_backoff,
            status,
        }
    }

    /// Shared status, for `/v1/status`.
    pub fn status(&self) -> Arc<SinkStatus> {
        self.status.clone()
    }

    async fn read(&self, reader: JournalReader, cursor: u64) -> (JournalReader, rusqlite::Result<ReadBatch>) {
        let channels = self.status.channels.clone();
        let limit = self.sink.batch_records().unwrap_or(self.batch);
        let upto = self.journal.last_seq();
        let mut reader = reader;
        tokio::task::spawn_blocking(move || {
            let r = reader.read_after(cursor, upto, &channels, limit);
            (reader, r)
        })
        .await
        .expect("journal read task panicked")
    }

    /// Ships until drained (caught up, or the drain deadline passed), then closes the sink.
    pub async fn run(mut self, mut drain: DrainSignal) {
        let name = self.status.name.clone();
        let mut committed = self.journal.committed();
        let mut reader = loop {
            match self.journal.reader() {
                Ok(r) => break r,
                Err(e) => {
                    tracing::error!(sink = %name, error = %e, "cannot open the journal for reading; retrying");
                    tokio::time::sleep(self.initial_backoff).await;
                }
            }
        };
        let mut cursor = self.journal.cursor(&name);
        let idle = self.sink.idle_interval();
        // Set after one linger wait, so the batch read next ships whatever its size.
        let mut lingered = false;
        loop {
            let deadline = *drain.borrow();
            if let Some(deadline) = deadline {
                if cursor >= self.journal.last_seq() || Instant::now() >= deadline {
                    break;
                }
            }
            let (r, batch) = self.read(reader, cursor).await;
            reader = r;
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(sink = %name, error = %e, "journal read failed; retrying");
                    tokio::time::sleep(self.initial_backoff).await;
                    continue;
                }
            };
            if batch.records.is_empty() {
                if batch.scanned_to > cursor {
                    cursor = batch.scanned_to;
                    self.journal.advance(&name, cursor).await;
                    continue;
                }
                if deadline.is_some() {
                    break;
                }
                tokio::select! {
                    _ = committed.changed() => {}
                    _ = drain.changed() => {}
                    _ = tokio::time::sleep(idle) => {
                        if let Err(e) = self.sink.idle().await {
                            tracing::warn!(sink = %name, error = %e, "sink housekeeping failed");
                        }
                    }
                }
                continue;
            }
            if !lingered && self.should_linger(&batch, deadline.is_some()) {
                // A small batch of young records: wait for more (bounded by the sink's
                // linger from the oldest record's arrival), then read again.
                let oldest = batch.records[0].received_ms;
                let wait = (oldest + self.sink.linger().as_millis() as i64 - chrono::Utc::now().timestamp_millis())
                    .clamp(0, self.sink.linger().as_millis() as i64);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                    _ = drain.changed() => {}
                }
                lingered = true;
                continue;
            }
            lingered = false;
            if !self.ship(&batch, &mut drain).await {
                break;
            }
            cursor = batch.scanned_to;
            self.journal.advance(&name, cursor).await;
        }
        if let Err(e) = self.sink.close().await {
            tracing::error!(sink = %name, error = %e, "closing the sink failed");
        }
        tracing::info!(sink = %name, cursor, "sink stopped");
    }

    /// True when the sink lingers and the batch is short of full, young, and this is
    /// not already the read after a linger wait or a drain.
    fn should_linger(&self, batch: &ReadBatch, draining: bool) -> bool {
        let linger = self.sink.linger();
        if linger.is_zero() || draining {
            return false;
        }
        let full = self.sink.batch_records().unwrap_or(self.batch);
        let age = chrono::Utc::now().timestamp_millis() - batch.records[0].received_ms;
        batch.records.len() < full && age >= 0 && (age as u128) < linger.as_millis()
    }

    /// Ships one batch, retrying with exponential backoff and jitter until it is
    /// acknowledged. Returns false when the drain deadline passed first.
    async fn ship(&mut self, batch: &ReadBatch, drain: &mut DrainSignal) -> bool {
        let name = self.status.name.clone();
        let mut backoff = Backoff::new(self.initial_backoff, self.max_backoff);
        loop {
            let started = Instant::now();
            match self.sink.ship(&batch.records).await {
                Ok(()) => {
                    self.metrics
                        .sink_records
                        .with_label_values(&[&name])
                        .inc_by(batch.records.len() as u64);
                    self.metrics
                        .sink_ship_seconds
                        .with_label_values(&[&name])
                        .observe(started.elapsed().as_secs_f64());
                    self.status
                        .last_success_ms
                        .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
                    if self.status.failures_in_a_row.swap(0, Ordering::Relaxed) > 0 {
                        tracing::info!(sink = %name, "sink recovered");
                    }
                    *self.status.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    return true;
                }
                Err(e) => {
                    self.metrics.sink_errors.with_label_values(&[&name]).inc();
                    let n = self.status.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(sink = %name, error = %e, failures_in_a_row = n, retry_within = ?backoff.upcoming(), "shipment failed; the records wait in the journal");
                    *self.status.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    let wake = Instant::now() + backoff.next_wait();
                    loop {
                        if let Some(deadline) = *drain.borrow() {
                            if Instant::now() >= deadline {
                                return false;
                            }
                        }
                        tokio::select! {
                            _ = tokio::time::sleep_until(wake.into()) => break,
                            _ = drain.changed() => {}
                        }
                    }
                }
            }
        }
    }
}
