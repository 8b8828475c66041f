//! Wiring: config → rules, journal, sinks, HTTP; then the drain on shutdown.

use crate::config::Config;
use crate::http::{self, AppState};
use crate::intake::Intake;
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;
use crate::rules::{self, Engine};
use crate::sinks::{self, SinkRunner};
use crate::systemd::{self, Liveness, Notifier};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tillgate_mqtt::Mqtt;
use tokio::sync::watch;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration (or a rule file, or a secret) is invalid: fix it, do not restart.
    #[error("{0}")]
    Config(String),
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// The journal writer died while running: nothing can be journaled until a restart.
    #[error("the journal writer died ({0}); stopping so that the service manager restarts the agent")]
    WriterDied(String),
}

impl AgentError {
    /// The process exit code: 78 (EX_CONFIG) for bad config so systemd does not
    /// restart-loop, 74 (EX_IOERR) for storage, 69 (EX_UNAVAILABLE) for the listener,
    /// 70 (EX_SOFTWARE) for a writer that died.
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::Config(_) => 78,
            AgentError::Journal(_) => 74,
            AgentError::Bind { .. } => 69,
            AgentError::WriterDied(_) => 70,
        }
    }
}

/// Runs the agent until `shutdown` resolves, then drains: stop intake, finish in-flight
/// requests, let sinks ship the backlog until `shutdown.drain_timeout`, commit, return.
/// `on_ready` gets the bound address once the agent accepts transactions.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr, Arc<AppState>),
) -> Result<(), AgentError> {
    let metrics = Metrics::new();
    let engine = build_engine(&config, &metrics).map_err(|e| AgentError::Config(e.to_string()))?;
    let active = active_ids(&engine);
    let (rule_count, report_count) = (active.0.len(), active.1.len());
    let token = match &config.http.token {
        Some(secret) => Some(
            secret
                .read()
                .map_err(|e| AgentError::Config(format!("http.token: {e}")))?,
        ),
        None => None,
    };
    let mut sinks = sinks::build(&config, metrics.registry()).map_err(AgentError::Config)?;
    let names = crate::components::sink_names(&config, &sinks);
    let journal_path = config.data_path(&config.journal.path);
    let journal = Journal::open(&journal_path, &config.journal, names, Box::new(engine), metrics.clone())?;
    let draining = Arc::new(AtomicBool::new(false));
    #[cfg(feature = "video")]
    let cameras = match config.video() {
        Some(v) => {
            let mut cameras = tillgate_video::Cameras::start(v, &config.data_path(&v.dir), metrics.registry())
                .map_err(|e| AgentError::Config(e.to_string()))?;
            if let Some(tags) = cameras.take_tag_sink() {
                sinks.push(Box::new(tags));
            }
            Some(cameras)
        }
        None => None,
    };
    let mqtt = match config.mqtt() {
        Some(m) => {
            let intake = Intake::new(
                journal.clone(),
                metrics.clone(),
                draining.clone(),
                config.intake.max_txn_bytes.get() as usize,
            );
            let (mqtt, alerts) = Mqtt::start(m, Arc::new(intake), metrics.registry())
                .map_err(|e| AgentError::Config(format!("mqtt: {e}")))?;
            if let Some(alerts) = alerts {
                sinks.push(Box::new(alerts));
            }
            Some(mqtt)
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| AgentError::Bind {
            addr: config.http.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| AgentError::Bind {
        addr: config.http.listen,
        source,
    })?;

    let (drain_tx, drain_rx) = watch::channel(None);
    let mut runners = Vec::new();
    let mut statuses = Vec::new();
    let mut live_sinks = Vec::new();
    for sink in sinks {
        let runner = SinkRunner::new(
            sink,
            journal.clone(),
            metrics.clone(),
            config.sinks.batch_records,
            config.sinks.retry_initial_backoff.get(),
            config.sinks.retry_max_backoff.get(),
        );
        let status = runner.status();
        let handle = tokio::spawn(runner.run(drain_rx.clone()));
        live_sinks.push((status.name.clone(), handle.abort_handle()));
        statuses.push(status);
        runners.push(handle);
    }
    let state = Arc::new(AppState {
        journal: journal.clone(),
        metrics,
        sinks: statuses,
        draining: draining.clone(),
        token,
        max_body_bytes: config.http.max_body_bytes.get() as usize,
        max_txn_bytes: config.intake.max_txn_bytes.get() as usize,
        body_timeout: config.http.body_timeout.get(),
        batch_permits: Arc::new(tokio::sync::Semaphore::new(config.http.max_concurrent_batches)),
        max_batch_lines: config.http.max_batch_lines,
        started: Instant::now(),
        active_rules: std::sync::Mutex::new(active),
        mqtt: mqtt.as_ref().map(Mqtt::status_handle),
        cameras: camera_statuses(
            #[cfg(feature = "video")]
            &cameras,
        ),
    });
    tracing::info!(
        %addr,
        journal = %journal_path.display(),
        rules = rule_count,
        reports = report_count,
        sinks = ?state.sinks.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        last_seq = journal.last_seq(),
        "tillgate ready"
    );
    on_ready(addr, state.clone());
    if let Some(m) = &mqtt {
        live_sinks.push(("mqtt".to_string(), m.liveness()));
    }
    let notifier = Notifier::from_env();
    notifier.ready(&format!("ready on {addr}; journal seq {}", journal.last_seq()));
    let supervisor = tokio::spawn(systemd::supervise(
        notifier,
        state.clone(),
        Liveness {
            journal: journal.clone(),
            sinks: live_sinks,
        },
    ));
    let reloader = tokio::spawn(reload_on_sighup(
        config.clone(),
        journal.clone(),
        state.clone(),
        notifier,
    ));

    let app = http::router(state.clone());
    let draining = state.clone();
    let mqtt_drainer = mqtt.as_ref().map(Mqtt::drainer);
    let stop_started = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let stop_at = stop_started.clone();
    let writer = journal.clone();
    let writer_died = Arc::new(std::sync::Mutex::new(None::<String>));
    let died = writer_died.clone();
    let graceful = async move {
        tokio::select! {
            _ = shutdown => {}
            why = writer.failed() => {
                tracing::error!(error = %why, "the journal writer died: stopping");
                *died.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            }
        }
        *stop_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        notifier.stopping();
        draining.draining.store(true, Ordering::Release);
        if let Some(d) = mqtt_drainer {
            d.drain();
        }
        tracing::info!("shutting down: intake stopped, finishing in-flight requests");
    };
    let limits = http::server::Limits {
        max_connections: config.http.max_connections,
        header_timeout: config.http.header_timeout.get(),
        idle_timeout: config.http.idle_timeout.get(),
        // Never longer than the whole stop.
        shutdown_grace: config
            .http
            .shutdown_grace
            .get()
            .min(config.shutdown.drain_timeout.get()),
    };
    http::server::serve(listener, app, limits, state.metrics.clone(), graceful).await;

    // The whole stop (HTTP's graceful phase included) is bounded by drain_timeout.
    let stopped_at = stop_started
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or_else(Instant::now);
    let deadline = stopped_at + config.shutdown.drain_timeout.get();
    drain_tx.send_replace(Some(deadline));
    for r in runners {
        let _ = r.await;
    }
    let left: Vec<String> = state
        .sinks
        .iter()
        .filter(|s| journal.cursor(&s.name) < journal.last_seq())
        .map(|s| s.name.clone())
        .collect();
    if !left.is_empty() {
        tracing::warn!(sinks = ?left, "drain deadline passed with a backlog; it stays in the journal for the next start");
    }
    #[cfg(feature = "video")]
    if let Some(cameras) = cameras {
        // Each pipeline stores its open fragment; unsent fragments wait on disk.
        cameras.stop().await;
    }
    if let Some(mqtt) = mqtt {
        // After the sinks: the alert sink publishes over this connection.
        mqtt.close().await;
    }
    reloader.abort();
    supervisor.abort();
    journal.close().await;
    if let Some(why) = writer_died.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(AgentError::WriterDied(why));
    }
    tracing::info!(last_seq = journal.last_seq(), "tillgate stopped");
    Ok(())
}

/// How status reads the cameras.
#[cfg(feature = "video")]
fn camera_statuses(cameras: &Option<tillgate_video::Cameras>) -> Option<crate::http::CameraStatuses> {
    let handles = cameras.as_ref()?.status_handles();
    Some(crate::http::CameraStatuses(Box::new(move || {
        handles.iter().map(|h| h.get()).collect()
    })))
}

#[cfg(not(feature = "video"))]
fn camera_statuses() -> Option<crate::http::CameraStatuses> {
    None
}

/// Rule and report ids of an engine, for status.
fn active_ids(engine: &Engine) -> (Vec<String>, Vec<String>) {
    let owned = |ids: Vec<&str>| ids.into_iter().map(str::to_string).collect();
    (owned(engine.rule_ids()), owned(engine.report_ids()))
}

/// The rule engine the config asks for.
pub fn build_engine(config: &Config, metrics: &Metrics) -> Result<Engine, rules::RuleError> {
    let pack = rules::load_paths(&config.rules.paths)?;
    Ok(Engine::new(
        pack,
        Some(metrics.clone()),
        config.rules.count_window_replay.get(),
    ))
}

/// SIGHUP reloads the rule files. Invalid rules are logged and counted; the running
/// rules stay. Valid ones are rebuilt from the journal before they take over, so a reload
/// during an attack keeps its counts.
async fn reload_on_sighup(config: Config, journal: Journal, state: Arc<AppState>, notifier: Notifier) {
    let metrics = state.metrics.clone();
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; rules reload needs a restart");
        return;
    };
    while hup.recv().await.is_some() {
        notifier.reloading();
        let engine = match build_engine(&config, &metrics) {
            Ok(e) => e,
            Err(e) => {
                metrics.rules_reload_errors.inc();
                tracing::error!(error = %e, "SIGHUP: the rule files are invalid; the previous rules stay active");
                notifier.ready("rule reload failed (invalid rule files); the previous rules stay active");
                continue;
            }
        };
        let active = active_ids(&engine);
        let ids = active.0.join(", ");
        match journal.reload(Box::new(engine)).await {
            Ok(replayed) => {
                *state.active_rules.lock().unwrap_or_else(|p| p.into_inner()) = active;
                tracing::info!(rules = %ids, replayed, "SIGHUP: rules reloaded");
                notifier.ready(&format!("rules reloaded ({replayed} transactions replayed)"));
            }
            Err(e) => {
                metrics.rules_reload_errors.inc();
                tracing::error!(error = %e, "SIGHUP: reload failed; the previous rules stay active");
                notifier.ready("rule reload failed; the previous rules stay active");
            }
        }
    }
}
