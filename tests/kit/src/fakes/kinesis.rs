//! A fast, shard-aware Kinesis Data Streams endpoint with fault injection.
//!
//! kinesis-local and moto never throttle, never fail records, never reshard: this one
//! speaks the same AWS JSON 1.1 protocol (CreateStream, ListShards, PutRecords,
//! DescribeStreamSummary), routes by hash key like Kinesis, enforces the real limits
//! (500 records and 5 MiB per call, 1 MiB per record, 1,000 records/s and 1 MiB/s per
//! shard), and on demand: fails random records (both error codes), throttles whole calls,
//! answers 500, answers
//! after the client gave up (having stored the records), refuses connections (outage),
//! splits every shard (resharding), and refuses expired credentials.
//!
//! What landed can be read back per shard, de-aggregated as the KCL does it (dropping
//! sub-records outside the shard's range, which are counted).

use crate::fakes::outage::OutageListener;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tillgate_kinesis::aggregate::deaggregate;
use tillgate_kinesis::partition::hash_key;

/// Faults to inject; change them while the endpoint runs with [`FakeKinesis::set_faults`].
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Per-shard write limits (1,000 records/s, 1 MiB/s) answered with
    /// ProvisionedThroughputExceededException per record.
    pub shard_limits: bool,
    /// Probability that a record fails on its own (half throughput, half InternalFailure).
    pub record_failure_rate: f64,
    /// Probability that a whole call is answered 500 InternalFailure (nothing stored).
    pub http_500_rate: f64,
    /// Probability that a whole call is refused as throttled (400
    /// ProvisionedThroughputExceededException or LimitExceededException; nothing stored).
    pub call_throttle_rate: f64,
    /// Probability that a call is stored, then answered after `slow_delay`.
    pub slow_rate: f64,
    pub slow_delay: Duration,
    /// Refuse connections and answer 503 on open ones (nothing stored).
    pub outage: bool,
}

/// One Kinesis record as stored.
#[derive(Debug, Clone)]
pub struct Stored {
    pub shard: String,
    pub sequence: u64,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
}

/// Counters of what the endpoint did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeStats {
    pub calls: u64,
    pub records_stored: u64,
    pub throttled_records: u64,
    pub failed_records: u64,
    pub http_500s: u64,
    pub throttled_calls: u64,
    pub slow_answers: u64,
    pub refused_connections: u64,
    pub expired_credentials: u64,
}

#[derive(Debug)]
struct Shard {
    id: String,
    start: u128,
    end: u128,
    open: bool,
    parent: Option<String>,
    ending_sequence: Option<u64>,
    records: Vec<Stored>,
    /// Token buckets: (records, bytes, last refill).
    tokens: (f64, f64, Instant),
}

#[derive(Debug, Default)]
struct State {
    streams: HashMap<String, Vec<Shard>>,
    faults: Faults,
    stats: FakeStats,
    sequence: u64,
    next_shard: u64,
    /// When set, only these access keys are accepted, until their expiry.
    keys: Option<Arc<Mutex<HashMap<String, SystemTime>>>>,
}

const SHARD_RECORDS: f64 = 1000.0;
const SHARD_BYTES: f64 = 1024.0 * 1024.0;

impl State {
    fn new_shard(&mut self, start: u128, end: u128, parent: Option<String>) -> Shard {
        let id = format!("shardId-{:012}", self.next_shard);
        self.next_shard += 1;
        Shard {
            id,
            start,
            end,
            open: true,
            parent,
            ending_sequence: None,
            records: Vec::new(),
            tokens: (SHARD_RECORDS, SHARD_BYTES, Instant::now()),
        }
    }

    fn create(&mut self, name: &str, count: u32) {
        let count = u128::from(count.max(1));
        let step = u128::MAX / count;
        let mut shards = Vec::new();
        for i in 0..count {
            let end = if i == count - 1 { u128::MAX } else { (i + 1) * step - 1 };
            shards.push(self.new_shard(i * step, end, None));
        }
        self.streams.insert(name.to_string(), shards);
    }
}

