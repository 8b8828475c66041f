//! The shard map: which open shard takes which hash key, from ListShards.
//!
//! Aggregates are built per shard (the KCL drops sub-records outside the shard's hash
//! range), rate limits are per shard, and order is kept by one request in flight per
//! shard, so every record is routed with this map. It is refreshed on a timer and as
//! soon as an answer shows a record landed on a shard other than the one predicted
//! (resharding).

use std::collections::HashMap;
use std::time::Instant;

/// One shard's hash key range (inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRange {
    pub id: String,
    pub start: u128,
    pub end: u128,
    /// Closed shards (parents after a resharding) take no new records.
    pub open: bool,
}

/// The stream's shards at one moment.
#[derive(Debug, Clone)]
pub struct ShardMap {
    /// Open shards by start of range.
    open: Vec<ShardRange>,
    /// Every listed shard, open or closed, by id.
    all: HashMap<String, ShardRange>,
    /// When it was listed.
    pub fetched: Instant,
}

/// Why a listing cannot be used as a map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardMapError {
    #[error("shard {shard} has an invalid hash key range: {detail}")]
    BadRange { shard: String, detail: String },
    #[error("the stream lists no open shard")]
    NoOpenShard,
    #[error("the open shards do not cover hash key {0}")]
    Gap(u128),
}

impl ShardMap {
    /// Builds the map from listed shards; the open ones must cover the whole key space.
    pub fn new(shards: Vec<ShardRange>) -> Result<Self, ShardMapError> {
        let mut open: Vec<ShardRange> = shards.iter().filter(|s| s.open).cloned().collect();
        if open.is_empty() {
            return Err(ShardMapError::NoOpenShard);
        }
        open.sort_by_key(|s| s.start);
        let mut next = 0u128;
        for s in &open {
            if s.start != next || s.end < s.start {
                return Err(ShardMapError::Gap(next));
            }
            if s.end == u128::MAX {
                next = u128::MAX;
                break;
            }
            next = s.end + 1;
        }
        if next != u128::MAX || open.last().map(|s| s.end) != Some(u128::MAX) {
            return Err(ShardMapError::Gap(next));
        }
        let all = shards.into_iter().map(|s| (s.id.clone(), s)).collect();
        Ok(ShardMap {
            open,
            all,
            fetched: Instant::now(),
        })
    }

    /// The open shard that takes `hash`.
    pub fn shard_for(&self, hash: u128) -> &ShardRange {
        let i = self.open.partition_point(|s| s.start <= hash);
        &self.open[i.saturating_sub(1)]
    }

    /// A shard by id, open or closed.
    pub fn get(&self, id: &str) -> Option<&ShardRange> {
        self.all.get(id)
    }

    /// Open shards.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Parses a decimal hash key from ListShards.
    pub fn parse_key(shard: &str, s: &str) -> Result<u128, ShardMapError> {
        s.parse().map_err(|_| ShardMapError::BadRange {
            shard: shard.to_string(),
            detail: format!("{s:?} is not a 128-bit decimal"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn even(n: u128) -> Vec<ShardRange> {
        let step = u128::MAX / n;
        (0..n)
            .map(|i| ShardRange {
                id: format!("shardId-{i:012}"),
                start: i * step,
                end: if i == n - 1 { u128::MAX } else { (i + 1) * step - 1 },
                open: true,
            })
            .collect()
    }

    #[test]
    fn routes_by_range() {
        let map = ShardMap::new(even(4)).unwrap();
        assert_eq!(map.shard_for(0).id, "shardId-000000000000");
        assert_eq!(map.shard_for(u128::MAX / 4).id, "shardId-000000000001");
        assert_eq!(map.shard_for(u128::MAX / 4 - 1).id, "shardId-000000000000");
        assert_eq!(map.shard_for(u128::MAX).id, "shardId-000000000003");
    }

    #[test]
    fn closed_parents_are_known_but_not_routed_to() {
        let mut shards = even(2);
        shards[0].open = false;
        let half = shards[0].end;
        shards.push(ShardRange {
            id: "child-a".into(),
            start: 0,
            end: half / 2,
            open: true,
        });
        shards.push(ShardRange {
            id: "child-b".into(),
            start: half / 2 + 1,
            end: half,
            open: true,
        });
        let map = ShardMap::new(shards).unwrap();
        assert_eq!(map.open_count(), 3);
        assert_eq!(map.shard_for(1).id, "child-a");
        assert!(!map.get("shardId-000000000000").unwrap().open);
    }

    #[test]
    fn a_gap_is_refused() {
        let mut shards = even(3);
        shards.remove(1);
        assert!(matches!(ShardMap::new(shards), Err(ShardMapError::Gap(_))));
        assert_eq!(ShardMap::new(vec![]).unwrap_err(), ShardMapError::NoOpenShard);
    }
}
