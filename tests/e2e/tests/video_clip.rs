//! `tillgate clip`: the local video around a journaled sale, as MP4 checked by ffprobe
//! and ffmpeg, from the camera that covers the sale's terminal; clear errors for a sale
//! that is not journaled, a terminal no camera covers, and video that is gone.

// `make test-arm64` skips `camera::` (no x264enc for arm64 here): see video.rs.

mod camera {
    use std::path::Path;
    use std::process::Command;
    use std::time::Duration;
    use tillgate_testkit::checkers::video::{camera_options, ffmpeg_errors, ffprobe_frames, wait_fragments};
    use tillgate_testkit::fakes::kvs::FakeKvs;
    use tillgate_testkit::{post, run_cli, txn, Agent};

    /// (duration in s, container format) by ffprobe.
    fn probe(file: &Path) -> (f64, String) {
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "format=duration,format_name",
                "-of",
                "default=noprint_wrappers=1",
            ])
            .arg(file)
            .output()
            .expect("ffprobe runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_default()
                .to_string()
        };
        (field("duration").parse().unwrap_or(0.0), field("format_name"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sales_clip_covers_it_from_before_to_after_and_plays() {
        let dir = tillgate_testkit::scratch_dir();
        let kvs = FakeKvs::start().await;
        kvs.create_stream("clips", 24);
        let source = "source = \"test\"\nwidth = 320\nheight = 240\nbitrate_kbps = 300\nterminals = [\"till-1\"]";
        let agent = Agent::start(
            &dir,
            &camera_options(&kvs, "clips", source, "fragment_duration = \"1s\""),
        );
        wait_fragments(&kvs, "clips", 6, Duration::from_secs(30), &agent).await;
        let client = tillgate_testkit::http_client();
        for (id, terminal) in [("c-1", "till-1"), ("c-9", "till-9")] {
            let (status, _) = post(&client, &agent.url(), txn(id, terminal, 100).to_string())
                .await
                .unwrap();
            assert_eq!(status, 200);
        }
        // The video after the sale: recorded and acknowledged (kept in the ring's sent/).
        tokio::time::sleep(Duration::from_secs(8)).await;
        let config = agent.config_path.display().to_string();
        let out = dir.join("sale.mp4");
        let clip = |id: &str, out: &Path| {
            let out = out.display().to_string();
            run_cli(&[
                "clip", "--config", &config, "--txn", id, "--before", "5s", "--after", "5s", "--out", &out,
            ])
        };
        let (code, stdout, stderr) = clip("c-1", &out);
        assert_eq!(code, 0, "{stdout}{stderr}");
        let (duration, format) = probe(&out);
        assert!(format.contains("mp4"), "{format}");
        assert!(
            (9.9..=13.0).contains(&duration),
            "10 s asked, cut at key frames: {duration}\n{stdout}"
        );
        // The sale sits inside the clip with at least 5 s either side.
        let at: f64 = stdout
            .split("sale at +")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(at >= 5.0 && duration - at >= 4.9, "sale at {at} s of {duration} s");
        assert!(ffmpeg_errors(&out).trim().is_empty(), "{}", ffmpeg_errors(&out));
        let frames = ffprobe_frames(&out) as f64;
        assert!(
            (frames - duration * 15.0).abs() <= 16.0,
            "{frames} frames in {duration} s at 15 fps"
        );

        let (code, _, stderr) = clip("nope", &dir.join("nope.mp4"));
        assert_eq!(code, 66);
        assert!(stderr.contains("\"nope\" is not in the journal"), "{stderr}");
        let (code, _, stderr) = clip("c-9", &dir.join("nine.mp4"));
        assert_eq!(code, 66);
        assert!(stderr.contains("no camera covers terminal \"till-9\""), "{stderr}");

        // Recycled video: the ring no longer holds that moment.
        agent.stop();
        for shelf in [dir.join("video/cam"), dir.join("video/cam/sent")] {
            for entry in std::fs::read_dir(&shelf).unwrap().flatten() {
                if entry.file_name().to_string_lossy().ends_with(".mkv") {
                    std::fs::remove_file(entry.path()).unwrap();
                }
            }
        }
        let (code, _, stderr) = clip("c-1", &dir.join("gone.mp4"));
        assert_eq!(code, 66);
        assert!(
            stderr.contains("no video of") && stderr.contains("it is empty"),
            "{stderr}"
        );
        assert!(!dir.join("gone.mp4").exists());
    }
}
