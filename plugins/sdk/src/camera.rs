//! What a camera plugin reports to `tillgate status`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
