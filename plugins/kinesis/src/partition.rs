//! Partition keys: the template from config, rendered per record, and the 128-bit hash
//! key Kinesis routes by (MD5 of the key, big-endian).

use md5::{Digest, Md5};
use tillgate_sdk::Record;

/// A parsed `partition_key` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionKeyTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    StoreId,
    TerminalId,
    TxnId,
    Channel,
}

const ALLOWED: &str = "literal text and {store_id}, {terminal_id}, {txn_id}, {channel}";

impl PartitionKeyTemplate {
    /// Parses `{store_id}/{terminal_id}` and the like.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("unclosed `{{` in {s:?}; allowed: {ALLOWED}"))?;
                    let part = match &rest[1..end] {
                        "store_id" => Part::StoreId,
                        "terminal_id" => Part::TerminalId,
                        "txn_id" => Part::TxnId,
                        "channel" => Part::Channel,
                        other => return Err(format!("unknown placeholder `{{{other}}}`; allowed: {ALLOWED}")),
                    };
                    parts.push(part);
                    rest = &rest[end + 1..];
                }
                Some(i) => {
                    parts.push(Part::Text(rest[..i].to_string()));
                    rest = &rest[i..];
                }
                None => {
                    if rest.contains('}') {
                        return Err(format!("stray `}}` in {s:?}; allowed: {ALLOWED}"));
                    }
                    parts.push(Part::Text(rest.to_string()));
                    rest = "";
                }
            }
        }
        if !parts.iter().any(|p| !matches!(p, Part::Text(_))) {
            return Err(format!(
                "{s:?} has no placeholder: every record would share one key and one shard; allowed: {ALLOWED}"
            ));
        }
        Ok(PartitionKeyTemplate { parts })
    }

    /// The key for one record. The journal's key is `{store_id}/{terminal_id}` (ids
    /// never contain `/`, the validator allows `[A-Za-z0-9._-]` only).
    pub fn render(&self, record: &Record) -> String {
        if self.parts == [Part::StoreId, Part::Text("/".into()), Part::TerminalId] {
            return record.partition_key.clone();
        }
        let (store, terminal) = record
            .partition_key
            .split_once('/')
            .unwrap_or((record.partition_key.as_str(), ""));
        let mut out = String::with_capacity(record.partition_key.len() + 16);
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::StoreId => out.push_str(store),
                Part::TerminalId => out.push_str(terminal),
                Part::TxnId => out.push_str(&record.txn_id),
                Part::Channel => out.push_str(record.channel.name()),
            }
        }
        // Kinesis allows 1 to 256 characters: ids are at most 64 characters each, so only
        // long literal text could exceed it; keep the key valid and deterministic.
        if out.chars().count() > crate::config::limits::PARTITION_KEY_CHARS {
            out = out.chars().take(crate::config::limits::PARTITION_KEY_CHARS).collect();
        }
        out
    }
}

/// The hash key Kinesis maps a partition key to a shard with: MD5 as a 128-bit
/// big-endian unsigned integer.
pub fn hash_key(partition_key: &str) -> u128 {
    let digest = Md5::digest(partition_key.as_bytes());
    u128::from_be_bytes(digest.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tillgate_sdk::Channel;

    fn record() -> Record {
        Record {
            seq: 7,
            channel: Channel::Alerts,
            txn_id: "t-1".into(),
            partition_key: "s-9/pos-2".into(),
            received_ms: 0,
            body: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn renders_each_placeholder() {
        let t = PartitionKeyTemplate::parse("{channel}:{store_id}|{terminal_id}|{txn_id}").unwrap();
        assert_eq!(t.render(&record()), "alerts:s-9|pos-2|t-1");
        let d = PartitionKeyTemplate::parse("{store_id}/{terminal_id}").unwrap();
        assert_eq!(d.render(&record()), "s-9/pos-2");
    }

    #[test]
    fn refuses_unknown_and_constant_templates() {
        assert!(PartitionKeyTemplate::parse("{store}")
            .unwrap_err()
            .contains("unknown placeholder `{store}`"));
        assert!(PartitionKeyTemplate::parse("all")
            .unwrap_err()
            .contains("no placeholder"));
        assert!(PartitionKeyTemplate::parse("{store_id")
            .unwrap_err()
            .contains("unclosed"));
    }

    #[test]
    fn hash_key_is_md5_big_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(hash_key(""), 0xd41d8cd98f00b204e9800998ecf8427e);
    }
}
