//! Who may open a PutMedia connection, by which clock, and for how long: the SigV4
//! check ([`verify_signature`]) against the static test key or the keys the IoT
//! endpoint issued (until they expire or are revoked), against the service's clock
//! (which a test can set apart from the gateway's; every answer carries it as `Date`),
//! and a count of connections still open when their credentials expired.

use crate::fakes::iot::{iot_secret, IssuedKeys};
use crate::fakes::kvs::{ACCESS_KEY, SECRET_KEY};
use crate::fakes::sigv4::verify_signature;
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

#[derive(Debug, Default)]
pub(super) struct Auth {
    /// When set, only these keys (issued by [`crate::FakeIot`]) are accepted, until their
    /// expiry by the real clock; otherwise only [`ACCESS_KEY`].
    keys: Option<IssuedKeys>,
    revoked: HashSet<String>,
    /// The service's clock minus the real one, in seconds.
    clock_ahead_s: i64,
    /// Connections still open when their credentials expired (the endpoint ended them).
    pub(super) outlived: u64,
    /// The access key of each connection accepted, in order.
    pub(super) keys_used: Vec<String>,
}

/// A request refused: the reason it is counted under, the error type, what it says.
pub(super) struct Refusal {
    pub(super) reason: &'static str,
    pub(super) kind: &'static str,
    pub(super) message: String,
    pub(super) status: StatusCode,
}

/// A request let in: its payload style and when its credentials expire.
pub(super) struct Admitted {
    pub(super) style: &'static str,
    pub(super) expires: Option<SystemTime>,
}

impl Auth {
    pub(super) fn require_keys(&mut self, keys: IssuedKeys) {
        self.keys = Some(keys);
    }

    /// Every key issued so far is refused from now on (as after the role's sessions were
    /// revoked); keys issued later are not.
    pub(super) fn revoke_issued(&mut self) {
        if let Some(keys) = &self.keys {
            self.revoked.extend(keys.lock().unwrap().keys().cloned());
        }
    }

    pub(super) fn set_clock_ahead(&mut self, seconds: i64) {
        self.clock_ahead_s = seconds;
    }

    /// The service's time.
    pub(super) fn now(&self) -> SystemTime {
        let by = Duration::from_secs(self.clock_ahead_s.unsigned_abs());
        if self.clock_ahead_s >= 0 {
            SystemTime::now() + by
        } else {
            SystemTime::now() - by
        }
    }

    /// The service's time as an HTTP `Date` (IMF-fixdate).
    pub(super) fn date(&self) -> String {
        chrono::DateTime::<chrono::Utc>::from(self.now())
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string()
    }

    fn secret_of(&self, key: &str) -> Option<String> {
        match &self.keys {
            Some(keys) => keys
                .lock()
                .unwrap()
                .contains_key(key)
                .then(|| iot_secret(key))
                .flatten(),
            None => (key == ACCESS_KEY).then(|| SECRET_KEY.to_string()),
        }
    }

    fn expiry_of(&self, key: &str) -> Option<SystemTime> {
        self.keys.as_ref()?.lock().unwrap().get(key).copied()
    }

    /// Checks a PutMedia request's signature and credentials.
    pub(super) fn admit(&mut self, headers: &HeaderMap, host: &str) -> Result<Admitted, Refusal> {
        let refusal = |reason, kind, message: String| Refusal {
            reason,
            kind,
            message,
            status: StatusCode::FORBIDDEN,
        };
        let verified = verify_signature(headers, host, self.now(), &|key| self.secret_of(key)).map_err(|e| {
            let reason = if e.starts_with("signature expired") {
                "signature expired"
            } else {
                "signature"
            };
            refusal(reason, "InvalidSignatureException", e)
        })?;
        let key = verified.access_key;
        if self.revoked.contains(&key) {
            return Err(refusal(
                "revoked token",
                "UnrecognizedClientException",
                format!("The security token included in the request is invalid ({key})"),
            ));
        }
        let expires = self.expiry_of(&key);
        if expires.is_some_and(|e| e <= SystemTime::now()) {
            return Err(refusal(
                "expired token",
                "ExpiredTokenException",
                format!("The security token included in the request is expired ({key})"),
            ));
        }
        self.keys_used.push(key);
        Ok(Admitted {
            style: verified.style,
            expires,
        })
    }
}
