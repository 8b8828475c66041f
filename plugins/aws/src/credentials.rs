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
use std::time::{Duration, Instant, SystemTime};

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

/// After a refresh failed while the cached credentials were still valid: how long they
/// are used before the provider is asked again, so a provider that is down does not add
/// its timeout to every request.
const RETRY_REFRESH_AFTER: Duration = Duration::from_secs(15);

/// Caches what `inner` provides until `refresh_before` its expiry, or until invalidated;
/// keeps using them, while still valid, when a refresh fails.
#[derive(Debug, Clone)]
pub struct CachedCredentials {
    inner: Arc<dyn ProvideCredentials>,
    refresh_before: Duration,
    cached: Arc<tokio::sync::Mutex<Cache>>,
}

#[derive(Debug, Default)]
struct Cache {
    credentials: Option<Credentials>,
    /// When the last refresh failed (the cached credentials were kept).
    refresh_failed: Option<Instant>,
}

/// How long `c` is still valid at `now`; `None`: it does not expire.
fn valid_left(c: &Credentials, now: SystemTime) -> Option<Duration> {
    c.expiry().map(|expiry| expiry.duration_since(now).unwrap_or_default())
}

impl CachedCredentials {
    /// Wraps `inner`.
    pub fn new(inner: impl ProvideCredentials + 'static, refresh_before: Duration) -> Self {
        CachedCredentials {
            inner: Arc::new(inner),
            refresh_before,
            cached: Arc::new(tokio::sync::Mutex::new(Cache::default())),
        }
    }

    /// Forgets the cached credentials (a service refused them): the next request
    /// fetches new ones, and a failure to fetch is an error.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = Cache::default();
    }

    /// Credentials valid for more than `at_least` (or `refresh_before`, the longer),
    /// fetched anew when the cached ones are not. When fetching fails, the cached ones
    /// are returned while they are still valid at all (the caller sees their expiry);
    /// the provider is asked again after [`RETRY_REFRESH_AFTER`].
    pub async fn valid_for(&self, at_least: Duration) -> Result<Credentials, CredentialsError> {
        let wanted = at_least.max(self.refresh_before);
        let mut cache = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some(c) = &cache.credentials {
            let left = valid_left(c, now);
            let still_valid = left.is_none_or(|l| !l.is_zero());
            let recently_failed = cache.refresh_failed.is_some_and(|t| t.elapsed() < RETRY_REFRESH_AFTER);
            if left.is_none_or(|l| l > wanted) || (still_valid && recently_failed) {
                return Ok(c.clone());
            }
        }
        match self.inner.provide_credentials().await {
            Ok(c) => {
                if let Some(left) = valid_left(&c, now) {
                    tracing::info!(valid_for = ?left, "fetched AWS credentials");
                }
                *cache = Cache {
                    credentials: Some(c.clone()),
                    refresh_failed: None,
                };
                Ok(c)
            }
            Err(e) => {
                let kept = cache
                    .credentials
                    .clone()
                    .filter(|c| valid_left(c, now).is_some_and(|l| !l.is_zero()));
                let Some(c) = kept else { return Err(e) };
                tracing::warn!(
                    error = %tillgate_sdk::error_chain(&e),
                    valid_for = ?valid_left(&c, now),
                    "cannot refresh AWS credentials; using the current ones until they expire"
                );
                cache.refresh_failed = Some(Instant::now());
                Ok(c)
            }
        }
    }

    async fn get(&self) -> Result<Credentials, CredentialsError> {
        self.valid_for(Duration::ZERO).await
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
        // The issuer's clock: the keys' lifetime is measured against it, not the gateway's.
        let issued_at = response
            .headers()
            .get("date")
            .and_then(|d| d.to_str().ok())
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
            .map(SystemTime::from);
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
        parse_answer(&body, issued_at, SystemTime::now()).map_err(CredentialsError::provider_error)
    }
}

