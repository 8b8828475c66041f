//! Reading a request body under a size limit, keeping the head for a dead letter.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// The body, or how far it got before passing the limit.
pub enum ReadBody {
    Complete(Bytes),
    /// Over `limit`; `head` is the first bytes, for the dead letter.
    TooLarge {
        head: Bytes,
        seen: usize,
        limit: usize,
    },
    /// The whole body did not arrive within the body timeout.
    TimedOut {
        received: usize,
    },
    /// The client went away or sent a broken body.
    Failed(String),
}

/// How much of an over-size body is kept for its dead letter.
const HEAD: usize = crate::journal::DEAD_LETTER_HEAD;

/// Reads `body`, stopping as soon as it is known to exceed `limit`, or when it has not
/// all arrived `timeout` after the headers (a client trickling bytes holds a
/// connection, not the agent).
pub async fn read_limited(mut body: Body, limit: usize, timeout: std::time::Duration) -> ReadBody {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => return ReadBody::TimedOut { received: buf.len() },
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return ReadBody::Failed(e.to_string()),
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                let seen = buf.len() + data.len();
                buf.extend_from_slice(&data[..data.len().min(HEAD.saturating_sub(buf.len()))]);
                buf.truncate(HEAD);
                return ReadBody::TooLarge {
                    head: buf.freeze(),
                    seen,
                    limit,
                };
            }
            buf.extend_from_slice(&data);
        }
    }
    ReadBody::Complete(buf.freeze())
}
