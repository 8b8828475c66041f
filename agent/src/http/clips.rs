//! `GET /v1/clips/{txn_id}[?camera=NAME]`: the local video around a journaled sale as
//! MP4, for a browser on the store network (same bearer token as the rest of the API).
//! The sale is looked up in the journal (when it reached the gateway, its terminal); the
//! cameras component cuts the clip (tillgate_video::clip). At most [`CONCURRENT_CLIPS`]
//! are cut at once (each a remux of up to `clip_before + clip_after` of video); more get
//! 503 with Retry-After.

use super::{AppState, CONCURRENT_CLIPS};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use tillgate_sdk::{ClipFailure, ClipRequest};

#[derive(Debug, Deserialize)]
pub struct ClipQuery {
    camera: Option<String>,
}

fn refuse(status: StatusCode, error: &str, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": error, "message": message }))).into_response()
}

/// `txn_id` as it may appear in a filename header: anything else becomes `_`.
fn file_name(txn_id: &str) -> String {
    txn_id
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub async fn get_clip(
    State(state): State<Arc<AppState>>,
    Path(txn_id): Path<String>,
    Query(query): Query<ClipQuery>,
) -> Response {
    let Some(clips) = state.clips.clone() else {
        return refuse(StatusCode::NOT_FOUND, "no_cameras", "no cameras are configured".into());
    };
    let Ok(permit) = state.clip_permits.clone().try_acquire_owned() else {
        let mut busy = refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("{CONCURRENT_CLIPS} clips are being cut; try again"),
        );
        busy.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return busy;
    };
    let journal = state.journal.clone();
    let id = txn_id.clone();
    let cut = tokio::task::spawn_blocking(move || {
        // Held by the cut itself: a client that hangs up does not free it early.
        let _permit = permit;
        let Some(sale) = journal.reader().and_then(|r| r.sale(&id)).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let received_ms = sale.received_ms;
        let request = ClipRequest {
            terminal: sale.terminal,
            at_ms: received_ms.max(0) as u64,
            camera: query.camera,
        };
        Ok::<_, String>(Some((received_ms, clips.clip(&request))))
    })
    .await;
    match cut {
        Ok(Ok(Some((received_ms, Ok(clip))))) => (
            [
                (header::CONTENT_TYPE, "video/mp4".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("inline; filename=\"{}.mp4\"", file_name(&txn_id)),
                ),
                (header::HeaderName::from_static("x-tillgate-camera"), clip.camera),
                (
                    header::HeaderName::from_static("x-tillgate-clip-start-ms"),
                    clip.start_ms.to_string(),
                ),
                (
                    header::HeaderName::from_static("x-tillgate-sale-at-ms"),
                    received_ms.to_string(),
                ),
            ],
            clip.mp4,
        )
            .into_response(),
        Ok(Ok(Some((_, Err(ClipFailure::NoCamera(why)))))) => refuse(StatusCode::NOT_FOUND, "no_camera", why),
        Ok(Ok(Some((_, Err(ClipFailure::Gone(why)))))) => refuse(StatusCode::GONE, "video_gone", why),
        Ok(Ok(Some((_, Err(ClipFailure::Failed(why)))))) => {
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "clip_failed", why)
        }
        Ok(Ok(None)) => refuse(
            StatusCode::NOT_FOUND,
            "unknown_txn",
            format!("transaction {txn_id:?} is not in the journal (never received, or older than journal.idempotency_window)"),
        ),
        Ok(Err(e)) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "journal",
            format!("cannot read the journal: {e}"),
        ),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "task",
            format!("clip task failed: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_txn_id_cannot_break_out_of_the_filename_header() {
        assert_eq!(file_name("t-1_a"), "t-1_a");
        assert_eq!(file_name("a\"; x=\r\n.mp4"), "a___x____mp4");
        assert_eq!(file_name(&"x".repeat(500)).len(), 64);
    }
}
