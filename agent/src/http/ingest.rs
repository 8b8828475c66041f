//! `POST /v1/transactions`: one JSON transaction, or an NDJSON batch
//! (`Content-Type: application/x-ndjson`), each answered after its durable commit.

use super::body::{read_limited, ReadBody};
use super::AppState;
use crate::intake;
use crate::journal::{Accepted, SubmitError};
use crate::txn::{self, Rejection, MAX_TXN_BYTES};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

const SOURCE: &str = "http";

pub async fn post_transactions(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    if state.draining.load(Ordering::Acquire) {
        return refusal(&SubmitError::Closed);
    }
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-ndjson") || v.starts_with("application/jsonl"));
    let limit = if ndjson { state.max_body_bytes } else { MAX_TXN_BYTES };
    let raw = match read_limited(body, limit).await {
        ReadBody::Complete(b) => b,
        ReadBody::TooLarge { head, seen, limit } => {
            let what = if ndjson {
                "batch body (http.max_body_bytes)"
            } else {
                "transaction (64 KiB; send larger volumes as an NDJSON batch)"
            };
            let reason = format!("body exceeds the {limit}-byte limit for a {what}: {seen}+ bytes received");
            dead_letter(&state, reason.clone(), &head).await;
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(json!({"error": "too_large", "message": reason})),
            )
                .into_response();
        }
        ReadBody::Failed(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "body", "message": format!("cannot read the request body: {e}")})),
            )
                .into_response()
        }
    };
    if ndjson {
        batch(&state, &raw, started).await
    } else {
        single(&state, &raw, started).await
    }
}

async fn single(state: &AppState, raw: &[u8], started: Instant) -> Response {
    let txn = match txn::parse(raw, chrono::Utc::now()) {
        Ok(t) => t,
        Err(rejection) => return reject(state, raw, rejection).await,
    };
    match state.journal.submit(txn).await {
        Ok(accepted) => (StatusCode::OK, Json(answer(state, accepted, started))).into_response(),
        Err(e) => {
            count(state, "refused");
            refusal(&e)
        }
    }
}

async fn batch(state: &AppState, raw: &[u8], started: Instant) -> Response {
    let now = chrono::Utc::now();
    let lines: Vec<&[u8]> = raw
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    let mut results: Vec<Option<Value>> = vec![None; lines.len()];
    let mut valid = Vec::new();
    let mut positions = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match txn::parse(line, now) {
            Ok(t) => {
                valid.push(t);
                positions.push(i);
            }
            Err(rejection) => {
                let mut v = rejection.to_json();
                v["status"] = json!(status_of(&rejection).as_u16());
                v["line"] = json!(i + 1);
                dead_letter(state, rejection.to_string(), line).await;
                count(state, "rejected");
                results[i] = Some(v);
            }
        }
    }
    for (pos, outcome) in positions.into_iter().zip(state.journal.submit_many(valid).await) {
        results[pos] = Some(match outcome {
            Ok(a) => {
                let mut v = answer(state, a, started);
                v["status"] = json!(200);
                v
            }
            Err(e) => {
                count(state, "refused");
                let (status, mut v) = refusal_body(&e);
                v["status"] = json!(status.as_u16());
                v["line"] = json!(pos + 1);
                v
            }
        });
    }
    let mut out = String::new();
    for v in results.into_iter().flatten() {
        out.push_str(&v.to_string());
        out.push('\n');
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response()
}

fn count(state: &AppState, outcome: &str) {
    intake::count(&state.metrics, SOURCE, outcome);
}

fn answer(state: &AppState, accepted: Accepted, started: Instant) -> Value {
    intake::answer(&state.metrics, SOURCE, accepted, started)
}

fn status_of(r: &Rejection) -> StatusCode {
    match r {
        Rejection::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    }
}

async fn reject(state: &AppState, raw: &[u8], rejection: Rejection) -> Response {
    dead_letter(state, rejection.to_string(), raw).await;
    count(state, "rejected");
    (status_of(&rejection), Json(rejection.to_json())).into_response()
}

/// Stores the input with card numbers masked. A failure is counted by the journal
/// (`dead_letters_lost_total`) and logged; the client still gets its 4xx.
async fn dead_letter(state: &AppState, reason: String, raw: &[u8]) {
    let _ = intake::dead_letter(&state.journal, SOURCE, reason, raw).await;
}

fn refusal_body(e: &SubmitError) -> (StatusCode, Value) {
    let code = intake::refusal_code(e);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": code, "message": e.to_string()}),
    )
}

fn refusal(e: &SubmitError) -> Response {
    let (status, body) = refusal_body(e);
    (status, [(header::RETRY_AFTER, "5")], Json(body)).into_response()
}
