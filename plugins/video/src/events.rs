//! Events mode from the alerts channel: a rule-hit alert carries, per camera, the range
//! of producer timestamps that shows the sale (the journal put it there only for the
//! cameras whose `[video.events]` choose the alert, `journal/video_links.rs`). For an
//! events-mode camera that range becomes an upload window in its ring. Unlike tags, a
//! late alert (a backlog after a restart) still opens its window: the video is on disk.

use crate::store::{FragmentStore, WindowOutcome};
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::Notify;

/// An events-mode camera as the `video-tags` sink sees it.
#[derive(Debug, Clone)]
pub struct EventsTarget {
    pub store: Arc<FragmentStore>,
    /// Wakes the camera's uploader.
    pub stored: Arc<Notify>,
    pub windows: prometheus::IntCounterVec,
}

#[derive(Debug, Deserialize)]
struct Located {
    camera: String,
    start_ms: i64,
    end_ms: i64,
}

#[derive(Debug, Deserialize)]
struct AlertVideo {
    kind: String,
    #[serde(default)]
    txn_id: String,
    #[serde(default)]
    video: Vec<Located>,
}

/// The window `camera` is to upload for `alert`, if the alert names one.
pub fn window_for(alert: &[u8], camera: &str) -> Option<(String, (u64, u64))> {
    let a: AlertVideo = serde_json::from_slice(alert).ok()?;
    if a.kind != "rule_hit" {
        return None;
    }
    let v = a.video.into_iter().find(|v| v.camera == camera)?;
    let (from, to) = (u64::try_from(v.start_ms).ok()?, u64::try_from(v.end_ms).ok()?);
    (from <= to).then_some((a.txn_id, (from, to)))
}

impl EventsTarget {
    /// Asks the ring for `windows` (txn id, span) in one go (the windows file is written
    /// once), counts each outcome, says what could not be uploaded, and wakes the
    /// uploader if fragments were queued.
    pub async fn ask(&self, camera: &str, mut windows: Vec<(String, (u64, u64))>) {
        if windows.is_empty() {
            return;
        }
        // Sales are numbered after they are stamped: two decided together may reach the
        // sink in the other order. Asked oldest first, neither window is `behind`.
        windows.sort_by_key(|(_, span)| *span);
        let store = self.store.clone();
        let spans: Vec<(u64, u64)> = windows.iter().map(|(_, s)| *s).collect();
        let now = u64::try_from(crate::camera::now_ms()).unwrap_or(0);
        let asked = match tokio::task::spawn_blocking(move || store.ask(&spans, now)).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(camera, error = %e, "asking the ring for upload windows panicked");
                return;
            }
        };
        let mut queued = 0;
        for ((txn, (from, to)), asked) in windows.iter().zip(asked) {
            queued += asked.queued;
            self.windows.with_label_values(&[camera, asked.outcome.label()]).inc();
            if asked.dropped > 0 {
                self.windows
                    .with_label_values(&[camera, "dropped"])
                    .inc_by(asked.dropped as u64);
                tracing::warn!(
                    camera,
                    dropped = asked.dropped,
                    "too many open upload windows; the oldest dropped"
                );
            }
            let why = match asked.outcome {
                WindowOutcome::Complete => continue,
                WindowOutcome::Evicted => "part of it left the ring (room or retention) before it was asked for",
                WindowOutcome::NotRecorded => "the camera recorded nothing at its start",
                WindowOutcome::Behind => {
                    "some of it is older than video already queued (KVS takes fragments in order); it stays local"
                }
                WindowOutcome::Stranded => {
                    "a fragment could not be moved to the upload queue; it and the later ones stay local"
                }
            };
            tracing::warn!(camera, txn = %txn, from_ms = from, to_ms = to, outcome = asked.outcome.label(), "video of a chosen sale cannot all be uploaded: {why}");
        }
        if queued > 0 {
            self.stored.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_names_the_window_of_each_camera() {
        let alert = br#"{"kind":"rule_hit","txn_id":"t-1","terminal_id":"till-1","decision":"review","rules":[],
            "video":[{"camera":"lane1","stream":"s.lane1","start_ms":1000,"end_ms":31000},
                     {"camera":"door","stream":"s.door","start_ms":1000,"end_ms":31000}]}"#;
        assert_eq!(window_for(alert, "door"), Some(("t-1".into(), (1000, 31000))));
        assert_eq!(window_for(alert, "aisle"), None);
        let no_video = br#"{"kind":"rule_hit","txn_id":"t-2","terminal_id":"till-1","decision":"review","rules":[]}"#;
        assert_eq!(window_for(no_video, "door"), None);
        let report = br#"{"kind":"report_window","video":[{"camera":"door","start_ms":1,"end_ms":2}]}"#;
        assert_eq!(window_for(report, "door"), None);
        let backwards = br#"{"kind":"rule_hit","txn_id":"t","video":[{"camera":"door","start_ms":5,"end_ms":2}]}"#;
        assert_eq!(window_for(backwards, "door"), None);
    }
}
