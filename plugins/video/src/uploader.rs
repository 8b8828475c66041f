//! One camera's uploader: the ring's fragments, oldest first, over one long-lived
//! PutMedia connection. A fragment leaves the ring only when KVS acknowledges it
//! (PERSISTED, or RECEIVED for a stream that keeps no data); after any failure a new
//! connection starts again from the first unacknowledged fragment, with its original
//! timecodes. Connections are rotated before KVS's 45-minute limit and before the
//! credentials that signed them expire (see [`crate::put_media`]), and sending keeps
//! within KVS's 5 fragments/s and 12.5 MB/s per stream.

use crate::ack::{Ack, AckReader, Event};
use crate::camera::CameraShared;
use crate::error_ids::{self, ErrorAction};
pub use crate::failure::MAX_FRAGMENT_FAILURES;
use crate::failure::{Cause, Failure, Failures};
use crate::kvs::{Kvs, StreamInfo};
use crate::mkv;
use crate::put_media::{PutMedia, Wire};
use crate::status::UploadState;
use crate::store::Stored;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tillgate_aws::limiter::ShardBudget;
use tillgate_sdk::Backoff;
use tokio::sync::watch;

/// How a connection ended without error.
enum End {
    Rotated,
    /// The service ended the connection with nothing unacknowledged (idle).
    Closed,
    Stopped,
}

/// State kept across connections.
struct Uplink {
    kvs: Option<Kvs>,
    stream: Option<StreamInfo>,
    endpoint: Option<String>,
    http: reqwest::Client,
    budget: ShardBudget,
    failures: Failures,
}

