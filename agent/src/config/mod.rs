//! `tillgate.toml`: the whole configuration, its defaults and its validation.
//!
//! Every struct denies unknown fields, so a typo is an error naming the key and line,
//! never a silent default. `config/tillgate.toml` documents every option.

mod load;
mod validate;

#[cfg(test)]
mod tests;

pub use load::{key_position, load_file, load_str, parse_toml, ConfigError};
pub use tillgate_sdk::Secret;

use serde::Deserialize;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use tillgate_archive::ArchiveConfig;
use tillgate_sdk::{ByteSize, HumanDuration};

/// Declares [`Config`]: the agent's own sections, then one per registered component
/// (`crate::components::registry!`).
macro_rules! config_with_components {
    ($($(#[cfg($on:meta)])? $section:ident: $config:ty,)*) => {
        /// The root of `tillgate.toml`.
        #[derive(Debug, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Config {
            /// Journal, archive and other state live here.
            #[serde(default = "default_data_dir")]
            pub data_dir: PathBuf,
            #[serde(default)]
            pub log: LogConfig,
            #[serde(default)]
            pub intake: IntakeConfig,
            #[serde(default)]
            pub http: HttpConfig,
            #[serde(default)]
            pub journal: JournalConfig,
            #[serde(default)]
            pub rules: RulesConfig,
            #[serde(default)]
            pub sinks: SinksConfig,
            $(
                #[doc = concat!("`[", stringify!($section), "]`; absent means none.")]
                $(#[cfg($on)])?
                #[serde(default)]
                pub $section: Option<$config>,
            )*
            /// Without the `video` feature, a `[video]` section is an error naming the
            /// build.
            #[cfg(not(feature = "video"))]
            #[serde(default)]
            pub video: Option<toml::Value>,
            #[serde(default)]
            pub shutdown: ShutdownConfig,
        }
    };
}
crate::components::registry!(config_with_components);

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/tillgate")
}

impl Config {
    /// A path from the config: relative ones are below `data_dir`.
    pub fn data_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.data_dir.join(p)
        }
    }

    /// The archive sink's config with its directory resolved, if the archive is enabled.
    pub fn archive(&self) -> Option<ArchiveConfig> {
        let mut a = self.sinks.archive.clone().unwrap_or_default();
        if !a.enabled {
            return None;
        }
        a.dir = self.data_path(&a.dir);
        Some(a)
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `tillgate=debug,info`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` for people, `json` for log shippers.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
            format: LogFormat::Text,
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[intake]`: limits every source (HTTP, MQTT) shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// Largest transaction document: one HTTP body, one NDJSON line, one MQTT payload.
    /// A larger one is refused (413 / the error topic) and dead-lettered (head only).
    #[serde(default = "default_max_txn")]
    pub max_txn_bytes: ByteSize,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            max_txn_bytes: default_max_txn(),
        }
    }
}

fn default_max_txn() -> ByteSize {
    ByteSize::kib(64)
}

/// `[http]`: the decision endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on. Anything but loopback requires `token`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer token terminals must send (`Authorization: Bearer …`).
    #[serde(default)]
    pub token: Option<Secret>,
    /// Largest request body (an NDJSON batch); a single transaction is capped by
    /// `intake.max_txn_bytes`.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: ByteSize,
    /// A request's headers must arrive within this, from its first byte.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: HumanDuration,
    /// A request's body must arrive within this, from the end of its headers.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: HumanDuration,
    /// A connection with no request in progress and nothing sent for this long is
    /// closed (kept-alive terminals reconnect).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Open connections at most; more wait in the listen backlog until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Lines of one NDJSON batch at most: a batch of many tiny lines costs memory per
    /// line (its answer), not per byte.
    #[serde(default = "default_max_batch_lines")]
    pub max_batch_lines: usize,
    /// NDJSON batches read and decided at the same time at most (each may hold up to
    /// `max_body_bytes`); more wait their turn.
    #[serde(default = "default_max_concurrent_batches")]
    pub max_concurrent_batches: usize,
    /// On shutdown, requests in progress get this long to be answered; then their
    /// connections are closed. Part of `shutdown.drain_timeout` (and never longer).
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: HumanDuration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            token: None,
            max_body_bytes: default_max_body(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_concurrent_batches: default_max_concurrent_batches(),
            max_batch_lines: default_max_batch_lines(),
            shutdown_grace: default_shutdown_grace(),
        }
    }
}

fn default_header_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}
fn default_body_timeout() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_idle_timeout() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_max_connections() -> usize {
    512
}
fn default_max_batch_lines() -> usize {
    20_000
}
fn default_max_concurrent_batches() -> usize {
    4
}
fn default_shutdown_grace() -> HumanDuration {
    HumanDuration::secs(5)
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("literal address")
}
fn default_max_body() -> ByteSize {
    ByteSize::mib(8)
}

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// An answer waits for an fdatasync of the WAL after its commit (what SQLite's
    /// `synchronous=FULL` does, made on the journal's sync thread): survives power loss.
    #[default]
    Fsync,
    /// No fsync before the answer (`synchronous=NORMAL`): survives a crash of the agent,
    /// not of the machine.
    Os,
}

