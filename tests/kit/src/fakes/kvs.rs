//! A local Kinesis Video Streams endpoint, because no public emulator implements
//! PutMedia. Control plane (REST-JSON): CreateStream, DescribeStream, GetDataEndpoint
//! (returning its own address for PUT_MEDIA and GET_IMAGES). PutMedia: checks the SigV4 signature (body hashed as
//! empty, like the C SDK, or UNSIGNED-PAYLOAD, like the Java SDK) and the PutMedia
//! headers, reads the MKV stream as it arrives ([`crate::checkers::mkv`]) with the
//! service's rules, answers BUFFERING / RECEIVED / PERSISTED (or ERROR with the real
//! ErrorIds, then closes), allows one connection per stream, and keeps every fragment
//! for inspection. Faults: outage (connections dropped and refused), a connection
//! dropped after N fragments, delayed PERSISTED, an error ACK for the next fragment.
//! Credentials and clock ([`auth`]): the IoT endpoint's keys only, revoked keys, a
//! service clock apart from the gateway's, connections that outlive their credentials
//! ended and counted. GetImages on the received video: [`images`].

use crate::checkers::mkv::ParsedFragment;
use crate::fakes::iot::IssuedKeys;
use crate::fakes::outage::OutageListener;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

mod auth;
mod images;
mod put_media;
pub use images::ServedImage;
use put_media::put_media;

/// The secret the fake accepts (with any access key id from [`ACCESS_KEY`]).
pub const ACCESS_KEY: &str = "AKIDTEST";
pub const SECRET_KEY: &str = "secret";

/// Faults to inject.
#[derive(Debug, Clone, Default)]
pub struct KvsFaults {
    /// Drop every PutMedia connection and refuse new ones.
    pub outage: bool,
    /// Close each connection after this many fragments (without acknowledging the last).
    pub drop_after_fragments: Option<usize>,
    /// Wait this long before PERSISTED.
    pub persist_delay: Duration,
    /// Answer the next fragment with ERROR and this ErrorId, then close.
    pub error_next: Option<u32>,
    /// Answer the next fragment, and that fragment whenever it is sent again, with
    /// ERROR and this ErrorId but no FragmentTimecode (as KVS does for some errors),
    /// closing after each.
    pub refuse_untimed: Option<u32>,
    /// Answer every fragment with ERROR and this ErrorId (its timecode named), then
    /// close: a condition that lasts (a disabled KMS key) until the fault is cleared.
    pub error_always: Option<u32>,
}

/// A fragment as the endpoint stored it.
#[derive(Debug, Clone)]
pub struct Received {
    pub fragment: ParsedFragment,
    pub connection: u64,
    pub received_ms: i64,
}

/// An ACK the endpoint sent.
#[derive(Debug, Clone)]
pub struct SentAck {
    pub connection: u64,
    pub event: String,
    pub timecode: Option<u64>,
    pub error_id: Option<u32>,
    /// When it was sent.
    pub at: std::time::Instant,
}

#[derive(Debug, Default)]
struct Stream {
    retention_hours: u32,
    fragments: Vec<Received>,
    header: Vec<u8>,
    connected: bool,
}

#[derive(Debug, Default)]
struct State {
    streams: BTreeMap<String, Stream>,
    faults: KvsFaults,
    next_connection: u64,
    next_fragment_number: u128,
    acks: Vec<SentAck>,
    /// Requests refused, by reason.
    refusals: HashMap<String, u64>,
    signatures: HashMap<String, u64>,
    outage_epoch: u64,
    /// The fragment `refuse_untimed` refuses: the first one it saw.
    untimed_target: Option<u64>,
    /// Each refusal `refuse_untimed` made, by the fragment's timecode.
    untimed_errors_for: Vec<u64>,
    served_images: Vec<ServedImage>,
    auth: auth::Auth,
}

/// The running endpoint.
#[derive(Debug, Clone)]
pub struct FakeKvs {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [("x-amzn-errortype", kind), ("content-type", "application/json")],
        json!({ "message": message, "__type": kind }).to_string(),
    )
        .into_response()
}

