//! The component contract: how a plugin is configured, checked, started, watched and
//! stopped, so that the agent wires every plugin with one loop (in the spirit of
//! Vector's `SourceConfig::build` / `SinkConfig::build`).
//!
//! Life of a component, as `agent::run` drives it:
//!
//! 1. [`ComponentConfig::check`] at load (and by `tillgate check-config`): every error
//!    names its key; the agent adds the line.
//! 2. [`ComponentConfig::sink_names`] before the journal opens: the journal keeps a
//!    cursor per sink, so it must know them all before anything is started.
//! 3. [`ComponentConfig::start`] with a [`StartContext`] (the ingest handle, the metrics
//!    registry, the data directory): returns the running [`Component`].
//! 4. [`Component::take_sinks`] once; the agent runs each sink from its cursor.
//!    [`Component::status`] feeds `/v1/status`, [`Component::tasks`] the watchdog.
//! 5. On stop: [`Component::intake_stopper`] first (stop taking input), then every sink
//!    drains, then [`Component::stop`] (output such as MQTT answers flows until then).

use crate::config_error::ConfigError;
use crate::ingest::Ingest;
use crate::sink::Sink;
use async_trait::async_trait;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// What the config tells a component about the rest of the agent, for checks that
/// cross sections.
#[derive(Debug, Clone, Copy)]
pub struct CheckContext {
    /// `intake.max_txn_bytes`: the largest transaction any source must carry.
    pub max_txn_bytes: u64,
}

/// What the agent hands a component when it starts it.
#[derive(Clone, Copy)]
pub struct StartContext<'a> {
    /// Where sources submit what they receive.
    pub ingest: &'a Arc<dyn Ingest>,
    /// The agent's metrics registry (`/metrics`).
    pub registry: &'a prometheus::Registry,
    /// `data_dir`: relative paths in a component's config are below it.
    pub data_dir: &'a Path,
}

impl std::fmt::Debug for StartContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartContext")
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl StartContext<'_> {
    /// A path from the config: relative ones are below `data_dir`.
    pub fn data_path(&self, p: &Path) -> std::path::PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.data_dir.join(p)
        }
    }
}

/// A plugin's config section, parsed. One per section of `tillgate.toml`.
pub trait ComponentConfig: Send + Sync {
    /// The section, as written in the config: `mqtt`, `kinesis`, `sinks.archive`.
    fn section(&self) -> &'static str;

    /// `enabled = false` turns a section off without deleting it.
    fn enabled(&self) -> bool;

    /// Checks what serde cannot, without connecting anywhere (files and secrets are
    /// read, so a missing one is a config error at start, not a retry loop).
    fn check(&self, cx: &CheckContext) -> Result<(), ConfigError>;

    /// The sources it opens, for `check-config` (`mqtt mqtt://broker:1883`).
    fn sources(&self) -> Vec<String> {
        Vec::new()
    }

    /// The names of the sinks [`Component::take_sinks`] will return, in that order.
    fn sink_names(&self) -> Vec<String> {
        Vec::new()
    }

    /// The cameras whose uploaded video rule-hit alerts point at (a video component's).
    fn video_coverage(&self) -> Vec<VideoCoverage> {
        Vec::new()
    }

    /// Starts it. Nothing here may wait for the network: an offline gateway starts.
    fn start(&self, cx: StartContext<'_>) -> Result<Box<dyn Component>, String>;

    /// How `tillgate status` reads the status section its [`Component::status`] reports,
    /// if it reports one. Static: `tillgate status` reads another process's answer.
    fn status_view() -> Option<&'static dyn StatusView>
    where
        Self: Sized,
    {
        None
    }
}

/// A camera whose video reaches the cloud, and the part of it that belongs to a sale:
/// a rule-hit alert on one of `terminals` (empty: any) points at `stream` from `before`
/// the sale reached the gateway to `after` it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoCoverage {
    pub camera: String,
    /// The Kinesis Video stream.
    pub stream: String,
    pub terminals: Vec<String>,
    pub before: std::time::Duration,
    pub after: std::time::Duration,
    /// A camera that uploads only the video around chosen decisions: the alerts that
    /// choose it. `None`: it uploads everything, so every alert on its terminals has video.
    pub only: Option<VideoEvents>,
}

