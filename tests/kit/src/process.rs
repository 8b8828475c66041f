//! Starting and stopping the real agent binary.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `tillgate` binary: `$TILLGATE_BIN`, or `target/<profile>/tillgate` beside the
/// running test executable.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("TILLGATE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = profile_dir.join("tillgate");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p tillgate` first (make test does)",
        bin.display()
    );
    bin
}

/// A command that runs the agent binary: directly, or through `$TILLGATE_RUNNER`
/// (`qemu-aarch64-static` for an aarch64 build on an x86 machine without binfmt).
pub fn command() -> Command {
    match std::env::var("TILLGATE_RUNNER") {
        Ok(runner) if !runner.is_empty() => {
            let mut c = Command::new(runner);
            c.arg(binary());
            c
        }
        _ => Command::new(binary()),
    }
}

/// A free loopback port (bound and released; the agent binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind loopback")
        .local_addr()
        .expect("local addr")
        .port()
}

/// How to start the agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Extra TOML appended to the generated config (tables the base does not set).
    pub extra_toml: String,
    /// `[journal]` lines.
    pub journal_toml: String,
    /// `[sinks]` lines (not the archive table).
    pub sinks_toml: String,
    /// `[sinks.archive]` lines.
    pub archive_toml: String,
    /// `[http]` lines besides `listen`.
    pub http_toml: String,
    /// Rule files or directory; the shipped pack when `None`.
    pub rules: Option<PathBuf>,
    /// Environment variables for the agent process (AWS credentials, region).
    pub env: Vec<(String, String)>,
    /// `shutdown.drain_timeout`.
    pub drain_timeout: String,
    /// Where the journal and archive go, when not the agent's directory (which keeps
    /// the config and the log).
    pub data_dir: Option<PathBuf>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            extra_toml: String::new(),
            journal_toml: String::new(),
            sinks_toml: "retry_initial_backoff = \"50ms\"\nretry_max_backoff = \"500ms\"\n".into(),
            archive_toml: String::new(),
            http_toml: String::new(),
            rules: None,
            env: Vec::new(),
            drain_timeout: "20s".into(),
            data_dir: None,
        }
    }
}

/// A running agent process.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// Journal and archive.
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    stderr_path: PathBuf,
}

impl Agent {
    /// Writes a config for data dir `dir` and starts the agent; returns once `/healthz`
    /// answers. Starting again on the same `dir` reuses its journal (a restart).
    pub fn start(dir: &Path, opts: &AgentOptions) -> Agent {
        std::fs::create_dir_all(dir).expect("data dir");
        // `free_port` only finds a port that was free a moment ago: a parallel test may
        // take it first. Then this agent exits 69, or another agent answers on it; try
        // another port.
        for _ in 0..5 {
            let port = free_port();
            let config = format!(
                "data_dir = \"{dir}\"\n{extra}\n[log]\nlevel = \"info\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n{http}\n\n\
                 [journal]\n{journal}\n\n[rules]\npaths = [\"{rules}\"]\n\n[sinks]\n{sinks}\n\n[sinks.archive]\n{archive}\n\n\
                 [shutdown]\ndrain_timeout = \"{drain}\"\n",
                dir = opts.data_dir.as_deref().unwrap_or(dir).display(),
                extra = opts.extra_toml,
                http = opts.http_toml,
                journal = opts.journal_toml,
                rules = opts.rules.clone().unwrap_or_else(crate::rule_pack).display(),
                sinks = opts.sinks_toml,
                archive = opts.archive_toml,
                drain = opts.drain_timeout,
            );
            let config_path = dir.join("tillgate.toml");
            std::fs::write(&config_path, config).expect("write config");
            if let Some(mut agent) = Self::start_with_config(dir, &config_path, port, &opts.env) {
                agent.data_dir = opts.data_dir.clone().unwrap_or_else(|| dir.to_path_buf());
                return agent;
            }
        }
        panic!("no free port for tillgate in 5 tries");
    }

    fn start_with_config(dir: &Path, config_path: &Path, port: u16, env: &[(String, String)]) -> Option<Agent> {
        let stderr_path = dir.join(format!("agent-{port}.log"));
        let stderr = std::fs::File::create(&stderr_path).expect("log file");
        let child = command()
            .args(["run", "--config"])
            .arg(config_path)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("tillgate starts");
        let mut agent = Agent {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: dir.to_path_buf(),
            data_dir: dir.to_path_buf(),
            config_path: config_path.to_path_buf(),
            stderr_path,
        };
        agent.wait_healthy().then_some(agent)
    }

