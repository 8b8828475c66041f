//! The Kinesis API as the sink uses it: an aws-sdk-kinesis client (SDK retries off —
//! retries are per record here, with their own accounting), ListShards into a
//! [`ShardMap`], PutRecords, and every failure sorted by what to do about it.

use crate::config::KinesisConfig;
use crate::plan::Entry;
use crate::shards::{ShardMap, ShardMapError, ShardRange};
use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use std::time::Duration;
use tillgate_aws::credentials::{self, CachedCredentials};

/// A failed call, by what the sink does next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The whole call was throttled: back off, nothing landed.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The credentials were refused as expired or unknown: fetch new ones, retry.
    #[error("credentials refused: {0}")]
    Credentials(String),
    /// The stream does not exist (yet): the backlog waits in the journal.
    #[error("{0}")]
    StreamNotFound(String),
    /// Time-out, 5xx or a connection lost mid-call: the records may have landed.
    /// Sending them again is the only way a duplicate reaches the stream (counted).
    #[error("no answer ({0}); the records may have landed and are sent again")]
    Ambiguous(String),
    /// Not sent (connection refused): retry.
    #[error("cannot reach Kinesis: {0}")]
    NotSent(String),
    /// Refused for a reason retrying will not fix by itself (permissions, bad request).
    #[error("{0}")]
    Refused(String),
}

impl CallError {
    /// Failures that retrying will not heal by itself (the shard stops trying; the sink
    /// reports them as persistent and the runner retries slowly).
    pub fn persistent(&self) -> bool {
        matches!(self, CallError::StreamNotFound(_) | CallError::Refused(_))
    }

    /// A short label for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::Throttled(_) => "Throttled",
            CallError::Credentials(_) => "ExpiredCredentials",
            CallError::StreamNotFound(_) => "ResourceNotFoundException",
            CallError::Ambiguous(_) => "Ambiguous",
            CallError::NotSent(_) => "NotSent",
            CallError::Refused(_) => "Refused",
        }
    }
}

/// What Kinesis said about one record of a PutRecords call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutResult {
    /// Stored on this shard.
    Stored { shard_id: String },
    /// Not stored: `ProvisionedThroughputExceededException` or `InternalFailure`.
    Failed { code: String, message: String },
}

/// The client and where it points, for messages.
#[derive(Debug, Clone)]
pub struct Kinesis {
    client: aws_sdk_kinesis::Client,
    /// Shared with the client, to drop credentials Kinesis refused.
    pub credentials: CachedCredentials,
    /// `region eu-west-1` or `endpoint http://...`, for error messages.
    pub target: String,
}

