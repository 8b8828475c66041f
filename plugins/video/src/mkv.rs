//! The Matroska bytes PutMedia takes: an EBML header, a Segment of unknown size, Info
//! (1 ms timecode scale), Tracks (one H.264 track), then per fragment an optional Tags
//! element and one Cluster with absolute timecode and SimpleBlocks.
//!
//! Written by hand, and why: the fragment store keeps each fragment as its own byte
//! range (a self-contained, playable file), and every new PutMedia connection re-sends the
//! header before the first stored cluster. GStreamer's matroskamux writes one continuous
//! stream with its own timecodes, SeekHead and Cues and cannot hand back "the bytes of
//! fragment N"; the maintained EBML crates (ebml-iterable, webm-iterable) are generic
//! tag-tree writers that would still need all of the layout below. The subset used here
//! is small: element IDs, EBML variable-size integers, unsigned, string and binary leaves.

/// Element IDs (Matroska specification, with their marker bits).
pub mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const INFO: u32 = 0x1549_A966;
    pub const SEGMENT_UID: u32 = 0x73A4;
    pub const TIMECODE_SCALE: u32 = 0x2A_D7B1;
    pub const TITLE: u32 = 0x7BA9;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const DEFAULT_DURATION: u32 = 0x23_E383;
    pub const NAME: u32 = 0x536E;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMECODE: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const TAGS: u32 = 0x1254_C367;
    pub const TAG: u32 = 0x7373;
    pub const TARGETS: u32 = 0x63C0;
    pub const SIMPLE_TAG: u32 = 0x67C8;
    pub const TAG_NAME: u32 = 0x45A3;
    pub const TAG_STRING: u32 = 0x4487;
}

/// The H.264 codec in Matroska (AVC, length-prefixed NAL units).
pub const CODEC_H264: &str = "V_MPEG4/ISO/AVC";
/// The only track.
pub const TRACK: u64 = 1;
/// The size of an element whose end is not known ("unknown size", 8-byte form).
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// What the Tracks element says about the camera's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// The AVCDecoderConfigurationRecord (the caps' `codec_data`).
    pub codec_private: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// Nanoseconds per frame when the stream declares its rate (DefaultDuration): without
    /// it readers guess the rate (ffmpeg guesses 15000/1001 for 15 fps and its timestamps
    /// then collide after a minute).
    pub frame_ns: Option<u64>,
}

/// One video frame of a fragment.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Absolute time, milliseconds since the Unix epoch.
    pub timecode_ms: u64,
    pub key: bool,
    /// AVC sample: length-prefixed NAL units.
    pub data: bytes::Bytes,
}

fn push_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.extend_from_slice(&bytes[skip..]);
}

/// An EBML variable-size integer of the shortest length that holds `n` (all-ones in the
/// value bits is reserved for "unknown", hence `< 2^(7k) - 1`).
fn push_size(out: &mut Vec<u8>, n: u64) {
    let len = (1..=8).find(|k| n < (1u64 << (7 * k)) - 1).unwrap_or(8);
    let marked = n | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
}

fn element(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    push_id(out, id);
    push_size(out, body.len() as u64);
    out.extend_from_slice(body);
}

fn uint(out: &mut Vec<u8>, id: u32, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    element(out, id, &bytes[skip..]);
}

fn master(out: &mut Vec<u8>, id: u32, fill: impl FnOnce(&mut Vec<u8>)) {
    let mut body = Vec::new();
    fill(&mut body);
    element(out, id, &body);
}

/// The bytes every PutMedia connection starts with: EBML header, the Segment's opening
/// (unknown size: the stream never ends), Info and Tracks.
pub fn header(camera: &str, segment_uid: [u8; 16], track: &TrackInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + track.codec_private.len());
    master(&mut out, id::EBML, |b| {
        uint(b, id::EBML_VERSION, 1);
        uint(b, id::EBML_READ_VERSION, 1);
        uint(b, id::EBML_MAX_ID_LENGTH, 4);
        uint(b, id::EBML_MAX_SIZE_LENGTH, 8);
        element(b, id::DOC_TYPE, b"matroska");
        uint(b, id::DOC_TYPE_VERSION, 4);
        uint(b, id::DOC_TYPE_READ_VERSION, 2);
    });
    push_id(&mut out, id::SEGMENT);
    out.extend_from_slice(&UNKNOWN_SIZE);
    master(&mut out, id::INFO, |b| {
        element(b, id::SEGMENT_UID, &segment_uid);
        uint(b, id::TIMECODE_SCALE, 1_000_000);
        element(b, id::TITLE, camera.as_bytes());
        element(b, id::MUXING_APP, b"tillgate");
        element(
            b,
            id::WRITING_APP,
            concat!("tillgate ", env!("CARGO_PKG_VERSION")).as_bytes(),
        );
    });
    master(&mut out, id::TRACKS, |b| {
        master(b, id::TRACK_ENTRY, |t| {
            uint(t, id::TRACK_NUMBER, TRACK);
            uint(t, id::TRACK_UID, TRACK);
            uint(t, id::TRACK_TYPE, 1);
            element(t, id::NAME, camera.as_bytes());
            element(t, id::CODEC_ID, CODEC_H264.as_bytes());
            element(t, id::CODEC_PRIVATE, &track.codec_private);
            if let Some(ns) = track.frame_ns {
                uint(t, id::DEFAULT_DURATION, ns);
            }
            master(t, id::VIDEO, |v| {
                uint(v, id::PIXEL_WIDTH, u64::from(track.width));
                uint(v, id::PIXEL_HEIGHT, u64::from(track.height));
            });
        });
    });
    out
}

