//! The video analysis over a queue read directly, for local runs and the tests: messages
//! are received as Lambda's poller receives them (every system and message attribute),
//! handed over in batches of the event's shape, the handled ones deleted, then a JSON
//! summary on stdout.
//!
//! Not emulated: the event source mapping's scaling and the queue's redrive. A message
//! reported as a batch item failure stays on the queue and comes back after its
//! visibility timeout. Each batch gets the stack's function time-out (120 s).

use aws_sdk_sqs::types::MessageSystemAttributeName;
use clap::Parser;
use serde_json::json;
use std::collections::HashSet;
use tillgate_alert_handler::settings::now_ms;
use tillgate_video_analysis::handler::{handle, Outcome};
use tillgate_video_analysis::settings::{sdk_config, Clients, Settings};

/// The stack's function time-out.
const BATCH_DEADLINE_MS: i64 = 120_000;

#[derive(Debug, Parser)]
#[command(about = "Run the video analysis over an SQS queue (SECURITY_TOPIC_ARN from the environment)")]
struct Args {
    /// The queue the fraud topic feeds.
    #[arg(long)]
    queue_url: String,
    /// Messages per batch (the event source mapping's BatchSize, at most 10 per receive).
    #[arg(long, default_value_t = 1)]
    batch_size: i32,
    /// Stop after this many batches.
    #[arg(long, default_value_t = 100)]
    max_batches: u32,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    let settings = Settings::from_env().unwrap_or_else(|e| {
        eprintln!("video-from-queue: {e}");
        std::process::exit(78)
    });
    let sdk = sdk_config().await;
    let clients = settings.connect(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    match run(&sqs, &args, &clients).await {
        Ok(total) => println!("{}", total.summary()),
        Err(e) => {
            eprintln!("video-from-queue: {e}");
            std::process::exit(1)
        }
    }
}

async fn run(sqs: &aws_sdk_sqs::Client, args: &Args, clients: &Clients) -> Result<Outcome, String> {
    let mut total = Outcome::default();
    for _ in 0..args.max_batches {
        let received = sqs
            .receive_message()
            .queue_url(&args.queue_url)
            .max_number_of_messages(args.batch_size)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|e| format!("ReceiveMessage: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        if received.messages().is_empty() {
            break;
        }
        let records: Vec<_> = received
            .messages()
            .iter()
            .map(|m| {
                let attributes: serde_json::Map<_, _> = m
                    .attributes()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str().to_string(), json!(v)))
                    .collect();
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attributes,
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": args.queue_url,
                })
            })
            .collect();
        let event = serde_json::from_value(json!({ "Records": records }))
            .map_err(|e| format!("the event Lambda would send does not read: {e}"))?;
        let outcome = handle(&event, &clients.parts(), now_ms() + BATCH_DEADLINE_MS).await;
        eprintln!("{}", outcome.metrics_line(now_ms()));
        let failed: HashSet<&str> = outcome.failed_messages.iter().map(String::as_str).collect();
        for m in received.messages() {
            if failed.contains(m.message_id().unwrap_or_default()) {
                continue;
            }
            sqs.delete_message()
                .queue_url(&args.queue_url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .map_err(|e| format!("DeleteMessage: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        }
        total.analysed += outcome.analysed;
        total.no_video += outcome.no_video;
        total.waiting += outcome.waiting;
        total.unreadable += outcome.unreadable;
        total.failed += outcome.failed;
        total.out_of_time += outcome.out_of_time;
        total.failed_messages.extend(outcome.failed_messages);
    }
    Ok(total)
}
