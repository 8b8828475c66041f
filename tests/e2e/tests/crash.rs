//! `kill -9` while clients post: nothing acknowledged may be lost.

use rand::Rng;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tillgate_testkit::{
    integrity_check, journal_txn_ids, missing_from_archive, post, scratch_dir, txn, Agent, AgentOptions,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_acknowledged_transaction() {
    let dir = scratch_dir();
    let opts = AgentOptions::default();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut rng = rand::rng();
    for cycle in 0..10 {
        let agent = Agent::start(&dir, &opts);
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for c in 0..4 {
            let (url, stop, acked) = (agent.url(), stop.clone(), acked.clone());
            clients.push(tokio::spawn(async move {
                let client = tillgate_testkit::http_client();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("k{cycle}-c{c}-{i}");
                    i += 1;
                    // Errors are expected once the agent dies; only 200s count.
                    if let Ok((200, _)) = post(&client, &url, txn(&id, &format!("till-{c}"), 100).to_string()).await {
                        acked.lock().unwrap().insert(id);
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..700))).await;
        let journal = agent.journal();
        agent.kill9();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
        let acked_now = acked.lock().unwrap().clone();
        let journaled = journal_txn_ids(&journal);
        let lost: Vec<_> = acked_now.difference(&journaled).take(5).collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle}: acknowledged but not in the journal after kill -9: {lost:?}"
        );
        assert_eq!(integrity_check(&journal), "ok");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 500,
        "the test must actually post under load, got {}",
        acked.len()
    );
    // A last clean run ships the backlog: everything acknowledged reaches the archive.
    let agent = Agent::start(&dir, &opts);
    let archive = agent.archive();
    agent.stop();
    let missing = missing_from_archive(&archive, &acked);
    assert!(missing.is_empty(), "acknowledged but never archived: {missing:?}");
}
