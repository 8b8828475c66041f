//! An incremental reader of the MKV stream a PutMedia producer sends, with the checks
//! Kinesis Video Streams makes. Written here, apart from the agent's writer, so that the
//! fake endpoint does not share the agent's mistakes: it reads elements as bytes arrive,
//! handles known- and unknown-size Segments and Clusters, and reports each complete
//! fragment (Tags + Cluster) or the ErrorId KVS would answer.

use std::collections::BTreeSet;

const EBML: u32 = 0x1A45_DFA3;
const DOC_TYPE: u32 = 0x4282;
const SEGMENT: u32 = 0x1853_8067;
const INFO: u32 = 0x1549_A966;
const TIMECODE_SCALE: u32 = 0x2A_D7B1;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const CODEC_ID: u32 = 0x86;
const CODEC_PRIVATE: u32 = 0x63A2;
const CLUSTER: u32 = 0x1F43_B675;
const TIMECODE: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;
const BLOCK_GROUP: u32 = 0xA0;
const TAGS: u32 = 0x1254_C367;
const SIMPLE_TAG: u32 = 0x67C8;
const TAG_NAME: u32 = 0x45A3;
const TAG_STRING: u32 = 0x4487;
const VOID: u32 = 0xEC;
const SEEK_HEAD: u32 = 0x114D_9B74;
const CUES: u32 = 0x1C53_BB6B;

/// Elements that end an unknown-size Cluster when they appear.
const TOP_LEVEL: [u32; 8] = [EBML, SEGMENT, CLUSTER, TAGS, INFO, TRACKS, CUES, SEEK_HEAD];

/// A frame as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    pub track: u64,
    /// Absolute, in ms (cluster timecode + relative, at the stream's timecode scale).
    pub timecode_ms: u64,
    pub key: bool,
    pub bytes: usize,
}

/// A complete fragment.
#[derive(Debug, Clone)]
pub struct ParsedFragment {
    pub timecode_ms: u64,
    pub blocks: Vec<BlockInfo>,
    pub tags: Vec<(String, String)>,
    /// The raw bytes of the Cluster element (to rebuild a playable file).
    pub cluster_bytes: Vec<u8>,
}

/// What the reader found.
#[derive(Debug)]
pub enum Event {
    /// A cluster began (KVS answers BUFFERING).
    ClusterStarted(u64),
    Fragment(ParsedFragment),
    /// KVS would answer ERROR with this ErrorId and the timecode (if known).
    Error {
        error_id: u32,
        timecode: Option<u64>,
        why: String,
    },
}

#[derive(Debug)]
struct OpenCluster {
    start: usize,
    /// Absolute end offset, for a known size.
    end: Option<usize>,
    timecode: Option<u64>,
    blocks: Vec<BlockInfo>,
}

/// The reader. Feed bytes; collect events.
#[derive(Debug, Default)]
pub struct MkvStream {
    buffer: Vec<u8>,
    /// Offset of `buffer[0]` in the whole stream.
    base: usize,
    /// Absolute offset of the next element to read.
    at: usize,
    seen_ebml: bool,
    in_segment: bool,
    scale_ns: u64,
    tracks: BTreeSet<u64>,
    pub codec_ids: Vec<String>,
    pub header_bytes: Vec<u8>,
    header_done: bool,
    cluster: Option<OpenCluster>,
    pending_tags: Vec<(String, String)>,
    last_timecode: Option<u64>,
    failed: bool,
}

fn vint(bytes: &[u8], keep_marker: bool) -> Option<(u64, usize, bool)> {
    let first = *bytes.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 || bytes.len() < len {
        return None;
    }
    let mut value = if keep_marker {
        u64::from(first)
    } else {
        u64::from(first) & (0xFF >> len)
    };
    let mut ones = u64::from(first) & (0xFF >> len) == (0xFF >> len);
    for b in &bytes[1..len] {
        value = (value << 8) | u64::from(*b);
        ones &= *b == 0xFF;
    }
    Some((value, len, ones))
}

/// (id, size or None when unknown, header length); None when more bytes are needed.
fn element_header(bytes: &[u8]) -> Option<(u32, Option<u64>, usize)> {
    let (id, id_len, _) = vint(bytes, true)?;
    let (size, size_len, unknown) = vint(&bytes[id_len..], false)?;
    Some((id as u32, if unknown { None } else { Some(size) }, id_len + size_len))
}

fn uint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b))
}

/// Children of a master element body: (id, body).
fn children(mut body: &[u8]) -> Vec<(u32, &[u8])> {
    let mut out = Vec::new();
    while let Some((id, size, len)) = element_header(body) {
        let Some(size) = size else { break };
        let end = len + size as usize;
        if end > body.len() {
            break;
        }
        out.push((id, &body[len..end]));
        body = &body[end..];
    }
    out
}

impl MkvStream {
    pub fn new() -> Self {
        MkvStream {
            scale_ns: 1_000_000,
            ..MkvStream::default()
        }
    }

