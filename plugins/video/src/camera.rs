//! One camera's task: run its pipeline, cut fragments, write them to the ring; on any
//! pipeline failure (camera gone, RTSP error, stall) rebuild it with backoff. A failure
//! here never touches the daemon or the other cameras.

use crate::config::{CameraConfig, VideoConfig};
use crate::fragmenter::{Fragment, Fragmenter, Stamp};
use crate::metrics::VideoMetrics;
use crate::mkv;
use crate::source::{Source, SourceEvent};
use crate::status::CameraState;
use crate::status::StatusHandle;
use crate::store::{Eviction, FragmentStore};
use crate::timeline::HeldClock;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tillgate_sdk::Backoff;
use tokio::sync::{mpsc, watch, Notify};

/// No frame for this long means the camera is gone even if the pipeline says nothing.
const STALL: Duration = Duration::from_secs(10);

/// The gateway's wall clock, ms since the epoch.
pub fn now_ms() -> i64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    wall - fault::clock_behind_ms()
}

/// Faults a test build injects (`fault-injection`), by environment variable.
#[cfg(feature = "fault-injection")]
mod fault {
    use std::sync::OnceLock;

    /// With `TILLGATE_FAULT_VIDEO_CLOCK_BEHIND_S=N`, the cameras read the wall clock N s
    /// behind: a gateway whose clock stepped back.
    pub fn clock_behind_ms() -> i64 {
        static BEHIND: OnceLock<i64> = OnceLock::new();
        *BEHIND.get_or_init(|| {
            std::env::var("TILLGATE_FAULT_VIDEO_CLOCK_BEHIND_S")
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
                .map_or(0, |s| s * 1000)
        })
    }
}

#[cfg(not(feature = "fault-injection"))]
mod fault {
    pub fn clock_behind_ms() -> i64 {
        0
    }
}

/// Everything a camera's tasks share.
#[derive(Debug, Clone)]
pub struct CameraShared {
    pub camera: CameraConfig,
    pub video: Arc<VideoConfig>,
    pub store: Arc<FragmentStore>,
    pub status: StatusHandle,
    pub metrics: VideoMetrics,
    /// Woken when a fragment is stored.
    pub stored: Arc<Notify>,
}

impl CameraShared {
    fn label(&self) -> [&str; 1] {
        [self.camera.name.as_str()]
    }

    /// Refreshes the backlog figures in status and metrics.
    pub fn publish_backlog(&self) {
        let b = self.store.backlog();
        let name = self.label();
        self.metrics.backlog_seconds.with_label_values(&name).set(b.seconds);
        self.metrics
            .backlog_fragments
            .with_label_values(&name)
            .set(b.fragments as f64);
        self.metrics.backlog_bytes.with_label_values(&name).set(b.bytes as f64);
        self.status.update(|s| {
            s.backlog_fragments = b.fragments;
            s.backlog_seconds = b.seconds;
        });
    }

    fn count_evictions(&self, evicted: &[(crate::store::Stored, Eviction)]) {
        for (s, why) in evicted {
            if matches!(why, Eviction::Sent | Eviction::Local) {
                // Acknowledged video kept for clips, or video nobody asked to upload:
                // recycled, not lost.
                tracing::debug!(camera = %self.camera.name, start_ms = s.start_ms, reason = why.label(), "fragment recycled");
                self.metrics
                    .fragments_recycled
                    .with_label_values(&[self.camera.name.as_str(), why.label()])
                    .inc();
                continue;
            }
            let reason = why.label();
            tracing::warn!(camera = %self.camera.name, start_ms = s.start_ms, reason, "fragment deleted before it was acknowledged");
            self.metrics
                .fragments_evicted
                .with_label_values(&[self.camera.name.as_str(), reason])
                .inc();
            self.status.update(|st| st.fragments_evicted += 1);
        }
    }
}