/// The rule-hit alerts whose video an events-mode camera uploads: those deciding one of
/// `decisions` (`"allow"`, `"review"`, `"block"`), or on which one of `rules` fired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VideoEvents {
    pub decisions: Vec<String>,
    pub rules: Vec<String>,
}

impl VideoEvents {
    /// Whether an alert that decided `decision`, with `rules` firing, is chosen.
    pub fn chooses<'a>(&self, decision: &str, mut rules: impl Iterator<Item = &'a str>) -> bool {
        self.decisions.iter().any(|d| d == decision) || rules.any(|r| self.rules.iter().any(|n| n == r))
    }
}

/// A component's part of `/v1/status`: a JSON value under `key`, read on each request.
pub struct StatusSection {
    /// The key in the status report (`mqtt`, `cameras`).
    pub key: &'static str,
    read: Box<dyn Fn() -> Value + Send + Sync>,
}

impl StatusSection {
    pub fn new(key: &'static str, read: impl Fn() -> Value + Send + Sync + 'static) -> StatusSection {
        StatusSection {
            key,
            read: Box::new(read),
        }
    }

    /// The section now.
    pub fn read(&self) -> Value {
        (self.read)()
    }
}

impl std::fmt::Debug for StatusSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusSection").field("key", &self.key).finish()
    }
}

/// How a person reads a status section: lines for `tillgate status` and short parts
/// for systemd's one-line STATUS. Static, because `tillgate status` renders the JSON
/// another process answered.
pub trait StatusView: Sync {
    /// The section's key (`mqtt`).
    fn key(&self) -> &'static str;

    /// Lines for `tillgate status`, each starting with a word of at most 8 letters.
    fn lines(&self, status: &Value) -> Vec<String>;

    /// Short parts of systemd's STATUS line (`mqtt connected`).
    fn summary(&self, status: &Value) -> Vec<String>;
}

/// Stops a component's intake from the agent's stop signal.
pub type IntakeStopper = Box<dyn Fn() + Send + Sync>;

/// A running component.
#[async_trait]
pub trait Component: Send {
    /// Its sinks, named as [`ComponentConfig::sink_names`] said. Taken once.
    fn take_sinks(&mut self) -> Vec<Box<dyn Sink>> {
        Vec::new()
    }

    /// Its part of `/v1/status`, if it has one.
    fn status(&self) -> Option<StatusSection> {
        None
    }

    /// Its local video, if it has cameras (`GET /v1/clips/{txn_id}`).
    fn clips(&self) -> Option<std::sync::Arc<dyn crate::ClipMaker>> {
        None
    }

    /// Tasks that must run until the agent stops; one that ended is stuck work, and
    /// the systemd watchdog stops pinging.
    fn tasks(&self) -> Vec<(String, tokio::task::AbortHandle)> {
        Vec::new()
    }

    /// Stops taking input when the agent starts to stop; what was taken is still
    /// answered.
    fn intake_stopper(&self) -> Option<IntakeStopper> {
        None
    }

    /// Stops, once every sink has drained (a sink may need the component until then:
    /// MQTT alerts publish over the MQTT connection).
    async fn stop(self: Box<Self>) {}
}

/// A component that is only sinks (the archive, Kinesis): nothing to watch or stop
/// apart from what the sink runners do.
#[derive(Default)]
pub struct SinkSet(pub Vec<Box<dyn Sink>>);

impl std::fmt::Debug for SinkSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|s| s.name())).finish()
    }
}

#[async_trait]
impl Component for SinkSet {
    fn take_sinks(&mut self) -> Vec<Box<dyn Sink>> {
        std::mem::take(&mut self.0)
    }
}
