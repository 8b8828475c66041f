//! `[video]` in `tillgate.toml`: cameras, fragments, the on-disk ring and Kinesis Video
//! Streams.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use tillgate_aws::IotConfig;
use tillgate_sdk::{ByteSize, HumanDuration};

/// `[video]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Send fragments to Kinesis Video Streams; `false` keeps them in the local ring only.
    #[serde(default = "yes")]
    pub upload: bool,
    /// Where the rings live (one folder per camera); relative to `data_dir`.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// Target fragment length: a fragment closes at the first key frame after it (2–10 s
    /// suits Rekognition; never more than 10 s).
    #[serde(default = "default_fragment")]
    pub fragment_duration: HumanDuration,
    /// AWS region; when absent, the SDK's chain (`AWS_REGION`, profile).
    #[serde(default)]
    pub region: Option<String>,
    /// Control-plane endpoint override (a test endpoint); PutMedia goes wherever
    /// GetDataEndpoint says.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Credentials from the AWS IoT Core credentials provider (as `[kinesis.iot]`).
    #[serde(default)]
    pub iot: Option<IotConfig>,
    /// Create a missing stream (with `data_retention_hours`); otherwise report it.
    #[serde(default = "yes")]
    pub create_streams: bool,
    /// Retention of created streams; 0 keeps no data (fragments then leave the ring at
    /// RECEIVED instead of PERSISTED).
    #[serde(default = "default_retention_hours")]
    pub data_retention_hours: u32,
    /// A PutMedia connection is closed and reopened after this long (KVS ends them at 45 min).
    #[serde(default = "default_connection_age")]
    pub connection_max_age: HumanDuration,
    /// How long to wait for an ACK before the connection is considered dead.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: HumanDuration,
    /// KVS's per-stream limits: 5 fragments/s, 12.5 MB/s.
    #[serde(default = "default_fragments_per_second")]
    pub max_fragments_per_second: f64,
    #[serde(default = "default_bytes_per_second")]
    pub max_bytes_per_second: ByteSize,
    /// Reconnect backoff for cameras and uploads.
    #[serde(default = "default_backoff_initial")]
    pub retry_initial_backoff: HumanDuration,
    #[serde(default = "default_backoff_max")]
    pub retry_max_backoff: HumanDuration,
    /// The video of a flagged sale runs from `clip_before` before the sale reached the
    /// gateway to `clip_after` after it; rule-hit alerts carry that range of producer
    /// timestamps for each uploading camera that covers the sale's terminal.
    #[serde(default = "default_clip_before")]
    pub clip_before: HumanDuration,
    #[serde(default = "default_clip_after")]
    pub clip_after: HumanDuration,
    /// Which decisions an events-mode camera uploads the video of.
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
}

/// `[video.events]`: the rule-hit alerts around which an `upload = "events"` camera
/// uploads its video (`clip_before` to `clip_after` around the sale).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Decisions that upload their video: `allow`, `review`, `block`.
    #[serde(default = "default_event_decisions")]
    pub decisions: Vec<String>,
    /// Rules whose hit uploads the video whatever the decision (shadow rules included).
    #[serde(default)]
    pub rules: Vec<String>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            decisions: default_event_decisions(),
            rules: Vec::new(),
        }
    }
}

/// What a camera sends to Kinesis Video Streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, strum::Display)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum UploadMode {
    /// Every fragment.
    #[default]
    Continuous,
    /// Only the fragments around chosen decisions (`[video.events]`); the ring keeps
    /// the rest locally.
    Events,
    /// Nothing: the ring is local video only.
    Off,
}
/// `[[video.cameras]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Short name: the ring's folder, metrics label, status.
    pub name: String,
    /// `rtsp` (a network camera), `v4l2` (a local device) or `test` (a test pattern).
    pub source: SourceKind,
    /// `rtsp://host[:port]/path`, without credentials.
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding `user:password` for the RTSP camera.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// RTSP jitter-buffer latency.
    #[serde(default = "default_latency")]
    pub latency: HumanDuration,
    /// The V4L2 device, e.g. `/dev/video0`.
    #[serde(default)]
    pub device: Option<PathBuf>,
    /// Size and rate for `v4l2` and `test` (encoded here with x264).
    #[serde(default = "default_width")]
    pub width: u32,
    #[serde(default = "default_height")]
    pub height: u32,
    #[serde(default = "default_fps")]
    pub fps: u32,
    /// x264 bitrate for `v4l2` and `test`, kbit/s.
    #[serde(default = "default_bitrate")]
    pub bitrate_kbps: u32,
    /// The Kinesis Video stream; defaults to the camera's name.
    #[serde(default)]
    pub stream: Option<String>,
    /// Bound of this camera's ring on disk.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Fragments older than this leave the ring even when not uploaded (counted).
    #[serde(default = "default_retention")]
    pub retention: HumanDuration,
    /// Terminals whose decisions tag this camera's video (empty: every terminal).
    #[serde(default)]
    pub terminals: Vec<String>,
    /// `continuous`, `events` or `off` (`[video] upload = false` turns every camera off).
    #[serde(default)]
    pub upload: UploadMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Rtsp,
    V4l2,
    Test,
}

