//! Configuring the agent for a Kinesis endpoint and checking what reached a stream:
//! every transaction, how many times, and in which order per key.

use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// Environment for the agent: static test credentials and no instance metadata or
/// profile lookups (which would otherwise slow the credential chain down).
pub fn static_credentials_env() -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent/tillgate-test"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/tillgate-test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A `[kinesis]` section for `endpoint`, with short test timings, plus `extra` lines.
pub fn kinesis_toml(endpoint: &str, transactions: &str, alerts: Option<&str>, extra: &str) -> String {
    let alerts = alerts.map(|a| format!("alerts = \"{a}\"\n")).unwrap_or_default();
    // Test timings, unless `extra` sets the key itself.
    let defaults: String = [
        ("request_timeout", "\"1s\""),
        ("retry_initial_backoff", "\"20ms\""),
        ("retry_max_backoff", "\"200ms\""),
        ("linger", "\"50ms\""),
    ]
    .iter()
    .filter(|(k, _)| !extra.lines().any(|l| l.trim_start().starts_with(&format!("{k} "))))
    .map(|(k, v)| format!("{k} = {v}\n"))
    .collect();
    format!(
        "[kinesis]\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n{defaults}{extra}\n\
         [kinesis.streams]\ntransactions = \"{transactions}\"\n{alerts}\n"
    )
}

/// A `[kinesis.iot]` table for the kit's IoT endpoint at `endpoint`, with the client
/// certificate from `tls`.
pub fn iot_toml(endpoint: &str, tls: &crate::TlsFiles, role_alias: &str, refresh_before: &str) -> String {
    format!(
        "[kinesis.iot]\nendpoint = \"{endpoint}\"\nrole_alias = \"{role_alias}\"\nthing_name = \"store-1-gateway\"\n\
         cert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\nrefresh_before = \"{refresh_before}\"\n",
        tls.client_cert.display(),
        tls.client_key.display(),
        tls.ca.display()
    )
}

/// What a consumer saw: user records in arrival order as (partition key, JSON body).
#[derive(Debug, Default)]
pub struct Landed {
    pub records: Vec<(String, Value)>,
}

impl Landed {
    /// From (partition key, data) pairs.
    pub fn new(records: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        Landed {
            records: records
                .into_iter()
                .map(|(k, d)| (k, serde_json::from_slice(&d).expect("every landed record is JSON")))
                .collect(),
        }
    }

    /// Occurrences per txn_id.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for (_, v) in &self.records {
            *out.entry(v["txn_id"].as_str().expect("txn_id in every record").to_string())
                .or_insert(0) += 1;
        }
        out
    }

    /// Distinct txn_ids.
    pub fn txn_ids(&self) -> HashSet<String> {
        self.counts().into_keys().collect()
    }

    /// Records beyond the first of each txn_id.
    pub fn duplicates(&self) -> usize {
        self.counts().values().map(|n| n - 1).sum()
    }

    /// Per-key order violations: a record whose journal `seq` is lower than an earlier
    /// first occurrence of the same key (duplicates are skipped, as a de-duplicating
    /// consumer would).
    pub fn order_violations(&self) -> Vec<String> {
        let mut last: HashMap<&str, u64> = HashMap::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut out = Vec::new();
        for (key, v) in &self.records {
            let id = v["txn_id"].as_str().unwrap_or("");
            if !seen.insert(id) {
                continue;
            }
            let seq = v["seq"].as_u64().expect("seq in every transaction record");
            if let Some(prev) = last.insert(key.as_str(), seq) {
                if prev > seq {
                    out.push(format!("key {key}: seq {seq} after {prev}"));
                }
            }
        }
        out
    }
}

/// The value of one sample in Prometheus text, 0 when absent. `selector` is the name
/// with its labels as printed, e.g. `tillgate_kinesis_user_records_total{stream="txns"}`.
pub fn metric(text: &str, selector: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(selector))
        .filter_map(|l| l[selector.len()..].trim().parse::<f64>().ok())
        .sum()
}
