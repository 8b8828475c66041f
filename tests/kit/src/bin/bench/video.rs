//! The video suite: CPU per 720p15 RTSP camera through the agent (RTSP → fragments on
//! disk → PutMedia to the kit's endpoint) against `gst-launch-1.0 rtspsrc !
//! rtph264depay ! h264parse ! matroskamux ! fakesink` on the same camera in the same
//! run, and the agent's memory per camera. The agent's own idle CPU (HTTP, journal, sink
//! loops, with no camera) is measured too and reported beside, not hidden.

use super::{free_port, machine, pid_cpu_s, pid_rss_kib, save, stop_agent, wait_listening, write_config, Args};
use anyhow::{Context, Result};
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tillgate_testkit::emulators::rtsp_camera::{CameraMode, RtspCamera};
use tillgate_testkit::fakes::kvs::{self, FakeKvs};

/// CPU seconds per second of `pid` over `seconds`, after `warmup`.
fn cpu_rate(pid: u32, warmup: Duration, seconds: u64) -> f64 {
    std::thread::sleep(warmup);
    let start = pid_cpu_s(pid);
    std::thread::sleep(Duration::from_secs(seconds));
    (pid_cpu_s(pid) - start) / seconds as f64
}

/// The agent with `cameras` cameras reading `url`, each to its own stream at `kvs`.
fn start_agent(bin: &Path, dir: &Path, kvs: &str, url: &str, cameras: usize) -> Result<(Child, u16)> {
    let lines: String = (0..cameras)
        .map(|i| {
            format!(
                "[[video.cameras]]\nname = \"cam{i}\"\nsource = \"rtsp\"\nurl = \"{url}\"\nstream = \"bench-{i}\"\n"
            )
        })
        .collect();
    start_agent_with(bin, dir, kvs, &lines)
}

/// The agent with `[[video.cameras]]` tables `cameras` (none: no `[video]`) at `kvs`.
pub(super) fn start_agent_with(bin: &Path, dir: &Path, kvs: &str, cameras: &str) -> Result<(Child, u16)> {
    std::fs::create_dir_all(dir)?;
    let port = free_port();
    let config = write_config(dir, port)?;
    let mut text = std::fs::read_to_string(&config)?;
    if !cameras.is_empty() {
        text.push_str(&format!(
            "[video]\nregion = \"us-east-1\"\nendpoint = \"{kvs}\"\n{cameras}"
        ));
    }
    std::fs::write(&config, text)?;
    let child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .env("AWS_ACCESS_KEY_ID", kvs::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", kvs::SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log"))?)
        .spawn()?;
    wait_listening(port)?;
    Ok((child, port))
}

pub(crate) fn suite(rt: &tokio::runtime::Runtime, args: &Args) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let seconds = args.video_seconds;
    let warmup = Duration::from_secs(8);
    let camera = RtspCamera::start(CameraMode::default());
    let kvs = rt.block_on(FakeKvs::start());

    eprintln!("[video 1/4] gst-launch-1.0 rtspsrc ! rtph264depay ! h264parse ! matroskamux ! fakesink, {seconds} s");
    let mut gst = Command::new("gst-launch-1.0")
        .args([
            "-q",
            "rtspsrc",
            &format!("location={}", camera.url()),
            "protocols=tcp",
            "latency=200",
        ])
        .args([
            "!",
            "rtph264depay",
            "!",
            "h264parse",
            "!",
            "matroskamux",
            "!",
            "fakesink",
        ])
        .stdout(Stdio::null())
        .spawn()
        .context("gst-launch-1.0 (Debian gstreamer1.0-tools)")?;
    let gst_cpu = cpu_rate(gst.id(), warmup, seconds);
    let gst_rss = pid_rss_kib(gst.id())?;
    let _ = gst.kill();
    let _ = gst.wait();

    eprintln!("[video 2/4] agent without cameras (idle CPU and RSS), {seconds} s");
    let (idle, _) = start_agent(&args.bin, &dir.path().join("idle"), &kvs.url(), &camera.url(), 0)?;
    let idle_cpu = cpu_rate(idle.id(), warmup, seconds);
    let idle_rss = pid_rss_kib(idle.id())?;
    stop_agent(idle)?;

    let mut runs = Vec::new();
    for (step, cameras) in [(3, 1usize), (4, 4)] {
        eprintln!("[video {step}/4] agent with {cameras} camera(s) → PutMedia, {seconds} s");
        let (agent, _) = start_agent(
            &args.bin,
            &dir.path().join(format!("cams{cameras}")),
            &kvs.url(),
            &camera.url(),
            cameras,
        )?;
        let cpu = cpu_rate(agent.id(), warmup, seconds);
        let rss = pid_rss_kib(agent.id())?;
        stop_agent(agent)?;
        let fragments: usize = (0..cameras)
            .map(|i| kvs.distinct_fragments(&format!("bench-{i}")).len())
            .sum();
        runs.push(json!({
            "cameras": cameras,
            "cpu_s_per_s": cpu,
            "cpu_s_per_s_per_camera": cpu / cameras as f64,
            "ratio_to_gst_launch_per_camera": cpu / cameras as f64 / gst_cpu,
            "cameras_cpu_s_per_s_per_camera": (cpu - idle_cpu).max(0.0) / cameras as f64,
            "cameras_ratio_to_gst_launch_per_camera": (cpu - idle_cpu).max(0.0) / cameras as f64 / gst_cpu,
            "rss_kib": rss,
            "rss_kib_above_idle_per_camera": rss.saturating_sub(idle_rss) / cameras as u64,
            "fragments_acknowledged": fragments,
        }));
    }
    let marginal_rss =
        (runs[1]["rss_kib"].as_u64().unwrap_or(0)).saturating_sub(runs[0]["rss_kib"].as_u64().unwrap_or(0)) / 3;
    let results = json!({
        "machine": machine(),
        "command": "make bench (tillgate-bench --suite video)",
        "date": chrono::Utc::now().to_rfc3339(),
        "camera": "RTSP test camera (GStreamer RTSP server), 1280x720 15 fps H.264, key frame every 2 s",
        "seconds_measured": seconds,
        "gst_launch_cpu_s_per_s": gst_cpu,
        "gst_launch_rss_kib": gst_rss,
        "agent_idle_rss_kib": idle_rss,
        "agent_idle_cpu_s_per_s": idle_cpu,
        "runs": runs,
        "rss_kib_per_additional_camera": marginal_rss,
    });
    println!("{}", serde_json::to_string_pretty(&results)?);
    save(&args.out.with_file_name("video.json"), &results)
}
