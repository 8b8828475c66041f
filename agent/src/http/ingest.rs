//! `POST /v1/transactions`: one JSON transaction, or an NDJSON batch
//! (`Content-Type: application/x-ndjson`), each answered after its durable commit.

use super::body::{read_limited, ReadBody};
use super::AppState;
use crate::intake::{self, parse_input};
use crate::journal::SubmitError;
use crate::txn::{Rejection, RejectionClass, Transaction};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

const SOURCE: &str = "http";

pub async fn post_transactions(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    if let Err(e) = state.intake.check_open() {
        return refusal(&e);
    }
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-ndjson") || v.starts_with("application/jsonl"));
    // A batch may hold `max_body_bytes`: only so many are read and decided at once.
    let _turn = if ndjson {
        match state.batch_permits.clone().acquire_owned().await {
            Ok(permit) => Some(permit),
            Err(_) => return refusal(&SubmitError::Closed),
        }
    } else {
        None
    };
    let limit = if ndjson {
        state.max_body_bytes
    } else {
        state.max_txn_bytes
    };
    let raw = match read_limited(body, limit, state.body_timeout).await {
        ReadBody::Complete(b) => b,
        ReadBody::TooLarge { head, seen, limit } => return too_large(&state, &head, seen, limit, ndjson).await,
        ReadBody::TimedOut { received } => return timed_out(&state, received),
        ReadBody::Failed(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "body", "message": format!("cannot read the request body: {e}")})),
            )
                .into_response()
        }
    };
    if ndjson {
        batch(&state, raw, started).await
    } else {
        single(&state, &raw, started).await
    }
}

/// 413 for a body over its limit; its head is kept as a dead letter.
async fn too_large(state: &AppState, head: &[u8], seen: usize, limit: usize, ndjson: bool) -> Response {
    let what = if ndjson {
        "batch body (http.max_body_bytes)"
    } else {
        "transaction (intake.max_txn_bytes; send larger volumes as an NDJSON batch)"
    };
    let reason = format!("body exceeds the {limit}-byte limit for a {what}: {seen}+ bytes received");
    let _ = state
        .intake
        .store_dead_letter(SOURCE, RejectionClass::TooLarge, reason.clone(), head, seen)
        .await;
    state.intake.count_rejected(SOURCE);
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        Json(json!({"error": "too_large", "message": reason})),
    )
        .into_response()
}

/// 408 for a body that did not arrive within `http.body_timeout`; the connection closes.
fn timed_out(state: &AppState, received: usize) -> Response {
    state
        .metrics
        .http_connections
        .with_label_values(&["body_timeout"])
        .inc();
    (
        StatusCode::REQUEST_TIMEOUT,
        [(header::CONNECTION, "close")],
        Json(json!({
            "error": "body_timeout",
            "message": format!(
                "the request body did not arrive within {:?} (http.body_timeout); {received} bytes came",
                state.body_timeout
            ),
        })),
    )
        .into_response()
}

async fn single(state: &AppState, raw: &[u8], started: Instant) -> Response {
    let txn = match parse_input(raw, raw.len(), state.max_txn_bytes) {
        Ok(t) => t,
        Err(rejection) => return reject(state, raw, rejection).await,
    };
    match state.intake.enqueue(SOURCE, txn, started).await.await {
        Ok(answer) => (StatusCode::OK, Json(answer)).into_response(),
        Err(e) => refusal(&e),
    }
}

/// One parsed line of a batch.
type Line = Result<Transaction, (Rejection, Vec<u8>)>;

/// Rejected lines of one batch that get a dead letter each; the rest of a batch's
/// rejected lines share one, with their count (each line still gets its own answer).
const DEAD_LETTERS_PER_BATCH: usize = 100;

async fn batch(state: &AppState, raw: bytes::Bytes, started: Instant) -> Response {
    let lines = raw
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count();
    if lines > state.max_batch_lines {
        let reason = format!(
            "the batch has {lines} lines; the limit is {} (http.max_batch_lines): send it in parts",
            state.max_batch_lines
        );
        let _ = state
            .intake
            .store_dead_letter(SOURCE, RejectionClass::TooLarge, reason.clone(), &raw, raw.len())
            .await;
        state.intake.count_rejected(SOURCE);
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({"error": "too_large", "message": reason})),
        )
            .into_response();
    }
    // Parsing and the card-number scan of up to `max_body_bytes` is CPU work: off the
    // async workers, so other requests and the MQTT connection keep moving.
    let limit = state.max_txn_bytes;
    let parsed = tokio::task::spawn_blocking(move || -> Vec<Line> {
        raw.split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(|line| parse_input(line, line.len(), limit).map_err(|r| (r, intake::head(line).to_vec())))
            .collect()
    })
    .await;
    let Ok(lines) = parsed else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "internal", "message": "the batch could not be parsed (internal error); nothing was journaled"})),
        )
            .into_response();
    };
    let mut results: Vec<Option<Value>> = vec![None; lines.len()];
    let (valid, positions) = answer_rejected(state, lines, &mut results).await;
    for (pos, outcome) in positions
        .into_iter()
        .zip(state.intake.decide_many(SOURCE, valid, started).await)
    {
        results[pos] = Some(match outcome {
            Ok(mut v) => {
                v["status"] = json!(200);
                v
            }
            Err(e) => {
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

/// Answers each rejected line in `results` and stores its dead letter (the first
/// [`DEAD_LETTERS_PER_BATCH`] each their own, the rest one with their count); returns
/// the valid transactions with their line positions.
async fn answer_rejected(
    state: &AppState,
    lines: Vec<Line>,
    results: &mut [Option<Value>],
) -> (Vec<Transaction>, Vec<usize>) {
    let mut valid = Vec::new();
    let mut positions = Vec::new();
    let mut lettered = 0;
    let mut unlettered: Option<(usize, Vec<u8>)> = None;
    for (i, line) in lines.into_iter().enumerate() {
        match line {
            Ok(t) => {
                valid.push(t);
                positions.push(i);
            }
            Err((rejection, head)) => {
                let mut v = rejection.to_json();
                v["status"] = json!(status_of(&rejection).as_u16());
                v["line"] = json!(i + 1);
                if lettered < DEAD_LETTERS_PER_BATCH {
                    lettered += 1;
                    let _ = state.intake.reject(SOURCE, &rejection, &head, head.len()).await;
                } else {
                    let (n, _) = unlettered.get_or_insert((0, head));
                    *n += 1;
                    state.intake.count_rejected(SOURCE);
                }
                results[i] = Some(v);
            }
        }
    }
    if let Some((n, first)) = unlettered {
        let reason = format!(
            "{n} more rejected lines in one batch (beyond the first {DEAD_LETTERS_PER_BATCH}, which have their own dead letters); the first of them is kept"
        );
        let _ = state
            .intake
            .store_dead_letter(SOURCE, RejectionClass::Invalid, reason, &first, first.len())
            .await;
    }
    (valid, positions)
}

fn status_of(r: &Rejection) -> StatusCode {
    match r {
        Rejection::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Answers a 4xx and stores the dead letter (card numbers masked). A dead letter that
/// cannot be stored is logged (and counted in `dead_letters_lost_total` when its commit
/// rolled back); the client still gets its 4xx.
async fn reject(state: &AppState, raw: &[u8], rejection: Rejection) -> Response {
    let _ = state.intake.reject(SOURCE, &rejection, raw, raw.len()).await;
    (status_of(&rejection), Json(rejection.to_json())).into_response()
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