/// The running endpoint.
#[derive(Debug, Clone)]
pub struct FakeKinesis {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeKinesis {
    /// Starts on a loopback port with `streams` as (name, shard count).
    pub async fn start(streams: &[(&str, u32)]) -> FakeKinesis {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut state = State::default();
        for (name, count) in streams {
            state.create(name, *count);
        }
        let state = Arc::new(Mutex::new(state));
        let app_state = state.clone();
        let app = Router::new()
            .fallback(move |headers: HeaderMap, body: Bytes| {
                let state = app_state.clone();
                async move { handle(state, headers, body).await }
            })
            .layer(axum::extract::DefaultBodyLimit::max(16 << 20));
        let refuse_state = state.clone();
        let listener = OutageListener::new(
            listener,
            Arc::new(move || {
                let mut state = refuse_state.lock().unwrap();
                if state.faults.outage {
                    state.stats.refused_connections += 1;
                }
                state.faults.outage
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeKinesis { addr, state }
    }

    /// `http://127.0.0.1:port`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().unwrap().faults = faults;
    }

    /// Only accept these access keys until their expiry (shared with the IoT endpoint).
    pub fn require_keys(&self, keys: Arc<Mutex<HashMap<String, SystemTime>>>) {
        self.state.lock().unwrap().keys = Some(keys);
    }

    /// What the endpoint did so far.
    pub fn stats(&self) -> FakeStats {
        self.state.lock().unwrap().stats.clone()
    }

    /// Splits every open shard of `stream` in two (parents close, children open).
    pub fn split_all(&self, stream: &str) {
        let mut state = self.state.lock().unwrap();
        let mut shards = state.streams.remove(stream).expect("stream exists");
        let mut children = Vec::new();
        for s in shards.iter_mut().filter(|s| s.open) {
            s.open = false;
            s.ending_sequence = Some(state.sequence);
            let mid = s.start + (s.end - s.start) / 2;
            children.push(state.new_shard(s.start, mid, Some(s.id.clone())));
            children.push(state.new_shard(mid + 1, s.end, Some(s.id.clone())));
        }
        shards.extend(children);
        state.streams.insert(stream.to_string(), shards);
    }

    /// Open shards of `stream`.
    pub fn open_shards(&self, stream: &str) -> usize {
        self.state.lock().unwrap().streams[stream]
            .iter()
            .filter(|s| s.open)
            .count()
    }

    /// Bytes (data + partition key) stored per shard of `stream`.
    pub fn bytes_per_shard(&self, stream: &str) -> Vec<u64> {
        self.state.lock().unwrap().streams[stream]
            .iter()
            .map(|s| {
                s.records
                    .iter()
                    .map(|r| (r.data.len() + r.partition_key.len()) as u64)
                    .sum()
            })
            .collect()
    }

    /// Every Kinesis record stored in `stream`, in arrival order.
    pub fn stored(&self, stream: &str) -> Vec<Stored> {
        let state = self.state.lock().unwrap();
        let mut all: Vec<Stored> = state.streams[stream]
            .iter()
            .flat_map(|s| s.records.iter().cloned())
            .collect();
        all.sort_by_key(|r| r.sequence);
        all
    }

    /// The user records a KCL consumer would see, in arrival order: (shard, partition
    /// key, data); and how many sub-records it would drop as outside their shard's range.
    pub fn consumed(&self, stream: &str) -> (Vec<(String, String, Vec<u8>)>, usize) {
        let ranges: HashMap<String, (u128, u128)> = self.state.lock().unwrap().streams[stream]
            .iter()
            .map(|s| (s.id.clone(), (s.start, s.end)))
            .collect();
        let mut out = Vec::new();
        let mut dropped = 0;
        for r in self.stored(stream) {
            let (start, end) = ranges[&r.shard];
            let parts = deaggregate(&r.partition_key, &r.data).expect("a valid aggregated record");
            let aggregated = parts.len() > 1 || r.data.starts_with(&tillgate_kinesis::aggregate::MAGIC);
            for (key, data) in parts {
                let h = hash_key(&key);
                if aggregated && (h < start || h > end) {
                    dropped += 1;
                    continue;
                }
                out.push((r.shard.clone(), key, data.to_vec()));
            }
        }
        (out, dropped)
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [("content-type", "application/x-amz-json-1.1")],
        json!({"__type": kind, "message": message}).to_string(),
    )
        .into_response()
}

fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(state: Arc<Mutex<State>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "SerializationException", "body is not JSON");
    };
    let slow = {
        let mut s = state.lock().unwrap();
        s.stats.calls += 1;
        if s.faults.outage {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "outage (injected)",
            );
        }
        if let Some(denied) = check_credentials(&mut s, &headers) {
            return denied;
        }
        let mut rng = rand::rng();
        if target.ends_with(".PutRecords") && rng.random_bool(s.faults.http_500_rate.clamp(0.0, 1.0)) {
            s.stats.http_500s += 1;
            return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure", "injected 500");
        }
        if target.ends_with(".PutRecords") && rng.random_bool(s.faults.call_throttle_rate.clamp(0.0, 1.0)) {
            s.stats.throttled_calls += 1;
            let kind = if rng.random_bool(0.5) {
                "ProvisionedThroughputExceededException"
            } else {
                "LimitExceededException"
            };
            return error(StatusCode::BAD_REQUEST, kind, "Rate exceeded (injected)");
        }
        let slow = target.ends_with(".PutRecords") && rng.random_bool(s.faults.slow_rate.clamp(0.0, 1.0));
        if slow {
            s.stats.slow_answers += 1;
        }
        slow.then_some(s.faults.slow_delay)
    };
    let answer = {
        let mut s = state.lock().unwrap();
        match target.rsplit('.').next().unwrap_or("") {
            "PutRecords" => put_records(&mut s, &request),
            "ListShards" => list_shards(&s, &request),
            "CreateStream" => {
                let name = request["StreamName"].as_str().unwrap_or("").to_string();
                let count = request["ShardCount"].as_u64().unwrap_or(1) as u32;
                s.create(&name, count);
                ok(json!({}))
            }
            "DescribeStreamSummary" => match s.streams.get(request["StreamName"].as_str().unwrap_or("")) {
                Some(shards) => ok(json!({"StreamDescriptionSummary": {
                    "StreamName": request["StreamName"], "StreamStatus": "ACTIVE",
                    "OpenShardCount": shards.iter().filter(|s| s.open).count(),
                }})),
                None => error(StatusCode::BAD_REQUEST, "ResourceNotFoundException", "stream not found"),
            },
            other => error(
                StatusCode::BAD_REQUEST,
                "UnknownOperationException",
                &format!("operation {other:?} is not implemented by the fake"),
            ),
        }
    };
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    answer
}

