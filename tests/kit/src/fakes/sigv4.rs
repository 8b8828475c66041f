//! SigV4 as the fake KVS endpoint checks it: the request is signed again with the known
//! secret (aws-sigv4, the library the AWS SDKs use) and the signatures compared, for
//! both ways producers hash PutMedia's streaming body.

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use axum::http::HeaderMap;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// SHA-256 of "": the C producer SDK's payload hash for PutMedia.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A signature that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// How the body was hashed: `empty-sha256` or `unsigned-payload`.
    pub style: &'static str,
    pub access_key: String,
}

/// Checks the SigV4 Authorization header by signing the same request again with the
/// secret `secret_of` knows for its access key, and its time against `now` (the
/// service's clock) as AWS does: at most 5 minutes apart either way.
pub fn verify_signature(
    headers: &HeaderMap,
    host: &str,
    now: SystemTime,
    secret_of: &dyn Fn(&str) -> Option<String>,
) -> Result<Verified, String> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Authorization")?;
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or("not AWS4-HMAC-SHA256")?;
    let mut parts = HashMap::new();
    for p in rest.split(',') {
        if let Some((k, v)) = p.trim().split_once('=') {
            parts.insert(k, v);
        }
    }
    let credential = parts.get("Credential").ok_or("no Credential")?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[3] != "kinesisvideo" || scope[4] != "aws4_request" {
        return Err(format!("credential scope {credential}"));
    }
    let access_key = scope[0];
    let secret = secret_of(access_key).ok_or_else(|| format!("unknown access key {access_key}"))?;
    let region = scope[2];
    let signed: Vec<&str> = parts
        .get("SignedHeaders")
        .ok_or("no SignedHeaders")?
        .split(';')
        .collect();
    let expected = parts.get("Signature").ok_or("no Signature")?;
    let date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or("no x-amz-date")?;
    let time = chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ").map_err(|e| format!("x-amz-date: {e}"))?;
    let time: SystemTime = time.and_utc().into();
    let apart = now
        .duration_since(time)
        .or_else(|_| time.duration_since(now))
        .unwrap_or_default();
    if apart > Duration::from_secs(300) {
        return Err(format!(
            "signature expired: {date} is more than 5 minutes from the service's time"
        ));
    }
    let token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut pairs: Vec<(String, String)> = Vec::new();
    for name in &signed {
        if matches!(*name, "x-amz-date" | "x-amz-security-token") {
            continue;
        }
        let value = if *name == "host" {
            host.to_string()
        } else {
            headers
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .ok_or(format!("signed header {name} missing"))?
                .to_string()
        };
        pairs.push((name.to_string(), value));
    }
    let declared = headers.get("x-amz-content-sha256").and_then(|v| v.to_str().ok());
    let styles: Vec<(&'static str, SignableBody)> = match declared {
        Some("UNSIGNED-PAYLOAD") => vec![("unsigned-payload", SignableBody::UnsignedPayload)],
        Some(EMPTY_SHA256) => vec![("empty-sha256", SignableBody::Precomputed(EMPTY_SHA256.into()))],
        Some(other) => {
            return Err(format!(
                "x-amz-content-sha256 {other}: a streaming body cannot be hashed up front"
            ))
        }
        None => vec![
            ("empty-sha256", SignableBody::Precomputed(EMPTY_SHA256.into())),
            ("unsigned-payload", SignableBody::UnsignedPayload),
        ],
    };
    let identity = Credentials::new(access_key, secret, token, None, "kvs-fake").into();
    for (style, body) in styles {
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("kinesisvideo")
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let request = SignableRequest::new(
            "POST",
            format!("http://{host}/putMedia"),
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            body,
        )
        .map_err(|e| e.to_string())?;
        let (_, signature) = sign(request, &params).map_err(|e| e.to_string())?.into_parts();
        if &signature == expected {
            return Ok(Verified {
                style,
                access_key: access_key.to_string(),
            });
        }
    }
    Err("signature does not match".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::kvs::{ACCESS_KEY, SECRET_KEY};

    /// Signs a PutMedia head the way an SDK would: `body` is the payload style, and
    /// `declare` adds `x-amz-content-sha256` (the Java SDK does for UNSIGNED-PAYLOAD).
    fn signed(body: SignableBody, declare: Option<&str>, secret: &str) -> HeaderMap {
        signed_at(body, declare, secret, SystemTime::now())
    }

    fn signed_at(body: SignableBody, declare: Option<&str>, secret: &str, now: SystemTime) -> HeaderMap {
        let host = "127.0.0.1:4567";
        let mut pairs: Vec<(&str, String)> = vec![("host", host.into()), ("x-amzn-stream-name", "s".into())];
        if let Some(d) = declare {
            pairs.push(("x-amz-content-sha256", d.into()));
        }
        let identity = Credentials::new(ACCESS_KEY, secret, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("kinesisvideo")
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let request = SignableRequest::new(
            "POST",
            format!("http://{host}/putMedia"),
            pairs.iter().map(|(k, v)| (*k, v.as_str())),
            body,
        )
        .unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        let mut headers = HeaderMap::new();
        for (k, v) in pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .chain(instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())))
        {
            headers.insert(axum::http::HeaderName::try_from(k).unwrap(), v.parse().unwrap());
        }
        headers
    }

    fn known(key: &str) -> Option<String> {
        (key == ACCESS_KEY).then(|| SECRET_KEY.to_string())
    }

    fn style(headers: &HeaderMap, host: &str) -> Result<&'static str, String> {
        verify_signature(headers, host, SystemTime::now(), &known).map(|v| v.style)
    }

    #[test]
    fn a_signature_more_than_5_minutes_from_the_service_clock_is_refused() {
        let host = "127.0.0.1:4567";
        let now = SystemTime::now();
        let body = || SignableBody::Precomputed(EMPTY_SHA256.into());
        let s = Duration::from_secs;
        for (at, ok) in [
            (now - s(290), true),
            (now + s(290), true),
            (now - s(310), false),
            (now + s(310), false),
        ] {
            let result = verify_signature(&signed_at(body(), None, SECRET_KEY, at), host, now, &known);
            assert_eq!(result.is_ok(), ok, "{at:?}: {result:?}");
        }
    }

    #[test]
    fn both_payload_styles_are_accepted_and_a_wrong_secret_is_not() {
        let host = "127.0.0.1:4567";
        let c_sdk = signed(SignableBody::Precomputed(EMPTY_SHA256.into()), None, SECRET_KEY);
        assert_eq!(style(&c_sdk, host), Ok("empty-sha256"));
        let java_sdk = signed(SignableBody::UnsignedPayload, Some("UNSIGNED-PAYLOAD"), SECRET_KEY);
        assert_eq!(style(&java_sdk, host), Ok("unsigned-payload"));
        let undeclared = signed(SignableBody::UnsignedPayload, None, SECRET_KEY);
        assert_eq!(style(&undeclared, host), Ok("unsigned-payload"));
        let wrong = signed(SignableBody::Precomputed(EMPTY_SHA256.into()), None, "not-the-secret");
        assert_eq!(style(&wrong, host), Err("signature does not match".into()));
        let mut tampered = c_sdk.clone();
        tampered.insert("x-amzn-stream-name", "other".parse().unwrap());
        assert!(style(&tampered, host).is_err());
    }
}
