//! Turning one shard's queue of journal records into Kinesis records: an aggregate of
//! as many as fit, or the record itself (aggregation off, a lone record, or a record
//! too large to share).

use crate::aggregate::AggregateBuilder;
use bytes::Bytes;

/// Kinesis bills writes in PUT payload units of 25 KB. Counted as 25,000 bytes (the
/// smaller reading of "KB"), so the figure never understates the bill.
pub const PUT_UNIT_BYTES: usize = 25_000;

/// PUT payload units for one Kinesis record of `bytes` (data + partition key).
pub fn put_units(bytes: usize) -> u64 {
    bytes.div_ceil(PUT_UNIT_BYTES).max(1) as u64
}

/// The size an aggregate is closed at: the largest multiple of 25,000 bytes within
/// `max_bytes` (a 51,200-byte aggregate would cost three units for 2.05 units of data).
pub fn aggregate_cap(max_bytes: usize) -> usize {
    if max_bytes >= PUT_UNIT_BYTES {
        max_bytes / PUT_UNIT_BYTES * PUT_UNIT_BYTES
    } else {
        max_bytes
    }
}

/// A journal record routed to a shard.
#[derive(Debug, Clone)]
pub struct Routed {
    pub seq: u64,
    pub partition_key: String,
    pub hash: u128,
    pub data: Bytes,
}

/// One Kinesis record to put.
#[derive(Debug, Clone)]
pub struct Entry {
    pub partition_key: String,
    /// Set for aggregates: the first user record's hash key, so the aggregate lands on
    /// the shard it was built for.
    pub explicit_hash_key: Option<String>,
    pub data: Bytes,
    /// The journal records inside, in order: (seq, hash key).
    pub users: Vec<(u64, u128)>,
    /// Bytes of user data inside (for the aggregation ratio).
    pub user_bytes: usize,
}

impl Entry {
    /// What Kinesis counts against the record and request limits.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// True when this is a KPL aggregate.
    pub fn aggregated(&self) -> bool {
        self.explicit_hash_key.is_some()
    }
}

/// A record too large for the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("journal record {seq} is {size} bytes with its partition key, over kinesis.max_record_bytes ({limit})")]
pub struct Oversize {
    pub seq: u64,
    pub size: usize,
    pub limit: usize,
}

/// How records are packed.
#[derive(Debug, Clone, Copy)]
pub struct Packing {
    pub aggregation: bool,
    /// [`aggregate_cap`] of `aggregate_max_bytes`.
    pub aggregate_cap: usize,
    pub max_record_bytes: usize,
}

impl Packing {
    /// The next Kinesis record from the front of `queue` and how many journal records it
    /// took (at least one).
    pub fn next_entry(&self, queue: &[Routed]) -> Result<(Entry, usize), Oversize> {
        let first = &queue[0];
        if self.aggregation {
            let mut builder = AggregateBuilder::new();
            let mut taken = 0;
            for r in queue {
                if builder.size_with(&r.partition_key, r.data.len()) > self.aggregate_cap {
                    break;
                }
                builder.push(&r.partition_key, r.data.clone());
                taken += 1;
            }
            if taken > 1 {
                let users: Vec<(u64, u128)> = queue[..taken].iter().map(|r| (r.seq, r.hash)).collect();
                let user_bytes = queue[..taken].iter().map(|r| r.data.len()).sum();
                // The outer partition key matters only for routing, which the explicit
                // hash key decides; the first record's key keeps it meaningful.
                let entry = Entry {
                    partition_key: first.partition_key.clone(),
                    explicit_hash_key: Some(first.hash.to_string()),
                    data: builder.finish(),
                    users,
                    user_bytes,
                };
                return Ok((entry, taken));
            }
        }
        let size = first.data.len() + first.partition_key.len();
        if size > self.max_record_bytes {
            return Err(Oversize {
                seq: first.seq,
                size,
                limit: self.max_record_bytes,
            });
        }
        let entry = Entry {
            partition_key: first.partition_key.clone(),
            explicit_hash_key: None,
            data: first.data.clone(),
            users: vec![(first.seq, first.hash)],
            user_bytes: first.data.len(),
        };
        Ok((entry, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::deaggregate;
    use crate::partition::hash_key;

    fn routed(n: usize, body: usize) -> Vec<Routed> {
        (0..n)
            .map(|i| {
                let key = format!("s/{}", i % 4);
                Routed {
                    seq: i as u64 + 1,
                    hash: hash_key(&key),
                    partition_key: key,
                    data: Bytes::from(vec![b'a' + (i % 26) as u8; body]),
                }
            })
            .collect()
    }

    #[test]
    fn aggregates_stay_under_the_unit_aligned_cap_and_keep_everything_in_order() {
        let p = Packing {
            aggregation: true,
            aggregate_cap: aggregate_cap(50 * 1024),
            max_record_bytes: 1 << 20,
        };
        assert_eq!(p.aggregate_cap, 50_000);
        let queue = routed(1000, 350);
        let mut at = 0;
        let mut back = Vec::new();
        while at < queue.len() {
            let (e, n) = p.next_entry(&queue[at..]).unwrap();
            assert!(e.size() <= 50_000 + e.partition_key.len(), "{}", e.size());
            assert_eq!(e.explicit_hash_key, Some(queue[at].hash.to_string()));
            back.extend(deaggregate(&e.partition_key, &e.data).unwrap());
            at += n;
            if at < queue.len() {
                assert!(e.data.len() > 49_000, "a full aggregate: {}", e.data.len());
                assert_eq!(put_units(e.data.len()), 2);
            }
        }
        let expected: Vec<(String, Bytes)> = queue
            .iter()
            .map(|r| (r.partition_key.clone(), r.data.clone()))
            .collect();
        assert_eq!(back, expected);
    }

    #[test]
    fn a_lone_record_and_aggregation_off_go_raw() {
        let mut p = Packing {
            aggregation: true,
            aggregate_cap: 50_000,
            max_record_bytes: 1 << 20,
        };
        let queue = routed(1, 100);
        let (e, n) = p.next_entry(&queue).unwrap();
        assert_eq!((n, e.aggregated(), e.data.clone()), (1, false, queue[0].data.clone()));
        p.aggregation = false;
        let queue = routed(10, 100);
        let (e, n) = p.next_entry(&queue).unwrap();
        assert_eq!((n, e.aggregated()), (1, false));
    }

    #[test]
    fn a_record_over_the_cap_goes_raw_and_one_over_the_stream_limit_is_an_error() {
        let p = Packing {
            aggregation: true,
            aggregate_cap: 1000,
            max_record_bytes: 5000,
        };
        let (e, n) = p.next_entry(&routed(3, 2000)).unwrap();
        assert_eq!((n, e.aggregated()), (1, false));
        let err = p.next_entry(&routed(1, 6000)).unwrap_err();
        assert_eq!(err.seq, 1);
    }
}
