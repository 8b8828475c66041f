//! A camera's uplink against what KVS answers when things go wrong: every ErrorId class
//! (the fragment's fault, the service's, a deleted stream, the stream's KMS key) and
//! dropped connections, against the kit's PutMedia endpoint with a test-pattern camera.

// `make test-arm64` skips `camera::` (no x264enc for arm64 here): see video.rs.

mod camera {
    use std::time::{Duration, Instant};
    use tillgate_testkit::checkers::video::{
        camera_options, camera_status, gaps, streaming_test_camera, wait_camera, wait_fragments, wait_received,
    };
    use tillgate_testkit::fakes::kvs::{FakeKvs, KvsFaults};
    use tillgate_testkit::Agent;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn error_acks_and_dropped_connections_are_handled_as_kvs_specifies() {
        let (dir, kvs, agent) = streaming_test_camera("errors", 24).await;

        // 5000 (internal error): a new connection resends the refused fragment.
        kvs.set_faults(KvsFaults {
            error_next: Some(5000),
            ..KvsFaults::default()
        });
        wait_camera(&agent, Duration::from_secs(20), "5000 counted", |s| {
            s["errors"]["5000"] == 1
        })
        .await;
        let refused = kvs
            .acks()
            .iter()
            .find(|a| a.error_id == Some(5000))
            .and_then(|a| a.timecode)
            .unwrap();
        wait_received(&kvs, "errors", refused, Duration::from_secs(20), &agent).await;

        // 4006 (invalid MKV): resending cannot help; the fragment moves to dead/.
        kvs.set_faults(KvsFaults {
            error_next: Some(4006),
            ..KvsFaults::default()
        });
        wait_camera(&agent, Duration::from_secs(20), "4006 dead-lettered", |s| {
            s["fragments_dead"] == 1 && s["errors"]["4006"] == 1
        })
        .await;
        assert!(agent.log().contains("KVS error 4006 (invalid MKV)"), "{}", agent.log());
        let dead = dir.join("video/cam/dead");
        let reasons: Vec<_> = std::fs::read_dir(&dead)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".reason.txt"))
            .collect();
        assert_eq!(reasons.len(), 1);
        assert!(std::fs::read_to_string(reasons[0].path())
            .unwrap()
            .contains("invalid MKV"));

        // A connection dropped after 2 fragments, again and again: nothing is lost.
        kvs.set_faults(KvsFaults {
            drop_after_fragments: Some(2),
            ..KvsFaults::default()
        });
        tokio::time::sleep(Duration::from_secs(8)).await;
        kvs.set_faults(KvsFaults::default());
        wait_camera(&agent, Duration::from_secs(30), "backlog sent", |s| {
            s["backlog_fragments"].as_u64().unwrap_or(99) <= 2
        })
        .await;
        let all = kvs.distinct_fragments("errors");
        let dead_tc = kvs
            .acks()
            .iter()
            .find(|a| a.error_id == Some(4006))
            .and_then(|a| a.timecode)
            .unwrap();
        let g = gaps(&all, 200);
        assert!(
            g.len() <= 1 && g.iter().all(|(_, next)| *next > dead_tc),
            "only the refused fragment is missing: {g:?}"
        );
        let metrics = agent.metrics_text().await;
        assert!(
            metrics.contains("tillgate_video_ack_errors_total{camera=\"cam\",error_id=\"4006\"} 1"),
            "{metrics}"
        );
        agent.terminate();
    }

    /// An ERROR that names no fragment (KVS leaves the timecode out of some, 4006
    /// among them) is the oldest sent fragment's that was not RECEIVED: it is sent
    /// again, and once it has drawn `MAX_FRAGMENT_FAILURES` (5) such errors it moves to
    /// dead/ so the camera goes on; nothing else is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fragment_refused_without_its_timecode_goes_to_dead_letters_after_5_refusals() {
        let (dir, kvs, agent) = streaming_test_camera("untimed", 24).await;

        // The endpoint refuses one fragment, every time it comes, without naming it.
        kvs.set_faults(KvsFaults {
            refuse_untimed: Some(4006),
            ..KvsFaults::default()
        });
        wait_camera(
            &agent,
            Duration::from_secs(60),
            "the refused fragment dead-lettered",
            |s| s["fragments_dead"] == 1,
        )
        .await;
        let refused = kvs.untimed_errors_for();
        assert!(refused.len() >= 5, "{refused:?}");
        let reasons: Vec<String> = std::fs::read_dir(dir.join("video/cam/dead"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".reason.txt"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect();
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            reasons[0].contains(&format!("KVS error 4006 (invalid MKV) for fragment {}", refused[0]))
                && reasons[0].contains("refused 5 times"),
            "{reasons:?}"
        );

        // The camera goes on, and only the refused fragment is missing.
        let before = kvs.distinct_fragments("untimed").len();
        wait_fragments(&kvs, "untimed", before + 3, Duration::from_secs(30), &agent).await;
        let all = kvs.distinct_fragments("untimed");
        assert!(all.iter().all(|f| f.fragment.timecode_ms != refused[0]));
        let g = gaps(&all, 200);
        assert!(
            g.len() == 1 && g[0].0 < refused[0] && refused[0] < g[0].1,
            "one gap, where the refused fragment was: {g:?}"
        );
        let metrics = agent.metrics_text().await;
        assert!(
            metrics.contains("tillgate_video_fragments_dead_total{camera=\"cam\"} 1"),
            "{metrics}"
        );
        agent.terminate();
    }

    /// ERRORs that are the service's (5000) never dead-letter a fragment, however many.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn service_errors_resend_a_fragment_without_ever_dead_lettering_it() {
        let (_dir, kvs, agent) = streaming_test_camera("flaky-service", 24).await;
        kvs.set_faults(KvsFaults {
            refuse_untimed: Some(5000),
            ..KvsFaults::default()
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while kvs.untimed_errors_for().len() < 8 {
            assert!(
                Instant::now() < deadline,
                "{:?}\n{}",
                kvs.untimed_errors_for(),
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let status = camera_status(&agent).await;
        assert_eq!(status["fragments_dead"], 0, "{status}");
        // Once the service recovers, the fragment it refused arrives.
        let refused = kvs.untimed_errors_for()[0];
        kvs.set_faults(KvsFaults::default());
        wait_received(&kvs, "flaky-service", refused, Duration::from_secs(30), &agent).await;
        agent.terminate();
    }

    /// ERROR 4008: the stream was deleted under a running camera. With
    /// `video.create_streams = true` it is created again and the camera goes on into it;
    /// nothing is dead-lettered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_stream_is_created_again_and_the_camera_goes_on() {
        let dir = tillgate_testkit::scratch_dir();
        let kvs = FakeKvs::start().await;
        let source = "source = \"test\"\nwidth = 320\nheight = 240\nbitrate_kbps = 300";
        let extra = "fragment_duration = \"1s\"\ncreate_streams = true\ndata_retention_hours = 24";
        let agent = Agent::start(&dir, &camera_options(&kvs, "phoenix", source, extra));
        wait_fragments(&kvs, "phoenix", 2, Duration::from_secs(30), &agent).await;
        kvs.delete_stream("phoenix");
        wait_camera(&agent, Duration::from_secs(20), "4008 counted", |s| {
            s["errors"]["4008"] == 1
        })
        .await;
        assert!(
            agent.log().contains("STREAM_NOT_ACTIVE"),
            "the log names the error: {}",
            agent.log()
        );
        // Created again, with the configured retention, and fragments arrive in the
        // new stream and are acknowledged (PERSISTED, as a 24 h stream sends).
        let acknowledged = camera_status(&agent).await["fragments_acknowledged"]
            .as_u64()
            .unwrap_or(0);
        wait_fragments(&kvs, "phoenix", 3, Duration::from_secs(30), &agent).await;
        assert_eq!(kvs.retention_hours("phoenix"), Some(24));
        wait_camera(
            &agent,
            Duration::from_secs(20),
            "acknowledged after the recreation",
            |s| s["fragments_acknowledged"].as_u64().unwrap_or(0) > acknowledged + 1,
        )
        .await;
        let status = camera_status(&agent).await;
        assert_eq!(status["fragments_dead"], 0, "{status}");
        let created = agent.log().matches("created the Kinesis Video stream").count();
        assert_eq!(created, 2, "at the start and after the deletion: {}", agent.log());
        agent.terminate();
    }

    /// Without `create_streams`, a deleted stream is reported with what to do, and
    /// the camera resumes by itself once someone creates it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_stream_that_may_not_be_created_is_reported_until_it_exists() {
        let dir = tillgate_testkit::scratch_dir();
        let kvs = FakeKvs::start().await;
        kvs.create_stream("gone", 24);
        let source = "source = \"test\"\nwidth = 320\nheight = 240\nbitrate_kbps = 300";
        let extra = "fragment_duration = \"1s\"\ncreate_streams = false";
        let agent = Agent::start(&dir, &camera_options(&kvs, "gone", source, extra));
        wait_fragments(&kvs, "gone", 2, Duration::from_secs(30), &agent).await;
        kvs.delete_stream("gone");
        wait_camera(&agent, Duration::from_secs(20), "the status says what to do", |s| {
            s["upload_error"]
                .as_str()
                .is_some_and(|e| e.contains("not found") && e.contains("create_streams"))
        })
        .await;
        assert!(!kvs.stream_exists("gone"), "the agent may not create it");
        kvs.create_stream("gone", 24);
        wait_fragments(&kvs, "gone", 2, Duration::from_secs(30), &agent).await;
        agent.terminate();
    }

    /// A KMS error (4501: the stream's key is disabled) is persistent: no fragment is
    /// dead-lettered, the status line says what to do, retries wait the longest
    /// backoff (`retry_max_backoff`, 2 s here), and once the key works again the
    /// refused fragments arrive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_disabled_kms_key_holds_the_fragments_and_says_what_to_do() {
        let (_dir, kvs, agent) = streaming_test_camera("sealed", 24).await;
        kvs.set_faults(KvsFaults {
            error_always: Some(4501),
            ..KvsFaults::default()
        });
        let status = wait_camera(&agent, Duration::from_secs(20), "4501 reported with what to do", |s| {
            s["errors"]["4501"].as_u64().unwrap_or(0) >= 3
                && s["upload_error"]
                    .as_str()
                    .is_some_and(|l| l.contains("KMS_KEY_DISABLED") && l.contains("retry_max_backoff"))
        })
        .await;
        assert_eq!(status["fragments_dead"], 0, "{status}");
        // Retries are paced at the longest backoff (2 s), from the first one on; the
        // ordinary backoff would start at 200 ms.
        let refusals: Vec<Instant> = kvs
            .acks()
            .into_iter()
            .filter(|a| a.error_id == Some(4501))
            .map(|a| a.at)
            .collect();
        let gaps: Vec<Duration> = refusals.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|g| *g >= Duration::from_millis(1_900)),
            "retries are not held to retry_max_backoff: {gaps:?}"
        );
        let first_refused = kvs
            .acks()
            .iter()
            .find(|a| a.error_id == Some(4501))
            .and_then(|a| a.timecode)
            .unwrap();
        kvs.set_faults(KvsFaults::default());
        wait_received(&kvs, "sealed", first_refused, Duration::from_secs(30), &agent).await;
        let status = camera_status(&agent).await;
        assert_eq!(status["fragments_dead"], 0, "{status}");
        agent.terminate();
    }
}