fn check_credentials(s: &mut State, headers: &HeaderMap) -> Option<Response> {
    let keys = s.keys.clone()?;
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let key = auth
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .unwrap_or("");
    let valid = keys
        .lock()
        .unwrap()
        .get(key)
        .is_some_and(|expiry| SystemTime::now() < *expiry);
    if valid && headers.contains_key("x-amz-security-token") {
        return None;
    }
    s.stats.expired_credentials += 1;
    Some(error(
        StatusCode::BAD_REQUEST,
        "ExpiredTokenException",
        &format!("The security token included in the request is expired ({key:?})"),
    ))
}

fn list_shards(s: &State, request: &Value) -> Response {
    let name = request["StreamName"].as_str().unwrap_or("");
    let Some(shards) = s.streams.get(name) else {
        return error(
            StatusCode::BAD_REQUEST,
            "ResourceNotFoundException",
            &format!("Stream {name} under account 000000000000 not found."),
        );
    };
    let list: Vec<Value> = shards
        .iter()
        .map(|sh| {
            let mut range = json!({"StartingSequenceNumber": "0"});
            if let Some(end) = sh.ending_sequence {
                range["EndingSequenceNumber"] = json!(format!("{end:056}"));
            }
            let mut v = json!({
                "ShardId": sh.id,
                "HashKeyRange": {"StartingHashKey": sh.start.to_string(), "EndingHashKey": sh.end.to_string()},
                "SequenceNumberRange": range,
            });
            if let Some(p) = &sh.parent {
                v["ParentShardId"] = json!(p);
            }
            v
        })
        .collect();
    ok(json!({"Shards": list}))
}

