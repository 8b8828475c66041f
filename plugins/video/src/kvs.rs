//! Kinesis Video Streams: the control plane through aws-sdk-kinesisvideo (describe,
//! create, data endpoint) and the PutMedia request, signed with aws-sigv4 because the
//! SDK has no PutMedia (a long-lived, full-duplex streaming call).

use crate::config::VideoConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kinesisvideo::error::SdkError;
use aws_sdk_kinesisvideo::types::ApiName;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use std::time::{Duration, SystemTime};
use tillgate_aws::clock::ServiceClock;
use tillgate_aws::credentials::{self, CachedCredentials};

/// SHA-256 of the empty string: how the AWS C producer SDK signs PutMedia's body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A control-plane client with the shared credentials.
#[derive(Debug, Clone)]
pub struct Kvs {
    client: aws_sdk_kinesisvideo::Client,
    pub credentials: CachedCredentials,
    pub region: String,
    /// KVS's time, from its answers' `Date` headers: PutMedia is signed with it.
    pub clock: ServiceClock,
}

/// A signed PutMedia request head and when the credentials that signed it expire.
#[derive(Debug)]
pub struct SignedPutMedia {
    pub head: http::request::Builder,
    pub credentials_expire: Option<SystemTime>,
}

/// What DescribeStream (or CreateStream) told us.
#[derive(Debug, Clone, Copy)]
pub struct StreamInfo {
    /// 0: the stream keeps nothing, so RECEIVED is the last ACK.
    pub retention_hours: i32,
}

fn message<E: std::error::Error + 'static>(e: &SdkError<E>) -> String {
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            let meta = aws_smithy_runtime_api::http::Response::status(s.raw()).as_u16();
            format!("{meta}: {err}")
        }
        other => tillgate_sdk::error_chain(other),
    }
}

impl Kvs {
    pub async fn connect(config: &VideoConfig) -> Result<Kvs, String> {
        let timeout = Duration::from_secs(10);
        let clock = ServiceClock::default();
        let credentials = credentials::provider(config.region.as_deref(), config.iot.as_ref(), timeout).await?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(timeout)
                    .connect_timeout(Duration::from_secs(5))
                    .build(),
            )
            .identity_cache(aws_config::identity::IdentityCache::no_cache())
            .credentials_provider(credentials.clone());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let sdk = loader.load().await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .ok_or("no AWS region: set video.region, or AWS_REGION in the service's environment")?;
        Ok(Kvs {
            client: aws_sdk_kinesisvideo::Client::new(&sdk),
            credentials,
            region,
            clock,
        })
    }

    /// Describes the stream; creates it (when allowed) if it does not exist.
    pub async fn ensure_stream(&self, stream: &str, create: bool, retention_hours: u32) -> Result<StreamInfo, String> {
        match self.client.describe_stream().stream_name(stream).send().await {
            Ok(out) => Ok(StreamInfo {
                retention_hours: out.stream_info().and_then(|i| i.data_retention_in_hours()).unwrap_or(0),
            }),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                if !create {
                    return Err(format!(
                        "stream `{stream}` not found in {}: create it, or set video.create_streams = true",
                        self.region
                    ));
                }
                self.client
                    .create_stream()
                    .stream_name(stream)
                    .media_type("video/h264")
                    .data_retention_in_hours(retention_hours as i32)
                    .send()
                    .await
                    .map_err(|e| format!("CreateStream `{stream}`: {}", message(&e)))?;
                tracing::info!(stream, retention_hours, "created the Kinesis Video stream");
                Ok(StreamInfo {
                    retention_hours: retention_hours as i32,
                })
            }
            Err(e) => Err(format!("DescribeStream `{stream}`: {}", message(&e))),
        }
    }

    /// Where PutMedia goes for this stream.
    pub async fn data_endpoint(&self, stream: &str) -> Result<String, String> {
        let out = self
            .client
            .get_data_endpoint()
            .stream_name(stream)
            .api_name(ApiName::PutMedia)
            .send()
            .await
            .map_err(|e| format!("GetDataEndpoint `{stream}`: {}", message(&e)))?;
        out.data_endpoint()
            .map(|e| e.trim_end_matches('/').to_string())
            .ok_or_else(|| format!("GetDataEndpoint `{stream}` returned no endpoint"))
    }

    /// The PutMedia request head for `stream`, signed at KVS's time (body signed as
    /// empty, like the C producer SDK) with credentials valid for more than `lasting`
    /// when they can be had (see [`CachedCredentials::valid_for`]).
    pub async fn put_media_request(
        &self,
        endpoint: &str,
        stream: &str,
        producer_start: SystemTime,
        lasting: Duration,
    ) -> Result<SignedPutMedia, String> {
        let url = format!("{endpoint}/putMedia");
        let uri: http::Uri = url.parse().map_err(|e| format!("data endpoint {endpoint}: {e}"))?;
        let host = uri
            .authority()
            .map(|a| a.to_string())
            .ok_or("data endpoint has no host")?;
        let start = producer_start
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut headers: Vec<(&str, String)> = vec![
            ("host", host),
            ("x-amzn-stream-name", stream.to_string()),
            ("x-amzn-fragment-timecode-type", "ABSOLUTE".into()),
            ("x-amzn-producer-start-timestamp", format!("{start:.3}")),
            ("x-amzn-fragment-acknowledgment-required", "1".into()),
            ("content-type", "application/octet-stream".into()),
        ];
        let creds = self
            .credentials
            .valid_for(lasting)
            .await
            .map_err(|e| format!("credentials: {}", tillgate_sdk::error_chain(&e)))?;
        let credentials_expire = creds.expiry();
        let identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("kinesisvideo")
            .time(self.clock.now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("signing: {e}"))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url.clone(),
            headers.iter().map(|(k, v)| (*k, v.as_str())),
            SignableBody::Precomputed(EMPTY_SHA256.to_string()),
        )
        .map_err(|e| format!("signing: {e}"))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| format!("signing: {e}"))?
            .into_parts();
        for (name, value) in instructions.headers() {
            headers.push((name, value.to_string()));
        }
        let mut builder = http::Request::builder().method("POST").uri(uri);
        for (name, value) in headers {
            if name != "host" {
                builder = builder.header(name, value);
            }
        }
        Ok(SignedPutMedia {
            head: builder,
            credentials_expire,
        })
    }
}
