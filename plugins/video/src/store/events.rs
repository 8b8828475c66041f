//! Events mode: asking the ring for a window of video moves the fragments that show it
//! from `local/` to the upload queue, and says how much of it the ring still had.

use super::{sync_dir, FragmentStore, Stored};
use std::fs;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A recording camera stored its last fragment at most this long ago: the longest
/// fragment (10 s) and the time to close and write it.
const RECORDING: Duration = Duration::from_secs(15);

/// What asking for a window did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// Fragments moved from `local/` to the upload queue.
    pub queued: usize,
    pub outcome: WindowOutcome,
    /// Old windows dropped to stay within [`super::windows::MAX_WINDOWS`].
    pub dropped: usize,
}

/// How much of a window's past the ring could still upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowOutcome {
    /// All of the window's past that was recorded is queued or already sent.
    Complete,
    /// Part of the window's video left the ring (room or retention) before it was asked
    /// for.
    Evicted,
    /// The camera recorded nothing at the window's start (it was down, or not yet on).
    NotRecorded,
    /// Some of its fragments are older than video already queued; KVS takes a stream's
    /// fragments in timecode order, so they stay local (clips still show them).
    Behind,
    /// A fragment could not be moved to the upload queue (a disk error, logged); it and
    /// the window's later local fragments stay local.
    Stranded,
}

impl WindowOutcome {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            WindowOutcome::Complete => "complete",
            WindowOutcome::Evicted => "evicted",
            WindowOutcome::NotRecorded => "not_recorded",
            WindowOutcome::Behind => "behind",
            WindowOutcome::Stranded => "stranded",
        }
    }
}