    fn error(&mut self, error_id: u32, timecode: Option<u64>, why: impl Into<String>) -> Event {
        self.failed = true;
        Event::Error {
            error_id,
            timecode,
            why: why.into(),
        }
    }

    /// Feeds bytes; returns what completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        if self.failed {
            return events;
        }
        self.buffer.extend_from_slice(bytes);
        loop {
            // A known-size cluster that is complete.
            if let Some(end) = self.cluster.as_ref().and_then(|c| c.end) {
                if self.at >= end {
                    events.extend(self.finish_cluster(end));
                    if self.failed {
                        return events;
                    }
                    continue;
                }
            }
            let rel = self.at - self.base;
            let Some((id, size, len)) = element_header(&self.buffer[rel..]) else {
                break;
            };
            // An unknown-size cluster ends where a top-level element starts.
            if self.cluster.as_ref().is_some_and(|c| c.end.is_none()) && TOP_LEVEL.contains(&id) {
                let at = self.at;
                events.extend(self.finish_cluster(at));
                if self.failed {
                    return events;
                }
                continue;
            }
            if !self.seen_ebml && id != EBML {
                events.push(self.error(
                    4006,
                    None,
                    format!("stream does not start with an EBML header (id {id:#x})"),
                ));
                return events;
            }
            // Masters we descend into instead of reading whole.
            if id == SEGMENT || (id == CLUSTER && self.cluster.is_none()) {
                if id == SEGMENT {
                    if !self.seen_ebml {
                        events.push(self.error(4006, None, "Segment before the EBML header"));
                        return events;
                    }
                    self.in_segment = true;
                    self.header_bytes.extend_from_slice(&self.buffer[rel..rel + len]);
                    self.at += len;
                    continue;
                }
                if !self.header_done {
                    events.push(self.error(4006, None, "Cluster before Tracks"));
                    return events;
                }
                self.cluster = Some(OpenCluster {
                    start: self.at,
                    end: size.map(|s| self.at + len + s as usize),
                    timecode: None,
                    blocks: Vec::new(),
                });
                self.at += len;
                continue;
            }
            let Some(size) = size else {
                events.push(self.error(4006, None, format!("element {id:#x} of unknown size")));
                return events;
            };
            let end = rel + len + size as usize;
            if size > 60 << 20 {
                events.push(self.error(4001, None, format!("element of {size} bytes")));
                return events;
            }
            if end > self.buffer.len() {
                break; // need more bytes
            }
            let body = self.buffer[rel + len..end].to_vec();
            let whole = self.buffer[rel..end].to_vec();
            self.at += len + size as usize;
            if let Some(e) = self.element(id, &body, &whole) {
                events.push(e);
                if self.failed {
                    return events;
                }
            }
        }
        // Drop consumed bytes, keeping an open cluster's bytes for its record.
        let keep_from = self.cluster.as_ref().map_or(self.at, |c| c.start);
        let cut = keep_from - self.base;
        if cut > 0 {
            self.buffer.drain(..cut);
            self.base = keep_from;
        }
        events
    }

    /// A complete non-descended element.
    fn element(&mut self, id: u32, body: &[u8], whole: &[u8]) -> Option<Event> {
        if self.cluster.is_some() {
            return self.cluster_child(id, body);
        }
        match id {
            EBML => {
                let doc = children(body)
                    .into_iter()
                    .find(|(c, _)| *c == DOC_TYPE)
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
                if doc.as_deref() != Some("matroska") && doc.as_deref() != Some("webm") {
                    return Some(self.error(4006, None, format!("DocType {doc:?}")));
                }
                self.seen_ebml = true;
                self.header_bytes = whole.to_vec();
                self.header_done = false;
                self.tracks.clear();
                None
            }
            INFO => {
                for (c, v) in children(body) {
                    if c == TIMECODE_SCALE {
                        self.scale_ns = uint(v).max(1);
                    }
                }
                self.header_bytes.extend_from_slice(whole);
                None
            }
            TRACKS => {
                for (c, entry) in children(body) {
                    if c != TRACK_ENTRY {
                        continue;
                    }
                    let fields = children(entry);
                    let number = fields.iter().find(|(i, _)| *i == TRACK_NUMBER).map(|(_, v)| uint(v));
                    let codec = fields
                        .iter()
                        .find(|(i, _)| *i == CODEC_ID)
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
                    let private = fields
                        .iter()
                        .find(|(i, _)| *i == CODEC_PRIVATE)
                        .map(|(_, v)| v.len())
                        .unwrap_or(0);
                    let Some(number) = number else {
                        return Some(self.error(4006, None, "TrackEntry without TrackNumber"));
                    };
                    if codec.as_deref() == Some("V_MPEG4/ISO/AVC") && private == 0 {
                        return Some(self.error(4006, None, "H.264 track without CodecPrivate"));
                    }
                    self.tracks.insert(number);
                    self.codec_ids.push(codec.unwrap_or_default());
                }
                if self.tracks.is_empty() {
                    return Some(self.error(4006, None, "Tracks declares no track"));
                }
                self.header_bytes.extend_from_slice(whole);
                self.header_done = true;
                None
            }
            TAGS => {
                let mut tags = Vec::new();
                collect_simple_tags(body, &mut tags);
                for (name, value) in &tags {
                    if name.starts_with("AWS") || name.len() > 128 || value.len() > 256 {
                        return Some(self.error(4009, None, format!("tag {name:?} breaks the metadata rules")));
                    }
                }
                self.pending_tags.extend(tags);
                if self.pending_tags.len() > 10 {
                    return Some(self.error(4009, None, format!("{} tags for one fragment", self.pending_tags.len())));
                }
                None
            }
            VOID | SEEK_HEAD | CUES => None,
            other => Some(self.error(4006, None, format!("unexpected element {other:#x} at the top level"))),
        }
    }

    fn cluster_child(&mut self, id: u32, body: &[u8]) -> Option<Event> {
        let scale = self.scale_ns;
        let tracks = self.tracks.clone();
        let cluster = self.cluster.as_mut()?;
        match id {
            TIMECODE => {
                let tc = uint(body) * scale / 1_000_000;
                cluster.timecode = Some(tc);
                return Some(Event::ClusterStarted(tc));
            }
            SIMPLE_BLOCK | BLOCK_GROUP => {
                let block = if id == BLOCK_GROUP {
                    children(body)
                        .into_iter()
                        .find(|(c, _)| *c == 0xA1)
                        .map(|(_, v)| v.to_vec())
                } else {
                    Some(body.to_vec())
                };
                let block = block?;
                let Some((track, len, _)) = vint(&block, false) else {
                    let tc = cluster.timecode;
                    return Some(self.error(4006, tc, "block without a track number"));
                };
                let Some(base) = cluster.timecode else {
                    return Some(self.error(4006, None, "block before the cluster timecode"));
                };
                if !tracks.contains(&track) {
                    return Some(self.error(4010, Some(base), format!("block for track {track}, not declared")));
                }
                if block.len() < len + 3 {
                    return Some(self.error(4006, Some(base), "truncated block"));
                }
                let relative = i16::from_be_bytes([block[len], block[len + 1]]);
                let flags = block[len + 2];
                let timecode_ms = (base as i64 + i64::from(relative) * scale as i64 / 1_000_000).max(0) as u64;
                cluster.blocks.push(BlockInfo {
                    track,
                    timecode_ms,
                    key: id == SIMPLE_BLOCK && flags & 0x80 != 0,
                    bytes: block.len() - len - 3,
                });
            }
            _ => {}
        }
        None
    }

    fn finish_cluster(&mut self, end: usize) -> Vec<Event> {
        let Some(c) = self.cluster.take() else {
            return Vec::new();
        };
        self.at = self.at.max(end);
        let tc = c.timecode;
        let Some(timecode) = tc else {
            return vec![self.error(4006, None, "cluster without a timecode")];
        };
        if c.blocks.is_empty() {
            return vec![self.error(4011, Some(timecode), "cluster without frames")];
        }
        if !c.blocks[0].key {
            return vec![self.error(4006, Some(timecode), "cluster does not start with a key frame")];
        }
        let last = c.blocks.iter().map(|b| b.timecode_ms).max().unwrap_or(timecode);
        if last - timecode > 10_000 {
            return vec![self.error(4002, Some(timecode), format!("fragment of {} ms", last - timecode))];
        }
        if self.last_timecode.is_some_and(|prev| timecode <= prev) {
            return vec![self.error(
                4004,
                Some(timecode),
                format!("timecode {timecode} after {:?}", self.last_timecode),
            )];
        }
        self.last_timecode = Some(timecode);
        let from = c.start - self.base;
        let to = (end - self.base).min(self.buffer.len());
        vec![Event::Fragment(ParsedFragment {
            timecode_ms: timecode,
            blocks: c.blocks,
            tags: std::mem::take(&mut self.pending_tags),
            cluster_bytes: self.buffer[from..to].to_vec(),
        })]
    }

    /// The stream ended: an open unknown-size cluster is complete.
    pub fn finish(&mut self) -> Vec<Event> {
        if self.failed || self.cluster.is_none() {
            return Vec::new();
        }
        let end = self.base + self.buffer.len();
        if self.cluster.as_ref().and_then(|c| c.end).is_some_and(|e| e > end) {
            return Vec::new(); // truncated known-size cluster: not a fragment
        }
        self.finish_cluster(end)
    }
}

fn collect_simple_tags(body: &[u8], out: &mut Vec<(String, String)>) {
    for (id, child) in children(body) {
        if id == SIMPLE_TAG {
            let fields = children(child);
            let get = |want| {
                fields
                    .iter()
                    .find(|(i, _)| *i == want)
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            };
            out.push((get(TAG_NAME).unwrap_or_default(), get(TAG_STRING).unwrap_or_default()));
        } else if matches!(id, 0x7373) {
            collect_simple_tags(child, out);
        }
    }
}
