//! A camera's timeline: the timecodes a stream receives keep increasing when the gateway
//! comes back with its clock stepped back (the fault-injection build sets the cameras'
//! wall clock back), fragments left unsent are sent in order before the new ones, and a
//! camera sending B-frames keeps their presentation times.

// `make test-arm64` skips `camera::` (no x264enc for arm64 here): see video.rs.

mod camera {
    use std::collections::BTreeSet;
    use std::time::{Duration, SystemTime};
    use tillgate_testkit::checkers::video::{camera_options, ffmpeg_errors, ffprobe_frame_times, gaps, wait_fragments};
    use tillgate_testkit::emulators::rtsp_camera::{CameraMode, RtspCamera};
    use tillgate_testkit::fakes::kvs::{FakeKvs, KvsFaults};
    use tillgate_testkit::{Agent, AgentOptions};

    const SOURCE: &str = "source = \"test\"\nwidth = 320\nheight = 240\nbitrate_kbps = 300";

    fn options(kvs: &FakeKvs, clock_behind_s: Option<u64>) -> AgentOptions {
        let mut o = camera_options(kvs, "timeline", SOURCE, "fragment_duration = \"1s\"");
        if let Some(s) = clock_behind_s {
            o.env
                .push(("TILLGATE_FAULT_VIDEO_CLOCK_BEHIND_S".into(), s.to_string()));
        }
        o
    }

    fn real_now_ms() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_restart_with_the_clock_ten_minutes_back_timecodes_keep_increasing() {
        let dir = tillgate_testkit::scratch_dir();
        let kvs = FakeKvs::start().await;
        kvs.create_stream("timeline", 24);
        let agent = Agent::start(&dir, &options(&kvs, None));
        wait_fragments(&kvs, "timeline", 4, Duration::from_secs(30), &agent).await;
        // An uplink outage, so fragments are still in the ring at the restart.
        kvs.set_faults(KvsFaults {
            outage: true,
            ..KvsFaults::default()
        });
        tokio::time::sleep(Duration::from_secs(4)).await;
        agent.stop();
        let before = kvs.distinct_fragments("timeline").len();
        kvs.set_faults(KvsFaults::default());

        let agent = Agent::start(&dir, &options(&kvs, Some(600)));
        wait_fragments(&kvs, "timeline", before + 12, Duration::from_secs(60), &agent).await;

        // In arrival order, every fragment is later than all before it, or a resend.
        let mut seen = BTreeSet::new();
        let mut newest = 0;
        for f in kvs.fragments("timeline") {
            let tc = f.fragment.timecode_ms;
            if seen.insert(tc) {
                assert!(tc > newest, "fragment {tc} arrived after {newest}\n{}", agent.log());
                newest = tc;
            }
        }
        // The new fragments run on from the ring's last one at the real pace, not 600 s
        // back, and without holes among themselves.
        let all = kvs.distinct_fragments("timeline");
        assert!(
            all.iter().all(|f| f.fragment.timecode_ms <= real_now_ms()),
            "timecodes ahead of real time"
        );
        let g = gaps(&all[all.len() - 8..], 200);
        assert!(g.is_empty(), "{g:?}");
        let ahead = agent
            .metric("tillgate_video_timecodes_ahead_seconds{camera=\"cam\"}")
            .await;
        // 600 s behind, less the restart's gap and the held clock's 1 % slower pace.
        assert!((540.0..=600.0).contains(&ahead), "{ahead}");
        assert!(
            agent.log().contains("behind this camera's last timecode"),
            "{}",
            agent.log()
        );
        agent.stop();
    }

    /// An IP camera sending H.264 with B-frames (decode order ≠ presentation order, over
    /// RTSP): every frame keeps its presentation time, so the blocks' timecodes go back
    /// and forth within a fragment, fragments still advance, and ffmpeg decodes the
    /// received stream into frames 1/15 s apart in presentation order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn b_frames_from_an_rtsp_camera_keep_their_presentation_times() {
        let dir = tillgate_testkit::scratch_dir();
        let camera = RtspCamera::start(CameraMode {
            width: 640,
            height: 360,
            b_frames: 2,
            ..CameraMode::default()
        });
        let kvs = FakeKvs::start().await;
        kvs.create_stream("bframes", 24);
        let source = format!("source = \"rtsp\"\nurl = \"{}\"\nlatency = \"100ms\"", camera.url());
        let agent = Agent::start(&dir, &camera_options(&kvs, "bframes", &source, ""));
        wait_fragments(&kvs, "bframes", 8, Duration::from_secs(60), &agent).await;
        let fragments = kvs.distinct_fragments("bframes");
        let mut reordered = 0;
        for (i, f) in fragments.iter().enumerate() {
            let times: Vec<u64> = f.fragment.blocks.iter().map(|b| b.timecode_ms).collect();
            reordered += times.windows(2).filter(|w| w[1] < w[0]).count();
            let mut shown = times.clone();
            shown.sort_unstable();
            // 1/15 s apart (slewing onto the gateway clock takes up to 2 ms a frame).
            let uneven = shown.windows(2).filter(|w| !(60..=73).contains(&(w[1] - w[0]))).count();
            assert!(uneven <= 1, "fragment {i}: presentation times {shown:?}");
            if i > 0 {
                let before = fragments[i - 1]
                    .fragment
                    .blocks
                    .iter()
                    .map(|b| b.timecode_ms)
                    .max()
                    .unwrap();
                assert!(
                    f.fragment.timecode_ms > before,
                    "fragment {i} starts after all before it"
                );
            }
        }
        assert!(
            reordered >= fragments.len(),
            "B-frames present before the frame decoded ahead of them"
        );
        let file = dir.join("bframes.mkv");
        kvs.write_mkv("bframes", &file).unwrap();
        let errors = ffmpeg_errors(&file);
        assert!(errors.trim().is_empty(), "ffmpeg: {errors}");
        let times = ffprobe_frame_times(&file);
        let blocks: usize = fragments.iter().map(|f| f.fragment.blocks.len()).sum();
        assert_eq!(times.len(), blocks, "every frame decodes");
        let steps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let uneven = steps.iter().filter(|s| !(0.055..=0.08).contains(*s)).count();
        assert!(
            uneven <= fragments.len(),
            "presented 1/15 s apart (fragment joins aside): {steps:?}"
        );
        agent.stop();
    }
}
