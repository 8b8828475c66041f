//! kinesis-local (kinesis-mock, the emulator LocalStack uses) started on loopback ports,
//! and the independent reader: boto3 + aws-kinesis-agg in a virtual environment.
//!
//! Both are installed by `scripts/install-deps.sh` under `$TILLGATE_TOOLS`
//! (default `/var/cache/tillgate-tools`).

use crate::process::free_port;
use serde::Deserialize;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the npm and PyPI test tools live.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("TILLGATE_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/tillgate-tools"))
}

/// A running kinesis-local.
#[derive(Debug)]
pub struct KinesisLocal {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl KinesisLocal {
    /// Starts it with `streams` ("name:shards,...") created, and waits for its port.
    pub fn start(streams: &str, log_dir: &std::path::Path) -> KinesisLocal {
        let dir = tools_dir().join("node_modules/kinesis-local");
        let main = dir.join("main.js");
        assert!(
            main.exists(),
            "{} is missing: run scripts/install-deps.sh (make test does)",
            main.display()
        );
        let port = free_port();
        let log = log_dir.join("kinesis-local.log");
        let child = Command::new("node")
            .arg(&main)
            .env("KINESIS_MOCK_PLAIN_PORT", port.to_string())
            .env("KINESIS_MOCK_TLS_PORT", free_port().to_string())
            .env("INITIALIZE_STREAMS", streams)
            .env("KINESIS_MOCK_CERT_PATH", dir.join("server.json"))
            .env("LOG_LEVEL", "WARN")
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("node starts");
        let mut local = KinesisLocal { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = local.child.try_wait().expect("wait") {
                panic!("kinesis-local exited with {status}: {}", local.log_text());
            }
            assert!(Instant::now() < deadline, "kinesis-local did not listen in 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        local
    }

    /// `http://127.0.0.1:port`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for KinesisLocal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One user record as boto3 + aws-kinesis-agg saw it.
#[derive(Debug, Clone, Deserialize)]
pub struct ReadRecord {
    pub shard: String,
    pub partition_key: String,
    pub data: String,
    pub aggregated: bool,
}

/// What `read_stream.py` printed.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamRead {
    pub kinesis_records: u64,
    pub aggregated_kinesis_records: u64,
    pub user_records: Vec<ReadRecord>,
}

/// Reads all of `stream` at `endpoint` with boto3 and de-aggregates it with
/// aws-kinesis-agg (both from PyPI, in the tools virtual environment).
pub fn read_stream_with_boto3(endpoint: &str, stream: &str) -> StreamRead {
    let python = tools_dir().join("venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-deps.sh (make test does)",
        python.display()
    );
    let script = crate::repo_root().join("tests/kit/python/read_stream.py");
    let out = Command::new(python)
        .arg(script)
        .args([endpoint, stream])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "read_stream.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("read_stream.py prints JSON")
}
