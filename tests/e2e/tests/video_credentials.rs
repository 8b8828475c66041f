//! A camera's uplink and its credentials: a PutMedia connection never outlives the
//! credentials that signed it, credentials the service refuses are dropped, and a
//! gateway clock far from KVS's is corrected by KVS's `Date`. Against the kit's PutMedia
//! endpoint (checking SigV4 with the IoT endpoint's keys, by its own clock) and a
//! test-pattern camera.

// `make test-arm64` skips `camera::` (no x264enc for arm64 here): see video.rs.

mod camera {
    use std::collections::HashSet;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};
    use tillgate_testkit::checkers::kinesis::iot_toml;
    use tillgate_testkit::checkers::video::{camera_options, camera_status, gaps, video_toml, wait_fragments};
    use tillgate_testkit::fakes::kvs::FakeKvs;
    use tillgate_testkit::{make_tls_files, Agent, AgentOptions, FakeIot};

    const SOURCE: &str = "source = \"test\"\nwidth = 320\nheight = 240\nbitrate_kbps = 300";

    /// A camera whose only credentials come from the kit's IoT endpoint (keys living
    /// `lifetime`), streaming to a KVS endpoint that accepts only those keys.
    async fn iot_camera(stream: &str, lifetime: Duration, extra: &str) -> (PathBuf, FakeKvs, FakeIot, Agent) {
        let dir = tillgate_testkit::scratch_dir();
        let tls = make_tls_files(&dir.join("tls"));
        let iot = FakeIot::start(&tls, "kvs-camera", lifetime).await;
        let kvs = FakeKvs::start().await;
        kvs.create_stream(stream, 24);
        kvs.require_keys(iot.keys.clone());
        let iot_section = iot_toml(&iot.endpoint(), &tls, "kvs-camera", "5s").replace("[kinesis.iot]", "[video.iot]");
        let options = AgentOptions {
            extra_toml: video_toml(
                &kvs.url(),
                stream,
                SOURCE,
                &format!("fragment_duration = \"1s\"\n{extra}\n{iot_section}"),
            ),
            env: vec![("AWS_EC2_METADATA_DISABLED".into(), "true".into())],
            ..AgentOptions::default()
        };
        let agent = Agent::start(&dir, &options);
        wait_fragments(&kvs, stream, 2, Duration::from_secs(30), &agent).await;
        (dir, kvs, iot, agent)
    }

    async fn run_for(d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// Every fragment the camera made until now has arrived, without a hole.
    async fn assert_whole(kvs: &FakeKvs, stream: &str, agent: &Agent) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while camera_status(agent).await["backlog_fragments"].as_u64().unwrap_or(99) > 2 {
            assert!(Instant::now() < deadline, "backlog not sent\n{}", agent.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let g = gaps(&kvs.distinct_fragments(stream), 200);
        assert!(g.is_empty(), "holes in the stream: {g:?}\n{}", agent.log());
    }

    /// Credentials living 40 s: each connection ends (drained) before its credentials
    /// expire, and the next is signed with new ones. The endpoint ends and counts a
    /// connection still open when its key expires.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_ends_before_its_credentials_expire_and_the_next_one_has_new_ones() {
        let (_dir, kvs, iot, agent) = iot_camera("expiring", Duration::from_secs(40), "ack_timeout = \"5s\"").await;
        run_for(Duration::from_secs(85)).await;
        assert_eq!(kvs.outlived_credentials(), 0, "{}", agent.log());
        let keys = kvs.keys_used();
        let distinct: HashSet<_> = keys.iter().collect();
        assert!(
            distinct.len() >= 3,
            "one key per connection, three connections: {keys:?}"
        );
        assert_eq!(distinct.len(), keys.len(), "a key signs one connection: {keys:?}");
        assert!(iot.issued.load(std::sync::atomic::Ordering::SeqCst) >= 3);
        assert!(agent.log().contains("\"credentials_expiry\""), "{}", agent.log());
        assert_eq!(kvs.refusals().get("expired token"), None, "{:?}", kvs.refusals());
        assert_whole(&kvs, "expiring", &agent).await;
        agent.stop();
    }

    /// Keys revoked at the service (403): the cached credentials are dropped and new
    /// ones fetched at once, though the refused ones had an hour left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn credentials_the_service_refuses_are_dropped_and_new_ones_fetched() {
        let (_dir, kvs, iot, agent) =
            iot_camera("revoked", Duration::from_secs(3600), "connection_max_age = \"10s\"").await;
        assert_eq!(iot.issued.load(std::sync::atomic::Ordering::SeqCst), 1);
        kvs.revoke_issued_keys();
        let before = kvs.distinct_fragments("revoked").len();
        wait_fragments(&kvs, "revoked", before + 16, Duration::from_secs(50), &agent).await;
        assert!(
            kvs.refusals().get("revoked token").is_some_and(|n| *n >= 1),
            "{:?}",
            kvs.refusals()
        );
        assert_eq!(
            iot.issued.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "one refusal, one new key: {:?}",
            kvs.keys_used()
        );
        assert_eq!(kvs.refusals().get("revoked token"), Some(&1), "{:?}", kvs.refusals());
        assert_whole(&kvs, "revoked", &agent).await;
        agent.stop();
    }

    /// KVS's clock 20 minutes ahead of the gateway's: the first request is refused
    /// (signature expired), the next is signed at KVS's time from its `Date`; when the
    /// two agree again, so does the signing clock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gateway_clock_far_from_kvs_is_corrected_by_its_date_header() {
        let dir = tillgate_testkit::scratch_dir();
        let kvs = FakeKvs::start().await;
        kvs.create_stream("skewed", 24);
        kvs.set_clock_ahead(1200);
        let agent = Agent::start(
            &dir,
            &camera_options(
                &kvs,
                "skewed",
                SOURCE,
                "fragment_duration = \"1s\"\nconnection_max_age = \"10s\"",
            ),
        );
        wait_fragments(&kvs, "skewed", 4, Duration::from_secs(40), &agent).await;
        assert_eq!(
            kvs.refusals().get("signature expired"),
            Some(&1),
            "{:?}",
            kvs.refusals()
        );
        let skew = agent.metric("tillgate_video_clock_skew_seconds{camera=\"cam\"}").await;
        assert!((1198.0..=1202.0).contains(&skew), "{skew}");
        assert!(agent.log().contains("differs from KVS's"), "{}", agent.log());

        // NTP fixed the gateway's clock, or KVS's: the next connection is signed 20 min
        // ahead, refused once, and the offset goes.
        kvs.set_clock_ahead(0);
        let before = kvs.distinct_fragments("skewed").len();
        wait_fragments(&kvs, "skewed", before + 15, Duration::from_secs(60), &agent).await;
        assert_eq!(
            kvs.refusals().get("signature expired"),
            Some(&2),
            "{:?}",
            kvs.refusals()
        );
        assert!(agent
            .metrics_text()
            .await
            .contains("tillgate_video_clock_skew_seconds{camera=\"cam\"} 0"));
        assert_whole(&kvs, "skewed", &agent).await;
        agent.stop();
    }
}
