//! The events-mode suite: one agent, two cameras on the same RTSP test camera (720p15),
//! one uploading continuously and one in events mode, both covering the lane the driver
//! sells on at 1 transaction/s with one review per 200 (a high amount). Same camera, same
//! run, same span of producer time: the uplink bytes of each, per camera-hour, and for
//! each chosen sale the time from its decision (the HTTP answer) to the endpoint's first
//! acknowledgement of a fragment of its window.

use super::video::start_agent_with;
use super::{machine, save, stop_agent, Args};
use anyhow::{Context, Result};
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tillgate_testkit::emulators::rtsp_camera::{CameraMode, RtspCamera};
use tillgate_testkit::fakes::kvs::FakeKvs;
use tillgate_testkit::{post, txn};

/// One review per this many sales.
const REVIEW_EVERY: u64 = 200;
/// `clip_before` and `clip_after`: the defaults.
const BEFORE_S: u64 = 10;
const AFTER_S: u64 = 20;

/// Bytes of the fragments of `stream` with producer timecodes in `[from_ms, to_ms)`
/// (duplicates included: what the uplink carried), and how many.
fn uplink(kvs: &FakeKvs, stream: &str, from_ms: u64, to_ms: u64) -> (u64, usize) {
    let inside: Vec<_> = kvs
        .fragments(stream)
        .into_iter()
        .filter(|f| (from_ms..to_ms).contains(&f.fragment.timecode_ms))
        .collect();
    (
        inside.iter().map(|f| f.fragment.cluster_bytes.len() as u64).sum(),
        inside.len(),
    )
}

pub(crate) fn suite(rt: &tokio::runtime::Runtime, args: &Args) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let seconds = args.video_events_seconds;
    let camera = RtspCamera::start(CameraMode::default());
    let kvs = rt.block_on(FakeKvs::start());
    let url = camera.url();
    let cameras = format!(
        "[[video.cameras]]\nname = \"continuous\"\nsource = \"rtsp\"\nurl = \"{url}\"\nstream = \"bench-continuous\"\n\
         [[video.cameras]]\nname = \"events\"\nsource = \"rtsp\"\nurl = \"{url}\"\nstream = \"bench-events\"\nupload = \"events\"\n"
    );
    eprintln!("[video-events] two cameras (continuous, events) on one RTSP camera; 1 sale/s for {seconds} s, one review per {REVIEW_EVERY}");
    let (agent, port) = start_agent_with(&args.bin, dir.path(), &kvs.url(), &cameras)?;
    let base = format!("http://127.0.0.1:{port}");
    let client = tillgate_testkit::http_client();
    std::thread::sleep(Duration::from_secs(BEFORE_S + 2));
    let from_ms = chrono::Utc::now().timestamp_millis() as u64;
    let started = Instant::now();
    // A chosen sale: when it was sent, and its producer-time window (from the wall clock
    // the agent stamps; same machine).
    let mut chosen: Vec<(Instant, u64, u64)> = Vec::new();
    let mut drive = || -> Result<()> {
        for i in 0..seconds {
            let review = i % REVIEW_EVERY == REVIEW_EVERY / 2;
            let id = format!("sale-{i}");
            let total = if review { 250_000 } else { 1_000 };
            let sent = Instant::now();
            let sent_ms = chrono::Utc::now().timestamp_millis() as u64;
            let (status, answer) = rt
                .block_on(post(&client, &base, txn(&id, "lane-1", total).to_string()))
                .context("the agent answers")?;
            anyhow::ensure!(status == 200, "sale {id}: {status} {answer}");
            if answer["decision"] != "allow" {
                chosen.push((sent, sent_ms - BEFORE_S * 1000, sent_ms + AFTER_S * 1000));
            }
            let next = started + Duration::from_secs(i + 1);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        Ok(())
    };
    let driven = drive();
    let to_ms = chrono::Utc::now().timestamp_millis() as u64;
    // The last window's video after the sale, and its acknowledgements.
    if driven.is_ok() {
        std::thread::sleep(Duration::from_secs(AFTER_S + 15));
    }
    stop_agent(agent)?;
    driven?;

    let (continuous_bytes, continuous_fragments) = uplink(&kvs, "bench-continuous", from_ms, to_ms);
    let (events_bytes, events_fragments) = uplink(&kvs, "bench-events", from_ms, to_ms);
    let hour = 3_600_000.0 / (to_ms - from_ms) as f64;
    // For each chosen sale, the first acknowledgement on the events stream's connections
    // of a fragment that shows its window (the fragment under its start begins up to one
    // fragment, 2 s, before it), timed from when the sale was sent.
    let events_connections: HashSet<u64> = kvs.fragments("bench-events").iter().map(|f| f.connection).collect();
    let acks = kvs.acks();
    let first_acks: Vec<serde_json::Value> = chosen
        .iter()
        .filter_map(|&(sent, from, to)| {
            acks.iter()
                .filter(|a| events_connections.contains(&a.connection) && a.at > sent)
                .filter(|a| a.event == "PERSISTED" || a.event == "RECEIVED")
                .filter(|a| a.timecode.is_some_and(|tc| tc + 2_000 > from && tc <= to))
                .min_by_key(|a| a.at)
                .map(|a| {
                    json!({
                        "ms": a.at.duration_since(sent).as_secs_f64() * 1000.0,
                        "fragment_timecode_ms": a.timecode,
                        "window_from_ms": from,
                    })
                })
        })
        .collect();
    let results = json!({
        "machine": machine(),
        "command": format!("make bench (tillgate-bench --suite video-events --video-events-seconds {seconds})"),
        "date": chrono::Utc::now().to_rfc3339(),
        "camera": "RTSP test camera (GStreamer RTSP server), 1280x720 15 fps H.264, key frame every 2 s; 2 s fragments",
        "sales": seconds,
        "sales_per_second": 1,
        "review_every": REVIEW_EVERY,
        "chosen_sales": chosen.len(),
        "clip_before_s": BEFORE_S,
        "clip_after_s": AFTER_S,
        "producer_time_measured_s": (to_ms - from_ms) as f64 / 1000.0,
        "continuous": {
            "fragments": continuous_fragments,
            "bytes": continuous_bytes,
            "bytes_per_camera_hour": continuous_bytes as f64 * hour,
        },
        "events": {
            "fragments": events_fragments,
            "bytes": events_bytes,
            "bytes_per_camera_hour": events_bytes as f64 * hour,
        },
        "events_share_of_continuous": events_bytes as f64 / continuous_bytes.max(1) as f64,
        "sale_sent_to_first_clip_ack": first_acks,
    });
    println!("{}", serde_json::to_string_pretty(&results)?);
    save(&args.out.with_file_name("video-events.json"), &results)
}
