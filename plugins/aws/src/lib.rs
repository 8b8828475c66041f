//! What tillgate's AWS plugins (Kinesis Data Streams, Kinesis Video Streams) share:
//! [`clock`] (a service's time from its `Date` header, for hand-signed requests),
//! [`credentials`] (the SDK chain or the AWS IoT Core X.509 provider, behind a cache a
//! refused request can invalidate), [`iot`] (its config section), [`limiter`] (token
//! buckets for a shard's or a stream's write budget) and [`https`] (the one TLS stack
//! of every hand-built HTTPS client).

pub mod clock;
pub mod credentials;
pub mod https;
pub mod iot;
pub mod limiter;

pub use iot::IotConfig;
