//! The command line: `run`, `check-config`, `status`, `simulate`, `demo`.

#[cfg(feature = "video")]
mod clip;
mod cloud;
mod demo;
mod rules_test;

use crate::config::{self, Config, LogFormat};
use crate::simulate::{self, SimConfig};
use crate::{agent, rules, status};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit code for invalid configuration (sysexits EX_CONFIG); systemd is told not to
/// restart on it.
pub const EXIT_CONFIG: i32 = 78;
const DEFAULT_CONFIG: &str = "/etc/tillgate/tillgate.toml";

#[derive(Debug, Parser)]
#[command(
    name = "tillgate",
    version,
    about = "Edge agent for retail stores: POS journal, fraud decisions, shipping"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file and the rule files it names; exit 78 when invalid.
    CheckConfig { file: PathBuf },
    /// Show backlog per sink, dead letters, rule hits and journal size.
    Status {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print the JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Drive an agent with simulated POS terminals and report throughput and latency.
    Simulate {
        /// Agent base URL; default: from --config's http.listen.
        #[arg(long)]
        url: Option<String>,
        /// Read the URL and the bearer token from this config.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 8)]
        terminals: usize,
        #[arg(long, default_value_t = 2)]
        stores: usize,
        /// Offered transactions per second in total; 0 = as fast as answered.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        #[arg(long, default_value = "10s")]
        duration: humantime::Duration,
        /// Share of transactions with injected fraud or bad input (0–1).
        #[arg(long, default_value_t = 0.05)]
        fraud_rate: f64,
        /// Transactions per request (above 1: NDJSON batches).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the report as JSON here.
        #[arg(long)]
        json_out: Option<PathBuf>,
    },
    /// Rule tools.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Tools for the chain's cloud stack (cloud/template.yaml, docs/cloud.md).
    Cloud {
        #[command(subcommand)]
        command: CloudCommand,
    },
    /// Write the local video around a journaled sale as MP4, from every camera that
    /// covers its terminal (one file each: FILE.CAMERA.mp4 when there are several).
    #[cfg(feature = "video")]
    Clip {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The sale's txn_id.
        #[arg(long)]
        txn: String,
        /// Video before the sale reached the gateway; default video.clip_before.
        #[arg(long)]
        before: Option<humantime::Duration>,
        /// Video after it; default video.clip_after.
        #[arg(long)]
        after: Option<humantime::Duration>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the agent on embedded defaults with simulated terminals and injected fraud.
    Demo {
        #[arg(long, default_value = "20s")]
        duration: humantime::Duration,
        /// Keep the agent's data here instead of a new temporary directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Decide recorded transactions (NDJSON, `-` for stdin) offline; print each decision
    /// and the rules that fired, then a summary.
    Test {
        /// Rule files or directories.
        #[arg(long, required = true)]
        rules: Vec<PathBuf>,
        #[arg(long)]
        input: PathBuf,
        /// One JSON object per decision.
        #[arg(long)]
        json: bool,
        /// Which rules decide: the gateway's (`store`) or the cloud's (`chain`), which
        /// see every store's transactions in one stream.
        #[arg(long, value_enum, default_value_t = ScopeArg::Store)]
        scope: ScopeArg,
    },
    /// Print the chain-scoped rules as Flink SQL for the cloud's job (docs/cloud.md).
    Export {
        /// Rule files or directories.
        #[arg(long, required = true)]
        rules: Vec<PathBuf>,
        /// The statements as a JSON list (for tools) instead of a script.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ScopeArg {
    Store,
    Chain,
}

#[derive(Debug, Subcommand)]
enum CloudCommand {
    /// Print a gateway's [kinesis] and [video] sections from the chain stack's outputs.
    GatewayConfig {
        /// `aws cloudformation describe-stacks --stack-name NAME` saved as JSON (the
        /// whole answer or its Outputs list).
        #[arg(long)]
        outputs: PathBuf,
        /// The gateway's AWS IoT thing; its video streams are named `<thing>.<camera>`.
        #[arg(long)]
        thing_name: String,
        /// The account's credentials endpoint (`aws iot describe-endpoint
        /// --endpoint-type iot:CredentialProvider`); without it, the AWS SDK's own chain.
        #[arg(long, requires_all = ["cert_file", "key_file"])]
        credentials_endpoint: Option<String>,
        /// The thing's certificate and key (PEM) as paths on the gateway.
        #[arg(long, requires = "credentials_endpoint")]
        cert_file: Option<PathBuf>,
        #[arg(long, requires = "credentials_endpoint")]
        key_file: Option<PathBuf>,
        #[arg(long, requires = "credentials_endpoint")]
        ca_file: Option<PathBuf>,
        /// A camera as NAME=rtsp://host/path; repeat for each.
        #[arg(long = "camera", value_parser = cloud::parse_camera)]
        cameras: Vec<cloud::Camera>,
    },
    /// Shards for a provisioned stream at an expected rate (the template's *Shards).
    Shards {
        /// Data written into the stream by every gateway together, MiB/s.
        #[arg(long)]
        mib_per_second: f64,
        /// Kinesis records per second (after aggregation: one aggregate is one record).
        #[arg(long)]
        records_per_second: f64,
    },
}

/// Parses arguments, runs the command, returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    match cli.command {
        Command::Run { config } => runtime.block_on(run(&config)),
        Command::CheckConfig { file } => check_config(&file),
        Command::Status { config, json } => runtime.block_on(show_status(&config, json)),
        Command::Simulate {
            url,
            config,
            terminals,
            stores,
            rate,
            duration,
            fraud_rate,
            batch,
            seed,
            json_out,
        } => {
            let (url, token) = match target(url, config.as_deref()) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let cfg = SimConfig {
                url,
                token,
                stores,
                terminals,
                rate,
                duration: duration.into(),
                fraud_rate,
                batch: batch.max(1),
                seed,
            };
            runtime.block_on(simulate_cmd(cfg, json_out))
        }
        Command::Rules {
            command:
                RulesCommand::Test {
                    rules,
                    input,
                    json,
                    scope,
                },
        } => {
            let scope = match scope {
                ScopeArg::Store => rules::Scope::Store,
                ScopeArg::Chain => rules::Scope::Chain,
            };
            rules_test::run(&rules, &input, json, scope)
        }
        Command::Rules {
            command: RulesCommand::Export { rules, json },
        } => rules_export(&rules, json),
        Command::Cloud { command } => cloud_cmd(command),
        Command::Demo { duration, data_dir } => runtime.block_on(demo::run(duration.into(), data_dir)),
        #[cfg(feature = "video")]
        Command::Clip {
            config,
            txn,
            before,
            after,
            out,
        } => match load(&config) {
            Ok(c) => clip::run(
                &c,
                &clip::ClipArgs {
                    txn,
                    before: before.map(Into::into),
                    after: after.map(Into::into),
                    out,
                },
            ),
            Err(code) => code,
        },
    }
}

fn rules_export(paths: &[PathBuf], json: bool) -> i32 {
    let pack = match rules::load_paths(paths) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tillgate: invalid rules: {e}");
            return EXIT_CONFIG;
        }
    };
    match rules::export::export(&pack) {
        Ok(export) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&export).expect("statements serialize")
            );
            0
        }
        Ok(export) => {
            print!("{}", export.script());
            0
        }
        Err(e) => {
            eprintln!("tillgate: cannot export to Flink SQL: {e} (docs/cloud.md lists what translates)");
            EXIT_CONFIG
        }
    }
}

