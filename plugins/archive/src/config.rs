//! Archive sink configuration (`[sinks.archive]`).

use serde::Deserialize;
use std::path::PathBuf;
use tillgate_sdk::{ByteSize, Channel, HumanDuration};

/// How archive files are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Plain NDJSON (`.ndjson`).
    #[default]
    None,
    /// gzip, one member per shipment (`.ndjson.gz`).
    Gzip,
}

/// `[sinks.archive]`: where and how the local archive is written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// `false` turns the archive off (only sensible once a cloud sink is configured).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Directory of the archive; relative paths are below the data directory.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// Channels to archive.
    #[serde(default = "default_channels")]
    pub channels: Vec<Channel>,
    /// Rotate a file once it reaches this size.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: ByteSize,
    /// Rotate a file once it is this old, even if small, so downstream tools see it.
    #[serde(default = "default_max_file_age")]
    pub max_file_age: HumanDuration,
    /// `none` or `gzip`.
    #[serde(default)]
    pub compression: Compression,
    /// The whole archive on disk at most (complete files and the ones being written);
    /// over it the oldest complete files are deleted, counted and logged.
    #[serde(default = "default_max_total_bytes")]
    pub max_total_bytes: ByteSize,
    /// Complete files older than this are deleted, counted; `0s` keeps them until
    /// `max_total_bytes` needs the room.
    #[serde(default = "default_retention")]
    pub retention: HumanDuration,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            enabled: true,
            dir: default_dir(),
            channels: default_channels(),
            max_file_bytes: default_max_file_bytes(),
            max_file_age: default_max_file_age(),
            compression: Compression::None,
            max_total_bytes: default_max_total_bytes(),
            retention: default_retention(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_dir() -> PathBuf {
    PathBuf::from("archive")
}
fn default_channels() -> Vec<Channel> {
    Channel::ALL.to_vec()
}
fn default_max_file_bytes() -> ByteSize {
    ByteSize::mib(64)
}
fn default_max_total_bytes() -> ByteSize {
    ByteSize::gib(4)
}
fn default_retention() -> HumanDuration {
    HumanDuration::secs(30 * 24 * 3600)
}
fn default_max_file_age() -> HumanDuration {
    HumanDuration::secs(3600)
}
