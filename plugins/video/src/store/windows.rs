//! The windows of video an events-mode camera uploads: `[from, to]` in producer
//! timecodes (ms), merged when they overlap or touch, kept in the ring's `windows` file so
//! a window still open at a restart (its `to` in the future) goes on choosing the
//! fragments recorded after it.
//!
//! Bounded: a window leaves when a fragment starting after its end has been stored (it
//! can choose nothing more); beyond [`MAX_WINDOWS`] the oldest go (counted by the
//! caller), which bounds the windows a camera that records nothing for long piles up. The file is one line per
//! window, `<from>-<to>`, at most 28 bytes each: 28 KB.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Open windows kept at most (when the camera records nothing for long, windows that
/// do not overlap pile up).
pub const MAX_WINDOWS: usize = 1_000;

/// The file's name in the ring.
const FILE: &str = "windows";

#[derive(Debug)]
pub struct Windows {
    /// Disjoint, in order.
    spans: Vec<(u64, u64)>,
    path: PathBuf,
}

impl Windows {
    /// What the ring in `dir` kept; a line that does not read as a window is skipped
    /// with a WARN (the file is written whole, renamed into place).
    pub fn load(dir: &Path) -> Windows {
        let path = dir.join(FILE);
        let mut windows = Windows {
            spans: Vec::new(),
            path,
        };
        let text = match fs::read_to_string(&windows.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return windows,
            Err(e) => {
                tracing::warn!(file = %windows.path.display(), error = %e, "cannot read the upload windows; none kept");
                return windows;
            }
        };
        for line in text.lines().filter(|l| !l.is_empty()) {
            let span = line
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
            match span {
                Some((from, to)) if from <= to => {
                    windows.add(from, to);
                }
                _ => tracing::warn!(file = %windows.path.display(), line, "not an upload window; skipped"),
            }
        }
        windows
    }

    /// Adds `[from, to]`, merged with the windows it overlaps or touches. Returns how
    /// many windows were dropped to stay within [`MAX_WINDOWS`] (the oldest).
    pub fn add(&mut self, from: u64, to: u64) -> usize {
        let (mut from, mut to) = (from, to);
        self.spans.retain(|&(f, t)| {
            let joins = f <= to && from <= t;
            if joins {
                from = from.min(f);
                to = to.max(t);
            }
            !joins
        });
        let at = self.spans.partition_point(|&(f, _)| f < from);
        self.spans.insert(at, (from, to));
        let over = self.spans.len().saturating_sub(MAX_WINDOWS);
        self.spans.drain(..over);
        over
    }

    /// Whether a fragment `[start, end)` shows part of a window.
    pub fn chooses(&self, start: u64, end: u64) -> bool {
        self.spans.iter().any(|&(f, t)| end > f && start <= t)
    }

    /// Drops the windows that end before `ms`; whether any went.
    pub fn end_before(&mut self, ms: u64) -> bool {
        let before = self.spans.len();
        self.spans.retain(|&(_, t)| t >= ms);
        self.spans.len() != before
    }

    pub fn spans(&self) -> &[(u64, u64)] {
        &self.spans
    }

    /// Writes the file whole (temporary name, fsync, rename, directory fsync).
    pub fn save(&self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut text = String::with_capacity(self.spans.len() * 28);
        for (f, t) in &self.spans {
            text.push_str(&format!("{f}-{t}\n"));
        }
        let mut file = fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_and_touching_windows_merge_and_stay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Windows::load(dir.path());
        w.add(100, 200);
        w.add(500, 600);
        w.add(150, 300);
        w.add(300, 310);
        w.add(10, 20);
        assert_eq!(w.spans(), [(10, 20), (100, 310), (500, 600)]);
        w.add(0, 1_000);
        assert_eq!(w.spans(), [(0, 1_000)]);
        assert!(w.chooses(999, 2_000) && !w.chooses(1_001, 2_000));
        assert!(!w.chooses(2_000, 3_000));
    }

    #[test]
    fn windows_survive_a_reopen_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Windows::load(dir.path());
        let mut dropped = 0;
        for i in 0..(MAX_WINDOWS as u64 + 5) {
            dropped += w.add(i * 100, i * 100 + 10);
        }
        assert_eq!(dropped, 5, "the oldest went");
        assert_eq!(w.spans()[0], (500, 510));
        w.save().unwrap();
        assert!(fs::metadata(dir.path().join(FILE)).unwrap().len() <= 28 * MAX_WINDOWS as u64);
        let mut back = Windows::load(dir.path());
        assert_eq!(back.spans(), w.spans());
        assert!(back.end_before(100_000));
        assert_eq!(back.spans().len(), MAX_WINDOWS - (100_000 - 500) / 100);
    }

    #[test]
    fn a_damaged_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), "100-200\nrubbish\n300-250\n400-500\n").unwrap();
        assert_eq!(Windows::load(dir.path()).spans(), [(100, 200), (400, 500)]);
    }
}
