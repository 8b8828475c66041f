//! The plugin-facing API of tillgate.
//!
//! Plugins (sinks and sources) depend on this crate and never on the agent,
//! so they cannot reach the journal's SQLite connection: sinks see [`Record`]s handed to
//! them by the agent's sink runner and answer with an acknowledgement; sources hand raw
//! input to [`Ingest`] and get a durable [`Verdict`]. That is how the
//! architecture invariant "plugins do not touch SQLite" holds by construction.
//!
//! Layout: [`component`] (how a plugin is configured, started, watched and stopped),
//! [`record`] (what travels), [`sink`] (the delivery contract for sinks),
//! [`ingest`] (the intake contract for sources), [`pan`] (the card-number guard every
//! component that quotes input uses), [`clips`] (local video the API serves), [`units`]
//! and [`secret`] (config types shared by the agent and plugins).

pub mod backoff;
pub mod clips;
pub mod component;
mod config_error;
mod error_chain;
pub mod ingest;
pub mod pan;
pub mod record;
pub mod secret;
pub mod sink;
pub mod units;

pub use backoff::Backoff;
pub use clips::{ClipBytes, ClipFailure, ClipMaker, ClipRequest};
pub use component::{
    CheckContext, Component, ComponentConfig, SinkSet, StartContext, StatusSection, StatusView, VideoCoverage,
    VideoEvents,
};
pub use config_error::ConfigError;
pub use error_chain::error_chain;
pub use ingest::{Ingest, PendingVerdict, Submission, Verdict};
pub use record::{Channel, Record};
pub use secret::Secret;
pub use sink::{Sink, SinkError};
pub use units::{ByteSize, HumanDuration};
