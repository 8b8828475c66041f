//! The command line as an operator uses it.

use tillgate_testkit::{post, run_cli, scratch_dir, txn, Agent, AgentOptions};

#[test]
fn check_config_accepts_the_shipped_reference_and_demo_configs() {
    let root = tillgate_testkit::repo_root();
    for f in ["config/tillgate.toml", "config/demo.toml"] {
        let (code, out, err) = run_cli(&["check-config", root.join(f).to_str().unwrap()]);
        assert_eq!(code, 0, "{f}: {out}{err}");
        assert!(out.contains(": ok ("), "{out}");
    }
}

#[test]
fn check_config_exits_78_naming_key_and_line() {
    let dir = scratch_dir();
    let f = dir.join("bad.toml");
    std::fs::write(
        &f,
        "data_dir = \"/tmp\"\n\n[journal]\ndurability = \"fsync\"\nmax_bytes = \"lots\"\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(&["check-config", f.to_str().unwrap()]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("bad.toml:5") && err.contains("journal.max_bytes") && err.contains("MiB"),
        "{err}"
    );

    std::fs::write(
        dir.join("rules.toml"),
        "[[rule]]\nid = \"x\"\naction = \"block\"\nwhen = 'true'\ntypez = [\"sale\"]\n",
    )
    .unwrap();
    std::fs::write(
        &f,
        format!("[rules]\npaths = [\"{}\"]\n", dir.join("rules.toml").display()),
    )
    .unwrap();
    let (code, _, err) = run_cli(&["check-config", f.to_str().unwrap()]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("rules.toml:5") && err.contains("typez"), "{err}");
}