fn cloud_cmd(command: CloudCommand) -> i32 {
    match command {
        CloudCommand::GatewayConfig {
            outputs,
            thing_name,
            credentials_endpoint,
            cert_file,
            key_file,
            ca_file,
            cameras,
        } => {
            let credentials = match (credentials_endpoint, cert_file, key_file) {
                (Some(endpoint), Some(cert_file), Some(key_file)) => cloud::Credentials::Iot {
                    endpoint,
                    cert_file,
                    key_file,
                    ca_file,
                },
                _ => cloud::Credentials::SdkChain,
            };
            let gateway = cloud::Gateway {
                thing_name,
                credentials,
                cameras,
            };
            cloud::gateway_config(&outputs, &gateway)
        }
        CloudCommand::Shards {
            mib_per_second,
            records_per_second,
        } => cloud::shards(mib_per_second, records_per_second),
    }
}

fn load(path: &Path) -> Result<Config, i32> {
    config::load_file(path).map_err(|e| {
        eprintln!("tillgate: invalid configuration: {e}");
        EXIT_CONFIG
    })
}

/// Installs the log subscriber; `RUST_LOG` overrides the config's level.
pub fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn run(path: &Path) -> i32 {
    // Handlers first: a SIGTERM while the config loads or the journal replays is a clean
    // stop once the agent is up, not the default action that kills it mid-start.
    let shutdown = shutdown_signal();
    // Likewise SIGHUP (`systemctl reload`), whose default action would kill the agent
    // before the reload handler exists: one that comes while starting is ignored (the
    // rules are being read then anyway). tokio keeps the handler for the process's life.
    let _hangup_while_starting = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&config);
    tracing::info!(config = %path.display(), "tillgate starting");
    match agent::run(config, shutdown, |_, _| {}).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "tillgate cannot start");
            eprintln!("tillgate: {e}");
            e.exit_code()
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now; the future resolves on either, even
/// one that arrived before it was first polled.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