impl FakeKvs {
    pub async fn start() -> FakeKvs {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let s1 = state.clone();
        let s2 = state.clone();
        let s3 = state.clone();
        let s4 = state.clone();
        let images = FakeKvs {
            addr,
            state: state.clone(),
        };
        let app = Router::new()
            .route(
                "/createStream",
                post(move |Json(body): Json<Value>| async move { create(&s1, body) }),
            )
            .route(
                "/describeStream",
                post(move |Json(body): Json<Value>| async move { describe(&s2, body) }),
            )
            .route(
                "/getDataEndpoint",
                post(move |Json(body): Json<Value>| async move { data_endpoint(&s3, addr, body) }),
            )
            .route(
                "/putMedia",
                post(move |request: Request| {
                    let state = s4.clone();
                    async move {
                        let mut response = put_media(state.clone(), addr, request).await;
                        // Every answer carries the service's clock and a request id.
                        let date = state.lock().unwrap().auth.date();
                        if let Ok(date) = date.parse() {
                            response.headers_mut().insert("date", date);
                        }
                        let id = format!("{:032x}", rand::random::<u128>());
                        if let Ok(id) = id.parse() {
                            response.headers_mut().insert("x-amzn-requestid", id);
                        }
                        response
                    }
                }),
            )
            .route(
                "/getImages",
                post(move |Json(body): Json<Value>| images.clone().get_images(body)),
            );
        let refuse_state = state.clone();
        let listener = OutageListener::new(
            listener,
            Arc::new(move || {
                let mut state = refuse_state.lock().unwrap();
                if state.faults.outage {
                    *state.refusals.entry("outage".into()).or_default() += 1;
                }
                state.faults.outage
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeKvs { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_faults(&self, faults: KvsFaults) {
        let mut s = self.state.lock().unwrap();
        if faults.outage && !s.faults.outage {
            s.outage_epoch += 1;
        }
        s.faults = faults;
    }

    pub fn faults(&self) -> KvsFaults {
        self.state.lock().unwrap().faults.clone()
    }

    /// Creates a stream as CreateStream would.
    pub fn create_stream(&self, name: &str, retention_hours: u32) {
        self.state
            .lock()
            .unwrap()
            .streams
            .entry(name.into())
            .or_default()
            .retention_hours = retention_hours;
    }

    /// Deletes a stream as DeleteStream would: an open connection to it gets ERROR 4008
    /// (STREAM_NOT_ACTIVE) at its next fragment; DescribeStream and new connections
    /// find nothing. What was received so far is forgotten.
    pub fn delete_stream(&self, name: &str) {
        self.state.lock().unwrap().streams.remove(name);
    }

    /// The retention the stream was created with (`None`: no such stream).
    pub fn retention_hours(&self, name: &str) -> Option<u32> {
        self.state.lock().unwrap().streams.get(name).map(|s| s.retention_hours)
    }

    pub fn stream_exists(&self, name: &str) -> bool {
        self.state.lock().unwrap().streams.contains_key(name)
    }

    /// Every fragment stored for `stream`, in arrival order (resends included).
    pub fn fragments(&self, stream: &str) -> Vec<Received> {
        self.state
            .lock()
            .unwrap()
            .streams
            .get(stream)
            .map(|s| s.fragments.clone())
            .unwrap_or_default()
    }

    /// Distinct fragments by timecode, in timecode order.
    pub fn distinct_fragments(&self, stream: &str) -> Vec<Received> {
        let mut by_tc: BTreeMap<u64, Received> = BTreeMap::new();
        for f in self.fragments(stream) {
            by_tc.entry(f.fragment.timecode_ms).or_insert(f);
        }
        by_tc.into_values().collect()
    }

    pub fn acks(&self) -> Vec<SentAck> {
        self.state.lock().unwrap().acks.clone()
    }

    /// The fragments (timecodes) answered with an ERROR that named none, in order.
    pub fn untimed_errors_for(&self) -> Vec<u64> {
        self.state.lock().unwrap().untimed_errors_for.clone()
    }

    /// Refused requests by reason (`signature`, `second connection`, `outage`, ...).
    pub fn refusals(&self) -> HashMap<String, u64> {
        self.state.lock().unwrap().refusals.clone()
    }

    /// From now on only these keys (shared with [`crate::FakeIot`]) sign PutMedia, each
    /// until its expiry; a connection still open when its key expires is ended and
    /// counted ([`FakeKvs::outlived_credentials`]).
    pub fn require_keys(&self, keys: IssuedKeys) {
        self.state.lock().unwrap().auth.require_keys(keys);
    }

    /// Refuses every key issued so far (403), as after the role's sessions were revoked.
    pub fn revoke_issued_keys(&self) {
        self.state.lock().unwrap().auth.revoke_issued();
    }

    /// Sets the service's clock this many seconds ahead of the real one (negative:
    /// behind); signatures are checked against it and `Date` headers show it.
    pub fn set_clock_ahead(&self, seconds: i64) {
        self.state.lock().unwrap().auth.set_clock_ahead(seconds);
    }

    /// Connections that were still open when their credentials expired.
    pub fn outlived_credentials(&self) -> u64 {
        self.state.lock().unwrap().auth.outlived
    }

    /// The access key of each accepted connection, in order.
    pub fn keys_used(&self) -> Vec<String> {
        self.state.lock().unwrap().auth.keys_used.clone()
    }

    /// Accepted signatures by payload style (`empty-sha256`, `unsigned-payload`).
    pub fn signatures(&self) -> HashMap<String, u64> {
        self.state.lock().unwrap().signatures.clone()
    }

    /// Writes the stream as one playable MKV file: the last header, then each distinct
    /// fragment's cluster in timecode order.
    pub fn write_mkv(&self, stream: &str, path: &std::path::Path) -> std::io::Result<usize> {
        let header = self
            .state
            .lock()
            .unwrap()
            .streams
            .get(stream)
            .map(|s| s.header.clone())
            .unwrap_or_default();
        let fragments = self.distinct_fragments(stream);
        let mut out = header;
        for f in &fragments {
            out.extend_from_slice(&f.fragment.cluster_bytes);
        }
        std::fs::write(path, out)?;
        Ok(fragments.len())
    }
}

fn stream_name(body: &Value) -> String {
    body.get("StreamName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn create(state: &Mutex<State>, body: Value) -> Response {
    let name = stream_name(&body);
    let hours = body.get("DataRetentionInHours").and_then(Value::as_u64).unwrap_or(0) as u32;
    let mut s = state.lock().unwrap();
    if s.streams.contains_key(&name) {
        return error(StatusCode::BAD_REQUEST, "ResourceInUseException", "stream exists");
    }
    s.streams.insert(
        name.clone(),
        Stream {
            retention_hours: hours,
            ..Stream::default()
        },
    );
    Json(json!({ "StreamARN": format!("arn:aws:kinesisvideo:us-east-1:000000000000:stream/{name}/1") })).into_response()
}

fn describe(state: &Mutex<State>, body: Value) -> Response {
    let name = stream_name(&body);
    let s = state.lock().unwrap();
    let Some(stream) = s.streams.get(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("stream {name} not found"),
        );
    };
    Json(json!({ "StreamInfo": {
        "StreamName": name,
        "StreamARN": format!("arn:aws:kinesisvideo:us-east-1:000000000000:stream/{name}/1"),
        "MediaType": "video/h264",
        "DataRetentionInHours": stream.retention_hours,
        "Status": "ACTIVE",
        "Version": "1",
        "CreationTime": 1.7e9,
    }}))
    .into_response()
}

fn data_endpoint(state: &Mutex<State>, addr: SocketAddr, body: Value) -> Response {
    let name = stream_name(&body);
    if !state.lock().unwrap().streams.contains_key(&name) {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("stream {name} not found"),
        );
    }
    // The APIs this endpoint serves on its own address.
    if !matches!(
        body.get("APIName").and_then(Value::as_str),
        Some("PUT_MEDIA" | "GET_IMAGES")
    ) {
        return error(StatusCode::BAD_REQUEST, "InvalidArgumentException", "APIName");
    }
    Json(json!({ "DataEndpoint": format!("http://{addr}") })).into_response()
}