/// Why a fragment cannot be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FragmentError {
    #[error("a fragment needs at least one frame")]
    Empty,
    #[error("a fragment must start with a key frame")]
    NoKeyFrame,
    #[error("frame at {0:+} ms from the fragment's start is beyond a block's 16-bit relative timecode")]
    TooLong(i64),
}

/// A fragment's bytes: Tags (when there are any) and one Cluster whose timecode is the
/// first frame's. `tags` are (name, value) pairs, already checked against KVS's limits.
pub fn fragment(frames: &[Frame], tags: &[(String, String)]) -> Result<Vec<u8>, FragmentError> {
    let first = frames.first().ok_or(FragmentError::Empty)?;
    if !first.key {
        return Err(FragmentError::NoKeyFrame);
    }
    let start = first.timecode_ms;
    let size: usize = frames.iter().map(|f| f.data.len() + 16).sum();
    let mut out = Vec::with_capacity(size + 64 + tags.len() * 64);
    if !tags.is_empty() {
        master(&mut out, id::TAGS, |b| {
            master(b, id::TAG, |t| {
                master(t, id::TARGETS, |_| {});
                for (name, value) in tags {
                    master(t, id::SIMPLE_TAG, |s| {
                        element(s, id::TAG_NAME, name.as_bytes());
                        element(s, id::TAG_STRING, value.as_bytes());
                    });
                }
            });
        });
    }
    let mut cluster = Vec::with_capacity(size + 16);
    uint(&mut cluster, id::TIMECODE, start);
    // Frames come in decode order with presentation times: with B-frames those go back
    // and forth (an open GOP's leading B-frames even present before the key frame), which
    // the signed relative timecode carries.
    for f in frames {
        let relative = f.timecode_ms as i64 - start as i64;
        let relative16 = i16::try_from(relative).map_err(|_| FragmentError::TooLong(relative))?;
        let mut block = Vec::with_capacity(f.data.len() + 4);
        push_size(&mut block, TRACK);
        block.extend_from_slice(&relative16.to_be_bytes());
        block.push(if f.key { 0x80 } else { 0x00 });
        block.extend_from_slice(&f.data);
        element(&mut cluster, id::SIMPLE_BLOCK, &block);
    }
    element(&mut out, id::CLUSTER, &cluster);
    Ok(out)
}

/// Reads one element header at `at`: (id, body size or `None` for unknown, header
/// length). `None` when the bytes are truncated or not EBML.
pub fn read_header(bytes: &[u8], at: usize) -> Option<(u32, Option<u64>, usize)> {
    let first = *bytes.get(at)?;
    let id_len = first.leading_zeros() as usize + 1;
    if id_len > 4 {
        return None;
    }
    let id = bytes
        .get(at..at + id_len)?
        .iter()
        .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    let size_at = at + id_len;
    let lead = *bytes.get(size_at)?;
    let size_len = lead.leading_zeros() as usize + 1;
    if size_len > 8 {
        return None;
    }
    let raw = bytes.get(size_at..size_at + size_len)?;
    let mask = if size_len == 8 { 0 } else { 0xFFu8 >> size_len };
    let mut value = u64::from(lead & mask);
    let mut all_ones = (lead & mask) == mask;
    for b in &raw[1..] {
        value = (value << 8) | u64::from(*b);
        all_ones &= *b == 0xFF;
    }
    let size = if all_ones { None } else { Some(value) };
    Some((id, size, id_len + size_len))
}

