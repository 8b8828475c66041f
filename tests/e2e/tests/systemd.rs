//! systemd's notify protocol, with the test as the service manager: a datagram socket
//! as NOTIFY_SOCKET and a watchdog interval, then what the real binary sends on start,
//! while running, when stopped dead (SIGSTOP), on SIGHUP and on SIGTERM.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};
use tillgate_testkit::{Agent, AgentOptions};

/// The notify socket: collects every datagram the agent sends.
struct Manager {
    socket: UnixDatagram,
}

impl Manager {
    fn bind(path: &std::path::Path) -> Manager {
        let socket = UnixDatagram::bind(path).expect("bind the notify socket");
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Manager { socket }
    }

    /// Every message received within `wait`.
    fn drain(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        out
    }

    /// Waits for a message containing `needle`; returns it and what came before.
    fn wait_for(&self, needle: &str, within: Duration) -> (String, Vec<String>) {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                if m.contains(needle) {
                    return (m, seen);
                }
                seen.push(m);
            }
        }
        panic!("no {needle:?} within {within:?}; received: {seen:?}");
    }
}

#[test]
fn ready_status_watchdog_reload_and_stopping_reach_the_service_manager() {
    let dir = tillgate_testkit::scratch_dir();
    let manager = Manager::bind(&dir.join("notify.sock"));
    let opts = AgentOptions {
        env: vec![
            ("NOTIFY_SOCKET".into(), dir.join("notify.sock").display().to_string()),
            ("WATCHDOG_USEC".into(), "2000000".into()),
        ],
        ..AgentOptions::default()
    };
    let agent = Agent::start(&dir, &opts);

    let (ready, _) = manager.wait_for("READY=1", Duration::from_secs(10));
    assert!(ready.contains("STATUS=ready on 127.0.0.1:"), "{ready}");
    // A 2 s watchdog: pinged every second, with a status line for `systemctl status`.
    let running = manager.drain(Duration::from_millis(3500));
    let pings = running.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(pings >= 2, "watchdog pings in 3.5 s: {running:?}");
    assert!(
        running
            .iter()
            .any(|m| m.contains("STATUS=running; journal seq") && m.contains("archive backlog 0")),
        "{running:?}"
    );

    // Stopped dead: no pings (systemd would kill and restart it).
    let pid = Pid::from_raw(agent.pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let _ = manager.drain(Duration::from_millis(300)); // anything already in flight
    let stopped = manager.drain(Duration::from_millis(3000));
    kill(pid, Signal::SIGCONT).unwrap();
    assert!(
        !stopped.iter().any(|m| m.contains("WATCHDOG=1")),
        "pinged while stopped: {stopped:?}"
    );
    manager.wait_for("WATCHDOG=1", Duration::from_secs(5));

    agent.hup();
    let (reloading, _) = manager.wait_for("RELOADING=1", Duration::from_secs(5));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let (reloaded, _) = manager.wait_for("READY=1", Duration::from_secs(30));
    assert!(reloaded.contains("rules reloaded"), "{reloaded}");

    let (stopping, _) = {
        let m = &manager;
        let wait = std::thread::scope(|s| {
            let h = s.spawn(|| m.wait_for("STOPPING=1", Duration::from_secs(30)));
            let status = agent.terminate();
            assert!(status.success(), "{status}");
            h.join().unwrap()
        });
        wait
    };
    assert!(stopping.contains("draining"), "{stopping}");
}

#[test]
fn without_notify_socket_nothing_is_sent_and_the_agent_runs_as_usual() {
    let dir = tillgate_testkit::scratch_dir();
    let agent = Agent::start(&dir, &AgentOptions::default());
    assert!(!agent.log().contains("cannot notify systemd"));
    agent.stop();
}

/// A journal writer that dies (a panic injected in test builds) leaves nothing that can
/// make an answer durable: the agent stops pinging the watchdog, says why, and exits
/// with a failure status so that systemd restarts it, instead of answering 503 for
/// ever. Needs the `fault-injection` build (`make test`); skipped by name elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_journal_writer_ends_the_process_with_a_failure_status() {
    let dir = tillgate_testkit::scratch_dir();
    let manager = Manager::bind(&dir.join("notify.sock"));
    let opts = AgentOptions {
        env: vec![
            ("NOTIFY_SOCKET".into(), dir.join("notify.sock").display().to_string()),
            ("WATCHDOG_USEC".into(), "2000000".into()),
            ("TILLGATE_FAULT_WRITER_PANIC_AT_GROUP".into(), "40".into()),
        ],
        drain_timeout: "3s".into(),
        ..AgentOptions::default()
    };
    let mut agent = Agent::start(&dir, &opts);
    manager.wait_for("READY=1", Duration::from_secs(10));
    let client = tillgate_testkit::http_client();
    let mut acknowledged = Vec::new();
    for i in 0..200 {
        let id = format!("w-{i}");
        match tillgate_testkit::post(
            &client,
            &agent.url(),
            tillgate_testkit::txn(&id, "till-1", 100).to_string(),
        )
        .await
        {
            Ok((200, _)) => acknowledged.push(id),
            Ok((503, _)) | Err(_) => break,
            Ok((status, answer)) => panic!("unexpected {status}: {answer}"),
        }
    }
    assert!(
        acknowledged.len() < 200,
        "the injected fault never fired: is this a fault-injection build?"
    );
    let status = agent
        .wait_exit(Duration::from_secs(20))
        .expect("the agent exits once its journal writer is dead");
    assert_eq!(
        status.code(),
        Some(70),
        "EX_SOFTWARE, so that systemd restarts it: {status}"
    );
    let log = agent.log();
    assert!(log.contains("the journal writer died"), "{log}");
    let after = manager.drain(Duration::from_millis(300));
    assert!(after.iter().any(|m| m.contains("STOPPING=1")), "{after:?}");
    let journal = dir.join("journal.db");
    assert_eq!(tillgate_testkit::integrity_check(&journal), "ok");
    let journaled = tillgate_testkit::journal_txn_ids(&journal);
    let lost: Vec<&String> = acknowledged.iter().filter(|id| !journaled.contains(*id)).collect();
    assert!(lost.is_empty(), "answered 200 but not in the journal: {lost:?}");
}