    /// True once this agent answers; false if the port turned out to be taken.
    fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("wait")) {
                if status.code() == Some(69) {
                    self.child = None;
                    return false;
                }
                panic!("tillgate exited during start-up with {status}:\n{}", self.log());
            }
            // Ours has bound the port once it logs that it is ready (the listener is
            // bound before); until then a /healthz answer may come from a neighbour.
            if self.log().contains("tillgate ready") && http_get(self.addr, "/healthz").is_some() {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "tillgate did not become healthy in 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The journal file.
    pub fn journal(&self) -> PathBuf {
        self.data_dir.join("journal.db")
    }

    /// The archive directory.
    pub fn archive(&self) -> PathBuf {
        self.data_dir.join("archive")
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The value of the series `series` (name and labels, as `/metrics` prints them),
    /// or a panic with the metrics when it is absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let metrics = self.metrics_text().await;
        metrics
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {series}\n{metrics}"))
    }

    /// The Prometheus text at `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let resp = crate::http_client()
            .get(format!("{}/metrics", self.url()))
            .send()
            .await
            .expect("agent answers /metrics");
        resp.text().await.expect("metrics text")
    }

    /// `GET /v1/status` as JSON.
    pub async fn status_json(&self) -> serde_json::Value {
        let resp = crate::http_client()
            .get(format!("{}/v1/status", self.url()))
            .send()
            .await
            .expect("agent answers /v1/status");
        serde_json::from_str(&resp.text().await.expect("status text")).expect("status is JSON")
    }

    /// One sink's entry in `GET /v1/status` (`archive`, `kinesis-transactions`, ...).
    pub async fn sink_status(&self, name: &str) -> serde_json::Value {
        let status = self.status_json().await;
        status["sinks"]
            .as_array()
            .and_then(|sinks| sinks.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no sink {name} in status: {status}"))
    }

    /// Waits until sink `name` has shipped once and holds no backlog.
    pub async fn wait_shipped(&self, name: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let sink = self.sink_status(name).await;
            if sink["backlog_records"] == 0 && sink["last_success_ms"].as_i64().unwrap_or(0) > 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} not shipped in {within:?}: {sink}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until sink `name` reports an error; returns it.
    pub async fn wait_sink_error(&self, name: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let sink = self.sink_status(name).await;
            if let Some(e) = sink["last_error"].as_str() {
                return e.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{name} reported no error in {within:?}: {sink}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the agent logged.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Resident memory now and at its peak (KiB), from /proc (of qemu-user when the
    /// agent runs under `$TILLGATE_RUNNER`).
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc/<pid>/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/<pid>/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Sends SIGTERM and returns at once (see [`Agent::wait_exit`]).
    pub fn sigterm(&self) {
        let c = self.child.as_ref().expect("running");
        kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM).expect("signal delivered");
    }

    /// Waits up to `within` for the process to exit; its status, or `None` if it is
    /// still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.as_mut().expect("running").try_wait().expect("wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGHUP (reload the rules).
    pub fn hup(&self) {
        let c = self.child.as_ref().expect("running");
        kill(Pid::from_raw(c.id() as i32), Signal::SIGHUP).expect("signal delivered");
    }

    /// Starts with `opts` but the rules from `rules` instead of the shipped pack.
    pub fn start_with_rules(dir: &Path, opts: &AgentOptions, rules: &Path) -> Agent {
        let opts = AgentOptions {
            rules: Some(rules.to_path_buf()),
            ..opts.clone()
        };
        Self::start(dir, &opts)
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the drain to finish; returns the exit status.
    pub fn terminate(self) -> ExitStatus {
        self.terminate_with_log().0
    }

    /// SIGTERM, and the exit must be clean (status 0); otherwise the panic shows the
    /// status and the agent's log.
    pub fn stop(self) {
        let (status, log) = self.terminate_with_log();
        assert!(status.success(), "tillgate exited with {status} after SIGTERM:\n{log}");
    }

    fn terminate_with_log(mut self) -> (ExitStatus, String) {
        let mut c = self.child.take().expect("running");
        kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM).expect("signal delivered");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return (status, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "tillgate did not exit within 60 s of SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A plain blocking GET, so start-up checks need no runtime: the body of a 200.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200").then_some(buf)
}

/// Runs the binary with `args` and returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = command().args(args).output().expect("tillgate runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
