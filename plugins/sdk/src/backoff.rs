//! Exponential backoff with jitter, for every retry loop of the agent and its plugins
//! (sink shipments, Kinesis shard retries, MQTT reconnects, camera restarts, KVS uplink).
//!
//! Each wait is drawn from [d/2, d), where d starts at `initial` and doubles up to `max`
//! after every failure; a success resets it. Gateways that lost the same uplink at the
//! same moment then do not retry in lockstep, and no wait is longer than `max`.

use rand::Rng;
use std::time::Duration;

/// The waits between attempts of one retry loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// From the first wait to the longest (`max` below `initial` is taken as `initial`).
    pub fn new(initial: Duration, max: Duration) -> Self {
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait before the next attempt, jittered, and doubles the one after it.
    pub fn next_wait(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d.mul_f64(rand::rng().random_range(0.5..1.0))
    }

    /// The upper bound of the next wait, for logs ("retry within 4s").
    pub fn upcoming(&self) -> Duration {
        self.next
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_are_jittered_below_their_bound() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_millis(700));
        let mut b = Backoff::new(initial, max);
        let mut bounds = Vec::new();
        let mut waits = Vec::new();
        for _ in 0..6 {
            bounds.push(b.upcoming());
            waits.push(b.next_wait());
        }
        let ms = |d: &Duration| d.as_millis() as u64;
        assert_eq!(
            bounds.iter().map(ms).collect::<Vec<_>>(),
            [100, 200, 400, 700, 700, 700]
        );
        for (w, bound) in waits.iter().zip(&bounds) {
            assert!(
                *w >= *bound / 2 && w < bound,
                "{w:?} outside [{:?}, {bound:?})",
                *bound / 2
            );
        }
        b.reset();
        assert_eq!(b.upcoming(), initial);
    }

    #[test]
    fn the_jitter_spreads_waits_across_the_range() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10));
            seen.insert(b.next_wait().as_secs());
        }
        // 5..=9 whole seconds: gateways restarting together spread over the range.
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [5, 6, 7, 8, 9]);
    }

    #[test]
    fn a_cap_below_the_first_wait_is_the_first_wait() {
        let mut b = Backoff::new(Duration::from_secs(4), Duration::from_secs(1));
        b.next_wait();
        assert_eq!(b.upcoming(), Duration::from_secs(4));
    }
}
