//! Where the video of a sale is: the uploading cameras that cover its terminal, by their
//! Kinesis Video stream names, and the range of producer timestamps around the moment the
//! sale reached the gateway. Rule-hit alerts carry it, so the cloud can fetch the video
//! (GetImages, GetClip, HLS) without asking the gateway.
//!
//! The range is anchored on `received_at`, not `occurred_at`: fragments are stamped with
//! the gateway's clock (plugins/video/src/fragmenter.rs), the terminal's may be skewed.

use serde::Serialize;
use std::time::Duration;
use tillgate_sdk::VideoCoverage;

/// The cameras whose video alerts point at; built once at start from the components'
/// [`VideoCoverage`].
#[derive(Debug, Clone, Default)]
pub struct VideoLinks {
    cameras: Vec<VideoCoverage>,
}

/// Where one camera's video of a sale is, as an alert carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VideoLocation {
    pub camera: String,
    pub stream: String,
    /// Producer timestamps, ms since the epoch: `[start_ms, end_ms]`.
    pub start_ms: i64,
    pub end_ms: i64,
}

impl VideoLinks {
    /// No camera: alerts carry no video.
    pub fn none() -> Self {
        VideoLinks::default()
    }

    pub fn new(cameras: Vec<VideoCoverage>) -> Self {
        VideoLinks { cameras }
    }

    /// The video of a sale on `terminal` that reached the gateway at `received_ms`:
    /// the cameras that name the terminal first, then those that cover every terminal
    /// (the cloud looks at the first few only). `late_ms` is how long after it happened
    /// the sale arrived (by a terminal clock that is not skewed; 0 otherwise): a camera
    /// whose clip starts after the sale happened would show the wrong moment, so a sale
    /// that arrived later than `clip_before` gets no video from it.
    pub fn locate(&self, terminal: &str, received_ms: i64, late_ms: i64) -> Vec<VideoLocation> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let names = |c: &&VideoCoverage| c.terminals.iter().any(|t| t == terminal);
        let every = |c: &&VideoCoverage| c.terminals.is_empty();
        let named = self.cameras.iter().filter(names);
        let all = self.cameras.iter().filter(every);
        named
            .chain(all)
            .filter(|c| late_ms <= ms(c.before))
            .map(|c| VideoLocation {
                camera: c.camera.clone(),
                stream: c.stream.clone(),
                start_ms: received_ms.saturating_sub(ms(c.before)),
                end_ms: received_ms.saturating_add(ms(c.after)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(name: &str, terminals: &[&str]) -> VideoCoverage {
        VideoCoverage {
            camera: name.into(),
            stream: format!("thing-1.{name}"),
            terminals: terminals.iter().map(|t| t.to_string()).collect(),
            before: Duration::from_secs(10),
            after: Duration::from_secs(20),
        }
    }

    #[test]
    fn a_sale_is_linked_to_the_cameras_that_cover_its_terminal_over_the_clip_range() {
        let links = VideoLinks::new(vec![
            camera("lane1", &["till-1"]),
            camera("door", &[]),
            camera("lane2", &["till-2"]),
        ]);
        let found = links.locate("till-1", 1_000_000, 0);
        assert_eq!(
            found.iter().map(|v| v.camera.as_str()).collect::<Vec<_>>(),
            ["lane1", "door"]
        );
        assert_eq!((found[0].start_ms, found[0].end_ms), (990_000, 1_020_000));
        assert_eq!(found[0].stream, "thing-1.lane1");
        assert!(VideoLinks::none().locate("till-1", 1, 0).is_empty());
    }

    #[test]
    fn the_cameras_on_the_till_come_before_those_on_every_till() {
        let links = VideoLinks::new(vec![
            camera("door", &[]),
            camera("aisle", &[]),
            camera("lane2", &["till-2"]),
        ]);
        let found = links.locate("till-2", 1_000_000, 0);
        assert_eq!(
            found.iter().map(|v| v.camera.as_str()).collect::<Vec<_>>(),
            ["lane2", "door", "aisle"]
        );
    }

    #[test]
    fn a_sale_that_arrives_after_its_clip_began_gets_no_video() {
        let links = VideoLinks::new(vec![camera("lane1", &["till-1"])]);
        assert_eq!(links.locate("till-1", 1_000_000, 10_000).len(), 1, "within clip_before");
        assert!(
            links.locate("till-1", 1_000_000, 10_001).is_empty(),
            "stored by the terminal and sent later: the video at arrival is another moment"
        );
    }
}
