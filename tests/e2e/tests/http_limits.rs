//! The HTTP endpoint under clients that never finish: headers and bodies trickled a
//! byte at a time, more connections than the cap. Terminals that behave still get
//! their decisions, and a stop is bounded by `shutdown.drain_timeout`.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tillgate_testkit::{post, scratch_dir, txn, Agent, AgentOptions};

const CAP: usize = 32;

fn options() -> AgentOptions {
    AgentOptions {
        http_toml: format!(
            "header_timeout = \"2s\"\nbody_timeout = \"2s\"\nidle_timeout = \"4s\"\nmax_connections = {CAP}\nshutdown_grace = \"1s\"\n"
        ),
        drain_timeout: "4s".into(),
        ..AgentOptions::default()
    }
}

/// A client that sends its request a byte at a time, forever (until the agent closes
/// the connection): its headers, or a body after complete headers.
fn trickler(addr: SocketAddr, body: bool) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let Ok(mut s) = TcpStream::connect(addr) else {
            return false;
        };
        // Headers: a header value that never ends. Body: complete headers, then a body
        // that never completes.
        let head = if body {
            "POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        } else {
            "POST /v1/transactions HTTP/1.1\r\nHost: x\r\nX-Slow: "
        };
        let _ = s.write_all(head.as_bytes());
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(300));
            if s.write_all(b"a").is_err() {
                // Closed by the agent: what the test wants.
                return true;
            }
        }
        false
    })
}

fn counter(metrics: &str, line_start: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_clients_neither_starve_terminals_nor_hold_up_a_stop() {
    let dir = scratch_dir();
    let mut agent = Agent::start(&dir, &options());
    let client = tillgate_testkit::http_client();
    // Twice the connection cap, half trickling headers, half a body.
    let tricklers: Vec<_> = (0..2 * CAP).map(|i| trickler(agent.addr, i % 2 == 1)).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..5 {
        let sent = Instant::now();
        let (status, answer) = post(
            &client,
            &agent.url(),
            txn(&format!("fair-{i}"), "till-1", 100).to_string(),
        )
        .await
        .expect("a decision despite the tricklers");
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["txn_id"], format!("fair-{i}"));
        eprintln!("decision {i} came {:?} after sending", sent.elapsed());
    }
    for t in tricklers {
        assert!(t.join().unwrap(), "a trickling client was never cut off");
    }
    let metrics = agent.metrics_text().await;
    eprintln!(
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("http_connections"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let header = counter(&metrics, "tillgate_http_connections_total{outcome=\"header_timeout\"}");
    let body = counter(&metrics, "tillgate_http_connections_total{outcome=\"body_timeout\"}");
    assert!(header >= CAP as u64, "header timeouts counted: {header}");
    assert!(body >= CAP as u64, "body timeouts counted: {body}");

    // A stop with every connection slot held by a trickler: bounded by drain_timeout.
    let tricklers: Vec<_> = (0..2 * CAP).map(|i| trickler(agent.addr, i % 2 == 1)).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = Instant::now();
    agent.sigterm();
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("the agent exits within 10 s of SIGTERM with every slot held");
    let took = stopping.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took < Duration::from_secs(4) + Duration::from_secs(3),
        "stop took {took:?} (drain_timeout 4s)"
    );
    for t in tricklers {
        assert!(t.join().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_and_a_busy_one_is_not() {
    let dir = scratch_dir();
    let agent = Agent::start(&dir, &options());
    let mut s = TcpStream::connect(agent.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = txn("idle-1", "till-1", 100).to_string();
    write!(
        s,
        "POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    let n = std::io::Read::read(&mut s, &mut buf).expect("closed, not timed out by the test");
    assert_eq!(n, 0, "the agent closed the idle connection");
    eprintln!("closed after {:?} idle (idle_timeout 4s)", idle_from.elapsed());
    let metrics = agent.metrics_text().await;
    assert_eq!(
        counter(&metrics, "tillgate_http_connections_total{outcome=\"idle_timeout\"}"),
        1,
        "{metrics}"
    );
    agent.terminate();
}

/// An NDJSON batch over `http.max_body_bytes` is refused as a whole (413) as soon as it
/// is known to be too large, and its dead letter keeps only the first 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_max_body_bytes_is_refused_and_only_its_head_kept() {
    let dir = scratch_dir();
    let opts = AgentOptions {
        http_toml: "max_body_bytes = \"256KiB\"\n".into(),
        ..AgentOptions::default()
    };
    let agent = Agent::start(&dir, &opts);
    let line = txn("big", "till-1", 100).to_string() + "\n";
    let body = line.repeat(1 + 1024 * 1024 / line.len());
    let resp = tillgate_testkit::http_client()
        .post(format!("{}/v1/transactions", agent.url()))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert!(
        answer["message"].as_str().unwrap().contains("http.max_body_bytes"),
        "{answer}"
    );
    let journal = agent.journal();
    agent.terminate();
    let letters = tillgate_testkit::dead_letter_rows(&journal);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].2.len(), 64 * 1024, "the head only");
    assert!(letters[0].3 > 256 * 1024, "the size seen is recorded");
    assert!(
        tillgate_testkit::journal_txn_ids(&journal).is_empty(),
        "nothing of it journaled"
    );
}
