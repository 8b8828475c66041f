//! What a camera plugin reports to `tillgate status`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// `upload = false`: fragments stay in the ring.
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
