//! A camera's timeline across restarts: the timecodes a stream receives keep increasing
//! when the gateway comes back with its clock stepped back (the fault-injection build
//! sets the cameras' wall clock back), and fragments left unsent are sent in order
//! before the new ones.

// `make test-arm64` skips `camera::` (no x264enc for arm64 here): see video.rs.

mod camera {
    use std::collections::BTreeSet;
    use std::time::{Duration, SystemTime};
    use tillgate_testkit::checkers::video::{camera_options, gaps, wait_fragments};
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
        let metrics = agent.metrics_text().await;
        let ahead = metrics
            .lines()
            .find(|l| l.starts_with("tillgate_video_timecodes_ahead_seconds{camera=\"cam\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no gauge\n{metrics}"));
        assert!((580.0..=600.0).contains(&ahead), "{ahead}");
        assert!(
            agent.log().contains("behind this camera's last timecode"),
            "{}",
            agent.log()
        );
        agent.stop();
    }
}