pub use tillgate_sdk::ConfigError;

/// A `[video]` mistake: the dotted key below `video` and why.
pub(crate) fn err(key: impl AsRef<str>, message: impl Into<String>) -> ConfigError {
    ConfigError::at("video", key, message)
}

impl CameraConfig {
    pub fn stream_name(&self) -> &str {
        self.stream.as_deref().unwrap_or(&self.name)
    }

    /// What this camera uploads, `[video] upload = false` included.
    pub fn mode(&self, video: &VideoConfig) -> UploadMode {
        if video.upload {
            self.upload
        } else {
            UploadMode::Off
        }
    }
}

/// KVS stream names: 1–256 of `[a-zA-Z0-9_.-]`.
fn valid_stream_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl VideoConfig {
    /// Checks values and combinations; every error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_uplink()?;
        let mut taken = Taken::default();
        for (i, c) in self.cameras.iter().enumerate() {
            c.validate(i, &mut taken)?;
        }
        Ok(())
    }

    /// Fragments, connections, rates and credentials within what KVS allows.
    fn validate_uplink(&self) -> Result<(), ConfigError> {
        // Zero would restart a lost camera and reconnect the uplink in a busy loop.
        if self.retry_initial_backoff.get().is_zero() || self.retry_initial_backoff > self.retry_max_backoff {
            return Err(err(
                "retry_initial_backoff",
                "must be more than 0s and at most retry_max_backoff",
            ));
        }
        let fragment = self.fragment_duration.get();
        if fragment < Duration::from_secs(1) || fragment > Duration::from_secs(10) {
            return Err(err(
                "fragment_duration",
                format!(
                    "{} is out of range; allowed: 1s–10s (KVS refuses fragments over 10 s)",
                    self.fragment_duration
                ),
            ));
        }
        if self.connection_max_age.get() > Duration::from_secs(44 * 60)
            || self.connection_max_age.get() < Duration::from_secs(10)
        {
            return Err(err(
                "connection_max_age",
                format!(
                    "{} is out of range; allowed: 10s–44m (KVS ends connections at 45 min)",
                    self.connection_max_age
                ),
            ));
        }
        if !(self.max_fragments_per_second > 0.0 && self.max_fragments_per_second <= 5.0) {
            return Err(err(
                "max_fragments_per_second",
                "allowed: more than 0, at most 5 (KVS's limit)",
            ));
        }
        if self.max_bytes_per_second.get() == 0 || self.max_bytes_per_second.get() > 12_500_000 {
            return Err(err(
                "max_bytes_per_second",
                "allowed: 1B–12500KB (KVS's limit per stream, 12.5 MB/s)",
            ));
        }
        if let Some(iot) = &self.iot {
            iot.validate("video")?;
        }
        for (i, d) in self.events.decisions.iter().enumerate() {
            if !["allow", "review", "block"].contains(&d.as_str()) {
                return Err(err(
                    format!("events.decisions[{i}]"),
                    format!("{d:?}: allowed: \"allow\", \"review\", \"block\""),
                ));
            }
        }
        if let Some(i) = self.events.rules.iter().position(|r| r.trim().is_empty()) {
            return Err(err(format!("events.rules[{i}]"), "is empty; allowed: a rule's id"));
        }
        let events_cameras = self.cameras.iter().any(|c| c.mode(self) == UploadMode::Events);
        if events_cameras && self.events.decisions.is_empty() && self.events.rules.is_empty() {
            return Err(err(
                "events",
                "chooses no sale (no decisions, no rules): a camera with upload = \"events\" would upload nothing; \
                 name decisions (\"review\", \"block\") or rules, or set that camera's upload = \"off\"",
            ));
        }
        if self.clip_before.get() + self.clip_after.get() > CLIP_MAX.get() {
            return Err(err(
                "clip_after",
                format!(
                    "clip_before + clip_after = {} is too long; allowed: at most {CLIP_MAX} (the longest \
                     range KVS GetImages serves)",
                    HumanDuration(self.clip_before.get() + self.clip_after.get())
                ),
            ));
        }
        Ok(())
    }
}

/// The longest clip: `clip_before + clip_after`.
pub const CLIP_MAX: HumanDuration = HumanDuration::secs(5 * 60);

