//! What `tillgate status` shows per camera.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One camera, as reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CameraStatus {
    pub name: String,
    pub stream: String,
    /// `starting`, `streaming`, `reconnecting` (camera lost, retrying).
    pub state: String,
    pub fps: f64,
    pub bitrate_bps: f64,
    pub fragments_stored: u64,
    pub fragments_sent: u64,
    pub fragments_acknowledged: u64,
    pub fragments_evicted: u64,
    pub fragments_dead: u64,
    pub backlog_fragments: u64,
    pub backlog_seconds: f64,
    /// `off` (upload = false), `idle`, `connecting`, `streaming`, `retrying`.
    pub upload: String,
    /// ERROR acknowledgements by ErrorId.
    pub errors: BTreeMap<u32, u64>,
    pub last_error: Option<String>,
    pub upload_error: Option<String>,
}

/// Shared between the camera's pipeline task, its uploader and the status endpoint.
#[derive(Debug, Clone, Default)]
pub struct StatusHandle(Arc<Mutex<CameraStatus>>);

impl StatusHandle {
    pub fn new(name: &str, stream: &str, upload: bool) -> Self {
        StatusHandle(Arc::new(Mutex::new(CameraStatus {
            name: name.to_string(),
            stream: stream.to_string(),
            state: "starting".into(),
            upload: if upload { "idle" } else { "off" }.into(),
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
