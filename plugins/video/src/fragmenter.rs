//! Frames → fragments: a fragment starts on a key frame and closes at the first key frame
//! after the target duration; timecodes are the gateway's wall clock, anchored when the
//! pipeline's first frame arrives, so a camera's own timestamps (which jump, reset and
//! go backwards) can never produce a stream KVS refuses.
//!
//! Frames arrive in decode order; each keeps its presentation time (mapped through the
//! anchor), so B-frames present where the camera put them. What must advance does: the
//! decode times (when the source knows them) and each fragment's start, past everything
//! presented before it; when either would not, the anchor moves forward.

use crate::fragment_tags::{FragmentTags, TagOutcome};
use crate::mkv::{Frame, TrackInfo};
use crate::tags::SaleTag;
use bytes::Bytes;
use std::time::Duration;

/// KVS refuses fragments longer than this (ErrorId 4002).
pub const MAX_FRAGMENT: Duration = Duration::from_secs(10);
/// A camera further than this behind the gateway clock (or this far ahead of it, see
/// [`STEP_AHEAD_MS`]) is re-anchored at once: a gap in the timeline, never a step back.
const RESYNC_AFTER_MS: i64 = 1_000;
/// A camera ahead of the gateway clock cannot be stepped back (frames already shown
/// would come after new ones): beyond [`SLEW_AFTER_MS`] its frames are brought closer by
/// at most [`SLEW_PER_FRAME_MS`] each (3 % at 15 fps), unless it is this far ahead
/// (a camera clock jump), when it is re-anchored right after the last frame.
const STEP_AHEAD_MS: i64 = 5_000;
const SLEW_AFTER_MS: i64 = 200;
const SLEW_PER_FRAME_MS: i64 = 2;
/// A presentation time further than this from its decode time is not believed (a bogus
/// PTS, or a DTS made up on another time base): the frame is taken as presented when
/// decoded.
const MAX_REORDER_NS: u64 = 2_000_000_000;
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

/// A frame's camera times, in ns: presentation, and decode when the source knows it
/// (without B-frames the two are equal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    pub pts_ns: Option<u64>,
    pub dts_ns: Option<u64>,
}

impl From<Option<u64>> for Stamp {
    /// A frame presented when it is decoded.
    fn from(pts_ns: Option<u64>) -> Stamp {
        Stamp { pts_ns, dts_ns: pts_ns }
    }
}

/// Cuts one camera's frames into fragments.
#[derive(Debug)]
pub struct Fragmenter {
    target_ms: u64,
    /// (camera time in ns, gateway ms) at the anchor.
    anchor: Option<(u64, i64)>,
    /// The latest presentation time given (a fragment starts after it).
    last_ms: u64,
    /// The last decode time given.
    last_decode_ms: i64,
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
            last_decode_ms: i64::MIN,
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

    /// Adds one frame, in decode order. `stamp` holds the camera's times (pipeline
    /// running time), `now_ms` the gateway's wall clock. Returns the fragment this frame
    /// closed.
    pub fn push(
        &mut self,
        stamp: impl Into<Stamp>,
        now_ms: i64,
        key: bool,
        data: Bytes,
        track: &TrackInfo,
    ) -> (Option<Fragment>, Notes) {
        let mut notes = Notes::default();
        let ms = self.timecode(stamp.into(), key, now_ms, &mut notes);
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
        let length = self.open.first().map_or(0, |f| ms.saturating_sub(f.timecode_ms));
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
        let latest = frames.iter().map(|f| f.timecode_ms).max().unwrap_or(0);
        Some(Fragment {
            start_ms: frames[0].timecode_ms,
            end_ms: end_ms.max(latest + 1),
            frames,
            track: self.track.clone()?,
            tags: tags.tags,
            summarised: tags.summarised,
        })
    }