/// Camera and stream names used by the cameras before this one.
#[derive(Default)]
struct Taken {
    names: std::collections::HashSet<String>,
    streams: std::collections::HashSet<String>,
}

impl CameraConfig {
    /// One camera (`video.cameras[i]`): names (unused by the cameras before it), source,
    /// picture, ring.
    fn validate(&self, i: usize, taken: &mut Taken) -> Result<(), ConfigError> {
        let key = |k: &str| format!("cameras[{i}].{k}");
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
        if !name_ok {
            return Err(err(
                key("name"),
                format!(
                    "{:?}: allowed: 1–64 letters, digits, `_` or `-` (it names a folder)",
                    self.name
                ),
            ));
        }
        if !taken.names.insert(self.name.clone()) {
            return Err(err(key("name"), format!("{:?} is used by two cameras", self.name)));
        }
        if !valid_stream_name(self.stream_name()) {
            return Err(err(
                key("stream"),
                format!("{:?}: allowed: 1–256 of a-z A-Z 0-9 _ . -", self.stream_name()),
            ));
        }
        if !taken.streams.insert(self.stream_name().to_string()) {
            return Err(err(
                key("stream"),
                format!(
                    "{:?} is used by two cameras; KVS allows one producer connection per stream",
                    self.stream_name()
                ),
            ));
        }
        self.validate_source(i)?;
        if !(16..=7680).contains(&self.width) || !(16..=4320).contains(&self.height) {
            return Err(err(
                key("width"),
                format!("{}x{}: allowed: 16x16–7680x4320", self.width, self.height),
            ));
        }
        if !(1..=60).contains(&self.fps) {
            return Err(err(key("fps"), format!("{}: allowed: 1–60", self.fps)));
        }
        if self.max_bytes.get() < 16 * 1024 * 1024 {
            return Err(err(key("max_bytes"), "allowed: at least 16MiB (a few fragments)"));
        }
        Ok(())
    }

    /// What each source kind needs: an RTSP URL without credentials (they go in a file
    /// that is read now), a V4L2 device.
    fn validate_source(&self, i: usize) -> Result<(), ConfigError> {
        let key = |k: &str| format!("cameras[{i}].{k}");
        match self.source {
            SourceKind::Rtsp => {
                let url = self
                    .url
                    .as_deref()
                    .ok_or_else(|| err(key("url"), "is required for source = \"rtsp\""))?;
                let Some(rest) = url.strip_prefix("rtsp://").or_else(|| url.strip_prefix("rtsps://")) else {
                    return Err(err(
                        key("url"),
                        format!("{url:?}: allowed: rtsp://host[:port]/path or rtsps://..."),
                    ));
                };
                if rest.split('/').next().is_some_and(|host| host.contains('@')) {
                    return Err(err(
                        key("url"),
                        "holds credentials; put `user:password` in credentials_file instead",
                    ));
                }
                if let Some(file) = &self.credentials_file {
                    let text = std::fs::read_to_string(file)
                        .map_err(|e| err(key("credentials_file"), format!("cannot read {}: {e}", file.display())))?;
                    if !text.trim().contains(':') {
                        return Err(err(
                            key("credentials_file"),
                            format!("{} must hold `user:password`", file.display()),
                        ));
                    }
                }
            }
            SourceKind::V4l2 => {
                if self.device.is_none() {
                    return Err(err(key("device"), "is required for source = \"v4l2\""));
                }
            }
            SourceKind::Test => {}
        }
        if self.source != SourceKind::Rtsp && (self.url.is_some() || self.credentials_file.is_some()) {
            return Err(err(key("url"), "only for source = \"rtsp\""));
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
}
fn default_dir() -> PathBuf {
    PathBuf::from("video")
}
fn default_fragment() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}
fn default_retention_hours() -> u32 {
    24
}
fn default_connection_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(40 * 60))
}
fn default_ack_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(20))
}
fn default_fragments_per_second() -> f64 {
    5.0
}
fn default_bytes_per_second() -> ByteSize {
    ByteSize(12_500_000)
}
fn default_backoff_initial() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_backoff_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_latency() -> HumanDuration {
    HumanDuration(Duration::from_millis(200))
}
fn default_width() -> u32 {
    1280
}
fn default_height() -> u32 {
    720
}
fn default_fps() -> u32 {
    15
}
fn default_bitrate() -> u32 {
    2000
}
fn default_max_bytes() -> ByteSize {
    ByteSize(4 * 1024 * 1024 * 1024)
}
fn default_clip_before() -> HumanDuration {
    HumanDuration::secs(10)
}
fn default_clip_after() -> HumanDuration {
    HumanDuration::secs(20)
}
fn default_event_decisions() -> Vec<String> {
    vec!["review".into(), "block".into()]
}
fn default_retention() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 24 * 3600))
}
