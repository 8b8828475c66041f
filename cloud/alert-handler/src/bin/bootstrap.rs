//! The Lambda function (runtime `provided.al2023`, arm64): the alerts stream's event
//! source mapping calls it with batches of Kinesis records and `ReportBatchItemFailures`.

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use tillgate_alert_handler::handler::handle;
use tillgate_alert_handler::settings::{now_ms, sdk_config, Settings};

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
    lambda_runtime::run(service_fn(move |event: LambdaEvent<KinesisEvent>| async move {
        // The invocation's deadline (ms since the epoch), as the runtime API gives it;
        // one that does not fit fails the invocation rather than make claims that never
        // lapse.
        let deadline_ms = i64::try_from(event.context.deadline)
            .map_err(|_| format!("the runtime's deadline {} is not a time", event.context.deadline))?;
        let outcome = handle(&event.payload, &clients.sinks(), deadline_ms).await;
        println!("{}", outcome.metrics_line(now_ms()));
        Ok::<KinesisEventResponse, Error>(outcome.response())
    }))
    .await
}
