//! Shards for a provisioned stream: max(MiB/s ÷ 1, records/s ÷ 1,000), rounded up
//! (Kinesis Data Streams' write capacity per shard; DESIGN.md).

use std::fmt;
use tillgate_kinesis::config::limits::{SHARD_BYTES_PER_SECOND, SHARD_RECORDS_PER_SECOND};

/// The shard count and which of the two limits sets it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShardEstimate {
    pub shards: u64,
    pub by_bytes: f64,
    pub by_records: f64,
}

/// `mib_per_second` of data and `records_per_second` of Kinesis records (after KPL
/// aggregation: one aggregate is one record) written into the stream by every gateway.
pub fn shards_for(mib_per_second: f64, records_per_second: f64) -> Result<ShardEstimate, String> {
    for (name, value) in [
        ("--mib-per-second", mib_per_second),
        ("--records-per-second", records_per_second),
    ] {
        if !value.is_finite() || value < 0.0 {
            return Err(format!("{name} {value}: a rate is a finite number ≥ 0"));
        }
    }
    let by_bytes = mib_per_second * (1024.0 * 1024.0) / SHARD_BYTES_PER_SECOND as f64;
    let by_records = records_per_second / f64::from(SHARD_RECORDS_PER_SECOND);
    let shards = by_bytes.max(by_records).ceil().max(1.0) as u64;
    Ok(ShardEstimate {
        shards,
        by_bytes,
        by_records,
    })
}

impl fmt::Display for ShardEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limit = if self.by_bytes >= self.by_records {
            "bytes"
        } else {
            "records"
        };
        write!(
            f,
            "{} (by bytes {:.2}, by records {:.2}: {limit} set it)",
            self.shards, self.by_bytes, self.by_records
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_larger_of_the_two_limits_rounded_up_and_at_least_one() {
        assert_eq!(shards_for(2.5, 800.0).unwrap().shards, 3);
        assert_eq!(shards_for(0.2, 4_001.0).unwrap().shards, 5);
        assert_eq!(shards_for(0.0, 0.0).unwrap().shards, 1);
        assert_eq!(shards_for(1.0, 1_000.0).unwrap().shards, 1);
    }

    #[test]
    fn the_limit_that_set_it_is_named() {
        assert!(shards_for(0.2, 4_001.0).unwrap().to_string().contains("records set it"));
        assert!(shards_for(2.5, 800.0).unwrap().to_string().contains("bytes set it"));
    }

    #[test]
    fn negative_or_infinite_rates_are_refused() {
        assert!(shards_for(-1.0, 0.0).unwrap_err().contains("--mib-per-second"));
        assert!(shards_for(0.0, f64::NAN).unwrap_err().contains("--records-per-second"));
    }
}
