//! The gateway's disk fills up under the agent: a real small filesystem (tmpfs) holds
//! the journal and the archive, with budgets larger than the disk, so the disk runs out
//! first. The agent refuses with a clear error, keeps every acknowledged transaction
//! and an intact journal, and resumes by itself when space returns.

use serde_json::Value;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tillgate_testkit::{integrity_check, journal_txn_ids, post_ndjson, scratch_dir, txn, Agent, AgentOptions, SmallFs};

fn batch(prefix: &str, n: usize) -> (String, Vec<String>) {
    let mut body = String::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let mut t = txn(&id, "till-1", 100);
        t["note"] = Value::from("x".repeat(600));
        body.push_str(&t.to_string());
        body.push('\n');
        ids.push(id);
    }
    (body, ids)
}

/// Posts batches until one line is refused; returns the acknowledged ids and the
/// first refusal.
async fn fill(agent: &Agent, client: &reqwest::Client, prefix: &str) -> (Vec<String>, Value) {
    let mut acked = Vec::new();
    for b in 0..10_000 {
        let (body, ids) = batch(&format!("{prefix}-{b}"), 50);
        let (status, answers) = post_ndjson(client, &agent.url(), body)
            .await
            .expect("the agent answers");
        assert_eq!(status, 200);
        for (id, a) in ids.into_iter().zip(&answers) {
            if a["status"] == 200 {
                acked.push(id);
            } else {
                return (acked, a.clone());
            }
        }
    }
    panic!("the disk never filled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_refused_clearly_loses_nothing_acknowledged_and_recovers_by_itself() {
    let dir = scratch_dir();
    let disk = SmallFs::mount(&dir.join("data"), "12m");
    let opts = AgentOptions {
        data_dir: Some(disk.dir.clone()),
        // Budgets far above the disk: the disk is what runs out.
        journal_toml: "max_bytes = \"1GiB\"\n".into(),
        archive_toml: "max_total_bytes = \"1GiB\"\n".into(),
        ..AgentOptions::default()
    };
    let agent = Agent::start(&dir.join("agent"), &opts);
    let client = tillgate_testkit::http_client();

    let (mut acked, refusal) = fill(&agent, &client, "a").await;
    assert!(
        acked.len() > 100,
        "only {} accepted before the disk filled",
        acked.len()
    );
    assert_eq!(refusal["status"], 503, "{refusal}");
    assert_eq!(refusal["error"], "disk_full", "{refusal}");
    let message = refusal["message"].as_str().unwrap();
    assert!(
        message.contains("is full") && message.contains(&disk.dir.display().to_string()),
        "{message}"
    );
    // Still serving: status answers, bad input still gets its 4xx, nothing crashed.
    let status = agent.status_json().await;
    assert!(status["journal"].is_object(), "{status}");
    let (code, _) = tillgate_testkit::post(&client, &agent.url(), "{not json".to_string())
        .await
        .unwrap();
    assert_eq!(code, 400);
    // ...and its dead letter is stored if the full disk still has a page for it, or
    // counted as lost: never neither.
    let metrics = agent.metrics_text().await;
    let stored = metrics.contains("tillgate_dead_letters_total{reason=\"malformed\",source=\"http\"} 1");
    let lost = metrics.contains("tillgate_dead_letters_lost_total{source=\"http\"} 1");
    assert!(
        stored ^ lost,
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("dead_letters"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Room again: the agent takes transactions by itself, no restart.
    disk.resize("64m");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (body, ids) = batch(&format!("after-{}", acked.len()), 5);
        let (_, answers) = post_ndjson(&client, &agent.url(), body).await.unwrap();
        let ok: Vec<String> = ids
            .into_iter()
            .zip(&answers)
            .filter(|(_, a)| a["status"] == 200)
            .map(|(id, _)| id)
            .collect();
        let resumed = ok.len() == answers.len();
        acked.extend(ok);
        if resumed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within 30 s of space returning:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let journal = agent.journal();
    let archive = agent.archive();
    agent.stop();
    assert_eq!(integrity_check(&journal), "ok");
    let journaled = journal_txn_ids(&journal);
    let lost: Vec<&String> = acked.iter().filter(|id| !journaled.contains(*id)).take(5).collect();
    assert!(lost.is_empty(), "acknowledged, then lost: {lost:?}");
    // The archive, written to the same full disk, holds whole lines and every
    // acknowledged transaction once it has caught up.
    let archived: HashSet<String> = tillgate_testkit::archive_txn_ids(&archive).into_keys().collect();
    let missing = acked.iter().filter(|id| !archived.contains(*id)).count();
    assert_eq!(missing, 0, "not in the archive after the drain");
    drop(disk);
}
