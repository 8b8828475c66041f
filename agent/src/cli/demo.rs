//! `tillgate demo`: the agent on embedded defaults, driven by simulated terminals with
//! injected fraud, then a summary of what happened and where to look.

use crate::config;
use crate::simulate::{self, SimConfig};
use crate::{agent, status};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEMO_CONFIG: &str = include_str!("../../../config/demo.toml");
/// Appended to the demo config when the binary has cameras.
#[cfg(feature = "video")]
const DEMO_VIDEO: &str = include_str!("../../../config/demo-video.toml");

fn demo_config() -> String {
    #[cfg(feature = "video")]
    return format!("{DEMO_CONFIG}\n{DEMO_VIDEO}");
    #[cfg(not(feature = "video"))]
    DEMO_CONFIG.to_string()
}
/// The rule pack, as shipped in `config/rules/`.
const RULE_PACK: [(&str, &str); 9] = [
    (
        "10-deny-lists.toml",
        include_str!("../../../config/rules/10-deny-lists.toml"),
    ),
    ("20-amounts.toml", include_str!("../../../config/rules/20-amounts.toml")),
    (
        "30-velocity.toml",
        include_str!("../../../config/rules/30-velocity.toml"),
    ),
    ("40-refunds.toml", include_str!("../../../config/rules/40-refunds.toml")),
    ("50-shift.toml", include_str!("../../../config/rules/50-shift.toml")),
    ("60-reports.toml", include_str!("../../../config/rules/60-reports.toml")),
    (
        "lists/denied_card_tokens.txt",
        include_str!("../../../config/rules/lists/denied_card_tokens.txt"),
    ),
    (
        "lists/denied_bins.txt",
        include_str!("../../../config/rules/lists/denied_bins.txt"),
    ),
    (
        "lists/denied_customers.txt",
        include_str!("../../../config/rules/lists/denied_customers.txt"),
    ),
];

/// Runs the demo for `duration`; returns the exit code.
///
/// Long on purpose: a script read top to bottom (set up, start, drive, stop, summarize)
/// whose printed lines follow its order.
pub async fn run(duration: Duration, data_dir: Option<PathBuf>) -> i32 {
    let dir = match data_dir {
        Some(d) => d,
        None => match tempfile::Builder::new().prefix("tillgate-demo-").tempdir() {
            Ok(t) => t.keep(),
            Err(e) => {
                eprintln!("tillgate demo: cannot create a temporary directory: {e}");
                return 1;
            }
        },
    };
    if let Err(e) = write_rule_pack(&dir) {
        eprintln!("tillgate demo: cannot write the rule pack into {}: {e}", dir.display());
        return 1;
    }
    let mut cfg = match config::load_str(&demo_config()) {
        Ok(c) => c,
        Err(e) => {
            // The camera needs GStreamer's plugins; say which is missing.
            eprintln!("tillgate demo: {e}");
            return 1;
        }
    };
    cfg.data_dir = dir.clone();
    cfg.rules.paths = vec![dir.join("rules")];
    super::init_logging(&cfg);

    println!("tillgate demo — the agent on embedded defaults, no cloud account, no broker");
    println!("  data dir  {}", dir.display());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<(SocketAddr, std::sync::Arc<crate::http::AppState>)>();
    let agent = tokio::spawn(agent::run(
        cfg.clone(),
        async move {
            let _ = stop_rx.await;
        },
        move |addr, state| {
            let _ = addr_tx.send((addr, state));
        },
    ));
    let (addr, state) = match addr_rx.await {
        Ok(a) => a,
        Err(_) => {
            let e = agent.await.map(|r| r.err().map(|e| e.to_string()));
            eprintln!("tillgate demo: the agent did not start: {e:?}");
            return 1;
        }
    };
    println!("  listening http://{addr}  (POST /v1/transactions, GET /v1/status, GET /metrics)");
    println!("  simulating 16 terminals in 4 stores at 400 txn/s for {duration:?}, 4 % injected fraud and bad input\n");

    let sim = SimConfig {
        url: format!("http://{addr}"),
        token: None,
        stores: 4,
        terminals: 16,
        rate: 400.0,
        duration,
        fraud_rate: 0.04,
        batch: 1,
        seed: chrono::Utc::now().timestamp() as u64,
    };
    let report = simulate::run(sim, |p| {
        print!(
            "\r  {:>5.1}s  {:>7} decided   {:>4} blocked   {:>4} review   {:>4} refused (bad input)",
            p.elapsed.as_secs_f64(),
            p.decided,
            p.blocked,
            p.review,
            p.refused
        );
        let _ = std::io::stdout().flush();
    })
    .await;
    let cameras = state
        .components
        .iter()
        .find(|c| c.key == "cameras")
        .map(|c| c.read())
        .unwrap_or_default();
    println!("\n\n  draining: intake stopped, archive flushing...");
    let _ = stop_tx.send(());
    match agent.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("tillgate demo: agent error: {e}");
            return 1;
        }
        Err(e) => {
            eprintln!("tillgate demo: agent task failed: {e}");
            return 1;
        }
    }
    summary(&report, &cfg, &dir, &cameras);
    if report.decided == 0 {
        return 1;
    }
    0
}

