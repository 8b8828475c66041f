//! Frames → fragments: a fragment starts on a key frame and closes at the first key frame
//! after the target duration; timecodes are the gateway's wall clock, anchored when the
//! pipeline's first frame arrives, so a camera's own timestamps (which jump, reset and
//! go backwards) can never produce a stream KVS refuses.

use crate::fragment_tags::{FragmentTags, TagOutcome};
use crate::mkv::{Frame, TrackInfo};
use crate::tags::SaleTag;
use bytes::Bytes;
use std::time::Duration;

/// KVS refuses fragments longer than this (ErrorId 4002).
pub const MAX_FRAGMENT: Duration = Duration::from_secs(10);
/// A camera timestamp further than this from the gateway clock re-anchors the clock.
const RESYNC_AFTER_MS: i64 = 1_000;
/// KVS: at most 10 tags per fragment, names ≤ 128 bytes (not `AWS…`), values ≤ 256 bytes.
pub const MAX_TAGS: usize = 10;
pub const MAX_TAG_NAME: usize = 128;
pub const MAX_TAG_VALUE: usize = 256;

/// A closed fragment, ready for the store.
#[derive(Debug, Clone)]
pub struct Fragment {
    pub frames: Vec<Frame>,
    pub track: TrackInfo,
    /// Timecode of the first frame (the cluster timecode), ms since the epoch.
    pub start_ms: u64,
    /// Timecode of the frame after the last (the next fragment's start).
    pub end_ms: u64,
    /// At most [`MAX_TAGS`], within KVS's limits.
    pub tags: Vec<(String, String)>,
    /// Flagged sales counted in the summary tag only.
    pub summarised: u32,
}

/// What happened to a sample besides being added.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Notes {
    /// The camera clock jumped and was re-anchored to the gateway clock.
    pub resynced: bool,
    /// Frames dropped: no key frame within [`MAX_FRAGMENT`] (or before the first one).
    pub dropped: u64,
}

/// Cuts one camera's frames into fragments.
#[derive(Debug)]
pub struct Fragmenter {
    target_ms: u64,
    /// (camera pts in ns, gateway ms) at the anchor.
    anchor: Option<(u64, i64)>,
    last_ms: u64,
    open: Vec<Frame>,
    track: Option<TrackInfo>,
    tags: FragmentTags,
    /// Waiting for a key frame: frames until then are dropped.
    need_key: bool,
}

impl Fragmenter {
    pub fn new(target: Duration) -> Self {
        Fragmenter {
            target_ms: target.min(MAX_FRAGMENT).as_millis() as u64,
            anchor: None,
            last_ms: 0,
            open: Vec::new(),
            track: None,
            tags: FragmentTags::default(),
            need_key: true,
        }
    }

    /// Forgets the clock anchor and the open fragment's continuity, e.g. after the
    /// pipeline restarted (the open fragment is returned closed, if any).
    pub fn restart(&mut self) -> Option<Fragment> {
        let closed = self.close(self.last_ms + 1);
        self.anchor = None;
        self.need_key = true;
        closed
    }

    /// Tags the fragment being recorded now (the moment a sale was flagged): its own tag,
    /// or, when the fragment has no room left, the summary ([`FragmentTags`]).
    pub fn tag(&mut self, sale: &SaleTag) -> TagOutcome {
        self.tags.add(sale)
    }

