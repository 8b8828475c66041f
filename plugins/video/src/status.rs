//! What `tillgate status` shows per camera (the type lives in the SDK so that the agent
//! can report cameras whether or not it was built with video).

use std::sync::{Arc, Mutex};
pub use tillgate_sdk::CameraStatus;
use tillgate_sdk::{CameraState, UploadState};

/// Shared between the camera's pipeline task, its uploader and the status endpoint.
#[derive(Debug, Clone, Default)]
pub struct StatusHandle(Arc<Mutex<CameraStatus>>);

impl StatusHandle {
    pub fn new(name: &str, stream: &str, upload: bool) -> Self {
        StatusHandle(Arc::new(Mutex::new(CameraStatus {
            name: name.to_string(),
            stream: stream.to_string(),
            state: CameraState::Starting,
            upload: if upload { UploadState::Idle } else { UploadState::Off },
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
