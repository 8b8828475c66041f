//! tillgate: an edge agent for retail stores.
//!
//! Terminals post every POS transaction; tillgate journals it durably in SQLite, runs
//! first-pass fraud rules and answers allow / review / block within milliseconds, then
//! ships everything to its sinks: the local archive, Kinesis Data Streams, MQTT alerts
//! and the camera tags (plugins under `plugins/`).
//!
//! # Layout
//!
//! - [`config`]: `tillgate.toml`, defaults and validation (errors name key and line).
//! - [`txn`]: the `pos.txn.v1` transaction, validation, the card-number guard.
//! - [`journal`]: the SQLite journal: single writer, group commit, cursors, pruning,
//!   dead letters, the size budget. The only module that touches SQLite.
//! - [`rules`]: rule files, conditions and the decision.
//! - [`sinks`]: the runner that feeds each sink from its cursor.
//! - [`components`]: where every plugin is registered (one line each, which also
//!   gives `Config` its section): the enabled components of a config and how their
//!   status sections read.
//! - [`intake`]: what HTTP and source plugins (MQTT) share: parsing, the answer, the
//!   refusal code, the dead letter.
//! - [`http`]: the decision endpoint, health, metrics, status, and its own accept loop
//!   with the connection limits.
//! - [`metrics`]: the Prometheus registry.
//! - [`status`]: what `/v1/status` and `tillgate status` report.
//! - [`systemd`]: READY, STATUS, RELOADING, STOPPING and the watchdog.
//! - [`agent`]: wiring and the shutdown drain.
//! - [`simulate`]: the POS load generator used by `tillgate simulate` and `tillgate demo`.
//! - [`cli`]: the command line.

pub mod agent;
pub mod cli;
pub mod components;
pub mod config;
pub mod http;
pub mod intake;
pub mod journal;
pub mod metrics;
pub mod rules;
pub mod simulate;
pub mod sinks;
pub mod status;
pub mod systemd;
pub mod txn;
