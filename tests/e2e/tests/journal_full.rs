//! The size budget: refuse with 503 when full, lose nothing acknowledged, resume after
//! the sinks drain.

use std::time::{Duration, Instant};
use tillgate_testkit::{missing_from_archive, post, scratch_dir, txn, Agent, AgentOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_journal_refuses_with_503_and_resumes_once_the_archive_drains() {
    let dir = scratch_dir();
    // The archive cannot write (a file stands where its directory should be), so the
    // backlog grows until the 256 KiB budget is used up.
    let blocker = dir.join("blocked-archive");
    std::fs::write(&blocker, "not a directory").unwrap();
    let opts = AgentOptions {
        journal_toml:
            "max_bytes = \"256KiB\"\nretention = \"0s\"\nidempotency_window = \"0s\"\nprune_interval = \"100ms\"\n"
                .into(),
        archive_toml: format!("dir = \"{}\"", blocker.display()),
        // Rules without windows: nothing is kept for a replay horizon, so once the
        // archive ships, the rows go and room comes back. (With the full pack, 256 KiB
        // is all replay horizon: the refusal then says so and stays, rightly.)
        rules: Some(tillgate_testkit::rule_pack().join("20-amounts.toml")),
        ..Default::default()
    };
    let agent = Agent::start(&dir, &opts);
    let client = tillgate_testkit::http_client();
    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..5_000 {
        let id = format!("f-{i}");
        let (status, answer) = post(&client, &agent.url(), txn(&id, "till-1", 100).to_string())
            .await
            .unwrap();
        match status {
            200 => acked.push(id),
            503 => {
                refusal = Some(answer);
                break;
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    let refusal = refusal.expect("a 256 KiB journal must fill up");
    assert_eq!(refusal["error"], "journal_full");
    let msg = refusal["message"].as_str().unwrap();
    assert!(
        msg.contains("journal.max_bytes") && msg.contains("sink `archive`"),
        "{msg}"
    );
    assert!(acked.len() > 50, "only {} accepted before full", acked.len());
    let status: serde_json::Value = serde_json::from_str(
        &client
            .get(format!("{}/v1/status", agent.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["journal"]["full"], true, "{status}");
    assert!(
        status["sinks"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("blocked-archive"),
        "{status}"
    );

    // Let the archive write: the backlog drains, rows are pruned, ingest resumes.
    std::fs::remove_file(&blocker).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut resumed = false;
    let mut i = 0;
    while Instant::now() < deadline {
        let id = format!("r-{i}");
        i += 1;
        let (status, _) = post(&client, &agent.url(), txn(&id, "till-1", 100).to_string())
            .await
            .unwrap();
        if status == 200 {
            acked.push(id);
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        resumed,
        "ingest did not resume after the archive drained:\n{}",
        agent.log()
    );
    agent.stop();
    let missing = missing_from_archive(&blocker, &acked);
    assert!(
        missing.is_empty(),
        "acknowledged before the journal filled, but lost: {missing:?}"
    );
}