/// The Tracks element of a stored fragment's header (what two fragments must share to
/// follow each other in one clip; the rest of the header — segment id, writing app —
/// differs between runs).
pub fn tracks(header: &[u8]) -> Option<&[u8]> {
    let (id, size, len) = read_header(header, 0)?;
    if id != id::EBML {
        return None;
    }
    let mut at = len + usize::try_from(size?).ok()?;
    let (_, _, seg_len) = read_header(header, at)?;
    at += seg_len;
    while at < header.len() {
        let (child, size, len) = read_header(header, at)?;
        let end = at + len + usize::try_from(size?).ok()?;
        if child == id::TRACKS {
            return header.get(at..end);
        }
        at = end;
    }
    None
}

/// A stored fragment's body (what follows [`header_len`]) for a clip: its Clusters with
/// their timecodes moved `minus_ms` earlier (a clip starts at 0), Tags left out, and
/// blocks that would present before 0 dropped (an open GOP's leading B-frames, which
/// refer to a GOP the clip does not have). `None` when the body is not Tags and Clusters
/// as [`fragment`] writes them, or a cluster would start before `minus_ms`.
pub fn rebase_clusters(body: &[u8], minus_ms: u64) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    while at < body.len() {
        let (element_id, size, len) = read_header(body, at)?;
        let end = at + len + usize::try_from(size?).ok()?;
        let content = body.get(at + len..end)?;
        if element_id == id::CLUSTER {
            let (child, child_size, child_len) = read_header(content, 0)?;
            if child != id::TIMECODE {
                return None;
            }
            let value_end = child_len + usize::try_from(child_size?).ok()?;
            let timecode = content
                .get(child_len..value_end)?
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            let rebased = timecode.checked_sub(minus_ms)?;
            let mut cluster = Vec::with_capacity(content.len());
            uint(&mut cluster, id::TIMECODE, rebased);
            let mut child_at = value_end;
            while child_at < content.len() {
                let (child, size, len) = read_header(content, child_at)?;
                let child_end = child_at + len + usize::try_from(size?).ok()?;
                let bytes = content.get(child_at..child_end)?;
                // SimpleBlock: track (1-byte vint here), then the signed relative time.
                let relative = (child == id::SIMPLE_BLOCK)
                    .then(|| content.get(child_at + len + 1..child_at + len + 3))
                    .flatten()
                    .map(|b| i64::from(i16::from_be_bytes([b[0], b[1]])));
                if relative.is_none_or(|r| rebased as i64 + r >= 0) {
                    cluster.extend_from_slice(bytes);
                }
                child_at = child_end;
            }
            element(&mut out, id::CLUSTER, &cluster);
        } else if element_id != id::TAGS {
            return None;
        }
        at = end;
    }
    Some(out)
}