    /// Adds one frame. `pts_ns` is the camera's presentation time (pipeline running
    /// time), `now_ms` the gateway's wall clock. Returns the fragment this frame closed.
    pub fn push(
        &mut self,
        pts_ns: Option<u64>,
        now_ms: i64,
        key: bool,
        data: Bytes,
        track: &TrackInfo,
    ) -> (Option<Fragment>, Notes) {
        let mut notes = Notes::default();
        let ms = self.timecode(pts_ns, now_ms, &mut notes);
        let mut closed = None;
        if self.track.as_ref().is_some_and(|t| t != track) {
            // New codec data (resolution, profile): a new header, so a new fragment.
            closed = self.close(ms);
            self.need_key = true;
        }
        self.track = Some(track.clone());
        if self.need_key && !key {
            notes.dropped += 1;
            return (closed, notes);
        }
        self.need_key = false;
        let length = self.open.first().map_or(0, |f| ms - f.timecode_ms);
        let limit = MAX_FRAGMENT.as_millis() as u64 - 1;
        // A key frame within 10 % of the target closes the fragment: frame times are
        // whole milliseconds, so 30 frames at 15 fps may span 1,999 ms.
        let close_at = self.target_ms - self.target_ms / 10;
        if key && (length >= close_at || length >= limit) {
            closed = self.close(ms).or(closed);
        } else if !key && length >= limit {
            // No key frame for 10 s: KVS cannot take a longer fragment. Close it and drop
            // frames until the next key frame.
            closed = self.close(ms).or(closed);
            self.need_key = true;
            notes.dropped += 1;
            return (closed, notes);
        }
        self.open.push(Frame {
            timecode_ms: ms,
            key,
            data,
        });
        (closed, notes)
    }

    /// Closes the open fragment (end of stream, shutdown).
    pub fn flush(&mut self) -> Option<Fragment> {
        let end = self.last_ms + 1;
        self.close(end)
    }

    fn close(&mut self, end_ms: u64) -> Option<Fragment> {
        if self.open.is_empty() {
            return None;
        }
        let frames = std::mem::take(&mut self.open);
        let tags = self.tags.take();
        Some(Fragment {
            start_ms: frames[0].timecode_ms,
            end_ms: end_ms.max(frames[frames.len() - 1].timecode_ms + 1),
            frames,
            track: self.track.clone()?,
            tags: tags.tags,
            summarised: tags.summarised,
        })
    }

