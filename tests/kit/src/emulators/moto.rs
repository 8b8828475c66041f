//! moto's server (PyPI `moto[server]`), an AWS emulator, on a loopback port; and the
//! deployment of `cloud/template.yaml` into it with boto3 (`python/cloud_stack.py`).
//!
//! moto and the template linters (cfn-lint, checkov) live in their own virtual
//! environment, `$TILLGATE_TOOLS/cloud-venv`, installed by `scripts/install-deps.sh`.

use super::kinesis_local::tools_dir;
use crate::process::free_port;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A program from the cloud tools' virtual environment.
pub fn cloud_tool(name: &str) -> PathBuf {
    let path = tools_dir().join("cloud-venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-deps.sh (make test does)",
        path.display()
    );
    path
}

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Moto {
    /// Starts it and waits for its port.
    pub fn start(log_dir: &Path) -> Moto {
        let port = free_port();
        let log = log_dir.join("moto.log");
        let child = Command::new(cloud_tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).expect("log"),
            ))
            .spawn()
            .expect("moto_server starts");
        let mut moto = Moto { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = moto.child.try_wait().expect("wait") {
                panic!("moto_server exited with {status}: {}", moto.log_text());
            }
            assert!(Instant::now() < deadline, "moto_server did not listen in 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// `http://127.0.0.1:port`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Creates stack `stack` from `template` with `parameters` (`Key=Value`) in
    /// us-east-1, writes `describe-stacks` to `outputs_file` and returns what the
    /// emulator's APIs show afterwards (`cloud_stack.py`'s JSON). Panics unless the stack
    /// reached CREATE_COMPLETE.
    pub fn deploy(&self, template: &Path, stack: &str, outputs_file: &Path, parameters: &[&str]) -> Value {
        let out = Command::new(cloud_tool("python"))
            .arg(crate::repo_root().join("tests/kit/python/cloud_stack.py"))
            .arg(self.url())
            .arg(template)
            .arg(stack)
            .arg(outputs_file)
            .args(parameters)
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "cloud_stack.py failed: {}\n{}\nmoto: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        serde_json::from_slice(&out.stdout).expect("cloud_stack.py prints JSON")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
