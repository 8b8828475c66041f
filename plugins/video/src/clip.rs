//! A clip of a camera's local video as MP4, for `tillgate clip` and the API: the ring's
//! fragments (acknowledged ones in `sent/`, local-only ones, and those still waiting) that overlap the
//! range, joined into one MKV — the first fragment's header, then each Cluster with its
//! timecode rebased so the clip starts at 0 — and remuxed by GStreamer
//! (`matroskademux ! h264parse ! mp4mux`). No transcoding: the clip starts at the key
//! frame that opens the first fragment and ends with the fragment covering the range's
//! end, so it covers at least the range.
//!
//! The ring is read, never changed: the daemon may move or delete a fragment meanwhile
//! (acknowledged, recycled); one that vanished is looked for on the other shelf, then
//! left out (the clip says how many fragments it holds and which range).

use crate::config::VideoConfig;
use crate::mkv;
use crate::store::parse_name;
use gstreamer as gst;
use gstreamer::prelude::*;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tillgate_sdk::{ClipBytes, ClipFailure, ClipMaker, ClipRequest};

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clip {
    pub fragments: usize,
    /// The range the clip covers (producer timecodes, ms since the epoch).
    pub start_ms: u64,
    pub end_ms: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("no video of {from_ms}–{to_ms} is left in {ring} ({held}): it was recycled (ring full or past retention) or never recorded")]
    Gone {
        ring: String,
        from_ms: u64,
        to_ms: u64,
        held: String,
    },
    #[error("{0}")]
    Io(String),
    #[error("remuxing to MP4: {0}")]
    Remux(String),
}

/// A fragment file of the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    start_ms: u64,
    end_ms: u64,
    path: PathBuf,
}

/// The ring's fragments (local-only ones in `local/`, waiting ones at the top,
/// acknowledged ones in `sent/`), by start. Listed in the order fragments move between
/// shelves, so one the daemon moves meanwhile is listed twice (deduplicated), never missed.
fn ring_pieces(dir: &Path) -> Vec<Piece> {
    let mut pieces = Vec::new();
    for shelf in [dir.join("local"), dir.to_path_buf(), dir.join("sent")] {
        let Ok(entries) = std::fs::read_dir(&shelf) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((start_ms, end_ms)) = parse_name(&name) {
                pieces.push(Piece {
                    start_ms,
                    end_ms,
                    path: entry.path(),
                });
            }
        }
    }
    pieces.sort_by_key(|p| p.start_ms);
    pieces.dedup_by_key(|p| p.start_ms);
    pieces
}

/// Reads a fragment, on the other shelf if the daemon just moved it.
fn read_piece(dir: &Path, piece: &Piece) -> Option<Vec<u8>> {
    let name = piece.path.file_name()?;
    [
        piece.path.clone(),
        dir.join(name),
        dir.join("sent").join(name),
        dir.join("local").join(name),
    ]
    .iter()
    .find_map(|p| std::fs::read(p).ok())
}

/// The longest a remux may take.
const REMUX_DEADLINE: Duration = Duration::from_secs(120);

/// Writes the clip of `[from_ms, to_ms]` around a sale at `at_ms` from the ring at `dir`
/// to `out` (MP4). A change of tracks (resolution, profile) inside the range cannot be
/// one MP4 track: before the sale the clip starts again at the change, after it the clip
/// ends there. The joined MKV is staged beside `out` (`*.mkv.part`), never held whole in
/// memory.
pub fn write_clip(dir: &Path, from_ms: u64, to_ms: u64, at_ms: u64, out: &Path) -> Result<Clip, ClipError> {
    let all = ring_pieces(dir);
    let overlapping: Vec<&Piece> = all
        .iter()
        .filter(|p| p.end_ms > from_ms && p.start_ms <= to_ms)
        .collect();
    let gone = || ClipError::Gone {
        ring: dir.display().to_string(),
        from_ms,
        to_ms,
        held: match (all.first(), all.last()) {
            (Some(a), Some(b)) => format!("it holds {}–{}", a.start_ms, b.end_ms),
            _ => "it is empty".into(),
        },
    };
    let staged = out.with_extension("mkv.part");
    let io = |e: std::io::Error| ClipError::Io(format!("{}: {e}", staged.display()));
    let mut file = std::fs::File::create(&staged).map_err(io)?;
    let joined = (|| -> Result<Option<Clip>, ClipError> {
        let mut tracks: Option<Vec<u8>> = None;
        let (mut start_ms, mut end_ms, mut fragments) = (0, 0, 0);
        for piece in overlapping {
            let Some(bytes) = read_piece(dir, piece) else { continue };
            let Some(split) = mkv::header_len(&bytes) else { continue };
            let (head, body) = bytes.split_at(split);
            let Some(these) = mkv::tracks(head) else { continue };
            let same = tracks.as_deref() == Some(these);
            if tracks.is_some() && !same && piece.start_ms > at_ms {
                break;
            }
            let start = if same { start_ms } else { piece.start_ms };
            let Some(clusters) = mkv::rebase_clusters(body, start) else {
                continue;
            };
            if !same {
                // The first piece, or new tracks before the sale: start (again) here.
                file.set_len(0).map_err(io)?;
                file.seek(SeekFrom::Start(0)).map_err(io)?;
                file.write_all(head).map_err(io)?;
                tracks = Some(these.to_vec());
                (start_ms, fragments) = (piece.start_ms, 0);
            }
            file.write_all(&clusters).map_err(io)?;
            end_ms = piece.end_ms;
            fragments += 1;
        }
        file.flush().map_err(io)?;
        Ok((fragments > 0).then_some(Clip {
            fragments,
            start_ms,
            end_ms,
            bytes: 0,
        }))
    })();
    drop(file);
    let remuxed = match joined {
        Ok(Some(clip)) => remux(&staged, out).map(|()| clip),
        Ok(None) => Err(gone()),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&staged);
    let clip = remuxed.inspect_err(|_| {
        let _ = std::fs::remove_file(out);
    })?;
    Ok(Clip {
        bytes: std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
        ..clip
    })
}

