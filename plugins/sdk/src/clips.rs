//! Local video for the API: a component with cameras cuts the clip of a moment
//! (`GET /v1/clips/{txn_id}`); the agent finds the sale in the journal and asks.

/// The moment to cut: a sale on `terminal` that reached the gateway at `at_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipRequest {
    pub terminal: String,
    pub at_ms: u64,
    /// One camera by name; `None`: the first camera that covers the terminal.
    pub camera: Option<String>,
}

/// A cut clip: MP4 bytes and what they cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipBytes {
    pub camera: String,
    /// Producer timecodes of the clip's first frame and its end, ms since the epoch.
    pub start_ms: u64,
    pub end_ms: u64,
    pub mp4: Vec<u8>,
}

/// Why there is no clip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClipFailure {
    /// No camera covers the terminal (or none has that name).
    #[error("{0}")]
    NoCamera(String),
    /// The video of that moment is no longer (or never was) in the ring.
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Failed(String),
}

/// Cuts clips of local video. Blocking (file reads, a GStreamer remux): call it off the
/// async runtime.
pub trait ClipMaker: Send + Sync + std::fmt::Debug {
    fn clip(&self, request: &ClipRequest) -> Result<ClipBytes, ClipFailure>;
}