fn put_records(s: &mut State, request: &Value) -> Response {
    let name = request["StreamName"].as_str().unwrap_or("").to_string();
    if !s.streams.contains_key(&name) {
        return error(
            StatusCode::BAD_REQUEST,
            "ResourceNotFoundException",
            &format!("Stream {name} under account 000000000000 not found."),
        );
    }
    let Some(records) = request["Records"].as_array() else {
        return error(StatusCode::BAD_REQUEST, "ValidationException", "Records is missing");
    };
    if records.is_empty() || records.len() > 500 {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            &format!("{} records; a call takes 1 to 500", records.len()),
        );
    }
    let mut decoded = Vec::with_capacity(records.len());
    let mut total = 0usize;
    for (i, r) in records.iter().enumerate() {
        let key = r["PartitionKey"].as_str().unwrap_or("").to_string();
        if key.is_empty() || key.chars().count() > 256 {
            return error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                &format!("record {i}: partition key must be 1 to 256 characters"),
            );
        }
        let Ok(data) = base64::engine::general_purpose::STANDARD.decode(r["Data"].as_str().unwrap_or("")) else {
            return error(StatusCode::BAD_REQUEST, "SerializationException", "Data is not base64");
        };
        let size = data.len() + key.len();
        if size > 1024 * 1024 {
            return error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                &format!("record {i} is {size} bytes; at most 1 MiB"),
            );
        }
        total += size;
        let ehk = r["ExplicitHashKey"].as_str().map(str::to_string);
        let hash = match &ehk {
            Some(k) => match k.parse::<u128>() {
                Ok(h) => h,
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "InvalidArgumentException",
                        &format!("record {i}: bad ExplicitHashKey"),
                    )
                }
            },
            None => hash_key(&key),
        };
        decoded.push((key, ehk, data, hash, size));
    }
    if total > 5 * 1024 * 1024 {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidArgumentException",
            &format!("{total} bytes in one call; at most 5 MiB"),
        );
    }
    let faults = s.faults.clone();
    let mut rng = rand::rng();
    let mut results = Vec::with_capacity(decoded.len());
    let mut failed = 0;
    for (key, ehk, data, hash, size) in decoded {
        let failure = if rng.random_bool(faults.record_failure_rate.clamp(0.0, 1.0)) {
            s.stats.failed_records += 1;
            Some(if rng.random_bool(0.5) {
                "ProvisionedThroughputExceededException"
            } else {
                "InternalFailure"
            })
        } else {
            None
        };
        s.sequence += 1;
        let sequence = s.sequence;
        let shard = s
            .streams
            .get_mut(&name)
            .expect("checked")
            .iter_mut()
            .find(|sh| sh.open && sh.start <= hash && hash <= sh.end)
            .expect("open shards cover the key space");
        let throttled = faults.shard_limits && failure.is_none() && !take_tokens(shard, size);
        if let Some(code) = failure.or(throttled.then_some("ProvisionedThroughputExceededException")) {
            if throttled {
                s.stats.throttled_records += 1;
            }
            failed += 1;
            results.push(json!({"ErrorCode": code, "ErrorMessage": format!("{code} (injected)")}));
            continue;
        }
        shard.records.push(Stored {
            shard: shard.id.clone(),
            sequence,
            partition_key: key,
            explicit_hash_key: ehk,
            data,
        });
        let id = shard.id.clone();
        s.stats.records_stored += 1;
        results.push(json!({"SequenceNumber": format!("{sequence:056}"), "ShardId": id}));
    }
    ok(json!({"FailedRecordCount": failed, "Records": results, "EncryptionType": "NONE"}))
}

/// Per-shard limits as token buckets holding one second of capacity.
fn take_tokens(shard: &mut Shard, size: usize) -> bool {
    let now = Instant::now();
    let elapsed = now.duration_since(shard.tokens.2).as_secs_f64();
    shard.tokens.0 = (shard.tokens.0 + elapsed * SHARD_RECORDS).min(SHARD_RECORDS);
    shard.tokens.1 = (shard.tokens.1 + elapsed * SHARD_BYTES).min(SHARD_BYTES);
    shard.tokens.2 = now;
    if shard.tokens.0 >= 1.0 && shard.tokens.1 >= size as f64 {
        shard.tokens.0 -= 1.0;
        shard.tokens.1 -= size as f64;
        true
    } else {
        false
    }
}
