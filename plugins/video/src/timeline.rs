//! A camera's timeline never goes back: KVS refuses a fragment whose timecode is not
//! after the stream's last one (ErrorId 4004), and the ring sends oldest first, so a
//! fragment made after a clock step back would also be sent before older unsent ones.
//!
//! The ring keeps its **floor** — the end of the newest fragment it ever stored, which
//! is at or after anything KVS has acknowledged — in a file beside the fragments
//! (`timecode-floor`, 13 bytes, written and renamed with each fragment under the same
//! directory fsync). A [`HeldClock`] starts from it: it reads the gateway's wall clock,
//! but while the wall clock is behind where the clock would be had it run on from the
//! floor (or from its last reading), it runs on from there, 1 % slower than the
//! monotonic clock. So a restart after the clock stepped back, or a step back while
//! running, gives timecodes that keep increasing, and they rejoin the wall clock: at
//! once when it steps forward again, else by that 1 % (a 10-minute step back is
//! absorbed in about 17 hours; the fragmenter slews the camera onto it).

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// The floor's file name in the camera's ring directory.
pub const FLOOR_FILE: &str = "timecode-floor";

/// Reads the floor the ring left (0 when there is none or it is unreadable: the ring's
/// own fragments still give one, see [`crate::store::FragmentStore::timecode_floor`]).
pub fn read_floor(dir: &Path) -> u64 {
    fs::read_to_string(dir.join(FLOOR_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Writes the floor durably enough to survive with the fragment it belongs to: to a
/// temporary file, fsynced, renamed; the caller fsyncs the directory.
pub fn write_floor(dir: &Path, floor_ms: u64) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FLOOR_FILE}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    write!(file, "{floor_ms:013}")?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(FLOOR_FILE))
}

/// How much slower than real time a held clock runs, so it meets the wall clock again
/// (1/100).
const HELD_SLOWER_BY: i64 = 100;

/// The gateway's wall clock, held so it never runs behind where it was (see the module).
#[derive(Debug)]
pub struct HeldClock {
    /// A reading (ms since the epoch) and the monotonic instant it was taken at.
    base_ms: i64,
    base: Instant,
}

impl HeldClock {
    /// A clock that does not read before `floor_ms` at `now`.
    pub fn from_floor(floor_ms: u64, now: Instant) -> Self {
        HeldClock {
            base_ms: floor_ms.min(i64::MAX as u64) as i64,
            base: now,
        }
    }

    /// The time for a frame arriving at `now` with the wall clock at `wall_ms`, and how
    /// far it is ahead of the wall clock (0 when it follows it).
    pub fn read(&mut self, wall_ms: i64, now: Instant) -> (i64, i64) {
        let elapsed = now.saturating_duration_since(self.base).as_millis() as i64;
        let held = self.base_ms.saturating_add(elapsed - elapsed / HELD_SLOWER_BY);
        if wall_ms >= held {
            self.base_ms = wall_ms;
            self.base = now;
            (wall_ms, 0)
        } else {
            (held, held - wall_ms)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_clock_follows_the_wall_clock_and_runs_on_at_its_pace_when_it_steps_back() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // A normal restart: the floor (the last fragment's end) is before the wall clock.
        let mut clock = HeldClock::from_floor(1_000_000, t0);
        assert_eq!(clock.read(1_005_000, at(0)), (1_005_000, 0));
        assert_eq!(clock.read(1_006_000, at(1_000)), (1_006_000, 0));
        // The wall clock steps back an hour: time runs on from the last reading, 1 %
        // slower, so the wall clock gains on it.
        assert_eq!(clock.read(1_006_500 - 3_600_000, at(1_500)), (1_006_495, 3_599_995));
        assert_eq!(clock.read(1_007_000 - 3_600_000, at(2_000)), (1_006_990, 3_599_990));
        // NTP steps it forward again, past the held time: followed at once.
        assert_eq!(clock.read(1_010_000, at(2_500)), (1_010_000, 0));
    }

    #[test]
    fn a_restart_after_a_step_back_starts_from_the_floor() {
        let t0 = Instant::now();
        let mut clock = HeldClock::from_floor(5_000_000, t0);
        // The gateway came back with its clock 10 minutes behind the ring's last fragment.
        let wall = 5_000_000 - 600_000;
        assert_eq!(
            clock.read(wall + 100, t0 + Duration::from_millis(100)),
            (5_000_099, 599_999)
        );
        assert_eq!(
            clock.read(wall + 1_100, t0 + Duration::from_millis(1_100)),
            (5_001_089, 599_989)
        );
    }

    #[test]
    fn a_held_clock_meets_the_wall_clock_again() {
        let t0 = Instant::now();
        let mut clock = HeldClock::from_floor(5_000_000, t0);
        // 10 s behind: met after about 1,000 s, and followed from then on.
        let mut met = None;
        for s in 0..1_200 {
            let (_, ahead) = clock.read(4_990_000 + s * 1_000, t0 + Duration::from_secs(s as u64));
            if ahead == 0 && met.is_none() {
                met = Some(s);
            }
        }
        assert!(met.is_some_and(|s| (990..=1_010).contains(&s)), "{met:?}");
    }

    #[test]
    fn the_floor_survives_in_its_file_and_a_damaged_file_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_floor(dir.path()), 0);
        write_floor(dir.path(), 1_796_428_530_123).unwrap();
        assert_eq!(read_floor(dir.path()), 1_796_428_530_123);
        assert_eq!(fs::read(dir.path().join(FLOOR_FILE)).unwrap().len(), 13);
        fs::write(dir.path().join(FLOOR_FILE), "17964x").unwrap();
        assert_eq!(read_floor(dir.path()), 0);
    }
}
