//! The packaging suite: stripped binary sizes (amd64, aarch64), idle RSS, and the time
//! from spawning the agent to systemd's READY=1, on an empty journal and with a backlog.

use super::{fill_journal, free_port, machine, open_with_pack, pid_rss_kib, save, stop_agent, write_config, Args};
use anyhow::Result;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use tillgate::config::JournalConfig;

/// Bytes of `bin` once stripped (a copy is stripped with `strip_tool`).
fn stripped_size(bin: &Path, strip_tool: &str, dir: &Path) -> Result<u64> {
    let copy = dir.join(format!(
        "stripped-{}",
        bin.file_name().and_then(|n| n.to_str()).unwrap_or("bin")
    ));
    std::fs::copy(bin, &copy)?;
    let ok = std::process::Command::new(strip_tool).arg(&copy).status()?.success();
    anyhow::ensure!(ok, "{strip_tool} failed on {}", copy.display());
    Ok(std::fs::metadata(&copy)?.len())
}

/// Starts the agent on `data_dir` with a notify socket; returns the seconds from spawn
/// to READY=1, the agent's RSS after `idle` more seconds, and stops it.
fn time_to_ready(bin: &Path, data_dir: &Path, idle: Duration) -> Result<(f64, u64)> {
    use std::os::unix::net::UnixDatagram;
    let port = free_port();
    let config = write_config(data_dir, port)?;
    let sock_path = data_dir.join("notify.sock");
    let _ = std::fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let started = Instant::now();
    let child = std::process::Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(std::fs::File::create(data_dir.join("agent.log"))?)
        .spawn()?;
    let mut buf = [0u8; 4096];
    let ready = loop {
        if let Ok(n) = sock.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
                break started.elapsed().as_secs_f64();
            }
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "no READY in 600 s");
    };
    std::thread::sleep(idle);
    let rss = pid_rss_kib(child.id())?;
    stop_agent(child)?;
    Ok((ready, rss))
}

pub(crate) fn suite(rt: &tokio::runtime::Runtime, args: &Args) -> Result<()> {
    let dir = tempfile::tempdir()?;
    eprintln!("[packaging 1/3] stripped binary sizes");
    let amd64 = stripped_size(&args.bin, "strip", dir.path())?;
    let arm64 = match &args.arm64_bin {
        Some(b) if b.exists() => Some(stripped_size(b, "aarch64-linux-gnu-strip", dir.path())?),
        _ => None,
    };
    eprintln!("[packaging 2/3] READY and idle RSS on an empty journal");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty)?;
    let (ready_empty, idle_rss) = time_to_ready(&args.bin, &empty, Duration::from_secs(10))?;
    let rows = args.rebuild_rows;
    eprintln!("[packaging 3/3] READY with a {rows}-transaction backlog (no sink has shipped any of it)");
    let full = dir.path().join("backlog");
    std::fs::create_dir_all(&full)?;
    let config = JournalConfig {
        max_bytes: tillgate_sdk::ByteSize::gib(16),
        durability: tillgate::config::Durability::Os,
        ..JournalConfig::default()
    };
    rt.block_on(async {
        let journal = open_with_pack(&full.join("journal.db"), &config)?;
        fill_journal(&journal, rows, "p").await?;
        journal.close().await;
        anyhow::Ok(())
    })?;
    let (ready_backlog, _) = time_to_ready(&args.bin, &full, Duration::from_millis(100))?;
    let results = json!({
        "machine": machine(),
        "command": "make bench (tillgate-bench --suite packaging)",
        "date": chrono::Utc::now().to_rfc3339(),
        "stripped_bytes_amd64": amd64,
        "stripped_bytes_arm64": arm64,
        "ready_seconds_empty_journal": ready_empty,
        "idle_rss_kib": idle_rss,
        "backlog_transactions": rows,
        "ready_seconds_with_backlog": ready_backlog,
    });
    println!("{}", serde_json::to_string_pretty(&results)?);
    save(&args.out.with_file_name("packaging.json"), &results)
}
