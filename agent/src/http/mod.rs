//! The HTTP API: decisions for terminals, health, metrics and status for operators.
//!
//! `POST /v1/transactions` answers only after the durable commit; `GET /v1/clips/{txn_id}`
//! serves a sale's local video (`clips.rs`). Every endpoint but `/healthz` requires the
//! bearer token when one is configured, but `/`, the status page, which holds no data
//! (it reads `/v1/status` and `/v1/activity` with the token it asks for).

mod activity;
mod body;
#[cfg(feature = "video")]
mod clips;
mod ingest;
pub mod server;

use crate::intake::Intake;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::sinks::SinkStatus;
use crate::status;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;

/// Clips (`GET /v1/clips/{txn_id}`) cut at the same time.
pub const CONCURRENT_CLIPS: usize = 2;

/// Shared by every request.
#[derive(Debug)]
pub struct AppState {
    pub journal: Journal,
    /// The one ingest path (MQTT reaches the same one through the SDK's `Ingest`).
    pub intake: Intake,
    pub metrics: Metrics,
    pub sinks: Vec<Arc<SinkStatus>>,
    /// Set on SIGTERM: new transactions get 503 while in-flight ones finish.
    pub draining: Arc<AtomicBool>,
    pub token: Option<String>,
    pub max_body_bytes: usize,
    /// `intake.max_txn_bytes`: one JSON body or one NDJSON line.
    pub max_txn_bytes: usize,
    /// `http.body_timeout`.
    pub body_timeout: std::time::Duration,
    /// Lines of one NDJSON batch at most (`http.max_batch_lines`).
    pub max_batch_lines: usize,
    /// NDJSON batches being read and decided (`http.max_concurrent_batches`).
    pub batch_permits: Arc<tokio::sync::Semaphore>,
    pub started: Instant,
    /// Ids of the rules and reports deciding now (replaced on a successful reload).
    pub active_rules: std::sync::Mutex<(Vec<String>, Vec<String>)>,
    /// The components' sections of the status report (`mqtt`, `cameras`).
    pub components: Vec<tillgate_sdk::StatusSection>,
    /// Local video for `/v1/clips/{txn_id}` (the cameras component's), and the clips
    /// that may be cut at once.
    pub clips: Option<Arc<dyn tillgate_sdk::ClipMaker>>,
    pub clip_permits: Arc<tokio::sync::Semaphore>,
}

/// The router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/v1/transactions", post(ingest::post_transactions))
        .route("/v1/status", get(get_status))
        .route("/v1/activity", get(activity::get_activity))
        .route("/metrics", get(get_metrics));
    #[cfg(feature = "video")]
    let protected = protected.route("/v1/clips/{txn_id}", get(clips::get_clip));
    let protected = protected.layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/", get(activity::get_page))
        .route("/page.js", get(activity::get_page_script))
        .merge(protected)
        .with_state(state)
}

async fn require_token(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Constant time: how far a guess matches must not show in how long it takes.
        let matches = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.as_bytes())));
        if !matches {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(serde_json::json!({"error": "unauthorized", "message": "send Authorization: Bearer <token> (http.token in the agent's config)"})),
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn get_metrics(State(state): State<Arc<AppState>>) -> Response {
    let st = state.clone();
    // Backlog gauges are measured on scrape: one indexed count per sink.
    let _ = tokio::task::spawn_blocking(move || status::refresh_backlog_metrics(&st)).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn get_status(State(state): State<Arc<AppState>>) -> Response {
    let st = state.clone();
    match tokio::task::spawn_blocking(move || status::collect(&st)).await {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the journal: {e}\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("status task failed: {e}\n")).into_response(),
    }
}
