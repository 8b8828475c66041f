//! `tillgate clip` and `GET /v1/clips/{txn_id}`: the local video around a journaled
//! sale, as MP4 checked by ffprobe and ffmpeg, from the camera that covers the sale's
//! terminal; clear errors for a sale that is not journaled, a terminal no camera covers,
//! and video that is gone; the API behind the bearer token; the status page in headless
//! Chromium playing an alert's clip.

// `make test-arm64` skips `camera::` (no x264enc for arm64 here): see video.rs.

mod camera {
    use std::path::Path;
    use std::process::Command;
    use std::time::Duration;
    use tillgate_testkit::checkers::page::look_at_page;
    use tillgate_testkit::checkers::video::{camera_options, ffmpeg_errors, ffprobe_frames, wait_fragments};
    use tillgate_testkit::fakes::kvs::FakeKvs;
    use tillgate_testkit::{run_cli, txn, Agent, AgentOptions};

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

    /// An agent behind the token `s3cret` with a test camera covering terminal till-1,
    /// streaming to `stream` (clips of 5 s either side), once it has sent 6 fragments.
    async fn camera_on_till_1(stream: &str) -> (std::path::PathBuf, FakeKvs, Agent) {
        let dir = tillgate_testkit::scratch_dir();
        let kvs = FakeKvs::start().await;
        kvs.create_stream(stream, 24);
        let source = "source = \"test\"\nwidth = 320\nheight = 240\nbitrate_kbps = 300\nterminals = [\"till-1\"]";
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "s3cret\n").unwrap();
        let options = AgentOptions {
            http_toml: format!("token = {{ file = \"{}\" }}", dir.join("token").display()),
            ..camera_options(
                &kvs,
                stream,
                source,
                "fragment_duration = \"1s\"\nclip_before = \"5s\"\nclip_after = \"5s\"",
            )
        };
        let agent = Agent::start(&dir, &options);
        wait_fragments(&kvs, stream, 6, Duration::from_secs(30), &agent).await;
        (dir, kvs, agent)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sales_clip_covers_it_from_before_to_after_and_plays() {
        let (dir, _kvs, agent) = camera_on_till_1("clips").await;
        let client = tillgate_testkit::http_client();
        for (id, terminal) in [("c-1", "till-1"), ("c-9", "till-9")] {
            let answer = client
                .post(format!("{}/v1/transactions", agent.url()))
                .bearer_auth("s3cret")
                .body(txn(id, terminal, 100).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status().as_u16(), 200);
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

        // The same over HTTP, behind the token, with the configured range.
        let get = |id: &str, token: Option<&str>| {
            let mut request = client.get(format!("{}/v1/clips/{id}", agent.url()));
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            request.send()
        };
        assert_eq!(get("c-1", None).await.unwrap().status().as_u16(), 401);
        let served = get("c-1", Some("s3cret")).await.unwrap();
        assert_eq!(served.status().as_u16(), 200);
        assert_eq!(served.headers()["content-type"], "video/mp4");
        let api_file = dir.join("api.mp4");
        std::fs::write(&api_file, served.bytes().await.unwrap()).unwrap();
        let (api_duration, api_format) = probe(&api_file);
        assert!(
            api_format.contains("mp4") && (9.9..=13.0).contains(&api_duration),
            "{api_format} {api_duration}"
        );
        assert!(ffmpeg_errors(&api_file).trim().is_empty());
        let named = get("c-1?camera=cam", Some("s3cret")).await.unwrap();
        assert_eq!(named.headers()["x-tillgate-camera"], "cam");
        for (id, status, error) in [
            ("nope", 404, "unknown_txn"),
            ("c-9", 404, "no_camera"),
            ("c-1?camera=other", 404, "no_camera"),
        ] {
            let answer = get(id, Some("s3cret")).await.unwrap();
            assert_eq!(answer.status().as_u16(), status);
            let body: serde_json::Value = answer.json().await.unwrap();
            assert_eq!(body["error"], error, "{body}");
        }

        // Recycled video: the ring no longer holds that moment.
        for shelf in [dir.join("video/cam"), dir.join("video/cam/sent")] {
            for entry in std::fs::read_dir(&shelf).unwrap().flatten() {
                if entry.file_name().to_string_lossy().ends_with(".mkv") {
                    std::fs::remove_file(entry.path()).unwrap();
                }
            }
        }
        let answer = get("c-1", Some("s3cret")).await.unwrap();
        assert_eq!(answer.status().as_u16(), 410);
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "video_gone", "{body}");
        agent.stop();
        let (code, _, stderr) = clip("c-1", &dir.join("gone.mp4"));
        assert_eq!(code, 66);
        assert!(stderr.contains("no video of"), "{stderr}");
        assert!(!dir.join("gone.mp4").exists());
    }

    /// The status page in headless Chromium: given the token it asks for, it shows the
    /// decisions, the alert of a blocked sale with a clip link, the sinks and the
    /// camera; following the link plays the clip (readyState, duration); a screenshot
    /// is saved beside the agent's data.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_status_page_plays_an_alerts_clip_in_headless_chromium() {
        let (dir, _kvs, agent) = camera_on_till_1("page").await;
        let mut denied = txn("p-block-1", "till-1", 100);
        denied["card"]["token"] = serde_json::json!("tok_stolen_0001");
        let answer = tillgate_testkit::http_client()
            .post(format!("{}/v1/transactions", agent.url()))
            .bearer_auth("s3cret")
            .body(denied.to_string())
            .send()
            .await
            .unwrap();
        let answer: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(answer["decision"], "block", "{answer}");
        tokio::time::sleep(Duration::from_secs(8)).await;

        let png = dir.join("status-page.png");
        let (url, shot) = (format!("{}/", agent.url()), png.clone());
        let seen = tokio::task::spawn_blocking(move || look_at_page(&url, "s3cret", &shot))
            .await
            .unwrap();
        assert_eq!(seen["asked_for_token"], true, "{seen}");
        assert_eq!(seen["error"], "", "{seen}");
        assert!(seen["ready_state"].as_u64().unwrap() >= 2, "{seen}");
        let duration = seen["duration"].as_f64().unwrap();
        assert!((9.9..=13.0).contains(&duration), "{seen}");
        assert_eq!(seen["video_width"], 320, "{seen}");
        assert!(seen["player"].as_str().unwrap().contains("p-block-1"), "{seen}");
        assert!(
            seen["per_minute"].as_str().unwrap().parse::<u64>().unwrap() >= 1,
            "{seen}"
        );
        let alert = &seen["alerts"][0];
        assert_eq!(
            (alert[1].as_str(), alert[3].as_str()),
            (Some("p-block-1"), Some("block")),
            "{seen}"
        );
        assert_eq!(seen["cameras"][0][1], "streaming", "{seen}");
        assert!(seen["sinks"].as_array().is_some_and(|s| !s.is_empty()), "{seen}");
        assert!(
            std::fs::metadata(&png).unwrap().len() > 10_000,
            "a screenshot of the page"
        );
        agent.stop();
    }
}
