//! Credentials: a cache that can be told the credentials were refused (an
//! expired-token answer, e.g. after the gateway's clock jumped), and the AWS IoT Core
//! X.509 credentials provider, which aws-sdk-rust does not have.
//!
//! The SDK's own identity cache is switched off for the Kinesis client (see
//! `client.rs`): it cannot be invalidated from outside, and this cache does the same
//! job (refresh a configurable time before expiry) plus that.

use crate::iot::IotConfig;
use aws_credential_types::provider::{error::CredentialsError, future, ProvideCredentials};
use aws_credential_types::Credentials;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The credentials both AWS sinks use: the AWS IoT Core X.509 provider when `iot` is
/// set, otherwise the SDK's default chain (environment, profile, container credentials =
/// Greengrass's token exchange service, IMDS); cached and refreshed `refresh_before`
/// expiry, invalidated when a service refuses them.
pub async fn provider(
    region: Option<&str>,
    iot: Option<&IotConfig>,
    timeout: Duration,
) -> Result<CachedCredentials, String> {
    let refresh_before = iot.map(|i| i.refresh_before.get()).unwrap_or(Duration::from_secs(300));
    Ok(match iot {
        Some(iot) => CachedCredentials::new(IotCredentials::new(iot, timeout)?, refresh_before),
        None => {
            let mut chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder();
            if let Some(region) = region {
                chain = chain.region(aws_config::Region::new(region.to_string()));
            }
            CachedCredentials::new(chain.build().await, refresh_before)
        }
    })
}

/// Caches what `inner` provides until `refresh_before` its expiry, or until invalidated.
#[derive(Debug, Clone)]
pub struct CachedCredentials {
    inner: Arc<dyn ProvideCredentials>,
    refresh_before: Duration,
    cached: Arc<tokio::sync::Mutex<Option<Credentials>>>,
}

impl CachedCredentials {
    /// Wraps `inner`.
    pub fn new(inner: impl ProvideCredentials + 'static, refresh_before: Duration) -> Self {
        CachedCredentials {
            inner: Arc::new(inner),
            refresh_before,
            cached: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// Forgets the cached credentials: the next request fetches new ones.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    fn fresh(&self, c: &Credentials) -> bool {
        match c.expiry() {
            None => true,
            Some(expiry) => SystemTime::now() + self.refresh_before < expiry,
        }
    }

    async fn get(&self) -> Result<Credentials, CredentialsError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| self.fresh(c)) {
            return Ok(c.clone());
        }
        let c = self.inner.provide_credentials().await?;
        if let Some(expiry) = c.expiry() {
            let left = expiry.duration_since(SystemTime::now()).unwrap_or_default();
            tracing::info!(valid_for = ?left, "fetched AWS credentials");
        }
        *cached = Some(c.clone());
        Ok(c)
    }
}

impl ProvideCredentials for CachedCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.get())
    }
}

/// The AWS IoT Core credentials provider: mutual TLS with the thing's certificate,
/// `GET https://{endpoint}/role-aliases/{alias}/credentials`.
#[derive(Debug, Clone)]
pub struct IotCredentials {
    client: reqwest::Client,
    url: String,
    thing_name: String,
}

