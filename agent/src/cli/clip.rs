//! `tillgate clip --txn ID --out FILE.mp4`: the local video around a journaled sale, from
//! every camera that covers its terminal (`video.cameras[].terminals`, or every
//! terminal), as MP4 without transcoding (tillgate_video::clip). The range is anchored
//! where alerts anchor it: when the sale reached the gateway, the clock that stamps the
//! fragments (journal/video_links.rs).
//!
//! Reads the journal and the rings; works while the agent runs or is stopped.

use crate::config::Config;
use crate::journal::{JournalReader, Sale};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tillgate_video::clip::{write_clip, LocalClips};
use tillgate_video::config::CLIP_MAX;

/// Exit status when the sale or its video is not there (sysexits EX_NOINPUT).
const EXIT_NO_INPUT: i32 = 66;
/// Exit status for a range over [`CLIP_MAX`] (EX_USAGE).
const EXIT_USAGE: i32 = 64;
/// Exit status when the journal cannot be read (EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: i32 = 69;

/// What to cut.
#[derive(Debug)]
pub struct ClipArgs {
    pub txn: String,
    pub before: Option<Duration>,
    pub after: Option<Duration>,
    pub out: PathBuf,
}

/// `out` itself for one camera; `STEM.CAMERA.EXT` beside it for several.
fn clip_path(out: &Path, camera: &str, cameras: usize) -> PathBuf {
    if cameras == 1 {
        return out.to_path_buf();
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or("mp4".into());
    out.with_file_name(format!("{stem}.{camera}.{ext}"))
}

pub fn run(config: &Config, args: &ClipArgs) -> i32 {
    let Some(video) = config.video.as_ref().filter(|v| v.enabled && !v.cameras.is_empty()) else {
        eprintln!("tillgate: no cameras are configured ([video] with [[video.cameras]])");
        return EXIT_NO_INPUT;
    };
    let journal = config.data_path(&config.journal.path);
    let found = JournalReader::open(&journal).and_then(|r| r.sale(&args.txn));
    let Sale { received_ms, terminal } = match found {
        Ok(Some(t)) => t,
        Ok(None) => {
            eprintln!(
                "tillgate: transaction {:?} is not in the journal {} (never received, or older than journal.idempotency_window)",
                args.txn,
                journal.display()
            );
            return EXIT_NO_INPUT;
        }
        Err(e) => {
            eprintln!("tillgate: cannot read the journal {}: {e}", journal.display());
            return EXIT_UNAVAILABLE;
        }
    };
    let root = config.data_path(&video.dir);
    let cameras = LocalClips::new(video, &root)
        .covering(&terminal)
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    if cameras.is_empty() {
        eprintln!("tillgate: no camera covers terminal {terminal:?} (video.cameras[].terminals)");
        return EXIT_NO_INPUT;
    }
    let ms = |d: Duration| d.as_millis() as u64;
    let before = args.before.unwrap_or(video.clip_before.get());
    let after = args.after.unwrap_or(video.clip_after.get());
    if before + after > CLIP_MAX.get() {
        eprintln!(
            "tillgate: --before + --after = {:?} is too long; allowed: at most {CLIP_MAX}",
            before + after
        );
        return EXIT_USAGE;
    }
    let at = received_ms.max(0) as u64;
    let from = at.saturating_sub(ms(before));
    let to = at.saturating_add(ms(after));
    let mut written = 0;
    for camera in &cameras {
        let ring = root.join(camera);
        let out = clip_path(&args.out, camera, cameras.len());
        match write_clip(&ring, from, to, at, &out) {
            Ok(clip) => {
                written += 1;
                println!(
                    "{}: {} ({} fragments, {:.1} s from {} ms, sale at +{:.1} s, {} bytes)",
                    camera,
                    out.display(),
                    clip.fragments,
                    (clip.end_ms - clip.start_ms) as f64 / 1000.0,
                    clip.start_ms,
                    (at as f64 - clip.start_ms as f64) / 1000.0,
                    clip.bytes
                );
            }
            Err(e) => eprintln!("tillgate: {camera}: {e}"),
        }
    }
    if written == 0 {
        EXIT_NO_INPUT
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_camera_writes_the_named_file_several_write_one_each_beside_it() {
        let out = Path::new("/tmp/sale.mp4");
        assert_eq!(clip_path(out, "door", 1), PathBuf::from("/tmp/sale.mp4"));
        assert_eq!(clip_path(out, "door", 2), PathBuf::from("/tmp/sale.door.mp4"));
    }
}
