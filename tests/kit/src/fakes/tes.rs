//! A container credentials endpoint as AWS IoT Greengrass v2's token exchange service
//! runs it: `GET http://localhost:{port}/2016-11-01/credentialprovider/` with the
//! `Authorization` token from `AWS_CONTAINER_AUTHORIZATION_TOKEN`, answering
//! `{AccessKeyId, SecretAccessKey, Token, Expiration}`. The keys it hands out are shared
//! with [`crate::FakeKinesis::require_keys`].

use crate::fakes::iot::IssuedKeys;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The path Greengrass's token exchange service serves.
pub const PATH: &str = "/2016-11-01/credentialprovider/";

/// The running endpoint.
#[derive(Debug, Clone)]
pub struct FakeTes {
    pub addr: SocketAddr,
    pub token: String,
    pub issued: Arc<AtomicU32>,
    pub refused: Arc<AtomicU32>,
    pub keys: IssuedKeys,
}

impl FakeTes {
    /// Starts on a loopback port; credentials live for `lifetime`.
    pub async fn start(lifetime: Duration) -> FakeTes {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let tes = FakeTes {
            addr: listener.local_addr().expect("addr"),
            token: format!("tes-token-{}", std::process::id()),
            issued: Arc::new(AtomicU32::new(0)),
            refused: Arc::new(AtomicU32::new(0)),
            keys: Arc::new(Mutex::new(HashMap::new())),
        };
        let state = tes.clone();
        let app = Router::new().route(
            PATH,
            get(move |headers: HeaderMap| {
                let tes = state.clone();
                async move { tes.credentials(&headers, lifetime) }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        tes
    }

    /// The environment Greengrass gives a component: where and how to ask.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI".into(),
                format!("http://{}{PATH}", self.addr),
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN".into(), self.token.clone()),
        ]
    }

    fn credentials(&self, headers: &HeaderMap, lifetime: Duration) -> Response {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some(self.token.as_str()) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return (StatusCode::FORBIDDEN, "{\"message\":\"invalid authorization token\"}").into_response();
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let key = format!("ASIATES{n:08}");
        let expiry = SystemTime::now() + lifetime;
        self.keys.lock().unwrap().insert(key.clone(), expiry);
        let expiration =
            chrono::DateTime::<chrono::Utc>::from(expiry).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let body = serde_json::json!({
            "AccessKeyId": key,
            "SecretAccessKey": format!("secret-{n}"),
            "Token": format!("token-{n}"),
            "Expiration": expiration,
        });
        (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
    }
}
