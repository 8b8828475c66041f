//! Wiring: config → rules, journal, the enabled components and their sinks, HTTP;
//! then the drain on shutdown. No plugin is named here: `components` registers them.

use crate::components;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::intake::Intake;
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;
use crate::rules::{self, Engine};
use crate::sinks::SinkRunners;
use crate::systemd::{self, Liveness, Notifier};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tillgate_sdk::component::IntakeStopper;
use tillgate_sdk::{Component, ComponentConfig, Ingest, Sink, StartContext};
use tokio::task::AbortHandle;

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
    /// A plugin broke the component contract (a bug, not a config problem).
    #[error("{0} (a bug in the plugin)")]
    Plugin(String),
    /// The journal failed while running (its writer or sync thread died, or the disk did
    /// not confirm a write): nothing can be acknowledged until a restart.
    #[error("the journal failed ({0}); stopping so that the service manager restarts the agent")]
    WriterDied(String),
}

impl AgentError {
    /// The process exit code: 78 (EX_CONFIG) for bad config so systemd does not
    /// restart-loop, 74 (EX_IOERR) for storage, 69 (EX_UNAVAILABLE) for the listener,
    /// 70 (EX_SOFTWARE) for a writer that died or a plugin that broke its contract.
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::Config(_) => 78,
            AgentError::Journal(_) => 74,
            AgentError::Bind { .. } => 69,
            AgentError::WriterDied(_) | AgentError::Plugin(_) => 70,
        }
    }
}

