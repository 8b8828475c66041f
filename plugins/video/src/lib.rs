//! Cameras for tillgate: one GStreamer pipeline per camera, key-frame-aligned MKV
//! fragments kept in a bounded on-disk ring, and PutMedia to Kinesis Video Streams that
//! deletes a fragment only once KVS acknowledged it — so an uplink outage costs no video.
//!
//! Layout: [`config`] (`[video]`), `component` (how the agent starts and stops it), [`source`] (the pipeline → frames), [`fragmenter`]
//! (frames → fragments, gateway-clock timecodes), [`mkv`] (the bytes), [`store`] (the
//! ring, and in events mode the windows it uploads; [`events`] opens them from alerts),
//! [`camera`] (pipeline task, reconnects), [`kvs`] (control plane, signed
//! PutMedia head), [`uploader`] (the PutMedia connection and its ACKs), [`ack`],
//! [`metrics`], [`status`].

pub mod ack;
pub mod camera;
pub mod clip;
mod component;
pub mod config;
pub mod error_ids;
pub mod events;
mod failure;
pub mod fragment_tags;
pub mod fragmenter;
pub mod kvs;
pub mod metrics;
pub mod mkv;
mod put_media;
pub mod source;
pub mod status;
pub mod store;
pub mod tags;
pub mod timeline;
pub mod uploader;

pub use component::STATUS_VIEW;
pub use config::{ConfigError, VideoConfig};
pub use status::{CameraState, CameraStatus, UploadState};

use camera::CameraShared;
use status::StatusHandle;
use std::path::Path;
use std::sync::Arc;
use store::FragmentStore;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Checks `[video]` and that GStreamer has every element the cameras need.
pub fn check(config: &VideoConfig) -> Result<(), ConfigError> {
    config.validate()?;
    if config.cameras.is_empty() {
        return Ok(());
    }
    gstreamer::init().map_err(|e| config::err("", format!("GStreamer cannot start: {e}")))?;
    for (i, camera) in config.cameras.iter().enumerate() {
        let description = source::describe(camera, config.fragment_duration.get().as_secs() as u32);
        for element in description.split('!').filter_map(|part| part.split_whitespace().next()) {
            if element.contains('/') {
                continue; // caps
            }
            if gstreamer::ElementFactory::find(element).is_none() {
                return Err(config::err(
                    format!("cameras[{i}].source"),
                    format!(
                        "GStreamer element `{element}` is not installed (Debian: gstreamer1.0-plugins-base, -good, -bad, -ugly)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Why the cameras could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("video metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("video.dir: cannot open {path}: {source}")]
    Store { path: String, source: std::io::Error },
}

/// The running cameras.
#[derive(Debug)]
pub struct Cameras {
    statuses: Vec<StatusHandle>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    tag_sink: Option<tags::TagSink>,
    clips: Option<Arc<clip::LocalClips>>,
}

impl Cameras {
    /// Opens each camera's ring under `dir` and starts its pipeline and uploader.
    pub fn start(config: &VideoConfig, dir: &Path, registry: &prometheus::Registry) -> Result<Cameras, StartError> {
        config.validate()?;
        let metrics = metrics::VideoMetrics::register(registry)?;
        clip::sweep_temporaries(dir);
        let video = Arc::new(config.clone());
        let (stop, stop_rx) = watch::channel(false);
        let mut statuses = Vec::new();
        let mut tasks = Vec::new();
        let mut targets = Vec::new();
        for camera in &config.cameras {
            let ring = dir.join(&camera.name);
            let mode = camera.mode(config);
            let store =
                FragmentStore::open(&ring, camera.max_bytes.get(), camera.retention.get(), mode).map_err(|source| {
                    StartError::Store {
                        path: ring.display().to_string(),
                        source,
                    }
                })?;
            let status = StatusHandle::new(&camera.name, camera.stream_name(), mode);
            let shared = CameraShared {
                camera: camera.clone(),
                video: video.clone(),
                store: Arc::new(store),
                status: status.clone(),
                metrics: metrics.clone(),
                stored: Arc::new(Notify::new()),
            };
            shared.publish_backlog();
            let left = shared.store.backlog();
            if left.fragments > 0 {
                tracing::info!(camera = %camera.name, fragments = left.fragments, seconds = left.seconds, "fragments from a previous run wait for upload");
            }
            let (tag_tx, tag_rx) = tokio::sync::mpsc::channel(64);
            targets.push(tags::TagTarget {
                camera: camera.name.clone(),
                terminals: camera.terminals.clone(),
                sender: tag_tx,
                events: (mode == config::UploadMode::Events).then(|| events::EventsTarget {
                    store: shared.store.clone(),
                    stored: shared.stored.clone(),
                    windows: metrics.event_windows.clone(),
                }),
            });
            tasks.push(tokio::spawn(camera::run(shared.clone(), tag_rx, stop_rx.clone())));
            tasks.push(tokio::spawn(uploader::run(shared, stop_rx.clone())));
            statuses.push(status);
        }
        let tag_sink = (!targets.is_empty()).then(|| tags::TagSink::new(targets, metrics.tags.clone()));
        Ok(Cameras {
            statuses,
            tasks,
            stop,
            tag_sink,
            clips: Some(Arc::new(clip::LocalClips::new(config, dir))),
        })
    }

    /// No cameras: nothing runs, nothing is reported.
    pub fn none() -> Cameras {
        Cameras {
            statuses: Vec::new(),
            tasks: Vec::new(),
            stop: watch::channel(false).0,
            tag_sink: None,
            clips: None,
        }
    }

    /// The `video-tags` journal sink (alerts channel → fragment tags); `None` without
    /// cameras. Taken once, by the agent, to run with the other sinks.
    pub fn take_tag_sink(&mut self) -> Option<tags::TagSink> {
        self.tag_sink.take()
    }

    pub fn status(&self) -> Vec<CameraStatus> {
        self.statuses.iter().map(StatusHandle::get).collect()
    }

    /// The rings as a clip source for the API; `None` without cameras.
    pub fn clips(&self) -> Option<Arc<clip::LocalClips>> {
        self.clips.clone()
    }

    /// Handles to read status from elsewhere (the HTTP status endpoint).
    pub fn status_handles(&self) -> Vec<StatusHandle> {
        self.statuses.clone()
    }

    /// Stops pipelines (the open fragment is stored) and uploaders.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
