//! Events mode (`upload = "events"`): an RTSP camera records everything into its ring and
//! uploads only the fragments around the sales `[video.events]` chooses — windows from
//! `clip_before` to `clip_after` around each, overlapping ones merged, in timecode order,
//! decoded by ffmpeg — and nothing else; the alerts of those sales say where the video
//! is; what the ring keeps locally still makes clips.

// `make test-arm64` skips `camera::` (no x264enc for arm64 here): see video.rs.

mod camera {
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::time::{Duration, Instant};
    use tillgate_testkit::checkers::video::{camera_options, camera_status, ffmpeg_errors};
    use tillgate_testkit::emulators::rtsp_camera::{CameraMode, RtspCamera};
    use tillgate_testkit::fakes::kvs::FakeKvs;
    use tillgate_testkit::{post, txn, Agent};

    /// Fragments in one shelf of the ring, by (start, end).
    fn shelf(dir: &Path) -> BTreeSet<(u64, u64)> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return BTreeSet::new();
        };
        entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().to_str()?.to_string();
                let (a, b) = name.strip_suffix(".mkv")?.split_once('-')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .collect()
    }

    /// The newest alerts, as journaled.
    async fn alerts(agent: &Agent) -> Vec<serde_json::Value> {
        let activity: serde_json::Value = tillgate_testkit::http_client()
            .get(format!("{}/v1/activity?alerts=100", agent.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        activity["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// The upload windows of the camera `cam` named by the newest alerts, merged.
    async fn windows(agent: &Agent) -> Vec<(u64, u64)> {
        let mut spans: Vec<(u64, u64)> = alerts(agent)
            .await
            .iter()
            .flat_map(|a| a["video"].as_array().cloned().unwrap_or_default())
            .filter(|v| v["camera"] == "cam")
            .map(|v| (v["start_ms"].as_u64().unwrap(), v["end_ms"].as_u64().unwrap()))
            .collect();
        spans.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (from, to) in spans {
            match merged.last_mut() {
                Some(last) if from <= last.1 => last.1 = last.1.max(to),
                _ => merged.push((from, to)),
            }
        }
        merged
    }

    fn shows(windows: &[(u64, u64)], (start, end): (u64, u64)) -> bool {
        windows.iter().any(|&(from, to)| end > from && start <= to)
    }

    /// Posts `sale`; returns the decision.
    async fn decide(agent: &Agent, sale: serde_json::Value) -> String {
        let (status, answer) = post(&tillgate_testkit::http_client(), &agent.url(), sale.to_string())
            .await
            .unwrap();
        assert_eq!(status, 200, "{answer}");
        answer["decision"].as_str().unwrap_or_default().to_string()
    }

    /// A sale on `terminal` of `total_minor`: 250000 is a review by `high-amount-sale`.
    async fn sell(agent: &Agent, id: &str, terminal: &str, total_minor: i64) {
        decide(agent, txn(id, terminal, total_minor)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_mode_uploads_exactly_the_windows_around_chosen_sales() {
        let dir = tillgate_testkit::scratch_dir();
        // 640x360, a key frame every 2 s: 2 s fragments.
        let camera = RtspCamera::start(CameraMode {
            width: 640,
            height: 360,
            ..CameraMode::default()
        });
        let kvs = FakeKvs::start().await;
        kvs.create_stream("events", 24);
        let source = format!(
            "source = \"rtsp\"\nurl = \"{}\"\nlatency = \"100ms\"\nterminals = [\"till-1\"]\nupload = \"events\"",
            camera.url()
        );
        let options = camera_options(
            &kvs,
            "events",
            &source,
            "fragment_duration = \"1s\"\nclip_before = \"3s\"\nclip_after = \"3s\"\n\
             [video.events]\ndecisions = [\"block\"]\nrules = [\"high-amount-sale\"]",
        );
        let agent = Agent::start(&dir, &options);
        let ring = dir.join("video/cam");
        let deadline = Instant::now() + Duration::from_secs(30);
        while shelf(&ring.join("local")).len() < 4 {
            assert!(
                Instant::now() < deadline,
                "{}\n{}",
                camera_status(&agent).await,
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(kvs.fragments("events").is_empty(), "nothing chosen, nothing uploaded");

        // An allowed sale, and a review on a till the camera does not cover: no window.
        sell(&agent, "a-1", "till-1", 100).await;
        sell(&agent, "other-till", "till-9", 250_000).await;
        // Chosen by name (`high-amount-sale`): two reviews 2 s apart (one merged window),
        // then one 14 s later (its own; 8 s of video between the windows). Between them, a
        // review by another rule: neither its decision (only blocks) nor its rule chosen.
        sell(&agent, "r-1", "till-1", 250_000).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        sell(&agent, "r-2", "till-1", 250_000).await;
        tokio::time::sleep(Duration::from_secs(7)).await;
        let mut paid_out = txn("p-1", "till-1", 20_000);
        paid_out["type"] = "paid_out".into();
        assert_eq!(decide(&agent, paid_out).await, "review", "large-paid-out");
        tokio::time::sleep(Duration::from_secs(7)).await;
        sell(&agent, "r-3", "till-1", 250_000).await;

        let p1 = alerts(&agent).await.into_iter().find(|a| a["txn_id"] == "p-1");
        assert!(
            p1.as_ref().is_some_and(|a| a.get("video").is_none()),
            "p-1's alert names no video: {p1:?}"
        );
        let windows = windows(&agent).await;
        assert_eq!(windows.len(), 2, "r-1 and r-2 merged, r-3 apart, p-1 none: {windows:?}");
        // Every window over and its last fragment acknowledged (moved to sent/).
        let last_end = windows.last().unwrap().1;
        let deadline = Instant::now() + Duration::from_secs(40);
        while !shelf(&ring.join("sent")).iter().any(|&(_, end)| end > last_end) {
            assert!(
                Instant::now() < deadline,
                "the window ending at {last_end} not uploaded: {}\n{}",
                camera_status(&agent).await,
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }

        let received: Vec<u64> = kvs.fragments("events").iter().map(|f| f.fragment.timecode_ms).collect();
        assert!(
            received.windows(2).all(|w| w[0] < w[1]),
            "in order, once each: {received:?}"
        );
        let sent = shelf(&ring.join("sent"));
        let local = shelf(&ring.join("local"));
        let sent_starts: BTreeSet<u64> = sent.iter().map(|f| f.0).collect();
        assert_eq!(
            received.iter().copied().collect::<BTreeSet<_>>(),
            sent_starts,
            "acknowledged = received"
        );
        for f in &sent {
            assert!(shows(&windows, *f), "{f:?} uploaded outside the windows {windows:?}");
        }
        for f in local.iter().filter(|f| f.1 <= last_end) {
            assert!(
                !shows(&windows, *f),
                "{f:?} shows a window {windows:?} but stayed local"
            );
        }
        assert!(
            local.iter().any(|&(s, e)| s >= windows[0].1 && e <= windows[1].0),
            "the video between the windows stayed local: {local:?}"
        );
        // Each window's video from its start (the fragment under it) to its end.
        for &(from, to) in &windows {
            assert!(
                sent.iter().any(|&(s, e)| s <= from && e > from),
                "the start of {from}-{to}"
            );
            assert!(sent.iter().any(|&(s, e)| s <= to && e > to), "the end of {from}-{to}");
        }
        let mkv = dir.join("events.mkv");
        kvs.write_mkv("events", &mkv).unwrap();
        assert_eq!(ffmpeg_errors(&mkv), "", "ffmpeg decodes what was uploaded");
        assert_eq!(
            agent
                .metric("tillgate_video_event_windows_total{camera=\"cam\",outcome=\"complete\"}")
                .await,
            3.0,
            "one window asked per chosen sale"
        );
        let uploaded: u64 = sent.len() as u64;
        println!(
            "events mode: {uploaded} of {} fragments uploaded ({} local)",
            sent.len() + local.len(),
            local.len()
        );
        agent.terminate();
    }
}