/// Runs the camera until `stop` turns true: builds its pipeline, records what it sends,
/// and rebuilds it after a backoff whenever it is lost.
pub async fn run(shared: CameraShared, mut tags: mpsc::Receiver<crate::tags::Tag>, mut stop: watch::Receiver<bool>) {
    let fragment = shared.video.fragment_duration.get();
    let floor = shared.store.timecode_floor();
    let mut recorder = Recorder {
        fragmenter: Fragmenter::new(fragment),
        clock: HeldClock::from_floor(floor, Instant::now()),
        held_ms: 0,
        segment_uid: rand::random(),
        rate: Rate::new(),
        shared,
    };
    let shared = recorder.shared.clone();
    let mut backoff = Backoff::new(
        shared.video.retry_initial_backoff.get(),
        shared.video.retry_max_backoff.get(),
    );
    let mut expiry = tokio::time::interval(Duration::from_secs(60));
    loop {
        shared.status.update(|s| s.state = CameraState::Starting);
        let (tx, mut rx) = mpsc::channel(256);
        let source = match Source::start(&shared.camera, fragment.as_secs() as u32, tx) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(camera = %shared.camera.name, error = %e, "camera pipeline did not start");
                shared.status.update(|s| s.last_error = Some(e));
                None
            }
        };
        while source.is_some() {
            tokio::select! {
                event = tokio::time::timeout(STALL, rx.recv()) => {
                    let lost = match event {
                        Ok(Some(SourceEvent::Frame { stamp, key, data, track })) => {
                            backoff.reset();
                            recorder.frame(stamp, key, data, &track).await;
                            None
                        }
                        Ok(Some(SourceEvent::Stopped(why))) => Some(("camera pipeline stopped", why)),
                        Ok(None) => break,
                        Err(_) => Some(("camera stalled", format!("no frames for {} s", STALL.as_secs()))),
                    };
                    if let Some((what, why)) = lost {
                        tracing::warn!(camera = %shared.camera.name, reason = %why, "{what}");
                        shared.status.update(|s| s.last_error = Some(why));
                        break;
                    }
                }
                Some(sale) = tags.recv() => recorder.tag(&sale),
                _ = expiry.tick() => {
                    let expired = shared.store.expire(now_ms() as u64);
                    shared.count_evictions(&expired);
                    shared.publish_backlog();
                }
                _ = stop.changed() => {
                    drop(source);
                    recorder.stop().await;
                    return;
                }
            }
        }
        drop(source);
        recorder.lost().await;
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_wait()) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Turns one camera's frames into stored fragments, across pipeline rebuilds.
struct Recorder {
    shared: CameraShared,
    fragmenter: Fragmenter,
    segment_uid: [u8; 16],
    rate: Rate,
    /// Frame times: the wall clock, never behind the ring's floor or an earlier frame.
    clock: HeldClock,
    /// How far `clock` was ahead of the wall clock at the last frame (ms).
    held_ms: i64,
}

impl Recorder {
    /// A frame: counted, measured, and into the fragment (stored when it closes one).
    async fn frame(&mut self, stamp: Stamp, key: bool, data: bytes::Bytes, track: &crate::mkv::TrackInfo) {
        let (now, held_ms) = self.clock.read(now_ms(), Instant::now());
        self.note_held(held_ms);
        let shared = &self.shared;
        let label = shared.label();
        shared.metrics.frames.with_label_values(&label).inc();
        shared.metrics.bytes.with_label_values(&label).inc_by(data.len() as u64);
        if let Some((fps, bps)) = self.rate.add(data.len()) {
            shared.metrics.fps.with_label_values(&label).set(fps);
            shared.metrics.bitrate.with_label_values(&label).set(bps);
            shared.status.update(|s| {
                s.fps = fps;
                s.bitrate_bps = bps;
                s.state = CameraState::Streaming;
            });
        }
        let (closed, notes) = self.fragmenter.push(stamp, now, key, data, track);
        if notes.resynced {
            shared.metrics.clock_resyncs.with_label_values(&label).inc();
        }
        shared
            .metrics
            .frames_dropped
            .with_label_values(&label)
            .inc_by(notes.dropped);
        if let Some(f) = closed {
            keep(shared, self.segment_uid, f).await;
        }
    }

    /// Says when the timecodes start or stop running ahead of a wall clock that stepped
    /// back (by a second or more), and keeps the gauge.
    fn note_held(&mut self, held_ms: i64) {
        let camera = self.shared.camera.name.as_str();
        let (was, is) = (self.held_ms >= 1_000, held_ms >= 1_000);
        if is && !was {
            tracing::warn!(
                camera,
                ahead_s = held_ms / 1000,
                "the gateway's clock is behind this camera's last timecode (stepped back?); timecodes run on from \
                 it until the clock catches up, so KVS keeps taking the fragments: check NTP"
            );
        } else if was && !is {
            tracing::info!(camera, "timecodes follow the gateway's clock again");
        }
        if is != was || is {
            let seconds = if is { held_ms as f64 / 1000.0 } else { 0.0 };
            self.shared
                .metrics
                .timecodes_ahead
                .with_label_values(&[camera])
                .set(seconds);
        }
        self.held_ms = held_ms;
    }

