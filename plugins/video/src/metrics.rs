//! `tillgate_video_*` metrics, labelled by camera.

use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};

#[derive(Debug, Clone)]
pub struct VideoMetrics {
    pub frames: IntCounterVec,
    pub frames_dropped: IntCounterVec,
    pub bytes: IntCounterVec,
    pub pipeline_restarts: IntCounterVec,
    pub clock_resyncs: IntCounterVec,
    pub fragments_stored: IntCounterVec,
    pub fragments_sent: IntCounterVec,
    /// By `event`: received, persisted.
    pub fragments_acked: IntCounterVec,
    /// By `reason`: full, expired (a loss by policy).
    pub fragments_evicted: IntCounterVec,
    /// Acknowledged or local-only fragments deleted to make room or past retention (not
    /// a loss).
    pub fragments_recycled: IntCounterVec,
    pub fragments_dead: IntCounterVec,
    /// By `error_id`.
    pub ack_errors: IntCounterVec,
    /// By `outcome`: opened, failed, rotated, closed (by the service, idle).
    pub connections: IntCounterVec,
    /// Flagged sales put on the fragment being recorded, by `outcome`: tagged (their own
    /// tag), summarised (counted in the fragment's summary tag), dropped (the camera task
    /// was busy).
    pub tags: IntCounterVec,
    /// Upload windows asked of events-mode cameras, by outcome.
    pub event_windows: IntCounterVec,
    pub backlog_seconds: GaugeVec,
    pub backlog_fragments: GaugeVec,
    pub backlog_bytes: GaugeVec,
    pub fps: GaugeVec,
    pub bitrate: GaugeVec,
    pub clock_skew: GaugeVec,
    pub timecodes_ahead: GaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<GaugeVec> {
    let g = GaugeVec::new(Opts::new(name, help), &["camera"])?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

impl VideoMetrics {
    /// Creates and registers the metrics.
    ///
    /// Long by nature: one definition per metric, name and help side by side; split, the
    /// names would scatter.
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let cam = &["camera"];
        Ok(VideoMetrics {
            frames: counter(r, "video_frames_total", "Frames received from the camera", cam)?,
            frames_dropped: counter(
                r,
                "video_frames_dropped_total",
                "Frames dropped: before the first key frame, or no key frame within 10 s",
                cam,
            )?,
            bytes: counter(
                r,
                "video_bytes_total",
                "Encoded video bytes received from the camera",
                cam,
            )?,
            pipeline_restarts: counter(
                r,
                "video_pipeline_restarts_total",
                "Camera pipelines restarted after an error, end of stream or stall",
                cam,
            )?,
            clock_resyncs: counter(
                r,
                "video_clock_resyncs_total",
                "Camera timestamps re-anchored to the gateway clock",
                cam,
            )?,
            fragments_stored: counter(
                r,
                "video_fragments_stored_total",
                "Fragments written to the on-disk ring",
                cam,
            )?,
            fragments_sent: counter(
                r,
                "video_fragments_sent_total",
                "Fragments sent over PutMedia (resends included)",
                cam,
            )?,
            fragments_acked: counter(
                r,
                "video_fragments_acked_total",
                "Fragments acknowledged by KVS, by event",
                &["camera", "event"],
            )?,
            fragments_evicted: counter(
                r,
                "video_fragments_evicted_total",
                "Fragments deleted unsent: ring full or past retention",
                &["camera", "reason"],
            )?,
            fragments_recycled: counter(
                r,
                "video_fragments_recycled_total",
                "Fragments deleted that were not a loss: acknowledged (sent) or never chosen for upload (local)",
                &["camera", "shelf"],
            )?,
            fragments_dead: counter(
                r,
                "video_fragments_dead_total",
                "Fragments KVS refused, moved to the ring's dead/ folder",
                cam,
            )?,
            ack_errors: counter(
                r,
                "video_ack_errors_total",
                "ERROR acknowledgements, by ErrorId",
                &["camera", "error_id"],
            )?,
            connections: counter(
                r,
                "video_connections_total",
                "PutMedia connections, by outcome",
                &["camera", "outcome"],
            )?,
            event_windows: counter(
                r,
                "video_event_windows_total",
                "Upload windows asked of events-mode cameras, by outcome (complete, evicted, not_recorded, behind, stranded, dropped)",
                &["camera", "outcome"],
            )?,
            tags: counter(
                r,
                "video_tags_total",
                "Rule-hit tags put on the fragment being recorded, by outcome",
                &["camera", "outcome"],
            )?,
            backlog_seconds: gauge(
                r,
                "video_backlog_seconds",
                "Seconds of video in the ring not yet acknowledged",
            )?,
            backlog_fragments: gauge(
                r,
                "video_backlog_fragments",
                "Fragments in the ring not yet acknowledged",
            )?,
            backlog_bytes: gauge(r, "video_backlog_bytes", "Bytes in the ring not yet acknowledged")?,
            fps: gauge(r, "video_fps", "Frames per second received, last few seconds")?,
            bitrate: gauge(
                r,
                "video_bitrate_bps",
                "Encoded bits per second received, last few seconds",
            )?,
            clock_skew: gauge(
                r,
                "video_clock_skew_seconds",
                "How far KVS's clock (its Date header) is ahead of the gateway's; PutMedia is signed with KVS's time",
            )?,
            timecodes_ahead: gauge(
                r,
                "video_timecodes_ahead_seconds",
                "How far the camera's timecodes run ahead of a gateway clock that stepped back behind them",
            )?,
        })
    }
}
