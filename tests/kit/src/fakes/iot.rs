//! An AWS IoT Core credentials provider endpoint: HTTPS that demands a client
//! certificate signed by the test CA, `GET /role-aliases/{alias}/credentials` with
//! `x-amzn-iot-thingname`, answering short-lived keys. The keys it hands out are shared
//! with [`crate::FakeKinesis::require_keys`], which refuses them once expired.

use crate::emulators::broker::TlsFiles;
use axum::extract::Path as UrlPath;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Keys handed out and when each expires.
pub type IssuedKeys = Arc<Mutex<HashMap<String, SystemTime>>>;

/// The secret the endpoint hands out with `key` (the KVS fake checks signatures with
/// it); `None` for a key it could not have issued.
pub fn iot_secret(key: &str) -> Option<String> {
    let n: u32 = key.strip_prefix("ASIAIOT")?.parse().ok()?;
    Some(format!("secret-{n}"))
}

/// The running endpoint.
#[derive(Debug, Clone)]
pub struct FakeIot {
    pub addr: SocketAddr,
    /// Credentials handed out so far.
    pub issued: Arc<AtomicU32>,
    /// TLS handshakes refused (no or unknown client certificate).
    pub refused_handshakes: Arc<AtomicU32>,
    pub keys: IssuedKeys,
}

struct TlsListener {
    inner: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    refused: Arc<AtomicU32>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.inner.accept().await else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => {
                    self.refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl FakeIot {
    /// Starts on a loopback port with the test CA's server certificate; credentials
    /// live for `lifetime`; only `role_alias` exists.
    pub async fn start(tls: &TlsFiles, role_alias: &str, lifetime: Duration) -> FakeIot {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&tls.ca).expect("CA file") {
            roots.add(ca.expect("CA certificate")).expect("CA accepted");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .expect("client verifier");
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(&tls.server_cert)
            .expect("server cert")
            .map(|c| c.expect("certificate"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(&tls.server_key).expect("server key");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .expect("server config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let iot = FakeIot {
            addr,
            issued: Arc::new(AtomicU32::new(0)),
            refused_handshakes: Arc::new(AtomicU32::new(0)),
            keys: Arc::new(Mutex::new(HashMap::new())),
        };
        let state = (iot.clone(), role_alias.to_string(), lifetime);
        let app = Router::new().route(
            "/role-aliases/{alias}/credentials",
            get(move |UrlPath(alias): UrlPath<String>, headers: HeaderMap| {
                let (iot, role_alias, lifetime) = state.clone();
                async move { iot.credentials(&alias, &role_alias, lifetime, &headers) }
            }),
        );
        let listener = TlsListener {
            inner: listener,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            refused: iot.refused_handshakes.clone(),
        };
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        iot
    }

    /// `127.0.0.1:port`, as `kinesis.iot.endpoint`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    fn credentials(&self, alias: &str, role_alias: &str, lifetime: Duration, headers: &HeaderMap) -> Response {
        if alias != role_alias {
            return (StatusCode::NOT_FOUND, "{\"message\":\"Role alias does not exist\"}").into_response();
        }
        if !headers.contains_key("x-amzn-iot-thingname") {
            return (StatusCode::BAD_REQUEST, "{\"message\":\"Missing thing name\"}").into_response();
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let key = format!("ASIAIOT{n:08}");
        let expiry = SystemTime::now() + lifetime;
        self.keys.lock().unwrap().insert(key.clone(), expiry);
        let expiration =
            chrono::DateTime::<chrono::Utc>::from(expiry).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let body = serde_json::json!({"credentials": {
            "accessKeyId": key,
            "secretAccessKey": iot_secret(&key),
            "sessionToken": format!("token-{n}"),
            "expiration": expiration,
        }});
        (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
    }
}