/// Runs the agent until `shutdown` resolves, then drains: stop intake, finish in-flight
/// requests, let sinks ship the backlog until `shutdown.drain_timeout`, commit, return.
/// `on_ready` gets the bound address once the agent accepts transactions.
///
/// Long on purpose: the agent's life in the order it happens (start, serve, stop), each
/// step one call; split, the order of start and stop would be read across functions.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr, Arc<AppState>),
) -> Result<(), AgentError> {
    let metrics = Metrics::new();
    let engine = build_engine(&config, &metrics).map_err(|e| AgentError::Config(e.to_string()))?;
    let active = active_ids(&engine);
    let (rule_count, report_count) = (active.0.len(), active.1.len());
    let token = read_token(&config)?;
    let journal_path = config.data_path(&config.journal.path);
    let journal = Journal::open(
        &journal_path,
        &config.journal,
        components::sink_names(&config),
        Box::new(engine),
        components::video_links(&config),
        metrics.clone(),
    )?;
    let draining = Arc::new(AtomicBool::new(false));
    let intake = Intake::new(
        journal.clone(),
        metrics.clone(),
        draining.clone(),
        config.intake.max_txn_bytes.get() as usize,
    );
    let ingest: Arc<dyn Ingest> = Arc::new(intake.clone());
    let cx = StartContext {
        ingest: &ingest,
        registry: metrics.registry(),
        data_dir: &config.data_dir,
    };
    let Started { running, sinks } = start_components(components::enabled(&config), cx).await?;
    let listener = bind(config.http.listen).await?;
    let addr = listener.local_addr().map_err(|source| AgentError::Bind {
        addr: config.http.listen,
        source,
    })?;
    let runners = SinkRunners::start(sinks, &journal, &metrics, &config.sinks);
    let state = Arc::new(AppState {
        journal: journal.clone(),
        intake,
        metrics,
        sinks: runners.statuses(),
        draining,
        token,
        max_body_bytes: config.http.max_body_bytes.get() as usize,
        max_txn_bytes: config.intake.max_txn_bytes.get() as usize,
        body_timeout: config.http.body_timeout.get(),
        batch_permits: Arc::new(tokio::sync::Semaphore::new(config.http.max_concurrent_batches)),
        max_batch_lines: config.http.max_batch_lines,
        started: Instant::now(),
        active_rules: std::sync::Mutex::new(active),
        components: running.iter().filter_map(|c| c.status()).collect(),
        clips: running.iter().find_map(|c| c.clips()),
        clip_permits: Arc::new(tokio::sync::Semaphore::new(http::CONCURRENT_CLIPS)),
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
    let notifier = Notifier::from_env();
    notifier.ready(&format!("ready on {addr}; journal seq {}", journal.last_seq()));
    let mut tasks = runners.tasks();
    tasks.extend(running.iter().flat_map(|c| c.tasks()));
    let background = Background::start(&config, &state, notifier, tasks);

    let stop = Arc::new(Stop::default());
    let intake_stoppers: Vec<IntakeStopper> = running.iter().filter_map(|c| c.intake_stopper()).collect();
    let graceful = stop
        .clone()
        .begin(shutdown, journal.clone(), notifier, state.clone(), intake_stoppers);
    http::server::serve(
        listener,
        http::router(state.clone()),
        http_limits(&config),
        state.metrics.clone(),
        graceful,
    )
    .await;

    // The whole stop (HTTP's graceful phase included) is bounded by drain_timeout.
    runners
        .drain_until(stop.started_at() + config.shutdown.drain_timeout.get())
        .await;
    warn_of_backlog(&state);
    // After the sinks: the MQTT alert sink publishes over the MQTT connection, camera
    // tags go to the camera tasks.
    for component in running.into_iter().rev() {
        component.stop().await;
    }
    background.abort();
    journal.close().await;
    if let Some(why) = stop.writer_died() {
        return Err(AgentError::WriterDied(why));
    }
    tracing::info!(last_seq = journal.last_seq(), "tillgate stopped");
    Ok(())
}

/// The systemd supervisor (STATUS, watchdog) and the SIGHUP rule reloader.
struct Background {
    supervisor: tokio::task::JoinHandle<()>,
    reloader: tokio::task::JoinHandle<()>,
}

impl Background {
    fn start(config: &Config, state: &Arc<AppState>, notifier: Notifier, tasks: Vec<(String, AbortHandle)>) -> Self {
        let liveness = Liveness {
            journal: state.journal.clone(),
            tasks,
        };
        Background {
            supervisor: tokio::spawn(systemd::supervise(notifier, state.clone(), liveness)),
            reloader: tokio::spawn(reload_on_sighup(
                config.clone(),
                state.journal.clone(),
                state.clone(),
                notifier,
            )),
        }
    }

    fn abort(self) {
        self.reloader.abort();
        self.supervisor.abort();
    }
}

/// The HTTP server's limits; its graceful phase never outlasts the whole stop.
fn http_limits(config: &Config) -> http::server::Limits {
    http::server::Limits {
        max_connections: config.http.max_connections,
        header_timeout: config.http.header_timeout.get(),
        idle_timeout: config.http.idle_timeout.get(),
        shutdown_grace: config
            .http
            .shutdown_grace
            .get()
            .min(config.shutdown.drain_timeout.get()),
    }
}

/// `http.token`, read from its secret.
fn read_token(config: &Config) -> Result<Option<String>, AgentError> {
    config
        .http
        .token
        .as_ref()
        .map(|secret| {
            secret
                .read()
                .map_err(|e| AgentError::Config(format!("http.token: {e}")))
        })
        .transpose()
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, AgentError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Bind { addr, source })
}

/// The running components and the sinks they brought.
struct Started {
    running: Vec<Box<dyn Component>>,
    sinks: Vec<Box<dyn Sink>>,
}

/// Starts every enabled component; returns them and the sinks they brought, which must
/// be the sinks they named before the journal opened (their cursors), with status keys
/// of their own. When one cannot start, those already started are stopped, last first.
async fn start_components(enabled: Vec<&dyn ComponentConfig>, cx: StartContext<'_>) -> Result<Started, AgentError> {
    let mut started = Started {
        running: Vec::new(),
        sinks: Vec::new(),
    };
    let mut keys: Vec<&'static str> = crate::status::FIXED_KEYS.to_vec();
    for component in enabled {
        let outcome = match component.start(cx) {
            Ok(mut running) => {
                let fit = fits(component, running.as_mut(), &mut keys);
                started.running.push(running);
                fit
            }
            Err(e) => Err(AgentError::Config(e)),
        };
        match outcome {
            Ok(sinks) => started.sinks.extend(sinks),
            Err(e) => {
                for running in started.running.into_iter().rev() {
                    running.stop().await;
                }
                return Err(e);
            }
        }
    }
    Ok(started)
}

/// The sinks of a started component, if they are those it named, and if its status key
/// is its own.
fn fits(
    config: &dyn ComponentConfig,
    running: &mut dyn Component,
    keys: &mut Vec<&'static str>,
) -> Result<Vec<Box<dyn Sink>>, AgentError> {
    let brought = running.take_sinks();
    let named = config.sink_names();
    if brought.iter().map(|s| s.name()).ne(named.iter().map(String::as_str)) {
        return Err(AgentError::Plugin(format!(
            "{}: started sinks {:?} but named {named:?} for the journal's cursors",
            config.section(),
            brought.iter().map(|s| s.name()).collect::<Vec<_>>()
        )));
    }
    if let Some(section) = running.status() {
        if keys.contains(&section.key) {
            return Err(AgentError::Plugin(format!(
                "{}: its status key `{}` is taken",
                config.section(),
                section.key
            )));
        }
        keys.push(section.key);
    }
    Ok(brought)
}

/// A sink still behind at the drain deadline keeps its backlog for the next start.
fn warn_of_backlog(state: &AppState) {
    let journal = &state.journal;
    let left: Vec<&str> = state
        .sinks
        .iter()
        .filter(|s| journal.cursor(&s.name) < journal.last_seq())
        .map(|s| s.name.as_str())
        .collect();
    if !left.is_empty() {
        tracing::warn!(sinks = ?left, "drain deadline passed with a backlog; it stays in the journal for the next start");
    }
}

/// When the stop began, and whether the journal writer's death began it.
#[derive(Debug, Default)]
struct Stop {
    started: std::sync::Mutex<Option<Instant>>,
    writer_died: std::sync::Mutex<Option<String>>,
}

impl Stop {
    /// Resolves when the agent must stop (the shutdown signal or a dead journal writer),
    /// after closing intake everywhere: HTTP answers 503, components stop taking input.
    async fn begin(
        self: Arc<Self>,
        shutdown: impl Future<Output = ()>,
        journal: Journal,
        notifier: Notifier,
        state: Arc<AppState>,
        intake_stoppers: Vec<IntakeStopper>,
    ) {
        tokio::select! {
            _ = shutdown => {}
            why = journal.failed() => {
                tracing::error!(error = %why, "the journal can take nothing more (its writer or its sync failed): stopping");
                *lock(&self.writer_died) = Some(why);
            }
        }
        *lock(&self.started) = Some(Instant::now());
        notifier.stopping();
        state.draining.store(true, Ordering::Release);
        for stop_intake in &intake_stoppers {
            stop_intake();
        }
        tracing::info!("shutting down: intake stopped, finishing in-flight requests");
    }

    fn started_at(&self) -> Instant {
        lock(&self.started).unwrap_or_else(Instant::now)
    }

    fn writer_died(&self) -> Option<String> {
        lock(&self.writer_died).take()
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;
    use tillgate_sdk::{CheckContext, ConfigError, SinkSet};

    /// A plugin that names one sink for the journal's cursors and brings another.
    struct Misnamed;

    impl ComponentConfig for Misnamed {
        fn section(&self) -> &'static str {
            "misnamed"
        }
        fn enabled(&self) -> bool {
            true
        }
        fn check(&self, _cx: &CheckContext) -> Result<(), ConfigError> {
            Ok(())
        }
        fn sink_names(&self) -> Vec<String> {
            vec!["archive".into()]
        }
        fn start(&self, cx: StartContext<'_>) -> Result<Box<dyn Component>, String> {
            let config = tillgate_archive::ArchiveConfig {
                dir: cx.data_dir.to_path_buf(),
                ..Default::default()
            };
            let sink = tillgate_archive::ArchiveSink::new("elsewhere", config);
            Ok(Box::new(SinkSet(vec![Box::new(sink)])))
        }
    }

    struct NoIngest;

    #[async_trait::async_trait]
    impl Ingest for NoIngest {
        async fn submit(&self, _s: tillgate_sdk::Submission<'_>) -> tillgate_sdk::PendingVerdict {
            unreachable!("nothing is submitted")
        }
        fn max_txn_bytes(&self) -> usize {
            0
        }
    }

    #[tokio::test]
    async fn a_component_that_brings_other_sinks_than_it_named_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ingest: Arc<dyn Ingest> = Arc::new(NoIngest);
        let registry = prometheus::Registry::new();
        let cx = StartContext {
            ingest: &ingest,
            registry: &registry,
            data_dir: dir.path(),
        };
        let Err(e) = start_components(vec![&Misnamed], cx).await else {
            panic!("started");
        };
        assert_eq!(e.exit_code(), 70);
        assert!(
            e.to_string()
                .contains("misnamed: started sinks [\"elsewhere\"] but named [\"archive\"]"),
            "{e}"
        );
    }
}
