//! What the status page shows besides `/v1/status`: `GET /v1/activity[?alerts=N]` —
//! decisions in the last minute (counted in the journal) and the newest N alerts
//! (default 20, at most 100), as journaled, newest first; and `GET /`, the page itself
//! (`page.html`: no data of its own; it reads the API with the same token).

use super::AppState;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tillgate_sdk::Channel;

const DEFAULT_ALERTS: usize = 20;
const MAX_ALERTS: usize = 100;
/// Decisions counted back from the newest, at most (a minute at 5,000 txn/s is 300,000).
const MAX_COUNTED: usize = 600_000;

#[derive(Debug, Deserialize)]
pub struct ActivityQuery {
    alerts: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Activity {
    pub decisions_last_minute: u64,
    pub alerts: Vec<serde_json::Value>,
}

pub async fn get_activity(State(state): State<Arc<AppState>>, Query(query): Query<ActivityQuery>) -> Response {
    let limit = query.alerts.unwrap_or(DEFAULT_ALERTS).min(MAX_ALERTS);
    let journal = state.journal.clone();
    let read = tokio::task::spawn_blocking(move || {
        let reader = journal.reader()?;
        let now = chrono::Utc::now().timestamp_millis();
        let decisions_last_minute = reader.count_since(Channel::Decisions, now - 60_000, MAX_COUNTED)?;
        let alerts = reader
            .newest(Channel::Alerts, limit)?
            .into_iter()
            .filter_map(|(_, body)| serde_json::from_slice(&body).ok())
            .collect();
        Ok::<_, rusqlite::Error>(Activity {
            decisions_last_minute,
            alerts,
        })
    })
    .await;
    match read {
        Ok(Ok(activity)) => Json(activity).into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the journal: {e}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("activity task failed: {e}\n"),
        )
            .into_response(),
    }
}

/// The status page. It holds no data: everything on it comes from the API, with the
/// token the page asks for when the API wants one.
pub async fn get_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'; media-src 'self' blob:"),
        ],
        include_str!("page.html"),
    )
        .into_response()
}