impl FragmentStore {
    /// Events mode: uploads the video of `spans` (`[from, to]` timecodes, ms). The
    /// fragments in `local/` that show part of one move to the upload queue now; those
    /// recorded while a window is open go there when stored. The windows are written to
    /// disk first, so one still open at a restart keeps choosing. One outcome per span;
    /// `now_ms` (the cameras' clock) tells a camera still recording from one that stopped.
    pub fn ask(&self, spans: &[(u64, u64)], now_ms: u64) -> Vec<Asked> {
        // Held throughout: put() decides a fragment's shelf under it. The shelves are
        // locked only to look and to list, never across a rename or an fsync.
        let mut windows = self.lock_windows();
        let dropped: Vec<usize> = spans.iter().map(|&(from, to)| windows.add(from, to)).collect();
        if let Err(e) = windows.save() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the upload windows; kept until a restart");
        }
        let mut out = Vec::with_capacity(spans.len());
        for (&(from, to), dropped) in spans.iter().zip(dropped) {
            let floor = self.queue_floor.load(Ordering::Relaxed);
            let (chosen, behind) = {
                let mut local = self.lock_local();
                let shows: Vec<u64> = local
                    .values()
                    .filter(|s| s.end_ms > from && s.start_ms <= to)
                    .map(|s| s.start_ms)
                    .collect();
                let behind = shows.iter().any(|&k| k < floor);
                let chosen: Vec<Stored> = shows
                    .into_iter()
                    .filter(|&k| k >= floor)
                    .filter_map(|k| local.remove(&k))
                    .collect();
                (chosen, behind)
            };
            let first_chosen = chosen.first().map(|s| s.start_ms);
            let wanted = chosen.len();
            let queued = self.queue(chosen);
            let first = [self.lock(), self.lock_sent(), self.lock_local()]
                .iter()
                .filter_map(|m| {
                    m.values()
                        .find(|s| s.end_ms > from && s.start_ms <= to)
                        .map(|s| s.start_ms)
                })
                .chain(first_chosen)
                .min();
            // A start after the newest stored fragment is in the one being recorded — if
            // the camera is recording: its last fragment ended moments ago.
            let floor = self.timecode_floor();
            let recording = now_ms.saturating_sub(floor) <= RECORDING.as_millis() as u64;
            let recorded = first.is_some_and(|f| f <= from) || (from >= floor && recording);
            let outcome = if queued < wanted {
                WindowOutcome::Stranded
            } else if behind {
                WindowOutcome::Behind
            } else if recorded {
                WindowOutcome::Complete
            } else if from < self.evicted_through.load(Ordering::Relaxed) {
                WindowOutcome::Evicted
            } else {
                WindowOutcome::NotRecorded
            };
            out.push(Asked {
                queued,
                outcome,
                dropped,
            });
        }
        out
    }

    /// Moves `chosen` (taken out of `local/`) to the upload queue, oldest first. At the
    /// first that cannot move, it and the rest go back to `local/` (queueing a later one
    /// would leave it behind for good). Returns how many moved.
    fn queue(&self, chosen: Vec<Stored>) -> usize {
        let mut queued = 0;
        let mut chosen = chosen.into_iter();
        while let Some(s) = chosen.next() {
            let target = self.dir.join(s.path.file_name().unwrap_or_default());
            if let Err(e) = fs::rename(&s.path, &target) {
                tracing::warn!(fragment = %s.path.display(), error = %e, "cannot queue a fragment for upload; it and the window's later fragments stay local");
                let mut local = self.lock_local();
                for back in std::iter::once(s).chain(chosen) {
                    local.insert(back.start_ms, back);
                }
                break;
            }
            self.queue_floor.fetch_max(s.start_ms + 1, Ordering::Relaxed);
            self.lock().insert(s.start_ms, Stored { path: target, ..s });
            queued += 1;
        }
        if queued > 0 {
            if let Err(e) = sync_dir(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot sync the ring");
            }
        }
        queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UploadMode;
    use crate::store::Eviction;
    use std::time::Duration;

    fn open(dir: &std::path::Path, max_bytes: u64, mode: UploadMode) -> FragmentStore {
        FragmentStore::open(dir, max_bytes, Duration::from_secs(3600), mode).unwrap()
    }

    /// Fragments of 1 s from `from` s to `to` s, 10 bytes each.
    fn record(store: &FragmentStore, from: u64, to: u64) -> Vec<(Stored, Eviction)> {
        (from..to)
            .flat_map(|s| store.put(s * 1000, (s + 1) * 1000, b"h", b"fragment!").unwrap())
            .collect()
    }

    fn queue(store: &FragmentStore) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(s) = store.next_after(out.last().copied()) {
            out.push(s.start_ms);
        }
        out
    }

    #[test]
    fn only_the_fragments_a_window_chooses_are_queued_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 20, UploadMode::Events);
        record(&store, 0, 5);
        assert_eq!(store.backlog().fragments, 0, "nothing asked for: all local");
        assert_eq!(fs::read_dir(dir.path().join("local")).unwrap().count(), 5);
        let asked = store.ask(&[(1500, 2500), (2200, 6500)], store.timecode_floor());
        assert_eq!(asked[0].outcome, WindowOutcome::Complete);
        assert_eq!(
            asked.iter().map(|a| a.queued).sum::<usize>(),
            4,
            "1 and 2, then 3 and 4 (2 once)"
        );
        // Recorded while the window is open: straight to the queue; after it: local.
        record(&store, 5, 8);
        assert_eq!(queue(&store), [1000, 2000, 3000, 4000, 5000, 6000]);
        assert!(dir.path().join("0000000001000-0000000002000.mkv").exists());
        assert_eq!(store.covering(0, 8000).len(), 8, "clips see every shelf");
        assert_eq!(
            store.lock_windows().spans(),
            [] as [(u64, u64); 0],
            "a window ends once video passed it"
        );
    }

    #[test]
    fn a_window_still_open_at_a_restart_goes_on_choosing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 20, UploadMode::Events);
        record(&store, 0, 3);
        store.ask(&[(2500, 5500)], store.timecode_floor());
        drop(store);
        let store = open(dir.path(), 1 << 20, UploadMode::Events);
        record(&store, 3, 7);
        assert_eq!(queue(&store), [2000, 3000, 4000, 5000]);
    }

    #[test]
    fn what_a_window_cannot_upload_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        // Room for 3 fragments: local ones make room first, and are not a loss.
        let store = open(dir.path(), 30, UploadMode::Events);
        let evicted = record(&store, 0, 5);
        assert_eq!(evicted.len(), 2);
        assert!(evicted.iter().all(|(_, why)| *why == Eviction::Local));
        let asked = store.ask(&[(500, 3500)], store.timecode_floor());
        assert_eq!((asked[0].outcome, asked[0].queued), (WindowOutcome::Evicted, 2));
        // A camera that started after the window began.
        let fresh = tempfile::tempdir().unwrap();
        let store = open(fresh.path(), 1 << 20, UploadMode::Events);
        record(&store, 10, 12);
        assert_eq!(
            store.ask(&[(9000, 11000)], store.timecode_floor())[0].outcome,
            WindowOutcome::NotRecorded
        );
        // Older than video already queued: KVS takes fragments in order; it stays local.
        record(&store, 12, 14);
        assert_eq!(
            store.ask(&[(12_500, 13_500)], store.timecode_floor())[0].outcome,
            WindowOutcome::Complete
        );
        record(&store, 14, 16);
        store.ask(&[(15_500, 15_800)], store.timecode_floor());
        let behind = store.ask(&[(14_200, 14_500)], store.timecode_floor());
        assert_eq!((behind[0].outcome, behind[0].queued), (WindowOutcome::Behind, 0));
        // The start is the fragment being recorded: complete so far.
        assert_eq!(
            store.ask(&[(16_500, 20_000)], store.timecode_floor())[0].outcome,
            WindowOutcome::Complete
        );
        // A camera that stopped a minute before the sale: nothing will record its start.
        let stopped = store.timecode_floor() + 60_000;
        assert_eq!(
            store.ask(&[(30_000, 31_000)], stopped)[0].outcome,
            WindowOutcome::NotRecorded
        );
        // A fragment that cannot move (its file gone): it and the later ones stay local.
        record(&store, 40, 43);
        fs::remove_file(fresh.path().join("local/0000000040000-0000000041000.mkv")).unwrap();
        let stranded = store.ask(&[(40_500, 42_500)], store.timecode_floor());
        assert_eq!((stranded[0].outcome, stranded[0].queued), (WindowOutcome::Stranded, 0));
        assert_eq!(
            store.lock_local().range(40_000..).count(),
            3,
            "none queued past the stuck one"
        );
    }

    #[test]
    fn a_camera_that_uploads_nothing_keeps_everything_local() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 30, UploadMode::Off);
        let evicted = record(&store, 0, 4);
        assert_eq!(store.backlog().fragments, 0);
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].1, Eviction::Local);
        assert_eq!(store.total_bytes(), 30);
    }

    #[test]
    fn local_and_acknowledged_video_make_room_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        // Room for 4 fragments of 10 bytes.
        let store = open(dir.path(), 40, UploadMode::Events);
        record(&store, 0, 2);
        store.ask(&[(500, 1500)], store.timecode_floor());
        store.remove(0).unwrap();
        store.remove(1000).unwrap();
        record(&store, 2, 4);
        let evicted: Vec<(u64, Eviction)> = record(&store, 4, 7)
            .into_iter()
            .map(|(s, why)| (s.start_ms, why))
            .collect();
        assert_eq!(
            evicted,
            [(0, Eviction::Sent), (1000, Eviction::Sent), (2000, Eviction::Local)],
            "the oldest of sent/ and local/, whichever shelf"
        );
    }

    #[test]
    fn a_local_write_a_crash_cut_short_is_swept_at_start() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), 1 << 20, UploadMode::Events));
        let torn = dir.path().join("local/0000000001000-0000000002000.mkv.tmp");
        fs::write(&torn, b"half a fragment").unwrap();
        let store = open(dir.path(), 1 << 20, UploadMode::Events);
        assert!(!torn.exists());
        assert_eq!(store.total_bytes(), 0);
    }
}