/// Deletes the temporary files of clips a crash left in `root` (the video folder).
pub fn sweep_temporaries(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".clip-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Sets a pipeline to Null however the remux ends.
struct Stopping(gst::Pipeline);

impl Drop for Stopping {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// `filesrc ! matroskademux ! h264parse ! mp4mux faststart=true ! filesink`, to the end.
fn remux(mkv: &Path, out: &Path) -> Result<(), ClipError> {
    let fail = |e: String| ClipError::Remux(e);
    gst::init().map_err(|e| fail(e.to_string()))?;
    let pipeline = gst::parse::launch(
        "filesrc name=in ! matroskademux ! h264parse ! video/x-h264,stream-format=avc,alignment=au ! \
         mp4mux faststart=true ! filesink name=out",
    )
    .map_err(|e| fail(e.to_string()))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| fail("not a pipeline".into()))?;
    let set = |name: &str, path: &Path| {
        pipeline
            .by_name(name)
            .map(|e| e.set_property("location", path.display().to_string()))
            .ok_or_else(|| fail(format!("no {name}")))
    };
    set("in", mkv)?;
    set("out", out)?;
    let pipeline = Stopping(pipeline);
    pipeline
        .0
        .set_state(gst::State::Playing)
        .map_err(|e| fail(e.to_string()))?;
    let bus = pipeline.0.bus().ok_or_else(|| fail("no bus".into()))?;
    let deadline = std::time::Instant::now() + REMUX_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Some(message) = bus.timed_pop(gst::ClockTime::from_mseconds(left.as_millis() as u64)) else {
            return Err(fail(format!("not done after {} s", REMUX_DEADLINE.as_secs())));
        };
        match message.view() {
            gst::MessageView::Eos(_) => return Ok(()),
            gst::MessageView::Error(e) => return Err(fail(format!("{}", e.error()))),
            _ => {}
        }
    }
}

/// The cameras' rings as the API's clip source ([`ClipMaker`]): the clip of a sale from
/// `clip_before` before it to `clip_after` after it, cut into temporary files beside the
/// rings (the clip's video twice at most, staged MKV and MP4; deleted once read, swept
/// at start after a crash).
#[derive(Debug)]
pub struct LocalClips {
    root: PathBuf,
    /// (camera, the terminals it covers; none: every terminal).
    cameras: Vec<(String, Vec<String>)>,
    before: Duration,
    after: Duration,
}

impl LocalClips {
    pub fn new(config: &VideoConfig, root: &Path) -> Self {
        LocalClips {
            root: root.to_path_buf(),
            cameras: config
                .cameras
                .iter()
                .map(|c| (c.name.clone(), c.terminals.clone()))
                .collect(),
            before: config.clip_before.get(),
            after: config.clip_after.get(),
        }
    }

    /// The cameras that cover `terminal`: those naming it, then those covering every one.
    pub fn covering(&self, terminal: &str) -> Vec<&str> {
        let named = self.cameras.iter().filter(|(_, t)| t.iter().any(|t| t == terminal));
        let every = self.cameras.iter().filter(|(_, t)| t.is_empty());
        named.chain(every).map(|(c, _)| c.as_str()).collect()
    }
}

impl ClipMaker for LocalClips {
    fn clip(&self, request: &ClipRequest) -> Result<ClipBytes, ClipFailure> {
        let covering = self.covering(&request.terminal);
        let camera = match &request.camera {
            Some(name) => covering.iter().find(|c| **c == name.as_str()).copied().ok_or_else(|| {
                ClipFailure::NoCamera(format!(
                    "camera {name:?} does not cover terminal {:?} (covering: {covering:?})",
                    request.terminal
                ))
            })?,
            None => covering.first().copied().ok_or_else(|| {
                ClipFailure::NoCamera(format!(
                    "no camera covers terminal {:?} (video.cameras[].terminals)",
                    request.terminal
                ))
            })?,
        };
        let from = request.at_ms.saturating_sub(self.before.as_millis() as u64);
        let to = request.at_ms.saturating_add(self.after.as_millis() as u64);
        let out = self.root.join(format!(".clip-{:016x}.mp4", rand::random::<u64>()));
        let written = write_clip(&self.root.join(camera), from, to, request.at_ms, &out);
        let mp4 = written.as_ref().ok().map(|_| std::fs::read(&out));
        let _ = std::fs::remove_file(&out);
        match (written, mp4) {
            (Ok(clip), Some(Ok(mp4))) => Ok(ClipBytes {
                camera: camera.to_string(),
                start_ms: clip.start_ms,
                end_ms: clip.end_ms,
                mp4,
            }),
            (Ok(_), _) => Err(ClipFailure::Failed(format!("cannot read back {}", out.display()))),
            (Err(e @ ClipError::Gone { .. }), _) => Err(ClipFailure::Gone(e.to_string())),
            (Err(e), _) => Err(ClipFailure::Failed(e.to_string())),
        }
    }
}
