//! One PutMedia connection: the request signed with credentials that outlast it, the
//! chunked body being sent, and the answer's chunks as the service streams them (full
//! duplex). What the answer says about the gateway is taken in on the way: its `Date`
//! (the clock signatures use) and a refusal of the credentials (401/403).

use crate::camera::CameraShared;
use crate::failure::Cause;
use crate::kvs::Kvs;
use bytes::Bytes;
use futures_util::StreamExt;
use std::time::{Duration, Instant, SystemTime};
use tillgate_aws::clock::ServiceClock;
use tillgate_sdk::error_chain;
use tokio::sync::mpsc;

/// The least a connection should be able to live on its credentials; credentials that
/// cannot give a connection this much (and a refresh failed) are not used.
const SHORTEST_USEFUL: Duration = Duration::from_secs(10);

/// What the connection task reports.
pub(crate) enum Wire {
    Chunk(Bytes),
    Closed(Result<(), Cause>),
}

/// An open PutMedia request.
pub(crate) struct PutMedia {
    body: Option<mpsc::Sender<Result<Bytes, std::io::Error>>>,
    pub(crate) answer: mpsc::Receiver<Wire>,
    /// When this connection must stop sending so its last acknowledgements arrive before
    /// it reaches KVS's age limit or its credentials expire, and which of the two it is.
    pub(crate) rotate_at: (Instant, RotateFor),
    /// The longest a chunk may wait to go out (a stalled uplink): `drain`.
    stall: Duration,
    _task: AbortOnDrop,
}

/// Why a connection is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub(crate) enum RotateFor {
    /// `video.connection_max_age` (KVS ends connections at 45 minutes).
    Age,
    /// The credentials that signed it expire.
    CredentialsExpiry,
}

impl PutMedia {
    /// Signs the request and starts it; the answer is read by a task of its own.
    /// `drain` is how long the connection needs, after it stops sending, for the last
    /// acknowledgements: it ends that long before its credentials expire.
    pub(crate) async fn open(
        shared: &CameraShared,
        http: &reqwest::Client,
        kvs: &Kvs,
        endpoint: &str,
        drain: Duration,
    ) -> Result<PutMedia, String> {
        let max_age = shared.video.connection_max_age.get();
        let signed = kvs
            .put_media_request(
                endpoint,
                shared.camera.stream_name(),
                SystemTime::now(),
                max_age + drain,
            )
            .await?;
        let opened = Instant::now();
        let mut rotate_at = (opened + max_age, RotateFor::Age);
        if let Some(expire) = signed.credentials_expire {
            // Expiry is on the gateway's clock (the IoT provider moves it there).
            let left = expire.duration_since(SystemTime::now()).unwrap_or_default();
            if left < drain + SHORTEST_USEFUL {
                return Err(format!(
                    "the AWS credentials have {} s left, too little for a PutMedia connection (needs {} s): \
                     a refresh failed (see the log), or the provider hands out credentials this short",
                    left.as_secs(),
                    (drain + SHORTEST_USEFUL).as_secs()
                ));
            }
            let before_expiry = opened + (left - drain);
            if before_expiry < rotate_at.0 {
                rotate_at = (before_expiry, RotateFor::CredentialsExpiry);
            }
        }
        let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
        let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(body_rx));
        let request = signed
            .head
            .body(body)
            .map_err(|e| format!("PutMedia request: {e}"))
            .and_then(|r| reqwest::Request::try_from(r).map_err(|e| format!("PutMedia request: {e}")))?;
        let (wire_tx, answer) = mpsc::channel::<Wire>(64);
        let task = tokio::spawn(read_answer(
            http.clone(),
            request,
            wire_tx,
            kvs.clock.clone(),
            shared.clone(),
        ));
        Ok(PutMedia {
            body: Some(body_tx),
            answer,
            rotate_at,
            stall: drain,
            _task: AbortOnDrop(task),
        })
    }

    /// Queues a chunk of the body; fails when the connection closed, or when the chunk
    /// could not go out within `stall` (the uplink stopped taking bytes: rotation and
    /// the ACK deadline must not wait on it).
    pub(crate) async fn send(&self, bytes: Bytes) -> Result<(), String> {
        let body = self.body.as_ref().ok_or("body closed")?;
        match tokio::time::timeout(self.stall, body.send(Ok(bytes))).await {
            Ok(sent) => sent.map_err(|_| "PutMedia connection closed".to_string()),
            Err(_) => Err(format!("PutMedia stalled: nothing sent for {} s", self.stall.as_secs())),
        }
    }

    /// Ends the chunked body, which ends the connection cleanly, and waits up to 5 s
    /// for the service to close its side.
    pub(crate) async fn finish(&mut self) {
        drop(self.body.take());
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(m) = self.answer.recv().await {
                if matches!(m, Wire::Closed(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Sends the request and forwards the answer's chunks, then how it closed.
async fn read_answer(
    client: reqwest::Client,
    request: reqwest::Request,
    wire: mpsc::Sender<Wire>,
    clock: ServiceClock,
    shared: CameraShared,
) {
    let outcome = async {
        let response = client
            .execute(request)
            .await
            .map_err(|e| Cause::Connection(format!("PutMedia: {}", error_chain(&e))))?;
        // Only KVS's own answers (they carry a request id) set the clock: an error page
        // from a proxy on the way must not.
        let from_kvs = response.headers().contains_key("x-amzn-requestid");
        let date = response.headers().get("date").and_then(|d| d.to_str().ok());
        let clock_moved = match date {
            Some(date) if from_kvs => observe_clock(&clock, date, &shared),
            _ => false,
        };
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let why = format!("PutMedia answered {status}: {}", text.trim());
            return Err(match status.as_u16() {
                // Refused for the signature's time, which this answer's Date just
                // corrected: the credentials are fine.
                401 | 403 if !clock_moved => Cause::Unauthorized(why),
                _ => Cause::Connection(why),
            });
        }
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| Cause::Connection(format!("PutMedia response: {}", error_chain(&e))))?;
            if wire.send(Wire::Chunk(chunk)).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
    .await;
    let _ = wire.send(Wire::Closed(outcome)).await;
}

/// Takes in KVS's `Date`; says so when the gateway's clock turns out to be off. True
/// when the offset changed.
fn observe_clock(clock: &ServiceClock, date: &str, shared: &CameraShared) -> bool {
    let camera = shared.camera.name.as_str();
    let changed = clock.observe(date, SystemTime::now());
    shared
        .metrics
        .clock_skew
        .with_label_values(&[camera])
        .set(clock.skew_ms() as f64 / 1000.0);
    if let Some(skew_ms) = changed {
        let seconds = skew_ms as f64 / 1000.0;
        if skew_ms == 0 {
            tracing::info!(camera, "the gateway's clock agrees with KVS's again");
        } else {
            tracing::warn!(
                camera,
                kvs_ahead_by_s = seconds,
                "the gateway's clock differs from KVS's (its Date header); PutMedia is signed with KVS's time: check NTP"
            );
        }
    }
    changed.is_some()
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