#[test]
fn run_with_bad_rules_refuses_to_start_with_78() {
    let dir = scratch_dir();
    std::fs::write(
        dir.join("rules.toml"),
        "[[rule]]\nid = \"x\"\naction = \"explode\"\nwhen = 'true'\n",
    )
    .unwrap();
    let f = dir.join("t.toml");
    std::fs::write(
        &f,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[rules]\npaths = [\"{}\"]\n",
            dir.display(),
            dir.join("rules.toml").display()
        ),
    )
    .unwrap();
    let (code, _, err) = run_cli(&["run", "--config", f.to_str().unwrap()]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("explode"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_backlog_dead_letters_and_rule_hits_live_and_stopped() {
    let dir = scratch_dir();
    let agent = Agent::start(&dir, &AgentOptions::default());
    let c = tillgate_testkit::http_client();
    post(&c, &agent.url(), txn("s-1", "till-1", 300_000).to_string())
        .await
        .unwrap();
    post(&c, &agent.url(), "{oops".to_string()).await.unwrap();
    let config = agent.config_path.to_str().unwrap().to_string();
    let (code, out, err) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || run_cli(&["status", "--config", &config])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("running") && out.contains("sink     archive"), "{out}");
    assert!(
        out.contains("dead letters 1") && out.contains("malformed JSON"),
        "{out}"
    );
    assert!(out.contains("high-amount-sale") && out.contains("1 hits"), "{out}");
    // Every store rule of the shipped pack is enabled (chain rules run in the cloud).
    let rules: usize = std::fs::read_dir(tillgate_testkit::rule_pack())
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .map(|text| {
            let file: toml::Value = toml::from_str(&text).unwrap();
            file.get("rule").and_then(toml::Value::as_array).map_or(0, |rules| {
                rules
                    .iter()
                    .filter(|r| r.get("scope").and_then(toml::Value::as_str) != Some("chain"))
                    .count()
            })
        })
        .sum();
    assert!(out.contains(&format!("rules    {rules} active, 3 reports")), "{out}");
    agent.stop();
    let (code, out, err) = run_cli(&["status", "--config", &config, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "stopped");
    assert_eq!(v["sinks"][0]["backlog_records"], 0, "drained before exit: {v}");
    assert_eq!(v["dead_letters"]["count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_reports_throughput_latency_and_writes_json() {
    let dir = scratch_dir();
    let agent = Agent::start(&dir, &AgentOptions::default());
    let out_json = dir.join("sim.json");
    let args = [
        "simulate".to_string(),
        "--url".into(),
        agent.url(),
        "--rate".into(),
        "300".into(),
        "--duration".into(),
        "2s".into(),
        "--fraud-rate".into(),
        "0.2".into(),
        "--json-out".into(),
        out_json.display().to_string(),
    ];
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&a)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();
    let decided = v["decided"].as_u64().unwrap();
    assert!(decided > 300, "{v}");
    assert!(v["latency"]["p99_us"].as_u64().unwrap() > 0);
    assert!(
        v["decisions"]["block"].as_u64().unwrap_or(0) > 0,
        "injected fraud must be blocked: {v}"
    );
    assert!(
        v["refused"]["400"].as_u64().unwrap_or(0) > 0,
        "injected bad input must be refused: {v}"
    );
}

/// systemd may stop the service while it starts (replaying the journal can take
/// seconds): SIGTERM from the first log line on is a clean stop, not the default
/// action that kills the process mid-start.
#[test]
fn sigterm_during_start_up_is_a_clean_stop() {
    let mut starting = StartingAgent::spawn();
    starting.signal(Signal::SIGTERM);
    starting.expect_clean_exit("SIGTERM during start-up");
}

/// `systemctl reload` (SIGHUP) while the agent starts must not kill it either.
#[test]
fn sighup_during_start_up_does_not_kill_the_agent() {
    let mut starting = StartingAgent::spawn();
    starting.signal(Signal::SIGHUP);
    starting.wait_for_line("tillgate ready");
    starting.signal(Signal::SIGTERM);
    starting.expect_clean_exit("SIGHUP during start-up, then SIGTERM");
}

use nix::sys::signal::Signal;

/// The agent as a process that has logged its first line and is still starting.
struct StartingAgent {
    child: std::process::Child,
    log_path: std::path::PathBuf,
}

impl StartingAgent {
    fn spawn() -> Self {
        let dir = scratch_dir();
        Agent::start(&dir, &AgentOptions::default()).stop();
        let log_path = dir.join("start-stop.log");
        let child = tillgate_testkit::process::command()
            .args(["run", "--config"])
            .arg(dir.join("tillgate.toml"))
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let starting = StartingAgent { child, log_path };
        starting.wait_for_line("tillgate starting");
        starting
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn wait_for_line(&self, line: &str) {
        use std::time::{Duration, Instant};
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().contains(line) {
            assert!(Instant::now() < deadline, "no `{line}` line:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn expect_clean_exit(&mut self, what: &str) {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit {status} after {what}:\n{}", self.log());
        assert!(self.log().contains("tillgate stopped"), "{}", self.log());
    }
}

/// `check-config` says everything the agent would start: every source and every sink,
/// in the order the journal's cursors are kept.
#[test]
fn check_config_lists_every_source_and_sink() {
    let dir = scratch_dir();
    let f = dir.join("all.toml");
    std::fs::write(&f, all_components_config(&dir, "")).unwrap();
    let (code, out, err) = run_cli(&["check-config", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("sources: http 127.0.0.1:18080, mqtt mqtt://127.0.0.1:1883;"),
        "{out}"
    );
    assert!(
        out.contains("sinks: archive, kinesis-transactions, kinesis-alerts, mqtt-alerts)"),
        "{out}"
    );
}

/// The same with cameras (GStreamer's plugins must be there: skipped on aarch64 with the
/// other camera tests).
mod camera {
    use super::*;

    #[test]
    fn check_config_lists_cameras_and_their_tag_sink() {
        let dir = scratch_dir();
        let f = dir.join("all.toml");
        let video = "[video]\n[[video.cameras]]\nname = \"door\"\nsource = \"test\"\n";
        std::fs::write(&f, all_components_config(&dir, video)).unwrap();
        let (code, out, err) = run_cli(&["check-config", f.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("mqtt mqtt://127.0.0.1:1883, camera door;"), "{out}");
        assert!(out.contains(", mqtt-alerts, video-tags)"), "{out}");
    }
}

/// HTTP, MQTT with alerts, Kinesis with two streams, the archive, and `extra`.
fn all_components_config(dir: &std::path::Path, extra: &str) -> String {
    format!(
        "data_dir = \"{d}\"\n[http]\nlisten = \"127.0.0.1:18080\"\n[rules]\npaths = [\"{r}\"]\n\
         [mqtt]\nhost = \"127.0.0.1\"\nalerts = true\n\
         [kinesis]\nregion = \"us-east-1\"\n[kinesis.streams]\ntransactions = \"txns\"\nalerts = \"alerts\"\n{extra}",
        d = dir.display(),
        r = tillgate_testkit::rule_pack().display(),
    )
}
