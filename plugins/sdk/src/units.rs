//! Human-friendly config units: durations ("250ms", "5m") and sizes ("512MiB").
//!
//! Both deserialize from strings and fail with a message that says what is allowed,
//! so a config error can name the key, the line and the fix.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration written as "250ms", "30s", "5m", "24h", "7d".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// From whole seconds.
    pub const fn secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }
    /// From milliseconds.
    pub const fn millis(ms: u64) -> Self {
        HumanDuration(Duration::from_millis(ms))
    }
    /// The wrapped [`Duration`].
    pub fn get(self) -> Duration {
        self.0
    }
}

impl HumanDuration {
    /// The longest duration a config may state: added to a clock, it never overflows it.
    pub const MAX: HumanDuration = HumanDuration::secs(3650 * 86_400);
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d = humantime::parse_duration(s.trim()).map(HumanDuration).map_err(|e| {
            format!(
                "invalid duration {s:?} ({e}); write a number and a unit: ms, s, m, h, d \
                 (e.g. \"250ms\", \"5m\", \"24h\")"
            )
        })?;
        if d > Self::MAX {
            return Err(format!("duration {s:?} is too long; allowed: at most 3650d"));
        }
        Ok(d)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A size in bytes written as "512MiB", "64KiB", "2GiB", "1000B" or "10MB".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Kibibytes.
    pub const fn kib(n: u64) -> Self {
        ByteSize(n * 1024)
    }
    /// Mebibytes.
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }
    /// Gibibytes.
    pub const fn gib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024 * 1024)
    }
    /// The number of bytes.
    pub fn get(self) -> u64 {
        self.0
    }
}

// Hand-written rather than a crate: the accepted grammar is tiny and the error message
// (what is allowed) is the point.
impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            format!(
                "invalid size {s:?}; write a whole number and a unit: B, KiB, MiB, GiB, TiB \
                 (or KB, MB, GB, TB in powers of 1000), e.g. \"512MiB\""
            )
        };
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| err())?;
        let mult: u64 = match unit.trim() {
            "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            _ => return Err(err()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(err)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
            if self.0 >= size {
                return write!(f, "{:.1}{name}", self.0 as f64 / size as f64);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!("512MiB".parse::<ByteSize>().unwrap(), ByteSize::mib(512));
        assert_eq!("64KiB".parse::<ByteSize>().unwrap(), ByteSize::kib(64));
        assert_eq!("10MB".parse::<ByteSize>().unwrap(), ByteSize(10_000_000));
        assert_eq!("100B".parse::<ByteSize>().unwrap(), ByteSize(100));
    }

    #[test]
    fn sizes_without_unit_or_with_fraction_are_refused() {
        for bad in ["512", "1.5GiB", "MiB", "12 parsecs", ""] {
            let e = bad.parse::<ByteSize>().unwrap_err();
            assert!(e.contains("KiB, MiB"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_beyond_ten_years_are_refused() {
        assert_eq!("3650d".parse::<HumanDuration>().unwrap(), HumanDuration::MAX);
        for long in ["3651d", "584942417355y", "18446744073709551615s"] {
            let e = long.parse::<HumanDuration>().unwrap_err();
            assert!(e.contains("3650d") || e.contains("invalid"), "{long}: {e}");
        }
    }

    #[test]
    fn durations_parse_and_explain_errors() {
        assert_eq!("250ms".parse::<HumanDuration>().unwrap(), HumanDuration::millis(250));
        assert_eq!("5m".parse::<HumanDuration>().unwrap(), HumanDuration::secs(300));
        let e = "5 minutes-ish".parse::<HumanDuration>().unwrap_err();
        assert!(e.contains("ms, s, m, h, d"), "{e}");
    }

    #[test]
    fn sizes_display_round_trip() {
        for s in ["512MiB", "64KiB", "100B", "3GiB"] {
            assert_eq!(s.parse::<ByteSize>().unwrap().to_string(), s);
        }
    }
}