/// Where the header ends in a stored fragment file (header followed by Tags/Cluster):
/// the offset of the first Tags or Cluster element inside the Segment.
pub fn header_len(file: &[u8]) -> Option<usize> {
    let (id, size, len) = read_header(file, 0)?;
    if id != id::EBML {
        return None;
    }
    let mut at = len + usize::try_from(size?).ok()?;
    let (seg, _, seg_len) = read_header(file, at)?;
    if seg != id::SEGMENT {
        return None;
    }
    at += seg_len;
    loop {
        let (child, size, len) = read_header(file, at)?;
        if child == id::TAGS || child == id::CLUSTER {
            return Some(at);
        }
        at += len + usize::try_from(size?).ok()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ms: u64, key: bool) -> Frame {
        Frame {
            timecode_ms: ms,
            key,
            data: bytes::Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
        }
    }

    #[test]
    fn sizes_use_the_shortest_form_and_avoid_the_unknown_pattern() {
        let enc = |n| {
            let mut v = Vec::new();
            push_size(&mut v, n);
            v
        };
        assert_eq!(enc(0), [0x80]);
        assert_eq!(enc(126), [0xFE]);
        assert_eq!(enc(127), [0x40, 0x7F], "0xFF would mean unknown");
        assert_eq!(enc(16_382), [0x7F, 0xFE]);
        assert_eq!(enc(16_383), [0x20, 0x3F, 0xFF]);
        for n in [0u64, 1, 126, 127, 5000, 16_383, 1 << 30, (1 << 56) - 2] {
            let bytes = {
                let mut v = vec![0x81];
                push_size(&mut v, n);
                v
            };
            assert_eq!(read_header(&bytes, 0), Some((0x81, Some(n), bytes.len())));
        }
    }

    #[test]
    fn a_file_splits_into_header_and_fragment() {
        let track = TrackInfo {
            codec_private: vec![1, 0x64, 0, 0x1f, 0xff],
            width: 1280,
            height: 720,
            frame_ns: Some(66_666_667),
        };
        let head = header("door", [7; 16], &track);
        let body = fragment(
            &[frame(1_700_000_000_000, true), frame(1_700_000_000_066, false)],
            &[("a".into(), "b".into())],
        )
        .unwrap();
        let mut file = head.clone();
        file.extend_from_slice(&body);
        assert_eq!(header_len(&file), Some(head.len()));
        assert_eq!(read_header(&head, head.len() - head.len()).unwrap().0, id::EBML);
        let (tags, size, len) = read_header(&body, 0).unwrap();
        assert_eq!(tags, id::TAGS);
        let (cluster, _, _) = read_header(&body, len + size.unwrap() as usize).unwrap();
        assert_eq!(cluster, id::CLUSTER);
    }

    #[test]
    fn fragments_refuse_what_kvs_would_refuse() {
        assert_eq!(fragment(&[], &[]), Err(FragmentError::Empty));
        assert_eq!(fragment(&[frame(5, false)], &[]), Err(FragmentError::NoKeyFrame));
        assert_eq!(
            fragment(&[frame(0, true), frame(40_000, false)], &[]),
            Err(FragmentError::TooLong(40_000))
        );
        assert_eq!(
            fragment(&[frame(40_000, true), frame(0, false)], &[]),
            Err(FragmentError::TooLong(-40_000))
        );
    }

    #[test]
    fn a_clip_rebases_cluster_timecodes_and_leaves_tags_out() {
        let frames = [frame(1_796_428_530_000, true), frame(1_796_428_530_067, false)];
        let tags = [("tillgate:block".to_string(), "t-1".to_string())];
        let body = fragment(&frames, &tags).unwrap();
        let rebased = rebase_clusters(&body, 1_796_428_520_000).unwrap();
        let (cluster, size, len) = read_header(&rebased, 0).unwrap();
        assert_eq!(
            (cluster, len + size.unwrap() as usize),
            (id::CLUSTER, rebased.len()),
            "one cluster, no tags"
        );
        let (timecode, tc_size, tc_len) = read_header(&rebased, len).unwrap();
        assert_eq!(timecode, id::TIMECODE);
        let value = &rebased[len + tc_len..len + tc_len + tc_size.unwrap() as usize];
        assert_eq!(value.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)), 10_000);
        // The blocks are untouched.
        assert!(rebased.ends_with(&body[body.len() - 20..]));
        assert_eq!(
            rebase_clusters(&body, 1_796_428_530_001),
            None,
            "before the clip's start"
        );
        assert_eq!(rebase_clusters(b"\x1a\x45", 0), None, "not a fragment body");
        // An open GOP's leading B-frame presents before its key frame: at the clip's
        // start it is dropped, later on it stays.
        let open_gop = fragment(
            &[frame(1_000_000, true), frame(999_967, false), frame(1_000_033, false)],
            &[],
        )
        .unwrap();
        let blocks = |b: &[u8]| b.windows(3).filter(|w| *w == [0xA3, 0x8A, 0x81]).count();
        assert_eq!(blocks(&rebase_clusters(&open_gop, 1_000_000).unwrap()), 2);
        assert_eq!(blocks(&rebase_clusters(&open_gop, 990_000).unwrap()), 3);
    }

    #[test]
    fn fragments_of_one_camera_share_tracks_across_runs_but_not_a_resolution_change() {
        let track = |width| TrackInfo {
            codec_private: vec![1, 2, 3],
            width,
            height: 240,
            frame_ns: None,
        };
        let run1 = header("cam", [1; 16], &track(320));
        let run2 = header("cam", [2; 16], &track(320));
        assert_ne!(run1, run2, "a segment id per run");
        assert_eq!(tracks(&run1), tracks(&run2));
        assert!(tracks(&run1).is_some());
        assert_ne!(tracks(&run1), tracks(&header("cam", [1; 16], &track(640))));
    }

    #[test]
    fn b_frames_keep_their_presentation_times_in_decode_order() {
        // I P B B at 15 fps, in decode order: presentation 0, 200, 67, 133 ms.
        let frames = [
            frame(1000, true),
            frame(1200, false),
            frame(1067, false),
            frame(1133, false),
        ];
        let body = fragment(&frames, &[]).unwrap();
        // Each SimpleBlock: id A3, size 0x8A (10 bytes), track 0x81, relative timecode.
        let relatives: Vec<i16> = body
            .windows(3)
            .enumerate()
            .filter(|(_, w)| *w == [0xA3, 0x8A, 0x81])
            .map(|(i, _)| i16::from_be_bytes([body[i + 3], body[i + 4]]))
            .collect();
        assert_eq!(relatives, vec![0, 200, 67, 133]);
    }
}
