//! Sinks: the runner that feeds each one from its cursor, and the set of them that runs
//! while the agent does.

mod runner;

pub use runner::{DrainSignal, SinkRunner, SinkStatus};

use crate::config::SinksConfig;
use crate::journal::Journal;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Instant;
use tillgate_sdk::Sink;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// Every sink's runner, started.
#[derive(Debug)]
pub struct SinkRunners {
    handles: Vec<JoinHandle<()>>,
    statuses: Vec<Arc<SinkStatus>>,
    drain: watch::Sender<Option<Instant>>,
}

impl SinkRunners {
    /// Starts one runner per sink, each from its journal cursor.
    pub fn start(sinks: Vec<Box<dyn Sink>>, journal: &Journal, metrics: &Metrics, config: &SinksConfig) -> Self {
        let (drain, drain_rx) = watch::channel(None);
        let mut handles = Vec::new();
        let mut statuses = Vec::new();
        for sink in sinks {
            let runner = SinkRunner::new(
                sink,
                journal.clone(),
                metrics.clone(),
                config.batch_records,
                config.retry_initial_backoff.get(),
                config.retry_max_backoff.get(),
            );
            statuses.push(runner.status());
            handles.push(tokio::spawn(runner.run(drain_rx.clone())));
        }
        SinkRunners {
            handles,
            statuses,
            drain,
        }
    }

    /// Each sink's status, in cursor order.
    pub fn statuses(&self) -> Vec<Arc<SinkStatus>> {
        self.statuses.clone()
    }

    /// The runner tasks, for the watchdog: one that ended before the stop is stuck work.
    pub fn tasks(&self) -> Vec<(String, AbortHandle)> {
        self.statuses
            .iter()
            .zip(&self.handles)
            .map(|(s, h)| (s.name.clone(), h.abort_handle()))
            .collect()
    }

    /// Lets every sink ship its backlog until `deadline`, closes them and waits.
    pub async fn drain_until(self, deadline: Instant) {
        self.drain.send_replace(Some(deadline));
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}
