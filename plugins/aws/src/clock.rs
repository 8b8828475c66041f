//! The service's clock as the gateway sees it: the local clock corrected by what a
//! service's `Date` header said, so a request signed by hand (PutMedia) carries a time
//! the service accepts while the gateway's clock is off (no NTP yet, a dead RTC
//! battery). SigV4 refuses a signature more than 5 minutes from the service's time.
//! The SDK clients correct their own requests the same way (aws-runtime's
//! `ServiceClockSkewInterceptor`); this is for what they do not send.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// An offset smaller than this is taken as none: `Date` has whole seconds, and the
/// answer's time in flight is unknown.
const NEGLIGIBLE_MS: i64 = 2_000;

/// The local clock plus the last offset a service's `Date` header showed.
#[derive(Debug, Clone, Default)]
pub struct ServiceClock {
    skew_ms: Arc<AtomicI64>,
}

impl ServiceClock {
    /// The service's time now, as far as it is known.
    pub fn now(&self) -> SystemTime {
        shifted(SystemTime::now(), self.skew_ms())
    }

    /// How far the service's clock is ahead of the gateway's (negative: behind), in ms.
    pub fn skew_ms(&self) -> i64 {
        self.skew_ms.load(Ordering::Relaxed)
    }

    /// Takes in a `Date` header (RFC 7231, e.g. `Fri, 04 Dec 2026 23:55:30 GMT`) that
    /// arrived at `received` by the local clock. Returns the new offset when it changed
    /// by more than [`NEGLIGIBLE_MS`]; an unreadable header changes nothing.
    pub fn observe(&self, date: &str, received: SystemTime) -> Option<i64> {
        let service = chrono::DateTime::parse_from_rfc2822(date.trim()).ok()?;
        // The header is truncated to the second: its middle is the best estimate.
        let service_ms = service.timestamp_millis() + 500;
        let local_ms = millis_since_epoch(received);
        let mut skew = service_ms - local_ms;
        if skew.abs() < NEGLIGIBLE_MS {
            skew = 0;
        }
        let before = self.skew_ms.swap(skew, Ordering::Relaxed);
        ((skew - before).abs() >= NEGLIGIBLE_MS).then_some(skew)
    }
}

fn millis_since_epoch(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

fn shifted(t: SystemTime, ms: i64) -> SystemTime {
    let by = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        t + by
    } else {
        t.checked_sub(by).unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_service_ahead_or_behind_shifts_the_clock_and_a_small_difference_does_not() {
        let clock = ServiceClock::default();
        // 2026-12-04T23:55:30Z = 1_796_428_530.
        let date = "Fri, 04 Dec 2026 23:55:30 GMT";
        assert_eq!(clock.observe(date, at(1_796_428_530)), None, "same second: no offset");
        assert_eq!(clock.skew_ms(), 0);
        // The gateway is 20 minutes behind.
        assert_eq!(clock.observe(date, at(1_796_428_530 - 1200)), Some(1_200_500));
        let now = clock.now().duration_since(SystemTime::now()).unwrap();
        assert!((1199..=1201).contains(&now.as_secs()), "{now:?}");
        // Seen again: unchanged, nothing to report.
        assert_eq!(clock.observe(date, at(1_796_428_530 - 1200)), None);
        // The gateway's clock was fixed (NTP): the offset goes.
        assert_eq!(clock.observe(date, at(1_796_428_531)), Some(0));
        // Ahead by an hour: the service is behind.
        assert_eq!(clock.observe(date, at(1_796_428_530 + 3600)), Some(-3_599_500));
        assert!(clock.now() < SystemTime::now() - Duration::from_secs(3590));
    }

    #[test]
    fn an_unreadable_date_changes_nothing() {
        let clock = ServiceClock::default();
        clock.observe("Fri, 04 Dec 2026 23:55:30 GMT", at(1_796_428_000));
        let skew = clock.skew_ms();
        for bad in ["", "yesterday", "1796428530", "Fri, 32 Dec 2026 23:55:30 GMT"] {
            assert_eq!(clock.observe(bad, SystemTime::now()), None, "{bad}");
            assert_eq!(clock.skew_ms(), skew);
        }
    }
}
