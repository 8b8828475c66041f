//! Why an upload fails: a connection that ended with an error ([`Failure`], its
//! [`Cause`]), and the refusals each fragment has drawn across connections
//! ([`Failures`]).

use std::collections::HashMap;
use std::time::Duration;

/// ERROR acknowledgements that can be about a fragment (`ErrorId::about_the_fragment`) it
/// draws before it is dead-lettered: a fragment the service keeps refusing cannot hold
/// its camera's upload for ever (each refusal costs a new connection and a backoff).
pub const MAX_FRAGMENT_FAILURES: u32 = 5;

/// ERROR acknowledgements per unacknowledged fragment (start timecode), across
/// connections. Holds only fragments still in the ring.
#[derive(Debug, Default)]
pub(crate) struct Failures(HashMap<u64, u32>);

impl Failures {
    /// Counts one more for `fragment`; returns how many it has drawn. Entries of
    /// fragments that left the ring (acknowledged, evicted) go first.
    pub(crate) fn record(&mut self, fragment: u64, oldest_stored: Option<u64>) -> u32 {
        if let Some(oldest) = oldest_stored {
            self.0.retain(|tc, _| *tc >= oldest);
        }
        let n = self.0.entry(fragment).or_insert(0);
        *n += 1;
        *n
    }

    pub(crate) fn forget(&mut self, fragment: u64) {
        self.0.remove(&fragment);
    }
}

/// A connection that ended with an error, and whether it delivered a fragment first
/// (then the next connection waits only the shortest backoff).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) cause: Cause,
    pub(crate) delivered: bool,
}

/// Why a connection ended with an error (shown as the camera's `upload_error`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Cause {
    /// The control plane (client, stream, data endpoint) or the request could not be
    /// set up.
    #[error("{0}")]
    Setup(String),
    /// Sending failed or the answer ended with an error.
    #[error("{0}")]
    Connection(String),
    /// The service refused the request's credentials or signature (401/403): the
    /// cached credentials are dropped.
    #[error("{0}")]
    Unauthorized(String),
    /// The service closed the connection with fragments unacknowledged.
    #[error("PutMedia connection closed by the service")]
    ClosedByService,
    /// An ERROR acknowledgement that ends the connection.
    #[error("{0}")]
    Refused(String),
    /// ERROR 4008: the stream was deleted; it is looked up (and created) again.
    #[error("{0}")]
    StreamGone(String),
    /// An ERROR no resend helps until an operator acts (the KMS key): the next
    /// connection waits the longest backoff.
    #[error("{0}")]
    Persistent(String),
    /// The oldest fragment in flight had no acknowledgement within `ack_timeout`.
    #[error("no acknowledgement within {} s", .0.as_secs())]
    NoAcknowledgement(Duration),
}

impl Cause {
    /// An ERROR acknowledgement ended the connection (what the service said, not a
    /// broken pipe).
    pub(crate) fn said_by_service(&self) -> bool {
        matches!(
            self,
            Cause::Refused(_) | Cause::StreamGone(_) | Cause::Persistent(_) | Cause::Unauthorized(_)
        )
    }
}

impl Failure {
    pub(crate) fn before_delivery(why: String) -> Failure {
        Failure {
            cause: Cause::Setup(why),
            delivered: false,
        }
    }
}