/// Runs until `stop` turns true. A camera that uploads nothing has nothing to do.
pub async fn run(shared: CameraShared, mut stop: watch::Receiver<bool>) {
    if shared.store.mode() == crate::config::UploadMode::Off {
        return;
    }
    let http = match tillgate_aws::https::client_builder()
        .http1_only()
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            shared
                .status
                .update(|s| s.upload_error = Some(format!("HTTP client: {e}")));
            return;
        }
    };
    let mut uplink = Uplink {
        kvs: None,
        stream: None,
        endpoint: None,
        http,
        budget: ShardBudget::new(
            shared.video.max_fragments_per_second,
            shared.video.max_bytes_per_second.get() as f64,
        ),
        failures: Failures::default(),
    };
    let mut backoff = Backoff::new(
        shared.video.retry_initial_backoff.get(),
        shared.video.retry_max_backoff.get(),
    );
    loop {
        while shared.store.next_after(None).is_none() {
            shared.status.update(|s| s.upload = UploadState::Idle);
            tokio::select! {
                _ = shared.stored.notified() => {}
                _ = stop.changed() => return,
            }
        }
        match session(&shared, &mut uplink, &mut stop).await {
            Ok(End::Stopped) => return,
            Ok(end @ (End::Rotated | End::Closed)) => {
                let outcome = if matches!(end, End::Rotated) {
                    "rotated"
                } else {
                    "closed"
                };
                shared
                    .metrics
                    .connections
                    .with_label_values(&[shared.camera.name.as_str(), outcome])
                    .inc();
                backoff.reset();
            }
            Err(Failure { cause, delivered }) => {
                tracing::warn!(camera = %shared.camera.name, error = %cause, "PutMedia connection ended; resending from the first unacknowledged fragment");
                shared.status.update(|s| {
                    s.upload = UploadState::Retrying;
                    s.upload_error = Some(cause.to_string());
                });
                shared
                    .metrics
                    .connections
                    .with_label_values(&[shared.camera.name.as_str(), "failed"])
                    .inc();
                // Ask for the data endpoint again: the failure may be a moved endpoint.
                uplink.endpoint = None;
                if let (Cause::Unauthorized(_), Some(kvs)) = (&cause, &uplink.kvs) {
                    // Refused credentials (revoked, or expired by KVS's clock) are
                    // never used again: the next connection fetches new ones.
                    kvs.credentials.invalidate().await;
                }
                if matches!(cause, Cause::StreamGone(_) | Cause::Setup(_)) {
                    // A deleted stream (4008, or not found while setting up): look it
                    // up again, and create it when allowed.
                    uplink.stream = None;
                }
                if delivered {
                    backoff.reset();
                }
                let wait = if matches!(cause, Cause::Persistent(_)) {
                    shared.video.retry_max_backoff.get()
                } else {
                    backoff.next_wait()
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// Control plane: client, stream, data endpoint (each kept once obtained).
async fn prepare(shared: &CameraShared, uplink: &mut Uplink) -> Result<(Kvs, String, StreamInfo), String> {
    if uplink.kvs.is_none() {
        uplink.kvs = Some(Kvs::connect(&shared.video).await?);
    }
    let kvs = uplink.kvs.clone().ok_or("no client")?;
    let name = shared.camera.stream_name();
    if uplink.stream.is_none() {
        uplink.stream = Some(
            kvs.ensure_stream(name, shared.video.create_streams, shared.video.data_retention_hours)
                .await?,
        );
    }
    if uplink.endpoint.is_none() {
        uplink.endpoint = Some(kvs.data_endpoint(name).await?);
    }
    let endpoint = uplink.endpoint.clone().ok_or("no endpoint")?;
    let info = uplink.stream.ok_or("no stream")?;
    Ok((kvs, endpoint, info))
}

/// One PutMedia connection, from the first unacknowledged fragment until it rotates,
/// ends, fails or the camera stops.
async fn session(shared: &CameraShared, uplink: &mut Uplink, stop: &mut watch::Receiver<bool>) -> Result<End, Failure> {
    shared.status.update(|s| s.upload = UploadState::Connecting);
    let (kvs, endpoint, info) = prepare(shared, uplink).await.map_err(Failure::before_delivery)?;
    let ack_timeout = shared.video.ack_timeout.get();
    // After it stops sending, a connection waits for its last acknowledgements: at most
    // `ack_timeout`, and a few seconds to close.
    let drain = ack_timeout + Duration::from_secs(5);
    let mut put = PutMedia::open(shared, &uplink.http, &kvs, &endpoint, drain)
        .await
        .map_err(Failure::before_delivery)?;
    shared
        .metrics
        .connections
        .with_label_values(&[shared.camera.name.as_str(), "opened"])
        .inc();
    shared.status.update(|s| {
        s.upload = UploadState::Streaming;
        s.upload_error = None;
    });
    let (rotate_at, rotate_for) = put.rotate_at;
    let mut progress = Progress::new(if info.retention_hours == 0 {
        Event::Received
    } else {
        Event::Persisted
    });
    loop {
        if !progress.rotating && Instant::now() >= rotate_at {
            let reason: &str = rotate_for.into();
            tracing::info!(camera = %shared.camera.name, reason, "rotating the PutMedia connection");
            progress.rotating = true;
        }
        if progress.rotating && progress.in_flight.is_empty() {
            put.finish().await;
            return Ok(End::Rotated);
        }
        let next = if progress.rotating {
            None
        } else {
            shared.store.next_after(progress.last_sent)
        };
        let delay = next
            .as_ref()
            .map(|n| uplink.budget.delay(1, n.bytes as usize, Instant::now()));
        let ack_deadline = progress.in_flight.front().map(|f| f.sent + ack_timeout);
        tokio::select! {
            _ = async { tokio::time::sleep(delay.unwrap_or_default()).await }, if next.is_some() => {
                let Some(fragment) = next else { continue };
                if let Err(failed) = progress.send(shared, uplink, &put, fragment).await {
                    return Err(progress.last_word(shared, &mut put, &mut uplink.failures, failed).await);
                }
            }
            message = put.answer.recv() => {
                if let Some(end) = progress.on_answer(shared, message, &mut uplink.failures) {
                    return end;
                }
            }
            _ = shared.stored.notified(), if next.is_none() && !progress.rotating => {}
            _ = tokio::time::sleep_until(rotate_at.into()), if !progress.rotating => {}
            _ = async { tokio::time::sleep_until(ack_deadline.unwrap_or_else(Instant::now).into()).await }, if ack_deadline.is_some() => {
                return Err(progress.failure(Cause::NoAcknowledgement(ack_timeout)));
            }
            _ = stop.changed() => return Ok(End::Stopped),
        }
    }
}

/// A fragment sent on this connection and not yet finally acknowledged.
struct InFlight {
    /// Its start timecode, which names it in acknowledgements.
    start: u64,
    sent: Instant,
    /// RECEIVED came (the service has it whole); PERSISTED may still be due.
    received: bool,
}

/// Where one connection is: what was sent, what waits for its acknowledgement.
struct Progress {
    /// The acknowledgement that lets a fragment leave the ring.
    final_event: Event,
    /// The MKV header this connection started with.
    header_sent: Option<Bytes>,
    last_sent: Option<u64>,
    /// Sent fragments (start timecode, when sent) not yet acknowledged.
    in_flight: VecDeque<InFlight>,
    reader: AckReader,
    /// No new fragment goes out; the connection ends once `in_flight` is empty.
    rotating: bool,
    /// Some fragment reached `final_event` on this connection.
    delivered: bool,
}

impl Progress {
    fn new(final_event: Event) -> Self {
        Progress {
            final_event,
            header_sent: None,
            last_sent: None,
            in_flight: VecDeque::new(),
            reader: AckReader::default(),
            rotating: false,
            delivered: false,
        }
    }

    fn failure(&self, cause: Cause) -> Failure {
        Failure {
            cause,
            delivered: self.delivered,
        }
    }

    /// Sends one fragment from the ring (its header first on a new connection).
    async fn send(
        &mut self,
        shared: &CameraShared,
        uplink: &mut Uplink,
        put: &PutMedia,
        fragment: Stored,
    ) -> Result<(), Failure> {
        let camera = shared.camera.name.as_str();
        let path = fragment.path.clone();
        let Ok(Ok(bytes)) = tokio::task::spawn_blocking(move || std::fs::read(path)).await else {
            // Evicted or dead-lettered meanwhile: go on with the next.
            self.last_sent = Some(fragment.start_ms);
            return Ok(());
        };
        let Some(split) = mkv::header_len(&bytes) else {
            let _ = shared
                .store
                .dead_letter(fragment.start_ms, "not a tillgate fragment file (no header)");
            shared.metrics.fragments_dead.with_label_values(&[camera]).inc();
            return Ok(());
        };
        // One buffer, sliced: the fragment's bytes are not copied again.
        let bytes = Bytes::from(bytes);
        let (header, body) = (bytes.slice(..split), bytes.slice(split..));
        if self.header_sent.as_ref().is_some_and(|h| *h != header) {
            // New codec data: a new connection starts with the new header.
            self.rotating = true;
            return Ok(());
        }
        if self.header_sent.is_none() {
            self.header_sent = Some(header.clone());
            put.send(header).await.map_err(|e| self.failure(Cause::Connection(e)))?;
        }
        uplink.budget.take(1, bytes.len(), Instant::now());
        put.send(body).await.map_err(|e| self.failure(Cause::Connection(e)))?;
        self.last_sent = Some(fragment.start_ms);
        self.in_flight.push_back(InFlight {
            start: fragment.start_ms,
            sent: Instant::now(),
            received: false,
        });
        shared.metrics.fragments_sent.with_label_values(&[camera]).inc();
        shared.status.update(|s| s.fragments_sent += 1);
        Ok(())
    }

    /// After a send failed: what the service answered before it closed, read for up to
    /// a second. KVS sends an ERROR and closes; the ERROR (which counts against the
    /// fragment) says more than the broken pipe, and must not be lost with it.
    async fn last_word(
        &mut self,
        shared: &CameraShared,
        put: &mut PutMedia,
        failures: &mut Failures,
        failed: Failure,
    ) -> Failure {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(message) = tokio::time::timeout_at(deadline, put.answer.recv()).await {
            let last = !matches!(message, Some(Wire::Chunk(_)));
            if let Some(Err(refused)) = self.on_answer(shared, message, failures) {
                if refused.cause.said_by_service() {
                    return refused;
                }
            }
            if last {
                break;
            }
        }
        Failure {
            delivered: failed.delivered || self.delivered,
            ..failed
        }
    }

    /// Applies what the answer brought; `Some` when the connection is over.
    fn on_answer(
        &mut self,
        shared: &CameraShared,
        message: Option<Wire>,
        failures: &mut Failures,
    ) -> Option<Result<End, Failure>> {
        match message {
            Some(Wire::Chunk(chunk)) => {
                for line in self.reader.feed(&chunk) {
                    match line {
                        Ok(a) => {
                            if let Some(cause) = handle_ack(shared, &a, self.final_event, &mut self.in_flight, failures)
                            {
                                return Some(Err(self.failure(cause)));
                            }
                            self.delivered |= a.event == self.final_event;
                        }
                        Err(text) => {
                            tracing::warn!(camera = %shared.camera.name, line = %text, "unreadable PutMedia acknowledgement")
                        }
                    }
                }
                None
            }
            // KVS ends a connection that carried no data for 30 s (IDLE ACKs first):
            // with nothing unacknowledged that is not a failure.
            Some(Wire::Closed(Ok(()))) | None if self.in_flight.is_empty() => {
                Some(Ok(if self.rotating { End::Rotated } else { End::Closed }))
            }
            Some(Wire::Closed(Ok(()))) | None => Some(Err(self.failure(Cause::ClosedByService))),
            Some(Wire::Closed(Err(cause))) => Some(Err(self.failure(cause))),
        }
    }
}

/// Applies one ACK; `Some(why)` when the connection must be replaced.
fn handle_ack(
    shared: &CameraShared,
    a: &Ack,
    final_event: Event,
    in_flight: &mut VecDeque<InFlight>,
    failures: &mut Failures,
) -> Option<Cause> {
    let camera = shared.camera.name.as_str();
    match a.event {
        Event::Buffering | Event::Idle => None,
        Event::Received | Event::Persisted => {
            let label = if a.event == Event::Received {
                "received"
            } else {
                "persisted"
            };
            shared.metrics.fragments_acked.with_label_values(&[camera, label]).inc();
            let tc = a.timecode?;
            if let Some(f) = in_flight.iter_mut().find(|f| f.start == tc) {
                f.received = true;
            }
            if a.event == final_event {
                in_flight.retain(|f| f.start != tc);
                failures.forget(tc);
                match shared.store.remove(tc) {
                    Ok(true) => {
                        shared.status.update(|s| s.fragments_acknowledged += 1);
                        shared.publish_backlog();
                    }
                    Ok(false) => tracing::debug!(camera, tc, "acknowledgement for a fragment no longer stored"),
                    Err(e) => tracing::warn!(camera, tc, error = %e, "cannot delete an acknowledged fragment"),
                }
            }
            None
        }
        Event::Error => on_error(shared, a, in_flight, failures),
    }
}

/// An ERROR acknowledgement: counted; the fragment it names dead-lettered when resending
/// cannot help or it has drawn [`MAX_FRAGMENT_FAILURES`] errors that can be about a
/// fragment (not the service's, the connection's, the stream's or the KMS key's: those
/// only reconnect); `Some(cause)` when the connection must be replaced. One without a
/// timecode is the oldest sent fragment not yet RECEIVED: the service works through
/// fragments in sending order.
fn on_error(
    shared: &CameraShared,
    a: &Ack,
    in_flight: &mut VecDeque<InFlight>,
    failures: &mut Failures,
) -> Option<Cause> {
    let camera = shared.camera.name.as_str();
    let id = a.error_id.unwrap_or(0);
    let error = error_ids::describe(id);
    shared
        .metrics
        .ack_errors
        .with_label_values(&[camera, &id.to_string()])
        .inc();
    shared.status.update(|s| *s.errors.entry(id).or_default() += 1);
    let tc = a
        .timecode
        .or_else(|| in_flight.iter().find(|f| !f.received).map(|f| f.start));
    let why = format!(
        "KVS error {id} ({}) for fragment {}",
        error.meaning,
        tc.map_or("?".into(), |t| t.to_string())
    );
    tracing::warn!(camera, error_id = id, fragment = ?tc, named = a.timecode.is_some(), remedy = error.remedy, "{why}");
    match error.action {
        ErrorAction::StreamGone => return Some(Cause::StreamGone(error.status_line())),
        ErrorAction::Persistent => return Some(Cause::Persistent(error.status_line())),
        ErrorAction::DeadLetter | ErrorAction::Reconnect => {}
    }
    let Some(tc) = tc else {
        return Some(Cause::Refused(why));
    };
    if !error.about_the_fragment() {
        // The service or the connection failed, not the fragment: resend it.
        return Some(Cause::Refused(why));
    }
    let failed = failures.record(tc, shared.store.next_after(None).map(|s| s.start_ms));
    // A guessed fragment is not dead-lettered on the first refusal: it is resent, and
    // goes once it has drawn the most failures allowed.
    let refused = error.action == ErrorAction::DeadLetter && a.timecode.is_some();
    if !refused && failed < MAX_FRAGMENT_FAILURES {
        return Some(Cause::Refused(why));
    }
    let reason = if refused {
        why.clone()
    } else {
        format!("{why}; refused {failed} times")
    };
    in_flight.retain(|f| f.start != tc);
    failures.forget(tc);
    if let Ok(Some(path)) = shared.store.dead_letter(tc, &reason) {
        tracing::error!(camera, path = %path.display(), "KVS refused a fragment; kept in dead/");
        shared.metrics.fragments_dead.with_label_values(&[camera]).inc();
        shared.status.update(|s| {
            s.fragments_dead += 1;
            s.upload_error = Some(reason.clone());
        });
        shared.publish_backlog();
    }
    // A connection-level error still ends this connection.
    (error.action == ErrorAction::Reconnect).then_some(Cause::Refused(why))
}