    /// Gateway presentation time of a frame: anchor + camera delta, re-anchored when the
    /// camera's clock strays more than [`RESYNC_AFTER_MS`] (judged by decode time, which
    /// follows arrival), moved forward when decode time would not advance or a key frame
    /// would not present after everything before it.
    fn timecode(&mut self, stamp: Stamp, key: bool, now_ms: i64, notes: &mut Notes) -> u64 {
        let Some(pts) = stamp.pts_ns else {
            // No camera time: the gateway's, after everything so far.
            let ms = (now_ms.max(0) as u64).max(self.last_ms + 1);
            self.last_ms = ms;
            self.last_decode_ms = ms as i64;
            return ms;
        };
        let decode = stamp.dts_ns.unwrap_or(pts);
        let pts = if pts.abs_diff(decode) > MAX_REORDER_NS {
            decode
        } else {
            pts
        };
        let (mut anchor_ns, mut anchor_ms) = *self.anchor.get_or_insert((decode, now_ms));
        let map = |t: u64, anchor_ns: u64, anchor_ms: i64| {
            i128::from(anchor_ms) + (i128::from(t) - i128::from(anchor_ns)) / 1_000_000
        };
        let ahead =
            (map(decode, anchor_ns, anchor_ms) - i128::from(now_ms)).clamp(i64::MIN.into(), i64::MAX.into()) as i64;
        if ahead < -RESYNC_AFTER_MS {
            notes.resynced = true;
            (anchor_ns, anchor_ms) = (decode, now_ms);
        } else if ahead > STEP_AHEAD_MS {
            notes.resynced = true;
            // Never back past what was presented.
            (anchor_ns, anchor_ms) = (decode, now_ms.max(self.last_ms as i64 + 1));
        } else if ahead > SLEW_AFTER_MS {
            anchor_ms -= (ahead - SLEW_AFTER_MS).min(SLEW_PER_FRAME_MS);
        }
        let mut shift = 0;
        if stamp.dts_ns.is_some() {
            shift = i128::from(self.last_decode_ms).saturating_add(1) - map(decode, anchor_ns, anchor_ms);
        }
        if key {
            shift = shift.max(i128::from(self.last_ms) + 1 - map(pts, anchor_ns, anchor_ms));
        }
        if shift > 0 {
            anchor_ms += shift as i64;
        }
        self.anchor = Some((anchor_ns, anchor_ms));
        self.last_decode_ms = map(decode, anchor_ns, anchor_ms) as i64;
        let ms = map(pts, anchor_ns, anchor_ms).max(0) as u64;
        self.last_ms = self.last_ms.max(ms);
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

    /// I P B B P B B … at 15 fps, a key frame every 30, in decode order as x264 sends
    /// them: (pts, dts) in frame periods, dts two periods behind.
    fn b_frame_stamps(frames: u64) -> Vec<(u64, u64, bool)> {
        let period = 1_000_000_000 / 15;
        (0..frames)
            .map(|i| {
                let in_gop = i % 30;
                // Shown position of the frame decoded n-th in its GOP: 0, 3, 1, 2, 6, 4, 5,
                // …, 29, 28 (a closed GOP: nothing refers across the key frame).
                let shown = match in_gop {
                    0 => 0,
                    n if n % 3 == 1 => (n + 2).min(29),
                    n => n - 1,
                };
                let gop = i - in_gop;
                ((gop + shown + 2) * period, i * period, in_gop == 0)
            })
            .collect()
    }

    #[test]
    fn b_frames_keep_their_presentation_times_and_fragments_still_advance() {
        let now = 1_700_000_000_000;
        for with_dts in [true, false] {
            let mut f = Fragmenter::new(Duration::from_secs(2));
            let mut closed = Vec::new();
            for (pts, dts, key) in b_frame_stamps(95) {
                let stamp = Stamp {
                    pts_ns: Some(pts),
                    dts_ns: with_dts.then_some(dts),
                };
                let arrival = now + (dts / 1_000_000) as i64;
                closed.extend(f.push(stamp, arrival, key, Bytes::new(), &track()).0);
            }
            assert_eq!(closed.len(), 3, "dts {with_dts}");
            for (n, frag) in closed.iter().enumerate() {
                let shown: Vec<u64> = frag.frames.iter().map(|fr| fr.timecode_ms - frag.start_ms).collect();
                // Presentation order differs from decode order, as the camera sent it
                // (whole ms, so within 1 of the frame periods).
                let expected = [0, 200, 67, 133];
                let near = shown[..4].iter().zip(expected).all(|(s, e)| s.abs_diff(e) <= 1);
                assert!(near, "dts {with_dts}, fragment {n}: {:?}", &shown[..4]);
                let mut sorted = shown.clone();
                sorted.sort_unstable();
                assert!(
                    sorted.windows(2).all(|w| (66..=67).contains(&(w[1] - w[0]))),
                    "{sorted:?}"
                );
                if n > 0 {
                    assert_eq!(frag.start_ms, closed[n - 1].end_ms, "contiguous");
                }
            }
        }
    }

    #[test]
    fn a_camera_clock_running_fast_is_slewed_to_the_gateway_clock_without_going_back() {
        // An RTSP camera (no decode times) whose clock runs 2 % fast: it is held within a
        // fraction of a second of the gateway clock by slewing, never re-anchored, and no
        // frame presents before one shown earlier.
        let mut f = Fragmenter::new(Duration::from_secs(2));
        let (mut resyncs, mut frames) = (0, Vec::new());
        for i in 0..(15 * 60) {
            let wall = 1_000_000 + i * 1000 / 15;
            let stamp = Stamp {
                pts_ns: Some(i as u64 * 1_020_000_000 / 15),
                dts_ns: None,
            };
            let (closed, notes) = f.push(stamp, wall, i % 30 == 0, Bytes::new(), &track());
            resyncs += usize::from(notes.resynced);
            frames.extend(closed.into_iter().flat_map(|c| c.frames).map(|fr| fr.timecode_ms));
        }
        assert_eq!(resyncs, 0);
        assert!(frames.windows(2).all(|w| w[1] > w[0]), "{frames:?}");
        let last = *frames.last().unwrap() as i64;
        let wall_then = 1_000_000 + (frames.len() as i64 - 1) * 1000 / 15;
        assert!((last - wall_then).abs() <= 300, "{} ms ahead", last - wall_then);
        // A camera clock that jumps far ahead is re-anchored right after the last frame.
        let (_, notes) = f.push(
            Some(3_600_000_000_000),
            1_000_000 + 60_000,
            true,
            Bytes::new(),
            &track(),
        );
        assert!(notes.resynced);
    }

    #[test]
    fn a_presentation_time_far_from_its_decode_time_is_not_believed() {
        let mut f = Fragmenter::new(Duration::from_secs(2));
        let stamp = |pts: u64, dts: u64| Stamp {
            pts_ns: Some(pts),
            dts_ns: Some(dts),
        };
        f.push(stamp(0, 0), 1_000_000, true, Bytes::new(), &track());
        f.push(
            stamp(3_600_000_000_000, 66_000_000),
            1_000_066,
            false,
            Bytes::new(),
            &track(),
        );
        let frag = f.flush().unwrap();
        assert_eq!(frag.frames[1].timecode_ms, 1_000_066);
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
