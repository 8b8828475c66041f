//! The delivery contract between the agent's sink runner and a sink plugin.
//!
//! The runner reads records after the sink's cursor, calls [`Sink::ship`], and advances
//! the cursor only when `ship` returns `Ok`: delivery is at-least-once, and a sink must
//! only return `Ok` once the records are durable at its destination.

use crate::record::{Channel, Record};
use async_trait::async_trait;
use std::time::Duration;

/// Why a shipment failed; the runner retries with backoff either way.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The destination is unavailable for now (I/O error, network, throttling).
    #[error("{0}")]
    Transient(String),
    /// The destination rejected the request in a way that will not heal by itself
    /// (bad configuration, permissions); the runner still retries, slower, and reports it.
    #[error("{0}")]
    Persistent(String),
}

/// A destination for journal records.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Stable name, used for the cursor, metrics and status (`archive`, `kinesis-txns`).
    fn name(&self) -> &str;

    /// The channels this sink takes.
    fn channels(&self) -> &[Channel];

    /// Make `records` durable at the destination, in the order given.
    /// Returning `Ok` acknowledges every record in the slice.
    async fn ship(&mut self, records: &[Record]) -> Result<(), SinkError>;

    /// Called when there is nothing to ship, at most every `idle_interval`:
    /// time-based housekeeping (closing an old file, a linger timer).
    async fn idle(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Flush and close: called once on shutdown after the last shipment.
    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// How long the runner may hold a small batch back (counted from its oldest
    /// record's arrival) waiting for more records, so that shipments are fuller.
    /// Zero (the default): ship whatever is there.
    fn linger(&self) -> Duration {
        Duration::ZERO
    }

    /// Records per shipment, when the sink wants other than the runner's default.
    fn batch_records(&self) -> Option<usize> {
        None
    }

    /// How often [`Sink::idle`] wants to be called.
    fn idle_interval(&self) -> Duration {
        Duration::from_secs(1)
    }
}