fn check_config(path: &Path) -> i32 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rules = match rules::load_paths(&config.rules.paths) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tillgate: invalid rules: {e}");
            return EXIT_CONFIG;
        }
    };
    if let Some(secret) = &config.http.token {
        if let Err(e) = secret.read() {
            eprintln!("tillgate: invalid configuration: `http.token`: {e}");
            return EXIT_CONFIG;
        }
    }
    println!(
        "{}: ok ({} rules, {} reports; journal {}; sources: {}; sinks: {})",
        path.display(),
        rules.rules.len(),
        rules.reports.len(),
        config.data_path(&config.journal.path).display(),
        crate::components::sources(&config).join(", "),
        crate::components::sink_names(&config).join(", ")
    );
    0
}

fn target(url: Option<String>, config: Option<&Path>) -> Result<(String, Option<String>), i32> {
    let cfg = match config {
        Some(p) => Some(load(p)?),
        None => None,
    };
    let token = match cfg.as_ref().and_then(|c| c.http.token.as_ref()) {
        Some(s) => Some(s.read().map_err(|e| {
            eprintln!("tillgate: http.token: {e}");
            EXIT_CONFIG
        })?),
        None => None,
    };
    let url = url
        .or_else(|| cfg.as_ref().map(|c| format!("http://{}", c.http.listen)))
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    Ok((url, token))
}

async fn show_status(path: &Path, json: bool) -> i32 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (url, token) = match target(None, Some(path)) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let client = tillgate_aws::https::client_builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client builds");
    let mut req = client.get(format!("{url}/v1/status"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    // A running agent whose answer this tillgate cannot read (another version) is not
    // reported as stopped: the message says which.
    let live = match req.send().await {
        Ok(r) if r.status().is_success() => match r.bytes().await {
            Ok(b) => serde_json::from_slice::<status::StatusReport>(&b).map_err(|e| {
                format!("the agent at {url} answered a status this tillgate cannot read ({e}; another version?)")
            }),
            Err(e) => Err(format!("the agent at {url} did not finish its answer ({e})")),
        },
        _ => Err(format!("the agent is not answering at {url}")),
    };
    let report = match live {
        Ok(r) => r,
        Err(why) => {
            let journal = config.data_path(&config.journal.path);
            match status::offline(&journal) {
                Ok(r) => {
                    eprintln!("tillgate: {why}; reading the journal directly");
                    r
                }
                Err(e) => {
                    eprintln!("tillgate: {why}, and {} cannot be read: {e}", journal.display());
                    return 69;
                }
            }
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
    } else {
        print!("{}", status::render_text(&report));
    }
    0
}

async fn simulate_cmd(cfg: SimConfig, json_out: Option<PathBuf>) -> i32 {
    eprintln!(
        "simulating {} terminals at {} txn/s for {:?} against {}",
        cfg.terminals,
        if cfg.rate > 0.0 {
            cfg.rate.to_string()
        } else {
            "max".into()
        },
        cfg.duration,
        cfg.url
    );
    let report = simulate::run(cfg, |p| {
        eprint!(
            "\r  {:>5.1}s  sent {:>8}  decided {:>8}  refused {:>6}",
            p.elapsed.as_secs_f64(),
            p.sent,
            p.decided,
            p.refused
        );
    })
    .await;
    eprintln!();
    let text = serde_json::to_string_pretty(&report).expect("report serializes");
    println!("{text}");
    if let Some(p) = json_out {
        if let Err(e) = std::fs::write(&p, &text) {
            eprintln!("tillgate: cannot write {}: {e}", p.display());
            return 1;
        }
    }
    if report.decided == 0 {
        eprintln!("tillgate: no transaction was decided; is the agent running at the URL?");
        return 1;
    }
    0
}
