//! Per-shard write budget: two token buckets (Kinesis records and bytes), as the KPL
//! keeps them, so the agent stays under a shard's 1,000 records/s and 1 MiB/s instead of
//! learning the limit from throttling errors.
//!
//! Hand-written: the rate-limiting crates (governor and friends) count cells of one kind
//! and cannot take "one request costs n records and b bytes" atomically from two
//! buckets, nor let a record larger than a bucket's burst through by going into debt.

use std::time::{Duration, Instant};

/// One bucket: `rate` tokens per second, holding at most one second's worth.
#[derive(Debug, Clone)]
struct Bucket {
    rate: f64,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        Bucket {
            rate,
            tokens: rate,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.updated = now;
    }

    /// How long until `n` tokens (capped at one second's worth, so a large request goes
    /// through on a full bucket and leaves a debt) are there.
    fn wait_for(&self, n: f64) -> Duration {
        let need = n.min(self.rate) - self.tokens;
        if need <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(need / self.rate)
        }
    }
}

/// A shard's budget.
#[derive(Debug, Clone)]
pub struct ShardBudget {
    records: Bucket,
    bytes: Bucket,
}

impl ShardBudget {
    /// `records_per_second` and `bytes_per_second`, both already scaled by headroom.
    pub fn new(records_per_second: f64, bytes_per_second: f64) -> Self {
        let now = Instant::now();
        ShardBudget {
            records: Bucket::new(records_per_second, now),
            bytes: Bucket::new(bytes_per_second, now),
        }
    }

    /// How long to wait before sending `records` Kinesis records of `bytes` in total.
    pub fn delay(&mut self, records: usize, bytes: usize, now: Instant) -> Duration {
        self.records.refill(now);
        self.bytes.refill(now);
        self.records
            .wait_for(records as f64)
            .max(self.bytes.wait_for(bytes as f64))
    }

    /// Takes the tokens for a request being sent now (may leave a debt).
    pub fn take(&mut self, records: usize, bytes: usize, now: Instant) {
        self.records.refill(now);
        self.bytes.refill(now);
        self.records.tokens -= records as f64;
        self.bytes.tokens -= bytes as f64;
    }

    /// Waits until the budget allows the request, then takes it.
    pub async fn acquire(&mut self, records: usize, bytes: usize) -> Duration {
        let mut waited = Duration::ZERO;
        loop {
            let delay = self.delay(records, bytes, Instant::now());
            if delay.is_zero() {
                self.take(records, bytes, Instant::now());
                return waited;
            }
            waited += delay;
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_sends_at_once_then_paces() {
        let t0 = Instant::now();
        let mut b = ShardBudget::new(1000.0, 1_000_000.0);
        b.records.updated = t0;
        b.bytes.updated = t0;
        assert_eq!(b.delay(1000, 10, t0), Duration::ZERO);
        b.take(1000, 10, t0);
        let d = b.delay(100, 10, t0);
        assert!((d.as_secs_f64() - 0.1).abs() < 1e-9, "{d:?}");
        assert_eq!(b.delay(100, 10, t0 + Duration::from_millis(100)), Duration::ZERO);
    }

    #[test]
    fn the_tighter_bucket_decides() {
        let t0 = Instant::now();
        let mut b = ShardBudget::new(1000.0, 1_000.0);
        b.records.updated = t0;
        b.bytes.updated = t0;
        b.take(1, 1000, t0);
        let d = b.delay(1, 500, t0);
        assert!((d.as_secs_f64() - 0.5).abs() < 1e-9, "{d:?}");
    }

    #[test]
    fn a_request_larger_than_the_burst_goes_on_a_full_bucket_and_leaves_a_debt() {
        let t0 = Instant::now();
        let mut b = ShardBudget::new(1000.0, 1_000.0);
        b.records.updated = t0;
        b.bytes.updated = t0;
        assert_eq!(b.delay(1, 5_000, t0), Duration::ZERO);
        b.take(1, 5_000, t0);
        let d = b.delay(1, 1, t0);
        assert!((d.as_secs_f64() - 4.001).abs() < 1e-9, "{d:?}");
    }
}