/// The demo camera: what it recorded and where the fragments are.
fn cameras_summary(cameras: &serde_json::Value, cfg: &config::Config) {
    #[cfg(feature = "video")]
    for c in serde_json::from_value::<Vec<tillgate_video::CameraStatus>>(cameras.clone()).unwrap_or_default() {
        let ring = cfg
            .video
            .as_ref()
            .map(|v| cfg.data_path(&v.dir).join(&c.name))
            .unwrap_or_default();
        let mut files: Vec<_> = std::fs::read_dir(&ring)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "mkv"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        println!(
            "  camera        {}: {:.1} fps, {:.0} kbit/s, {} fragments of 2 s kept in {} (upload {}: no cloud configured)",
            c.name,
            c.fps,
            c.bitrate_bps / 1000.0,
            files.len(),
            ring.display(),
            c.upload
        );
        if let Some(last) = files.last() {
            println!("    play one:  ffplay {}", last.display());
        }
        println!(
            "    blocked and review sales tag the fragment recorded at that moment (MKV Tags = KVS fragment metadata):"
        );
        println!("      gst-launch-1.0 -t filesrc location=<fragment> ! matroskademux ! fakesink | grep tillgate");
    }
    #[cfg(not(feature = "video"))]
    let _ = (cameras, cfg);
}

fn write_rule_pack(dir: &Path) -> std::io::Result<()> {
    for (name, text) in RULE_PACK {
        let path = dir.join("rules").join(name);
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        std::fs::write(path, text)?;
    }
    Ok(())
}

fn summary(r: &simulate::SimReport, cfg: &config::Config, dir: &Path, cameras: &serde_json::Value) {
    println!("\nsummary");
    println!(
        "  transactions  {} sent, {} decided ({:.0}/s)",
        r.sent, r.decided, r.throughput_per_s
    );
    let d = |k: &str| r.decisions.get(k).copied().unwrap_or(0);
    println!(
        "  decisions     allow {}, review {}, block {}",
        d("allow"),
        d("review"),
        d("block")
    );
    let refused: Vec<String> = r.refused.iter().map(|(s, n)| format!("{n} × HTTP {s}")).collect();
    if !refused.is_empty() {
        println!(
            "  refused       {} (injected bad input: each has a dead letter)",
            refused.join(", ")
        );
    }
    println!("  rules fired");
    for (rule, n) in &r.rules_fired {
        println!("    {rule:<26} {n}");
    }
    println!(
        "  latency       p50 {} µs, p99 {} µs, p99.9 {} µs (client, incl. HTTP); agent p50 {} µs, p99 {} µs",
        r.latency.p50_us, r.latency.p99_us, r.latency.p999_us, r.agent_latency.p50_us, r.agent_latency.p99_us
    );
    let journal = cfg.data_path(&cfg.journal.path);
    if let Ok(s) = status::offline(&journal) {
        println!(
            "  journal       {} (last seq {}, {} dead letters)",
            journal.display(),
            s.journal.last_seq,
            s.dead_letters.count
        );
        for k in &s.sinks {
            println!(
                "  sink          {} cursor {}, backlog {}",
                k.name, k.cursor, k.backlog_records
            );
        }
    }
    let archive = cfg.archive().map(|a| a.dir).unwrap_or_else(|| dir.join("archive"));
    let mut files = Vec::new();
    for channel in ["transactions", "decisions", "alerts"] {
        if let Ok(rd) = std::fs::read_dir(archive.join(channel)) {
            for e in rd.flatten() {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                files.push((e.path(), len));
            }
        }
    }
    files.sort();
    println!("  archive       {} files under {}", files.len(), archive.display());
    for (p, len) in files.iter().take(8) {
        println!("    {:>9} B  {}", len, p.strip_prefix(&archive).unwrap_or(p).display());
    }
    cameras_summary(cameras, cfg);
    println!("\nlook around:");
    println!("  head -n 2 {}/alerts/*.ndjson", archive.display());
    println!(
        "  sqlite3 {} 'SELECT source, reason FROM dead_letters LIMIT 5'",
        journal.display()
    );
    println!("  rm -r {}   # when done", dir.display());
}
