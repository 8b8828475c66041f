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

/// `tests/kit/python/alerts_stream.py COMMAND ENDPOINT ARG` with `stdin` (boto3 and
/// aws-kinesis-agg, from the tools' main environment); its stdout.
pub fn alerts_stream(command: &str, endpoint: &str, arg: &str, stdin: &str) -> String {
    use std::io::Write;
    let python = tools_dir().join("venv/bin/python");
    let mut child = Command::new(python)
        .arg(crate::repo_root().join("tests/kit/python/alerts_stream.py"))
        .args([command, endpoint, arg])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    let out = child.wait_with_output().expect("python ends");
    assert!(
        out.status.success(),
        "alerts_stream.py {command} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8").trim().to_string()
}

/// A program of the cloud's function crates (`cargo build -p tillgate-alert-handler -p
/// tillgate-video-analysis --bins`), beside the running test executable.
pub fn cloud_program(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p tillgate-alert-handler -p tillgate-video-analysis --bins` first \
         (make test does)",
        bin.display()
    );
    bin
}

/// Where the alert handler publishes, claims and puts dead letters (the stack's outputs).
#[derive(Debug, Clone)]
pub struct AlertHandlerTargets {
    pub topic_arn: String,
    pub claims_table: String,
    pub dead_letter_queue_url: String,
}

/// The alert handler (`alerts-from-stream`) over `stream` at the emulator; its summary.
pub fn run_alert_handler(endpoint: &str, stream: &str, targets: &AlertHandlerTargets) -> Value {
    let out = Command::new(cloud_program("alerts-from-stream"))
        .args(["--stream", stream])
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ALERTS_TOPIC_ARN", &targets.topic_arn)
        .env("CLAIMS_TABLE", &targets.claims_table)
        .env("DEAD_LETTER_QUEUE_URL", &targets.dead_letter_queue_url)
        .output()
        .expect("alerts-from-stream runs");
    assert!(
        out.status.success(),
        "alerts-from-stream failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "alerts-from-stream printed no summary ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `cloud/template.yaml`.
pub fn chain_template() -> PathBuf {
    crate::repo_root().join("cloud/template.yaml")
}

/// Deploys the chain stack as `chain` into `moto`, with the functions' packages uploaded
/// first (host builds: moto stores a package, it never runs it).
pub fn deploy_chain(moto: &Moto, outputs: &Path, parameters: &[&str]) -> Value {
    let uploads = [("alert-handler", "bootstrap"), ("video-analysis", "video-analysis")].map(|(package, program)| {
        format!(
            "upload:tillgate-functions/tillgate/{package}-arm64.zip={}",
            cloud_program(program).display()
        )
    });
    let mut all = vec!["FunctionCodeBucket=tillgate-functions"];
    all.extend(uploads.iter().map(String::as_str));
    all.extend_from_slice(parameters);
    moto.deploy(&chain_template(), "chain", outputs, &all)
}

/// The stack's outputs by key, from the `describe-stacks` file [`Moto::deploy`] wrote.
pub fn outputs_by_key(outputs: &Path) -> std::collections::HashMap<String, String> {
    let described: Value =
        serde_json::from_str(&std::fs::read_to_string(outputs).expect("outputs file")).expect("describe-stacks JSON");
    described["Stacks"][0]["Outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| {
            (
                o["OutputKey"].as_str().unwrap_or_default().to_string(),
                o["OutputValue"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

impl AlertHandlerTargets {
    /// Where the stack's alert handler publishes, claims and dead-letters.
    pub fn from_outputs(out: &std::collections::HashMap<String, String>) -> Self {
        AlertHandlerTargets {
            topic_arn: out["FraudAlertsTopicArn"].clone(),
            claims_table: out["AlertClaimsTableName"].clone(),
            dead_letter_queue_url: out["AlertsDeadLetterQueueUrl"].clone(),
        }
    }
}

/// The video analysis (`video-from-queue`) over `queue_url` at the emulator, with Kinesis
/// Video at `kvs` (the kit's endpoint: moto has no GetImages), publishing to
/// `topic_arn`; its summary.
pub fn run_video_analysis(endpoint: &str, kvs: &str, queue_url: &str, topic_arn: &str) -> Value {
    let out = Command::new(cloud_program("video-from-queue"))
        .args(["--queue-url", queue_url])
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ENDPOINT_URL_KINESIS_VIDEO", kvs)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", crate::fakes::kvs::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", crate::fakes::kvs::SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("SECURITY_TOPIC_ARN", topic_arn)
        .output()
        .expect("video-from-queue runs");
    assert!(
        out.status.success(),
        "video-from-queue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its log, for the test's output when an assertion on the summary fails.
    eprintln!("video-from-queue: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "video-from-queue printed no summary ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