/// What to do when the journal reaches `max_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Refuse new input (HTTP 503, no acknowledgement); nothing journaled is lost.
    #[default]
    Refuse,
    /// Delete the oldest rows, even unsent ones; counted in metrics and status.
    EvictOldest,
}

/// `[journal]`: the SQLite journal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// Database file; relative to `data_dir`.
    #[serde(default = "default_journal_path")]
    pub path: PathBuf,
    #[serde(default)]
    pub durability: Durability,
    /// A group commit closes at this many transactions...
    #[serde(default = "default_batch_rows")]
    pub max_batch_rows: usize,
    /// ...or after this long waiting for more; 0 commits whatever queued during the last
    /// commit, which is the lowest latency.
    #[serde(default)]
    pub max_batch_delay: HumanDuration,
    /// Size budget for the journal file.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    #[serde(default)]
    pub on_full: OnFull,
    /// Rows stay at least this long after every sink has passed them.
    #[serde(default = "default_retention")]
    pub retention: HumanDuration,
    /// A repeated txn_id within this window gets the first decision back.
    #[serde(default = "default_retention")]
    pub idempotency_window: HumanDuration,
    /// Dead letters are kept this long.
    #[serde(default = "default_dead_letter_retention")]
    pub dead_letter_retention: HumanDuration,
    /// Dead letters' own budget (not part of `max_bytes`): over it the oldest go.
    #[serde(default = "default_dead_letter_max_bytes")]
    pub dead_letter_max_bytes: ByteSize,
    /// How often shipped rows past retention are deleted.
    #[serde(default = "default_prune_interval")]
    pub prune_interval: HumanDuration,
    /// The rules' state is snapshotted into the journal after this many transactions...
    #[serde(default = "default_rule_snapshot_transactions")]
    pub rule_snapshot_transactions: NonZeroU64,
    /// ...or this long after the last snapshot (if anything was decided since).
    #[serde(default = "default_rule_snapshot_interval")]
    pub rule_snapshot_interval: HumanDuration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            path: default_journal_path(),
            durability: Durability::Fsync,
            max_batch_rows: default_batch_rows(),
            max_batch_delay: HumanDuration::default(),
            max_bytes: default_max_bytes(),
            on_full: OnFull::Refuse,
            retention: default_retention(),
            idempotency_window: default_retention(),
            dead_letter_retention: default_dead_letter_retention(),
            dead_letter_max_bytes: default_dead_letter_max_bytes(),
            prune_interval: default_prune_interval(),
            rule_snapshot_transactions: default_rule_snapshot_transactions(),
            rule_snapshot_interval: default_rule_snapshot_interval(),
        }
    }
}

fn default_journal_path() -> PathBuf {
    PathBuf::from("journal.db")
}
fn default_batch_rows() -> usize {
    512
}
fn default_max_bytes() -> ByteSize {
    ByteSize::gib(2)
}
fn default_retention() -> HumanDuration {
    HumanDuration::secs(24 * 3600)
}
fn default_dead_letter_retention() -> HumanDuration {
    HumanDuration::secs(30 * 24 * 3600)
}
fn default_dead_letter_max_bytes() -> ByteSize {
    ByteSize::mib(64)
}
fn default_rule_snapshot_transactions() -> NonZeroU64 {
    NonZeroU64::new(50_000).expect("not zero")
}
fn default_rule_snapshot_interval() -> HumanDuration {
    HumanDuration::secs(300)
}
fn default_prune_interval() -> HumanDuration {
    HumanDuration::secs(10)
}

/// `[rules]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Rule files, or directories of `*.toml` rule files; relative to the config file.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// How much journal a restart replays for rules that count the last N events
    /// (time windows replay exactly their width plus lateness).
    #[serde(default = "default_count_window_replay")]
    pub count_window_replay: HumanDuration,
}

fn default_count_window_replay() -> HumanDuration {
    HumanDuration::secs(24 * 3600)
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            paths: Vec::new(),
            count_window_replay: default_count_window_replay(),
        }
    }
}

/// `[sinks]`: delivery settings shared by every sink, and the sinks themselves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// Most records handed to a sink in one shipment.
    #[serde(default = "default_sink_batch")]
    pub batch_records: usize,
    /// First retry delay after a failed shipment; doubles up to `retry_max_backoff`.
    #[serde(default = "default_retry_initial")]
    pub retry_initial_backoff: HumanDuration,
    #[serde(default = "default_retry_max")]
    pub retry_max_backoff: HumanDuration,
    /// The local archive; on by default.
    #[serde(default)]
    pub archive: Option<ArchiveConfig>,
}

impl Default for SinksConfig {
    fn default() -> Self {
        SinksConfig {
            batch_records: default_sink_batch(),
            retry_initial_backoff: default_retry_initial(),
            retry_max_backoff: default_retry_max(),
            archive: None,
        }
    }
}

fn default_sink_batch() -> usize {
    1000
}
fn default_retry_initial() -> HumanDuration {
    HumanDuration::millis(200)
}
fn default_retry_max() -> HumanDuration {
    HumanDuration::secs(30)
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// On SIGTERM, sinks get this long to ship the backlog before the agent exits.
    #[serde(default = "default_drain")]
    pub drain_timeout: HumanDuration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout: default_drain(),
        }
    }
}

fn default_drain() -> HumanDuration {
    HumanDuration::secs(10)
}
