//! KPL aggregation: many user records in one Kinesis record, in the format the KCL and
//! `aws-kinesis-agg` de-aggregate. Lambda hands a function the aggregate as it is: the
//! cloud's alert handler (cloud/alert-handler) reads it with [`deaggregate`].
//!
//! Record = magic `F3 89 9A C2` ‖ protobuf `AggregatedRecord` ‖ MD5(protobuf). The
//! protobuf messages are declared with prost's derive (proto2 `required` fields are
//! always encoded, as the proto2 decoders on the consumer side demand). The builder
//! tracks the encoded size as records are added, so an aggregate is closed before it
//! crosses its limit without encoding it twice.

use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};
use prost::encoding::encoded_len_varint;
use prost::Message;
use std::collections::HashMap;

/// The first four bytes of every aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// Magic plus the trailing MD5.
pub const OVERHEAD: usize = MAGIC.len() + 16;

/// `AggregatedRecord` from the KPL's `messages.proto`.
#[derive(Clone, PartialEq, Message)]
pub struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<SubRecord>,
}

/// `Record` from `messages.proto` (named apart from the SDK's `Record`).
#[derive(Clone, PartialEq, Message)]
pub struct SubRecord {
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "bytes", required, tag = "3")]
    pub data: Bytes,
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

/// `Tag` from `messages.proto`.
#[derive(Clone, PartialEq, Message)]
pub struct Tag {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// Collects user records into one aggregated record.
#[derive(Debug, Default)]
pub struct AggregateBuilder {
    message: AggregatedRecord,
    key_index: HashMap<String, u64>,
    /// Encoded protobuf length so far.
    proto_len: usize,
}

/// Length of a length-delimited field with tag < 16: tag byte, length varint, payload.
fn delimited(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

impl AggregateBuilder {
    /// An empty aggregate.
    pub fn new() -> Self {
        Self::default()
    }

    /// User records so far.
    pub fn len(&self) -> usize {
        self.message.records.len()
    }

    /// True before the first record.
    pub fn is_empty(&self) -> bool {
        self.message.records.is_empty()
    }

    /// The size of the finished aggregate (magic + protobuf + MD5) if `data` under
    /// `partition_key` were added.
    pub fn size_with(&self, partition_key: &str, data_len: usize) -> usize {
        let (index, key_cost) = match self.key_index.get(partition_key) {
            Some(&i) => (i, 0),
            None => (self.key_index.len() as u64, delimited(partition_key.len())),
        };
        OVERHEAD + self.proto_len + key_cost + delimited(Self::record_len(index, data_len))
    }

    /// The size of the finished aggregate as it stands.
    pub fn size(&self) -> usize {
        OVERHEAD + self.proto_len
    }

    fn record_len(key_index: u64, data_len: usize) -> usize {
        1 + encoded_len_varint(key_index) + delimited(data_len)
    }

    /// Adds one user record.
    pub fn push(&mut self, partition_key: &str, data: Bytes) {
        let index = match self.key_index.get(partition_key) {
            Some(&i) => i,
            None => {
                let i = self.message.partition_key_table.len() as u64;
                self.key_index.insert(partition_key.to_string(), i);
                self.message.partition_key_table.push(partition_key.to_string());
                self.proto_len += delimited(partition_key.len());
                i
            }
        };
        self.proto_len += delimited(Self::record_len(index, data.len()));
        self.message.records.push(SubRecord {
            partition_key_index: index,
            explicit_hash_key_index: None,
            data,
            tags: Vec::new(),
        });
    }

    /// The aggregated record's bytes.
    pub fn finish(self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.size());
        out.extend_from_slice(&MAGIC);
        self.message
            .encode(&mut out)
            .expect("BytesMut grows as needed, encoding cannot run out of room");
        debug_assert_eq!(out.len(), MAGIC.len() + self.proto_len, "size accounting matches prost");
        let digest = Md5::digest(&out[MAGIC.len()..]);
        out.extend_from_slice(&digest);
        out.freeze()
    }
}

/// Why bytes are not an aggregated record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeaggregateError {
    #[error("the MD5 checksum does not match the protobuf")]
    Checksum,
    #[error("invalid protobuf: {0}")]
    Protobuf(String),
    #[error("partition key index {0} is outside the table")]
    KeyIndex(u64),
}

/// Splits a Kinesis record into (partition key, data) user records: an aggregated
/// record into its parts, anything else into itself (as the KCL does).
pub fn deaggregate(partition_key: &str, data: &[u8]) -> Result<Vec<(String, Bytes)>, DeaggregateError> {
    if data.len() < OVERHEAD || data[..MAGIC.len()] != MAGIC {
        return Ok(vec![(partition_key.to_string(), Bytes::copy_from_slice(data))]);
    }
    let proto = &data[MAGIC.len()..data.len() - 16];
    if Md5::digest(proto)[..] != data[data.len() - 16..] {
        return Err(DeaggregateError::Checksum);
    }
    let message = AggregatedRecord::decode(proto).map_err(|e| DeaggregateError::Protobuf(e.to_string()))?;
    message
        .records
        .into_iter()
        .map(|r| {
            let key = message
                .partition_key_table
                .get(r.partition_key_index as usize)
                .ok_or(DeaggregateError::KeyIndex(r.partition_key_index))?;
            Ok((key.clone(), r.data))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_accounting_matches_the_encoding() {
        let mut b = AggregateBuilder::new();
        let mut expected = OVERHEAD;
        for i in 0..300usize {
            let key = format!("store-{}/pos-{}", i % 7, i % 13);
            let data = Bytes::from(vec![b'x'; (i * 37) % 700]);
            let predicted = b.size_with(&key, data.len());
            b.push(&key, data);
            assert_eq!(b.size(), predicted);
            expected = predicted;
        }
        assert_eq!(b.finish().len(), expected);
    }

    #[test]
    fn round_trips_and_keeps_order() {
        let mut b = AggregateBuilder::new();
        let input: Vec<(String, Bytes)> = (0..50)
            .map(|i| (format!("k{}", i % 3), Bytes::from(format!("{{\"n\":{i}}}"))))
            .collect();
        for (k, d) in &input {
            b.push(k, d.clone());
        }
        let bytes = b.finish();
        assert_eq!(&bytes[..4], &MAGIC);
        assert_eq!(deaggregate("ignored", &bytes).unwrap(), input);
    }

    #[test]
    fn index_zero_is_encoded_as_proto2_requires() {
        let mut b = AggregateBuilder::new();
        b.push("k", Bytes::from_static(b"d"));
        let bytes = b.finish();
        // table entry: 0a 01 'k'; record: 1a 05 | 08 00 | 1a 01 'd'
        assert_eq!(
            &bytes[4..bytes.len() - 16],
            &[0x0a, 0x01, b'k', 0x1a, 0x05, 0x08, 0x00, 0x1a, 0x01, b'd']
        );
    }

    #[test]
    fn a_plain_record_passes_through_and_a_corrupt_one_is_refused() {
        assert_eq!(
            deaggregate("k", b"{\"a\":1}").unwrap(),
            vec![("k".to_string(), Bytes::from_static(b"{\"a\":1}"))]
        );
        let mut b = AggregateBuilder::new();
        b.push("k", Bytes::from_static(b"data"));
        let mut bytes = b.finish().to_vec();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        assert_eq!(deaggregate("k", &bytes), Err(DeaggregateError::Checksum));
    }
}
