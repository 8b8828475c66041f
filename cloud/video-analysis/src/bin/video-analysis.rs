//! The Lambda function (runtime `provided.al2023`, arm64; packaged as `bootstrap`, the
//! name the runtime runs): the queue's event source mapping calls it with batches of SQS
//! messages and `ReportBatchItemFailures`.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use tillgate_alert_handler::settings::now_ms;
use tillgate_video_analysis::handler::handle;
use tillgate_video_analysis::settings::{sdk_config, Settings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Lambda stamps each log line itself.
    tracing_subscriber::fmt()
        .json()
        .without_time()
        .with_target(false)
        .init();
    let settings = Settings::from_env()?;
    let clients = settings.connect(&sdk_config().await);
    let clients = &clients;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline_ms = i64::try_from(event.context.deadline)
            .map_err(|_| format!("the runtime's deadline {} is not a time", event.context.deadline))?;
        let outcome = handle(&event.payload, &clients.parts(), deadline_ms).await;
        println!("{}", outcome.metrics_line(now_ms()));
        Ok::<SqsBatchResponse, Error>(outcome.response())
    }))
    .await
}