/// The answer's keys. Their expiry is moved onto the gateway's clock: `received` plus
/// what was left of them by the issuer's clock (`issued_at`, its `Date`), so a gateway
/// clock hours off neither takes fresh keys for expired ones nor keeps expired ones.
fn parse_answer(body: &[u8], issued_at: Option<SystemTime>, received: SystemTime) -> Result<Credentials, String> {
    let answer: IotAnswer =
        serde_json::from_slice(body).map_err(|e| format!("IoT credentials endpoint: unexpected answer: {e}"))?;
    let k = answer.credentials;
    let expiry = chrono::DateTime::parse_from_rfc3339(&k.expiration)
        .map_err(|e| format!("IoT credentials endpoint: expiration {:?}: {e}", k.expiration))?;
    let mut expiry = SystemTime::UNIX_EPOCH + Duration::from_millis(expiry.timestamp_millis().max(0) as u64);
    if let Some(issued_at) = issued_at {
        expiry = received + expiry.duration_since(issued_at).unwrap_or_default();
    }
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
        let body = br#"{"credentials":{"accessKeyId":"ASIA1","secretAccessKey":"s","sessionToken":"t","expiration":"2026-11-27T16:00:00Z"}}"#;
        let c = parse_answer(body, None, SystemTime::now()).unwrap();
        assert_eq!(c.access_key_id(), "ASIA1");
        assert_eq!(c.session_token(), Some("t"));
        let expiry = c.expiry().unwrap().duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(expiry.as_secs(), 1_795_795_200);
        assert!(parse_answer(b"{}", None, SystemTime::now())
            .unwrap_err()
            .contains("unexpected answer"));
        // Issued at 15:00 by the issuer's clock, received at 17:30 by a gateway clock
        // 2.5 h ahead: an hour left, by the gateway's clock.
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_795_200 - 3600);
        let received = issued + Duration::from_secs(9000);
        let c = parse_answer(body, Some(issued), received).unwrap();
        assert_eq!(c.expiry(), Some(received + Duration::from_secs(3600)));
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

    /// Hands out `AK{n}` valid for `lifetime`, or fails while `down` is set.
    #[derive(Debug)]
    struct Flaky {
        issued: AtomicU32,
        lifetime: Duration,
        down: std::sync::atomic::AtomicBool,
    }
    impl ProvideCredentials for Flaky {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            if self.down.load(Ordering::SeqCst) {
                return future::ProvideCredentials::ready(Err(CredentialsError::provider_error("endpoint down")));
            }
            let n = self.issued.fetch_add(1, Ordering::SeqCst);
            let expiry = SystemTime::now() + self.lifetime;
            future::ProvideCredentials::ready(Ok(Credentials::new(format!("AK{n}"), "s", None, Some(expiry), "test")))
        }
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_still_valid_credentials_but_not_refused_or_expired_ones() {
        let flaky = Arc::new(Flaky {
            issued: AtomicU32::new(0),
            lifetime: Duration::from_secs(2),
            down: false.into(),
        });
        #[derive(Debug)]
        struct Shared(Arc<Flaky>);
        impl ProvideCredentials for Shared {
            fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                self.0.provide_credentials()
            }
        }
        let cache = CachedCredentials::new(Shared(flaky.clone()), Duration::from_secs(1));
        assert_eq!(cache.get().await.unwrap().access_key_id(), "AK0");
        flaky.down.store(true, Ordering::SeqCst);
        // Wanted for longer than they last: a refresh is due, fails, and the still valid
        // ones are kept (the provider is not asked again for a while).
        assert_eq!(
            cache.valid_for(Duration::from_secs(60)).await.unwrap().access_key_id(),
            "AK0"
        );
        assert_eq!(
            cache.valid_for(Duration::from_secs(60)).await.unwrap().access_key_id(),
            "AK0"
        );
        assert_eq!(flaky.issued.load(Ordering::SeqCst), 1);
        // Refused by a service: gone, and with the provider down that is an error.
        cache.invalidate().await;
        assert!(cache.get().await.is_err());
        flaky.down.store(false, Ordering::SeqCst);
        assert_eq!(cache.get().await.unwrap().access_key_id(), "AK1");
        // Expired while the provider is down: an error, never expired credentials.
        flaky.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(cache.get().await.is_err());
    }

    #[tokio::test]
    async fn valid_for_fetches_credentials_that_last_longer_than_asked() {
        let cache = CachedCredentials::new(Counting(AtomicU32::new(0), 120), Duration::from_secs(30));
        assert_eq!(cache.get().await.unwrap().access_key_id(), "AK0");
        // 120 s left is enough for 60 s, not for 200 s.
        assert_eq!(
            cache.valid_for(Duration::from_secs(60)).await.unwrap().access_key_id(),
            "AK0"
        );
        assert_eq!(
            cache.valid_for(Duration::from_secs(200)).await.unwrap().access_key_id(),
            "AK1"
        );
    }
}
