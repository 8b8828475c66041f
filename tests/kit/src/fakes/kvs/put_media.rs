//! PutMedia as the service answers it: the request checked ([`super::auth`]), then the
//! MKV body read as it arrives, each fragment acknowledged (or refused, as the faults
//! say) on the streaming answer.

use super::{error, now_ms, Received, SentAck, State};
use crate::checkers::mkv::{Event as MkvEvent, MkvStream};
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

pub(super) async fn put_media(state: Arc<Mutex<State>>, addr: SocketAddr, request: Request) -> Response {
    let headers = request.headers().clone();
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| addr.to_string(), str::to_string);
    let refuse = |why: &str, status: StatusCode, kind: &str| {
        *state.lock().unwrap().refusals.entry(why.to_string()).or_default() += 1;
        error(status, kind, why)
    };
    let admitted = state.lock().unwrap().auth.admit(&headers, &host);
    let (style, expires) = match admitted {
        Ok(a) => (a.style, a.expires),
        Err(r) => {
            *state.lock().unwrap().refusals.entry(r.reason.to_string()).or_default() += 1;
            eprintln!("fake KVS: PutMedia refused: {}", r.message);
            return error(r.status, r.kind, &r.message);
        }
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let Some(stream) = header("x-amzn-stream-name") else {
        return refuse(
            "no x-amzn-stream-name",
            StatusCode::BAD_REQUEST,
            "InvalidArgumentException",
        );
    };
    if header("x-amzn-fragment-timecode-type").as_deref() != Some("ABSOLUTE")
        && header("x-amzn-fragment-timecode-type").as_deref() != Some("RELATIVE")
    {
        return refuse(
            "x-amzn-fragment-timecode-type",
            StatusCode::BAD_REQUEST,
            "InvalidArgumentException",
        );
    }
    let producer_start = header("x-amzn-producer-start-timestamp").and_then(|v| v.parse::<f64>().ok());
    let Some(producer_start) = producer_start else {
        return refuse(
            "x-amzn-producer-start-timestamp",
            StatusCode::BAD_REQUEST,
            "InvalidArgumentException",
        );
    };
    let connection = {
        let mut s = state.lock().unwrap();
        *s.signatures.entry(style.to_string()).or_default() += 1;
        let Some(st) = s.streams.get_mut(&stream) else {
            drop(s);
            return refuse("stream not found", StatusCode::NOT_FOUND, "ResourceNotFoundException");
        };
        if st.connected {
            drop(s);
            return refuse(
                "second connection",
                StatusCode::BAD_REQUEST,
                "ConnectionLimitExceededException",
            );
        }
        st.connected = true;
        s.next_connection += 1;
        s.next_connection
    };
    let (tx, rx) = mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(256);
    let body = request.into_body();
    tokio::spawn(read_stream(
        state,
        Connection {
            stream,
            id: connection,
            producer_start,
            expires,
        },
        body,
        tx,
    ));
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// One accepted PutMedia request.
struct Connection {
    stream: String,
    id: u64,
    producer_start: f64,
    /// When its credentials expire (the IoT endpoint's keys).
    expires: Option<SystemTime>,
}

impl Connection {
    /// Its credentials expired while it was open: counted and ended.
    fn outlived(&self, state: &Mutex<State>) -> bool {
        let outlived = self.expires.is_some_and(|e| e <= SystemTime::now());
        if outlived {
            eprintln!("fake KVS: connection {} outlived its credentials", self.id);
            state.lock().unwrap().auth.outlived += 1;
        }
        outlived
    }
}

/// Reads one PutMedia body, answering ACKs on `tx` until the stream ends or fails.
async fn read_stream(
    state: Arc<Mutex<State>>,
    connection: Connection,
    body: Body,
    tx: mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
) {
    use http_body_util::BodyExt;
    let stream = connection.stream.clone();
    let producer_start = connection.producer_start;
    let mut body = body;
    let mut mkv = MkvStream::new();
    let mut count = 0usize;
    let epoch = state.lock().unwrap().outage_epoch;
    let send = |event: &str, timecode: Option<u64>, error_id: Option<u32>| {
        let mut s = state.lock().unwrap();
        s.acks.push(SentAck {
            connection: connection.id,
            event: event.into(),
            timecode,
            error_id,
            at: std::time::Instant::now(),
        });
        let mut ack = json!({ "EventType": event });
        if let Some(tc) = timecode {
            ack["FragmentTimecode"] = json!(tc);
        }
        if let Some(id) = error_id {
            ack["ErrorId"] = json!(id);
        } else if timecode.is_some() {
            s.next_fragment_number += 1;
            ack["FragmentNumber"] = json!(format!(
                "{}",
                91_343_852_333_181_432_392_682_062_u128 + s.next_fragment_number
            ));
        }
        bytes::Bytes::from(format!("{ack}\n"))
    };
    'read: loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let s = state.lock().unwrap();
                if s.outage_epoch != epoch || s.faults.outage {
                    break 'read;
                }
                drop(s);
                if connection.outlived(&state) {
                    break 'read;
                }
                continue;
            }
        };
        if connection.outlived(&state) {
            break 'read;
        }
        let Some(Ok(frame)) = frame else { break };
        let Ok(data) = frame.into_data() else { continue };
        let mut events = mkv.feed(&data);
        if producer_start <= 0.0 {
            events = vec![MkvEvent::Error {
                error_id: 4007,
                timecode: None,
                why: "producer start timestamp".into(),
            }];
        }
        for event in events {
            match event {
                MkvEvent::ClusterStarted(tc) => {
                    let ack = send("BUFFERING", Some(tc), None);
                    let _ = tx.send(Ok(ack)).await;
                }
                MkvEvent::Fragment(fragment) => {
                    let tc = fragment.timecode_ms;
                    let faults = state.lock().unwrap().faults.clone();
                    if let Some(id) = faults.error_next {
                        state.lock().unwrap().faults.error_next = None;
                        let ack = send("ERROR", Some(tc), Some(id));
                        let _ = tx.send(Ok(ack)).await;
                        break 'read;
                    }
                    if let Some(id) = faults.refuse_untimed {
                        let refused = {
                            let mut s = state.lock().unwrap();
                            let refused = *s.untimed_target.get_or_insert(tc) == tc;
                            if refused {
                                s.untimed_errors_for.push(tc);
                            }
                            refused
                        };
                        if refused {
                            let ack = send("ERROR", None, Some(id));
                            let _ = tx.send(Ok(ack)).await;
                            break 'read;
                        }
                    }
                    if let Some(id) = faults.error_always {
                        let ack = send("ERROR", Some(tc), Some(id));
                        let _ = tx.send(Ok(ack)).await;
                        break 'read;
                    }
                    if faults.drop_after_fragments.is_some_and(|n| count >= n) {
                        break 'read;
                    }
                    count += 1;
                    // Stored under one lock with the check that the stream still exists
                    // (a deleted one answers 4008, STREAM_NOT_ACTIVE).
                    let retention = {
                        let mut s = state.lock().unwrap();
                        let header = mkv.header_bytes.clone();
                        match s.streams.get_mut(&stream) {
                            Some(st) => {
                                st.header = header;
                                st.fragments.push(Received {
                                    fragment,
                                    connection: connection.id,
                                    received_ms: now_ms(),
                                });
                                Some(st.retention_hours)
                            }
                            None => None,
                        }
                    };
                    let Some(retention) = retention else {
                        let ack = send("ERROR", Some(tc), Some(4008));
                        let _ = tx.send(Ok(ack)).await;
                        break 'read;
                    };
                    let ack = send("RECEIVED", Some(tc), None);
                    let _ = tx.send(Ok(ack)).await;
                    if retention > 0 {
                        if !faults.persist_delay.is_zero() {
                            tokio::time::sleep(faults.persist_delay).await;
                        }
                        let ack = send("PERSISTED", Some(tc), None);
                        let _ = tx.send(Ok(ack)).await;
                    }
                }
                MkvEvent::Error {
                    error_id,
                    timecode,
                    why,
                } => {
                    eprintln!("fake KVS: stream {stream}: ERROR {error_id}: {why}");
                    let ack = send("ERROR", timecode, Some(error_id));
                    let _ = tx.send(Ok(ack)).await;
                    break 'read;
                }
            }
        }
    }
    if let Some(st) = state.lock().unwrap().streams.get_mut(&stream) {
        st.connected = false;
    }
    // Dropping `tx` ends the response.
}
