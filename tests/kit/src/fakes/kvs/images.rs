//! GetImages (`POST /getImages` on the data endpoint GetDataEndpoint names), as the KVS
//! archive answers it (API reference, GetImages): one entry per sampled producer
//! timestamp from StartTimestamp every SamplingInterval up to EndTimestamp, a JPEG or PNG
//! of the frame at that moment (decoded here by ffmpeg from the fragment received over
//! PutMedia) or `Error: NO_MEDIA` where no fragment covers it; MaxResults (default 25)
//! per page with a NextToken. Refused as the service refuses: a range over 300 s or
//! backwards, a sampling interval under 200 ms, an unknown stream, a stream without
//! retention. SERVER_TIMESTAMP selection is not emulated (refused).

use super::{error, stream_name, FakeKvs, Received};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};
use std::process::Command;

/// Longest range per request.
const MAX_RANGE_MS: i64 = 300_000;
const MIN_SAMPLING_MS: i64 = 200;
const DEFAULT_MAX_RESULTS: u64 = 25;

/// One image the endpoint served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedImage {
    pub stream: String,
    pub at_ms: i64,
    pub bytes: usize,
}

fn invalid(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "InvalidArgumentException", message)
}

/// The request's checked parameters.
struct Request {
    stream: String,
    start_ms: i64,
    end_ms: i64,
    sampling_ms: i64,
    codec: &'static str,
    max_results: usize,
    first: usize,
}

/// The request's parameters, or why the service refuses it (InvalidArgumentException).
fn read(body: &Value) -> Result<Request, String> {
    if body.get("ImageSelectorType").and_then(Value::as_str) != Some("PRODUCER_TIMESTAMP") {
        return Err(String::from("ImageSelectorType: only PRODUCER_TIMESTAMP is emulated"));
    }
    let ms = |key: &str| {
        body.get(key)
            .and_then(Value::as_f64)
            .map(|s| (s * 1000.0).round() as i64)
            .ok_or_else(|| format!("{key} is required (epoch seconds)"))
    };
    let (start_ms, end_ms) = (ms("StartTimestamp")?, ms("EndTimestamp")?);
    if end_ms < start_ms || end_ms - start_ms > MAX_RANGE_MS {
        return Err(String::from(
            "EndTimestamp must be after StartTimestamp and within 300 seconds of it",
        ));
    }
    let sampling_ms = body.get("SamplingInterval").and_then(Value::as_i64).unwrap_or(3_000);
    if sampling_ms < MIN_SAMPLING_MS {
        return Err(String::from("SamplingInterval is at least 200 ms"));
    }
    let codec = match body.get("Format").and_then(Value::as_str) {
        Some("JPEG") => "mjpeg",
        Some("PNG") => "png",
        _ => return Err(String::from("Format must be JPEG or PNG")),
    };
    let max_results = body
        .get("MaxResults")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_RESULTS)
        .clamp(1, 100) as usize;
    let first = match body.get("NextToken").and_then(Value::as_str) {
        None => 0,
        Some(t) => t
            .parse()
            .map_err(|_| "NextToken is not one this endpoint gave".to_string())?,
    };
    Ok(Request {
        stream: stream_name(body),
        start_ms,
        end_ms,
        sampling_ms,
        codec,
        max_results,
        first,
    })
}

/// The frame of `fragment` at `at_ms`, encoded with `codec`, or `None` if ffmpeg cannot.
fn decode(header: &[u8], fragment: &Received, at_ms: i64, codec: &str) -> Option<Vec<u8>> {
    let file = tempfile::Builder::new().suffix(".mkv").tempfile().ok()?;
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(&fragment.fragment.cluster_bytes);
    std::fs::write(file.path(), bytes).ok()?;
    let last = fragment.fragment.blocks.iter().map(|b| b.timecode_ms).max()? as i64;
    let offset_ms = (at_ms.min(last) - fragment.fragment.timecode_ms as i64).max(0);
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file.path())
        .args(["-ss", &format!("{:.3}", offset_ms as f64 / 1000.0)])
        .args(["-frames:v", "1", "-f", "image2pipe", "-c:v", codec, "-"])
        .output()
        .ok()?;
    (out.status.success() && !out.stdout.is_empty()).then_some(out.stdout)
}

impl FakeKvs {
    /// Images GetImages has served, in order.
    pub fn served_images(&self) -> Vec<ServedImage> {
        self.state.lock().unwrap().served_images.clone()
    }

    pub(super) async fn get_images(self, body: Value) -> Response {
        let request = match read(&body) {
            Ok(r) => r,
            Err(why) => return invalid(&why),
        };
        let header = {
            let state = self.state.lock().unwrap();
            let Some(stream) = state.streams.get(&request.stream) else {
                return error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFoundException",
                    &format!("stream {} not found", request.stream),
                );
            };
            if stream.retention_hours == 0 {
                return error(
                    StatusCode::BAD_REQUEST,
                    "NoDataRetentionException",
                    "the stream keeps no data",
                );
            }
            stream.header.clone()
        };
        let fragments = self.distinct_fragments(&request.stream);
        let times: Vec<i64> = (0..)
            .map(|i| request.start_ms + i * request.sampling_ms)
            .take_while(|t| *t <= request.end_ms)
            .collect();
        let page: Vec<i64> = times
            .iter()
            .copied()
            .skip(request.first)
            .take(request.max_results)
            .collect();
        let mut images = Vec::new();
        for at_ms in &page {
            let covering = fragments.iter().find(|f| {
                let start = f.fragment.timecode_ms as i64;
                let end = f.fragment.blocks.iter().map(|b| b.timecode_ms).max().unwrap_or(0) as i64 + 100;
                (start..=end).contains(at_ms)
            });
            let stamp = *at_ms as f64 / 1000.0;
            let Some(fragment) = covering else {
                images.push(json!({"TimeStamp": stamp, "Error": "NO_MEDIA"}));
                continue;
            };
            let (header, fragment, codec, at) = (header.clone(), fragment.clone(), request.codec, *at_ms);
            let frame = tokio::task::spawn_blocking(move || decode(&header, &fragment, at, codec))
                .await
                .ok()
                .flatten();
            match frame {
                Some(bytes) => {
                    self.state.lock().unwrap().served_images.push(ServedImage {
                        stream: request.stream.clone(),
                        at_ms: at,
                        bytes: bytes.len(),
                    });
                    images.push(json!({
                        "TimeStamp": stamp,
                        "ImageContent": base64::engine::general_purpose::STANDARD.encode(bytes),
                    }));
                }
                None => images.push(json!({"TimeStamp": stamp, "Error": "MEDIA_ERROR"})),
            }
        }
        let next = request.first + page.len();
        let mut answer = json!({ "Images": images });
        if next < times.len() {
            answer["NextToken"] = json!(next.to_string());
        }
        Json(answer).into_response()
    }
}