    /// Gateway time of a frame: anchor + camera delta, re-anchored when the camera's
    /// clock strays more than [`RESYNC_AFTER_MS`], and always 1 ms past the last frame.
    fn timecode(&mut self, pts_ns: Option<u64>, now_ms: i64, notes: &mut Notes) -> u64 {
        let mapped = match (pts_ns, self.anchor) {
            (Some(pts), Some((anchor_pts, anchor_ms))) => {
                let delta = (pts as i128 - anchor_pts as i128) / 1_000_000;
                let ms = anchor_ms as i128 + delta;
                if (ms - now_ms as i128).abs() > i128::from(RESYNC_AFTER_MS) {
                    notes.resynced = true;
                    self.anchor = Some((pts, now_ms));
                    now_ms
                } else {
                    ms as i64
                }
            }
            (Some(pts), None) => {
                self.anchor = Some((pts, now_ms));
                now_ms
            }
            (None, _) => now_ms,
        };
        let ms = (mapped.max(0) as u64).max(self.last_ms + 1);
        self.last_ms = ms;
        ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track() -> TrackInfo {
        TrackInfo {
            codec_private: vec![1, 2, 3],
            width: 640,
            height: 480,
            frame_ns: None,
        }
    }

    /// 15 fps, key frame every 30 frames (2 s), camera pts from 0.
    fn feed(f: &mut Fragmenter, frames: u64, base_ms: i64) -> Vec<Fragment> {
        let mut out = Vec::new();
        for i in 0..frames {
            let pts = i * 1_000_000_000 / 15;
            let now = base_ms + (pts / 1_000_000) as i64;
            let (closed, _) = f.push(Some(pts), now, i % 30 == 0, Bytes::from_static(b"x"), &track());
            out.extend(closed);
        }
        out
    }

    #[test]
    fn fragments_start_on_key_frames_and_last_about_the_target() {
        let mut f = Fragmenter::new(Duration::from_secs(2));
        let fragments = feed(&mut f, 300, 1_700_000_000_000);
        assert_eq!(fragments.len(), 9, "the 10th is still open");
        for (i, frag) in fragments.iter().enumerate() {
            assert!(frag.frames[0].key);
            assert_eq!(frag.frames.len(), 30);
            assert!((1990..=2010).contains(&(frag.end_ms - frag.start_ms)), "{i}");
            if i > 0 {
                assert_eq!(frag.start_ms, fragments[i - 1].end_ms, "contiguous");
            }
        }
        assert_eq!(fragments[0].start_ms, 1_700_000_000_000);
    }

    #[test]
    fn a_key_frame_a_millisecond_short_of_the_target_still_closes() {
        let mut f = Fragmenter::new(Duration::from_secs(2));
        f.push(Some(0), 1_000_000, true, Bytes::new(), &track());
        f.push(Some(1_000_000_000), 1_001_000, false, Bytes::new(), &track());
        let (closed, _) = f.push(Some(1_999_000_000), 1_001_999, true, Bytes::new(), &track());
        let closed = closed.expect("closed at 1,999 ms");
        assert_eq!(closed.frames.len(), 2);
        assert_eq!(closed.end_ms - closed.start_ms, 1_999);
        // Well short of it (a camera with a 1 s GOP), the fragment goes on.
        let mut g = Fragmenter::new(Duration::from_secs(2));
        g.push(Some(0), 1_000_000, true, Bytes::new(), &track());
        assert!(g
            .push(Some(1_000_000_000), 1_001_000, true, Bytes::new(), &track())
            .0
            .is_none());
    }

    #[test]
    fn camera_clock_jumps_cannot_break_the_timecodes() {
        let mut f = Fragmenter::new(Duration::from_secs(2));
        let now = 1_700_000_000_000;
        f.push(Some(5_000_000_000), now, true, Bytes::new(), &track());
        // The camera resets its clock to 0: mapped time would go 5 s back.
        let (_, notes) = f.push(Some(0), now + 66, false, Bytes::new(), &track());
        assert!(notes.resynced);
        let (_, _) = f.push(Some(66_000_000), now + 132, false, Bytes::new(), &track());
        let frag = f.flush().unwrap();
        let times: Vec<u64> = frag.frames.iter().map(|fr| fr.timecode_ms).collect();
        assert_eq!(times, vec![now as u64, now as u64 + 66, now as u64 + 132]);
        // Identical timestamps still increase.
        let mut g = Fragmenter::new(Duration::from_secs(2));
        g.push(Some(0), now, true, Bytes::new(), &track());
        g.push(Some(0), now, false, Bytes::new(), &track());
        let frag = g.flush().unwrap();
        assert!(frag.frames[1].timecode_ms > frag.frames[0].timecode_ms);
    }

    #[test]
    fn frames_before_the_first_key_frame_are_dropped_and_long_gops_are_cut() {
        let mut f = Fragmenter::new(Duration::from_secs(2));
        let (_, notes) = f.push(Some(0), 1_000_000, false, Bytes::new(), &track());
        assert_eq!(notes.dropped, 1);
        // A key frame only every 12 s.
        let mut closed = Vec::new();
        let mut dropped = 0;
        for i in 0..(15 * 13) {
            let pts = i * 1_000_000_000 / 15;
            let (c, n) = f.push(
                Some(pts),
                1_000_000 + (pts / 1_000_000) as i64,
                i % 180 == 0,
                Bytes::new(),
                &track(),
            );
            closed.extend(c);
            dropped += n.dropped;
        }
        assert!(closed.iter().all(|c| c.end_ms - c.start_ms <= 10_000));
        assert!(dropped > 0);
    }

    #[test]
    fn tags_land_on_the_open_fragment_within_kvs_limits() {
        let mut f = Fragmenter::new(Duration::from_secs(2));
        for i in 0..12 {
            f.tag(&SaleTag {
                decision: "block".into(),
                txn_id: format!("t{i}"),
                terminal: "till-1".into(),
                rules: vec![],
            });
        }
        f.push(Some(0), 1_000, true, Bytes::new(), &track());
        let closed = f.flush().unwrap();
        assert_eq!(
            (closed.tags.len(), closed.summarised),
            (MAX_TAGS, 3),
            "9 own, the summary of 3"
        );
        f.push(Some(0), 5_000, true, Bytes::new(), &track());
        assert!(f.flush().unwrap().tags.is_empty(), "the next fragment starts untagged");
    }
}
