//! MQTT for tillgate: terminals publish transactions to the store broker; the agent
//! journals each one, answers on the terminal's decision topic and acknowledges the
//! message (PUBACK) only after the journal commit; alerts are published from the
//! journal with their own cursor.
//!
//! Layout: [`config`] (`[mqtt]`), [`options`] (session, credentials, TLS),
//! [`connection`] (the connection task), [`inbound`] (one received transaction),
//! [`acks`] (in-order PUBACKs after commit), [`outbox`] (publishes kept until the
//! broker acknowledges them), [`alerts`] (the alert sink), [`topic`] (templates),
//! [`metrics`].
//!
//! The agent connects with MQTT 5 (persistent session by session expiry, receive
//! maximum for flow control, response topics); terminals may use MQTT 3.1.1 or 5.

pub mod acks;
pub mod alerts;
mod component;
pub mod config;
pub mod connection;
pub mod inbound;
pub mod metrics;
pub mod options;
pub mod outbox;
pub mod topic;

pub use alerts::AlertSink;
pub use component::{MqttView, STATUS_VIEW};
pub use config::{ConfigError, MqttConfig, TlsConfig};
pub use metrics::{MqttState, MqttStatus};

use connection::{Connection, Phase};
use metrics::{MqttMetrics, StatusCell};
use outbox::Outbox;
use rumqttc::v5::mqttbytes::QoS;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tillgate_sdk::Ingest;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the MQTT plugin could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The `[mqtt]` section is invalid (exit 78).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The metrics could not be registered.
    #[error("MQTT metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The running MQTT connection.
#[derive(Debug)]
pub struct Mqtt {
    drainer: Drainer,
    task: JoinHandle<()>,
    status: Arc<StatusCell>,
}

/// Stops MQTT intake from elsewhere (the agent's shutdown signal); cheap to clone.
#[derive(Debug, Clone)]
pub struct Drainer {
    phase: Arc<watch::Sender<Phase>>,
    stopping: Arc<AtomicBool>,
}

impl Drainer {
    /// Stops taking transactions (the broker keeps new ones for the next run); answers
    /// and alerts keep flowing until [`Mqtt::close`].
    pub fn drain(&self) {
        self.stopping.store(true, Ordering::Release);
        self.phase.send_if_modified(|p| {
            let running = *p == Phase::Running;
            if running {
                *p = Phase::Draining;
            }
            running
        });
    }
}

/// Checks `[mqtt]` without connecting: templates, files, secrets.
pub fn check(config: &MqttConfig) -> Result<(), ConfigError> {
    config.validate()?;
    options::build(config).map(|_| ())
}

impl Mqtt {
    /// Starts the connection task; returns it and, when `alerts` is on, the alert sink
    /// for the agent's sink runner.
    pub fn start(
        config: &MqttConfig,
        ingest: Arc<dyn Ingest>,
        registry: &prometheus::Registry,
    ) -> Result<(Mqtt, Option<AlertSink>), StartError> {
        let topics = config.validate()?;
        let connect = options::build(config)?;
        let metrics = MqttMetrics::register(registry)?;
        let qos = if config.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let outbox =
            Arc::new(Outbox::new(config.max_unacked_publishes).with_refusal_counter(metrics.publish_refused.clone()));
        let stopping = Arc::new(AtomicBool::new(false));
        let status = Arc::new(StatusCell::default());
        let filters: Vec<String> = topics.subscribe.iter().map(|t| t.filter()).collect();
        status.update(|s| {
            s.state = MqttState::Connecting;
            s.broker = connect.broker.clone();
            s.client_id = config.client_id.clone();
            s.subscriptions = filters.clone();
        });
        let alerts = config
            .alerts
            .then(|| AlertSink::new(outbox.clone(), topics.alert.clone(), qos, metrics.published.clone()));
        let inbound = Arc::new(inbound::Inbound {
            ingest,
            outbox: outbox.clone(),
            topics,
            qos,
            metrics: metrics.clone(),
            stopping: stopping.clone(),
            retry_line: tokio::sync::Mutex::new(()),
            in_flight: Arc::new(inbound::InFlight::new(usize::from(config.max_in_flight))),
        });
        let (phase, phase_rx) = watch::channel(Phase::Running);
        let connection = Connection {
            options: connect,
            filters,
            qos,
            inbound,
            outbox,
            metrics,
            status: status.clone(),
            reconnect_initial: config.reconnect_initial.get(),
            reconnect_max: config.reconnect_max.get(),
        };
        let task = tokio::spawn(reporting_panics(tokio::spawn(connection.run(phase_rx)), status.clone()));
        Ok((
            Mqtt {
                drainer: Drainer {
                    phase: Arc::new(phase),
                    stopping,
                },
                task,
                status,
            },
            alerts,
        ))
    }

    /// A handle that stops intake; see [`Drainer::drain`].
    pub fn drainer(&self) -> Drainer {
        self.drainer.clone()
    }

    /// Disconnects (keeping the session) and waits for the connection task.
    pub async fn close(self) {
        self.drainer.drain();
        self.drainer.phase.send_replace(Phase::Closed);
        let _ = self.task.await;
    }

    /// A handle that tells whether the connection task still runs (the systemd watchdog).
    pub fn liveness(&self) -> tokio::task::AbortHandle {
        self.task.abort_handle()
    }

    /// The connection's state, for `tillgate status`.
    pub fn status(&self) -> MqttStatus {
        self.status.snapshot()
    }

    /// A handle that reads the status later (the agent's HTTP status endpoint).
    pub fn status_handle(&self) -> StatusHandle {
        StatusHandle(self.status.clone())
    }
}

/// Waits for the connection task. A panic in it is a bug; it must not leave the status
/// saying "connecting" with no error: it is reported (and the agent's watchdog sees the
/// task end).
async fn reporting_panics(inner: JoinHandle<()>, status: Arc<StatusCell>) {
    let Err(e) = inner.await else { return };
    if !e.is_panic() {
        return;
    }
    let message = e
        .into_panic()
        .downcast::<String>()
        .map(|s| *s)
        .or_else(|p| p.downcast::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|_| "unknown panic".into());
    tracing::error!(panic = %message, "the MQTT connection task panicked; MQTT is down");
    status.update(|s| {
        s.state = MqttState::Failed;
        s.last_error = Some(format!("internal error (the connection task panicked): {message}"));
    });
}

/// Reads the MQTT status; cheap to clone.
#[derive(Debug, Clone)]
pub struct StatusHandle(Arc<StatusCell>);

impl StatusHandle {
    pub fn get(&self) -> MqttStatus {
        self.0.snapshot()
    }
}