impl Kinesis {
    /// Builds the client from config and the SDK's environment (region, endpoint).
    pub async fn connect(config: &KinesisConfig) -> Result<Kinesis, String> {
        let timeout = config.request_timeout.get();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(timeout)
                    .connect_timeout(timeout.min(Duration::from_secs(5)))
                    .build(),
            )
            .identity_cache(IdentityCache::no_cache());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let credentials = credentials::provider(config.region.as_deref(), config.iot.as_ref(), timeout).await?;
        let sdk = loader.credentials_provider(credentials.clone()).load().await;
        let Some(region) = sdk.region().map(|r| r.to_string()) else {
            return Err("no AWS region: set kinesis.region, or AWS_REGION in the service's environment".into());
        };
        let target = match sdk.endpoint_url() {
            Some(url) => format!("endpoint {url} (region {region})"),
            None => format!("region {region}"),
        };
        Ok(Kinesis {
            client: aws_sdk_kinesis::Client::new(&sdk),
            credentials,
            target,
        })
    }

    /// Every shard of `stream` (open and closed), through all pages.
    pub async fn list_shards(&self, stream: &str) -> Result<Result<ShardMap, ShardMapError>, CallError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = match token.take() {
                Some(t) => self.client.list_shards().next_token(t),
                None => self.client.list_shards().stream_name(stream),
            };
            let answer = request.send().await.map_err(|e| self.classify(stream, e))?;
            for s in answer.shards() {
                let range = s.hash_key_range();
                let (start, end) = match (
                    ShardMap::parse_key(s.shard_id(), range.map(|r| r.starting_hash_key()).unwrap_or("")),
                    ShardMap::parse_key(s.shard_id(), range.map(|r| r.ending_hash_key()).unwrap_or("")),
                ) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
                };
                let open = s
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_none();
                shards.push(ShardRange {
                    id: s.shard_id().to_string(),
                    start,
                    end,
                    open,
                });
            }
            match answer.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(ShardMap::new(shards))
    }

    /// One PutRecords call; the answer has one result per entry, in order.
    pub async fn put_records(&self, stream: &str, entries: &[&Entry]) -> Result<Vec<PutResult>, CallError> {
        let mut request = self.client.put_records().stream_name(stream);
        for e in entries {
            let entry = PutRecordsRequestEntry::builder()
                .data(Blob::new(e.data.to_vec()))
                .partition_key(&e.partition_key)
                .set_explicit_hash_key(e.explicit_hash_key.clone())
                .build()
                .map_err(|err| CallError::Refused(format!("cannot build a PutRecords entry: {err}")))?;
            request = request.records(entry);
        }
        let answer = request.send().await.map_err(|e| self.classify(stream, e))?;
        let results: Vec<PutResult> = answer
            .records()
            .iter()
            .map(|r| match (r.error_code(), r.shard_id()) {
                (None, Some(shard)) => PutResult::Stored {
                    shard_id: shard.to_string(),
                },
                (code, _) => PutResult::Failed {
                    code: code.unwrap_or("MissingShardId").to_string(),
                    message: r.error_message().unwrap_or_default().to_string(),
                },
            })
            .collect();
        if results.len() != entries.len() {
            // Kinesis answers every entry; anything else is a broken answer, and since
            // the call was made, the records may have landed.
            return Err(CallError::Ambiguous(format!(
                "PutRecords answered {} results for {} records",
                results.len(),
                entries.len()
            )));
        }
        Ok(results)
    }

    fn classify<E>(&self, stream: &str, e: SdkError<E, HttpResponse>) -> CallError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let text = tillgate_sdk::error_chain(&e);
        match &e {
            SdkError::TimeoutError(_) => CallError::Ambiguous(text),
            SdkError::DispatchFailure(d) => {
                if d.is_timeout() {
                    CallError::Ambiguous(text)
                } else if refused_connection(&e) {
                    CallError::NotSent(text)
                } else {
                    CallError::Ambiguous(text)
                }
            }
            SdkError::ResponseError(_) => CallError::Ambiguous(text),
            SdkError::ServiceError(s) => {
                let code = s.err().code().unwrap_or("");
                let message = s.err().message().unwrap_or("").to_string();
                let server_side = s.raw().status().as_u16() >= 500;
                match code {
                    "ProvisionedThroughputExceededException"
                    | "LimitExceededException"
                    | "ThrottlingException"
                    | "KMSThrottlingException" => CallError::Throttled(format!("{code}: {message}")),
                    "ExpiredTokenException"
                    | "ExpiredToken"
                    | "UnrecognizedClientException"
                    | "InvalidSignatureException"
                    | "RequestExpired" => CallError::Credentials(format!("{code}: {message}")),
                    "ResourceNotFoundException" => CallError::StreamNotFound(format!(
                        "stream `{stream}` not found at {}: create it, or fix kinesis.streams ({message})",
                        self.target
                    )),
                    "InternalFailure" | "ServiceUnavailable" | "InternalServerError" => {
                        CallError::Ambiguous(format!("{code}: {message}"))
                    }
                    _ if server_side => CallError::Ambiguous(format!("{code} {message}: {text}")),
                    "AccessDeniedException" => CallError::Refused(format!(
                        "access denied to stream `{stream}` at {}: the role needs kinesis:PutRecords and \
                         kinesis:ListShards ({message})",
                        self.target
                    )),
                    _ => CallError::Refused(format!("{code}: {message} ({text})")),
                }
            }
            _ => CallError::Refused(text),
        }
    }
}

/// True when the connection was refused or could not be made at all: nothing was sent.
fn refused_connection(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | AddrNotAvailable | NetworkUnreachable | HostUnreachable
            ) {
                return true;
            }
        }
        next = err.source();
    }
    false
}