    /// Tags the fragment being recorded with a flagged sale (its own tag, or the
    /// fragment's summary when it has ten already).
    fn tag(&mut self, sale: &crate::tags::SaleTag) {
        let outcome = self.fragmenter.tag(sale);
        let camera = self.shared.camera.name.as_str();
        self.shared
            .metrics
            .tags
            .with_label_values(&[camera, outcome.label()])
            .inc();
    }

    /// The pipeline was lost: its open fragment is stored, the restart counted.
    async fn lost(&mut self) {
        if let Some(f) = self.fragmenter.restart() {
            keep(&self.shared, self.segment_uid, f).await;
        }
        let shared = &self.shared;
        shared
            .metrics
            .pipeline_restarts
            .with_label_values(&shared.label())
            .inc();
        shared.status.update(|s| {
            s.state = CameraState::Reconnecting;
            s.fps = 0.0;
            s.bitrate_bps = 0.0;
        });
    }

    /// The camera stops: its open fragment is stored.
    async fn stop(&mut self) {
        if let Some(f) = self.fragmenter.flush() {
            keep(&self.shared, self.segment_uid, f).await;
        }
    }
}

/// Writes a closed fragment to the ring (header + Tags + Cluster) and wakes the uploader.
async fn keep(shared: &CameraShared, segment_uid: [u8; 16], f: Fragment) {
    if f.summarised > 0 {
        // Once per fragment, however many sales it summarises.
        tracing::info!(
            camera = %shared.camera.name,
            tagged = f.tags.len() - 1,
            summarised = f.summarised,
            "a busy fragment: flagged sales beyond KVS's 10 tags are in its summary tag"
        );
    }
    let header = mkv::header(&shared.camera.name, segment_uid, &f.track);
    let body = match mkv::fragment(&f.frames, &f.tags) {
        Ok(b) => b,
        Err(e) => {
            // The fragmenter's output always satisfies these rules; this is a bug.
            tracing::error!(camera = %shared.camera.name, error = %e, "fragment not written");
            return;
        }
    };
    let store = shared.store.clone();
    let (start, end) = (f.start_ms, f.end_ms);
    match tokio::task::spawn_blocking(move || store.put(start, end, &header, &body)).await {
        Ok(Ok(evicted)) => {
            shared.metrics.fragments_stored.with_label_values(&shared.label()).inc();
            shared.status.update(|s| s.fragments_stored += 1);
            shared.count_evictions(&evicted);
            shared.publish_backlog();
            shared.stored.notify_one();
        }
        Ok(Err(e)) => {
            let why = format!("cannot store a fragment in {}: {e}", shared.store.dir().display());
            tracing::error!(camera = %shared.camera.name, error = %why);
            shared
                .metrics
                .frames_dropped
                .with_label_values(&shared.label())
                .inc_by(f.frames.len() as u64);
            shared.status.update(|s| s.last_error = Some(why));
        }
        Err(e) => tracing::error!(camera = %shared.camera.name, error = %e, "fragment writer panicked"),
    }
}

/// Frames and bytes per second over the last few seconds.
#[derive(Debug)]
struct Rate {
    since: Instant,
    frames: u64,
    bytes: u64,
}

impl Rate {
    fn new() -> Self {
        Rate {
            since: Instant::now(),
            frames: 0,
            bytes: 0,
        }
    }

    /// Counts a frame; every 2 s returns (fps, bits/s) and starts over.
    fn add(&mut self, bytes: usize) -> Option<(f64, f64)> {
        self.frames += 1;
        self.bytes += bytes as u64;
        let elapsed = self.since.elapsed().as_secs_f64();
        if elapsed < 2.0 {
            return None;
        }
        let out = (self.frames as f64 / elapsed, self.bytes as f64 * 8.0 / elapsed);
        *self = Rate::new();
        Some(out)
    }
}
