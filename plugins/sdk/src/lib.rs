//! The plugin-facing API of tillgate.
//!
//! Plugins (sinks today, sources later) depend on this crate and never on the agent,
//! so they cannot reach the journal's SQLite connection: they see [`Record`]s handed to
//! them by the agent's sink runner and answer with an acknowledgement. That is how the
//! architecture invariant "plugins do not touch SQLite" holds by construction.
//!
//! Layout: [`record`] (what travels), [`sink`] (the delivery contract), [`units`]
//! (config units shared by the agent and plugins).

pub mod record;
pub mod sink;
pub mod units;

pub use record::{Channel, Record};
pub use sink::{Sink, SinkError};
pub use units::{ByteSize, HumanDuration};
