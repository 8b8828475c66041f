//! SIGHUP reloads the rules: a broken rule file keeps the running rules (logged and
//! counted); a good one takes over with the window state rebuilt from the journal.

use serde_json::json;
use std::time::{Duration, Instant};
use tillgate_testkit::{post, scratch_dir, txn, Agent, AgentOptions};

const VELOCITY: &str = r#"
[[rule]]
id = "card-velocity"
key = "card.token"
window = "10m"
aggregates = { attempts = "count" }
when = 'attempts >= 3'
action = "review"
"#;

async fn metric(agent: &Agent, name: &str) -> f64 {
    let text = agent.metrics_text().await;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn wait_for(mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_old_rules_on_error_and_carries_state_into_new_rules() {
    let dir = scratch_dir();
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("velocity.toml"), VELOCITY).unwrap();
    let agent = Agent::start_with_rules(&dir, &AgentOptions::default(), &rules);
    let client = tillgate_testkit::http_client();
    let send = |id: &str, amount: i64| {
        let mut t = txn(id, "till-1", amount);
        t["card"]["token"] = json!("tok-hot");
        t.to_string()
    };
    for i in 0..2 {
        let (_, d) = post(&client, &agent.url(), send(&format!("a{i}"), 100)).await.unwrap();
        assert_eq!(d["decision"], "allow");
    }

    // A broken file: the reload fails, is counted, and the old rules keep deciding.
    std::fs::write(
        rules.join("velocity.toml"),
        VELOCITY.replace("attempts >= 3", "attempts >="),
    )
    .unwrap();
    agent.hup();
    assert!(
        wait_for(async || metric(&agent, "tillgate_rules_reload_errors_total").await >= 1.0).await,
        "reload error not counted:\n{}",
        agent.log()
    );
    let (_, d) = post(&client, &agent.url(), send("a2", 100)).await.unwrap();
    assert_eq!(d["decision"], "review", "the old rule still counts: {d}");
    assert!(agent.log().contains("previous rules stay active"));

    // A good file with a stricter action and a new rule: the count continues from the
    // journal (3 attempts so far), it is not reset by the reload.
    std::fs::write(rules.join("velocity.toml"), VELOCITY.replace("\"review\"", "\"block\"")).unwrap();
    std::fs::write(
        rules.join("amount.toml"),
        "[[rule]]\nid = \"big\"\nwhen = 'txn.total_minor >= 9000'\naction = \"review\"\n",
    )
    .unwrap();
    agent.hup();
    assert!(
        wait_for(async || agent.log().contains("SIGHUP: rules reloaded")).await,
        "no reload:\n{}",
        agent.log()
    );
    let (_, d) = post(&client, &agent.url(), send("a3", 9500)).await.unwrap();
    assert_eq!(d["decision"], "block", "{d}");
    let ids: Vec<&str> = d["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["big", "card-velocity"]);
    assert_eq!(
        d["rules"][1]["aggregates"]["attempts"], 4,
        "state rebuilt by replay: {d}"
    );
    agent.stop();
}
