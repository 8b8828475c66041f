//! The one TLS stack of every HTTPS client the plugins build by hand (the IoT
//! credentials endpoint, KVS PutMedia): rustls on aws-lc-rs, the provider the AWS SDK
//! uses too, and the gateway's trust store (`/etc/ssl/certs`, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR`), so an operator adds a corporate root the way they do for any other
//! program. No root list is compiled in, and no TLS session uses ring (it is still
//! compiled: rumqttc 0.25 names rustls-webpki 0.102's error type, see deny.toml).

/// A reqwest builder on that stack.
pub fn client_builder() -> reqwest::ClientBuilder {
    // reqwest takes the process's provider; the first install wins and later ones are
    // no-ops, so every caller can ask.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder().use_rustls_tls()
}
