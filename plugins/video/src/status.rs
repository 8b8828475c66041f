//! What `tillgate status` shows per camera: the `cameras` section of `/v1/status`, and
//! how a person reads it.

use crate::config::UploadMode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One camera, as reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CameraStatus {
    pub name: String,
    pub stream: String,
    pub state: CameraState,
    pub fps: f64,
    pub bitrate_bps: f64,
    pub fragments_stored: u64,
    pub fragments_sent: u64,
    pub fragments_acknowledged: u64,
    pub fragments_evicted: u64,
    pub fragments_dead: u64,
    pub backlog_fragments: u64,
    pub backlog_seconds: f64,
    pub upload: UploadState,
    /// What the camera uploads: everything, the windows around chosen decisions, nothing.
    #[serde(default)]
    pub mode: UploadMode,
    /// ERROR acknowledgements by ErrorId.
    pub errors: BTreeMap<u32, u64>,
    pub last_error: Option<String>,
    pub upload_error: Option<String>,
}

/// What a camera's pipeline is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, strum::Display, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum CameraState {
    /// The pipeline is being built (at start and after every loss).
    #[default]
    Starting,
    /// Frames arrive.
    Streaming,
    /// The camera was lost; the pipeline is rebuilt after a backoff.
    Reconnecting,
}

/// What a camera's uplink to Kinesis Video Streams is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, strum::Display, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum UploadState {
    /// `upload = "off"`: fragments stay in the ring.
    Off,
    /// Nothing to send.
    #[default]
    Idle,
    /// Opening a PutMedia connection.
    Connecting,
    /// Sending fragments.
    Streaming,
    /// The connection ended with an error; resending after a backoff.
    Retrying,
}

/// Shared between the camera's pipeline task, its uploader and the status endpoint.
#[derive(Debug, Clone, Default)]
pub struct StatusHandle(Arc<Mutex<CameraStatus>>);

impl StatusHandle {
    pub fn new(name: &str, stream: &str, mode: UploadMode) -> Self {
        StatusHandle(Arc::new(Mutex::new(CameraStatus {
            name: name.to_string(),
            stream: stream.to_string(),
            state: CameraState::Starting,
            upload: if mode == UploadMode::Off {
                UploadState::Off
            } else {
                UploadState::Idle
            },
            mode,
            ..CameraStatus::default()
        })))
    }

    pub fn update(&self, f: impl FnOnce(&mut CameraStatus)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn get(&self) -> CameraStatus {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How `tillgate status` and systemd's STATUS line show the `cameras` section.
#[derive(Debug)]
pub struct CamerasView;

impl tillgate_sdk::StatusView for CamerasView {
    fn key(&self) -> &'static str {
        "cameras"
    }

    fn lines(&self, status: &Value) -> Vec<String> {
        cameras(status).iter().map(line).collect()
    }

    fn summary(&self, status: &Value) -> Vec<String> {
        cameras(status)
            .iter()
            .map(|c| format!("camera {} {} backlog {:.0} s", c.name, c.state, c.backlog_seconds))
            .collect()
    }
}

/// The section as written by [`crate::Cameras`]; what does not parse is not shown.
fn cameras(status: &Value) -> Vec<CameraStatus> {
    serde_json::from_value(status.clone()).unwrap_or_default()
}

fn line(c: &CameraStatus) -> String {
    let errors: Vec<String> = c.errors.iter().map(|(id, n)| format!("{id}×{n}")).collect();
    format!(
        "camera   {:<12} {:<12} {:.1} fps {:.0} kbit/s  fragments stored {} sent {} acknowledged {}  backlog {} ({:.0} s)  upload {} {} → {}{}{}{}{}",
        c.name,
        c.state,
        c.fps,
        c.bitrate_bps / 1000.0,
        c.fragments_stored,
        c.fragments_sent,
        c.fragments_acknowledged,
        c.backlog_fragments,
        c.backlog_seconds,
        c.mode,
        c.upload,
        c.stream,
        if c.fragments_evicted + c.fragments_dead > 0 {
            format!("  evicted {} refused {}", c.fragments_evicted, c.fragments_dead)
        } else {
            String::new()
        },
        if errors.is_empty() { String::new() } else { format!("  errors {}", errors.join(" ")) },
        c.last_error.as_ref().map(|e| format!("  camera error: {e}")).unwrap_or_default(),
        c.upload_error.as_ref().map(|e| format!("  upload error: {e}")).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tillgate status` lays states out in columns (`{:<12}`).
    #[test]
    fn states_fill_the_width_they_are_given() {
        assert_eq!(format!("{:<12}|", CameraState::Streaming), "streaming   |");
        assert_eq!(format!("{:>6}|", UploadState::Off), "   off|");
    }

    #[test]
    fn the_view_reads_what_the_cameras_report() {
        use tillgate_sdk::StatusView;
        let c = CameraStatus {
            name: "till-1".into(),
            state: CameraState::Streaming,
            backlog_seconds: 12.0,
            ..CameraStatus::default()
        };
        let json = serde_json::to_value(vec![c]).unwrap();
        assert_eq!(CamerasView.summary(&json), ["camera till-1 streaming backlog 12 s"]);
        assert!(CamerasView.lines(&json)[0].starts_with("camera   till-1       streaming"));
        assert!(CamerasView.lines(&serde_json::json!({"not": "cameras"})).is_empty());
    }

    #[test]
    fn states_serialize_as_the_words_status_has_always_shown() {
        for s in [CameraState::Starting, CameraState::Streaming, CameraState::Reconnecting] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.to_string());
        }
        for s in [
            UploadState::Off,
            UploadState::Idle,
            UploadState::Connecting,
            UploadState::Streaming,
            UploadState::Retrying,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.to_string());
        }
    }
}
