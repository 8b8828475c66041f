//! Helpers for the camera tests: the `[video]` config, the agent's view of a camera,
//! and checks of received video with tools nobody here wrote (ffmpeg, ffprobe).

use crate::fakes::kvs::{self, FakeKvs, Received};
use crate::{Agent, AgentOptions};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `[video]` for one camera named `cam` writing to stream `stream` at the fake `kvs`;
/// `source` is the camera's lines (`source = "rtsp"`, `url = ...`), `extra` more
/// `[video]` lines.
pub fn video_toml(kvs: &str, stream: &str, source: &str, extra: &str) -> String {
    format!(
        "[video]\nregion = \"us-east-1\"\nendpoint = \"{kvs}\"\nretry_initial_backoff = \"200ms\"\nretry_max_backoff = \"2s\"\n{extra}\n\n\
         [[video.cameras]]\nname = \"cam\"\nstream = \"{stream}\"\n{source}\n"
    )
}

/// The agent's credentials for the fake (its access key and secret).
pub fn kvs_credentials_env() -> Vec<(String, String)> {
    let mut env = crate::checkers::kinesis::static_credentials_env();
    for (k, v) in &mut env {
        if k == "AWS_ACCESS_KEY_ID" {
            *v = kvs::ACCESS_KEY.into();
        }
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = kvs::SECRET_KEY.into();
        }
    }
    env
}

/// The camera's entry in `/v1/status`.
pub async fn camera_status(agent: &Agent) -> serde_json::Value {
    let status = agent.status_json().await;
    status["cameras"][0].clone()
}

/// Waits until `check` holds for the camera's status, or panics with it and the log.
pub async fn wait_camera(
    agent: &Agent,
    within: Duration,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let s = camera_status(agent).await;
        if check(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not within {within:?}: {s}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The agent's options for one camera (`source`, more `[video]` lines in `extra`) writing
/// to `stream` at the fake `kvs`.
pub fn camera_options(kvs: &FakeKvs, stream: &str, source: &str, extra: &str) -> AgentOptions {
    AgentOptions {
        extra_toml: video_toml(&kvs.url(), stream, source, extra),
        env: kvs_credentials_env(),
        ..AgentOptions::default()
    }
}

/// Waits until `n` distinct fragments of `stream` have arrived, or panics with the
/// camera's status and the log.
pub async fn wait_fragments(kvs: &FakeKvs, stream: &str, n: usize, within: Duration, agent: &Agent) {
    let deadline = Instant::now() + within;
    while kvs.distinct_fragments(stream).len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} fragments in {within:?}; status {}\n{}",
            kvs.distinct_fragments(stream).len(),
            camera_status(agent).await,
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A test-pattern camera (320x240, 1 s fragments) streaming to the kit's endpoint
/// into `stream` (kept `retention_hours`), once 2 fragments have arrived.
pub async fn streaming_test_camera(stream: &str, retention_hours: u32) -> (std::path::PathBuf, FakeKvs, Agent) {
    let dir = crate::scratch_dir();
    let kvs = FakeKvs::start().await;
    kvs.create_stream(stream, retention_hours);
    let source = "source = \"test\"\nwidth = 320\nheight = 240\nbitrate_kbps = 300";
    let agent = Agent::start(
        &dir,
        &camera_options(&kvs, stream, source, "fragment_duration = \"1s\""),
    );
    wait_fragments(&kvs, stream, 2, Duration::from_secs(30), &agent).await;
    (dir, kvs, agent)
}

/// Waits until the fragment starting at `timecode` has arrived (again).
pub async fn wait_received(kvs: &FakeKvs, stream: &str, timecode: u64, within: Duration, agent: &Agent) {
    let deadline = Instant::now() + within;
    while !kvs.fragments(stream).iter().any(|f| f.fragment.timecode_ms == timecode) {
        assert!(
            Instant::now() < deadline,
            "fragment {timecode} not received\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Gaps in the timeline: (end of one fragment, start of the next) where the next
/// starts more than `tolerance_ms` after the previous one's last frame.
pub fn gaps(fragments: &[Received], tolerance_ms: u64) -> Vec<(u64, u64)> {
    fragments
        .windows(2)
        .filter_map(|w| {
            let last = w[0].fragment.blocks.iter().map(|b| b.timecode_ms).max()?;
            let next = w[1].fragment.timecode_ms;
            (next > last + tolerance_ms).then_some((last, next))
        })
        .collect()
}

/// `ffmpeg -v error -i file -enc_time_base -1 -f null -`: the decoder's complaints
/// (empty when clean). `-enc_time_base -1` keeps the file's own (1 ms) timestamps: by
/// default the null muxer rescales them onto the nominal rate (15/1), and a camera whose
/// clock runs 0.05 % slow (the test camera under load: 66.70 ms per frame) then yields
/// "non monotonically increasing dts to muxer" after a minute — the muxer's complaint
/// about its own rounding, not a decoding error.
pub fn ffmpeg_errors(file: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(file)
        .args(["-enc_time_base", "-1", "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs (Debian package ffmpeg)");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        text.push_str(&format!("\nffmpeg exited with {}", out.status));
    }
    text
}

/// The presentation times (s) of the frames ffmpeg decodes from `file`, in the order it
/// outputs them (presentation order).
pub fn ffprobe_frame_times(file: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=best_effort_timestamp_time",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

/// Frames ffprobe decodes in the file's video stream.
pub fn ffprobe_frames(file: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}
