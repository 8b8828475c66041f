//! tillgate: an edge agent for retail stores.
//!
//! Terminals post every POS transaction; tillgate journals it durably in SQLite, runs
//! first-pass fraud rules and answers allow / review / block within milliseconds, then
//! ships everything to its sinks (a local archive today; Kinesis and others as plugins).
//!
//! # Layout
//!
//! - [`config`]: `tillgate.toml`, defaults and validation (errors name key and line).
//! - [`txn`]: the `pos.txn.v1` transaction, validation, the card-number guard.
//! - [`journal`]: the SQLite journal: single writer, group commit, cursors, pruning,
//!   dead letters, the size budget. The only module that touches SQLite.
//! - [`rules`]: rule files, conditions and the decision.
//! - [`sinks`]: the runner that feeds each sink from its cursor.
//! - [`http`]: the decision endpoint, health, metrics, status.
//! - [`agent`]: wiring and the shutdown drain.
//! - [`simulate`]: the POS load generator used by `tillgate simulate` and `tillgate demo`.
//! - [`cli`]: the command line.

pub mod agent;
pub mod cli;
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
