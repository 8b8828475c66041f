//! The alert handler over a stream read directly, for local runs and the tests: every
//! shard from its oldest record, in batches as Lambda would pass them (the event JSON
//! is built as the service builds it), then a JSON summary on stdout.
//!
//! Not emulated: Lambda's retries and checkpoints. A record reported as a batch item
//! failure is listed in the summary, and a second run reads the stream again. Each batch
//! gets the stack's function time-out (60 s) as its deadline.

use aws_sdk_kinesis::types::ShardIteratorType;
use base64::Engine;
use clap::Parser;
use serde_json::json;
use tillgate_alert_handler::handler::{handle, Outcome};
use tillgate_alert_handler::settings::{now_ms, sdk_config, Clients, Settings};

/// The stack's function time-out.
const BATCH_DEADLINE_MS: i64 = 60_000;

#[derive(Debug, Parser)]
#[command(
    about = "Run the alert handler over a Kinesis stream (ALERTS_TOPIC_ARN, CLAIMS_TABLE, DEAD_LETTER_QUEUE_URL from the environment)"
)]
struct Args {
    /// The alerts stream.
    #[arg(long)]
    stream: String,
    /// Records per batch (the event source mapping's BatchSize).
    #[arg(long, default_value_t = 100)]
    batch_size: i32,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    let settings = Settings::from_env().unwrap_or_else(|e| {
        eprintln!("alerts-from-stream: {e}");
        std::process::exit(78)
    });
    let sdk = sdk_config().await;
    let clients = settings.connect(&sdk);
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    match run(&kinesis, &args, &clients).await {
        Ok(total) => println!(
            "{}",
            json!({
                "published": total.published,
                "duplicates": total.duplicates,
                "held_elsewhere": total.held_elsewhere,
                "unreadable": total.unreadable,
                "failed": total.failed,
                "out_of_time": total.out_of_time,
                "failed_records": total.failed_records,
            })
        ),
        Err(e) => {
            eprintln!("alerts-from-stream: {e}");
            std::process::exit(1)
        }
    }
}

async fn run(kinesis: &aws_sdk_kinesis::Client, args: &Args, clients: &Clients) -> Result<Outcome, String> {
    let shards = kinesis
        .list_shards()
        .stream_name(&args.stream)
        .send()
        .await
        .map_err(|e| format!("ListShards: {}", aws_sdk_kinesis::error::DisplayErrorContext(e)))?;
    let mut total = Outcome::default();
    for shard in shards.shards() {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(&args.stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .map_err(|e| format!("GetShardIterator: {}", aws_sdk_kinesis::error::DisplayErrorContext(e)))?
            .shard_iterator;
        while let Some(it) = iterator {
            let page = kinesis
                .get_records()
                .shard_iterator(it)
                .limit(args.batch_size)
                .send()
                .await
                .map_err(|e| format!("GetRecords: {}", aws_sdk_kinesis::error::DisplayErrorContext(e)))?;
            if page.records().is_empty() {
                break;
            }
            let records: Vec<_> = page
                .records()
                .iter()
                .map(|r| {
                    json!({
                        "eventSource": "aws:kinesis",
                        "eventSourceARN": format!("stream/{}", args.stream),
                        "kinesis": {
                            "kinesisSchemaVersion": "1.0",
                            "partitionKey": r.partition_key(),
                            "sequenceNumber": r.sequence_number(),
                            "data": base64::engine::general_purpose::STANDARD.encode(r.data().as_ref()),
                            "approximateArrivalTimestamp": r.approximate_arrival_timestamp().map_or(0.0, |t| t.as_secs_f64()),
                        }
                    })
                })
                .collect();
            let event = serde_json::from_value(json!({ "Records": records }))
                .map_err(|e| format!("the event Lambda would send does not read: {e}"))?;
            let outcome = handle(&event, &clients.sinks(), now_ms() + BATCH_DEADLINE_MS).await;
            eprintln!("{}", outcome.metrics_line(now_ms()));
            total.published += outcome.published;
            total.duplicates += outcome.duplicates;
            total.held_elsewhere += outcome.held_elsewhere;
            total.unreadable += outcome.unreadable;
            total.failed += outcome.failed;
            total.out_of_time += outcome.out_of_time;
            total.failed_records.extend(outcome.failed_records);
            iterator = page.next_shard_iterator;
        }
    }
    Ok(total)
}
