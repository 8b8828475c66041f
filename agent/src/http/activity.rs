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
/// Records read back from the newest, at most, to count the last minute's decisions
/// (a minute at 5,000 txn/s is about 900,000 records of the three channels), and to find
/// the newest alerts.
const MAX_READ: usize = 1_000_000;

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
        let decisions_last_minute = reader.count_since(Channel::Decisions, now - 60_000, MAX_READ)?;
        let alerts = reader
            .newest(Channel::Alerts, limit, MAX_READ as u64)?
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

/// Headers of the page and its script: only its own script and style, no framing.
const PAGE_HEADERS: [(header::HeaderName, &str); 2] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; connect-src 'self'; media-src 'self' blob:; \
         style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

/// The status page. It holds no data: everything on it comes from the API, with the
/// token the page asks for when the API wants one.
pub async fn get_page() -> Response {
    (
        PAGE_HEADERS,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("page.html"),
    )
        .into_response()
}

/// The page's script (`page.js`), served apart so the page's CSP needs no inline code.
pub async fn get_page_script() -> Response {
    (
        PAGE_HEADERS,
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("page.js"),
    )
        .into_response()
}