#[derive(Debug, Deserialize)]
struct IotAnswer {
    credentials: IotKeys,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IotKeys {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

impl IotCredentials {
    /// Reads the certificate, key and CA; errors name the config key.
    pub fn new(config: &IotConfig, timeout: Duration) -> Result<Self, String> {
        let read = |key: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| format!("kinesis.iot.{key}: cannot read {}: {e}", path.display()))
        };
        let mut pem = read("cert_file", &config.cert_file)?;
        pem.push(b'\n');
        pem.extend(read("key_file", &config.key_file)?);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| format!("kinesis.iot.cert_file/key_file: not a certificate and key: {e}"))?;
        let mut builder = crate::https::client_builder()
            .identity(identity)
            .timeout(timeout)
            .connect_timeout(timeout);
        if let Some(ca) = &config.ca_file {
            let ca = reqwest::Certificate::from_pem(&read("ca_file", ca)?)
                .map_err(|e| format!("kinesis.iot.ca_file: not a PEM certificate: {e}"))?;
            builder = builder.tls_built_in_root_certs(false).add_root_certificate(ca);
        }
        let client = builder
            .build()
            .map_err(|e| format!("kinesis.iot: cannot set up TLS: {e}"))?;
        let base = if config.endpoint.starts_with("https://") {
            config.endpoint.trim_end_matches('/').to_string()
        } else {
            format!("https://{}", config.endpoint.trim_end_matches('/'))
        };
        Ok(IotCredentials {
            client,
            url: format!("{base}/role-aliases/{}/credentials", config.role_alias),
            thing_name: config.thing_name.clone(),
        })
    }

    async fn fetch(&self) -> Result<Credentials, CredentialsError> {
        let response = self
            .client
            .get(&self.url)
            .header("x-amzn-iot-thingname", &self.thing_name)
            .send()
            .await
            .map_err(|e| {
                CredentialsError::provider_error(format!(
                    "IoT credentials endpoint {}: {}",
                    self.url,
                    tillgate_sdk::error_chain(&e)
                ))
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            CredentialsError::provider_error(format!(
                "IoT credentials endpoint {}: {}",
                self.url,
                tillgate_sdk::error_chain(&e)
            ))
        })?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(CredentialsError::provider_error(format!(
                "IoT credentials endpoint {} answered {status}: {} (check kinesis.iot.role_alias, thing_name, and \
                 that the certificate is attached to the thing and allowed iot:AssumeRoleWithCertificate)",
                self.url,
                text.trim()
            )));
        }
        parse_answer(&body).map_err(CredentialsError::provider_error)
    }
}

fn parse_answer(body: &[u8]) -> Result<Credentials, String> {
    let answer: IotAnswer =
        serde_json::from_slice(body).map_err(|e| format!("IoT credentials endpoint: unexpected answer: {e}"))?;
    let k = answer.credentials;
    let expiry = chrono::DateTime::parse_from_rfc3339(&k.expiration)
        .map_err(|e| format!("IoT credentials endpoint: expiration {:?}: {e}", k.expiration))?;
    let expiry = SystemTime::UNIX_EPOCH + Duration::from_millis(expiry.timestamp_millis().max(0) as u64);
    Ok(Credentials::new(
        k.access_key_id,
        k.secret_access_key,
        Some(k.session_token),
        Some(expiry),
        "aws-iot-credentials-provider",
    ))
}

impl ProvideCredentials for IotCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.fetch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn parses_the_documented_answer() {
        let c = parse_answer(
            br#"{"credentials":{"accessKeyId":"ASIA1","secretAccessKey":"s","sessionToken":"t","expiration":"2026-11-27T16:00:00Z"}}"#,
        )
        .unwrap();
        assert_eq!(c.access_key_id(), "ASIA1");
        assert_eq!(c.session_token(), Some("t"));
        let expiry = c.expiry().unwrap().duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(expiry.as_secs(), 1_795_795_200);
        assert!(parse_answer(b"{}").unwrap_err().contains("unexpected answer"));
    }

    #[derive(Debug, Default)]
    struct Counting(AtomicU32, u64);
    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            let expiry = SystemTime::now() + Duration::from_secs(self.1);
            future::ProvideCredentials::ready(Ok(Credentials::new(format!("AK{n}"), "s", None, Some(expiry), "test")))
        }
    }

    #[tokio::test]
    async fn caches_until_shortly_before_expiry_and_refetches_when_invalidated() {
        let long = CachedCredentials::new(Counting(AtomicU32::new(0), 3600), Duration::from_secs(300));
        assert_eq!(long.get().await.unwrap().access_key_id(), "AK0");
        assert_eq!(long.get().await.unwrap().access_key_id(), "AK0");
        long.invalidate().await;
        assert_eq!(long.get().await.unwrap().access_key_id(), "AK1");
        // Expiring within refresh_before: fetched every time.
        let short = CachedCredentials::new(Counting(AtomicU32::new(0), 60), Duration::from_secs(300));
        assert_eq!(short.get().await.unwrap().access_key_id(), "AK0");
        assert_eq!(short.get().await.unwrap().access_key_id(), "AK1");
    }
}
