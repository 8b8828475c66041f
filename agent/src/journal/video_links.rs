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

    /// The video of `sale`: the cameras that name its terminal first, then those that
    /// cover every terminal (the cloud looks at the first few only). An events-mode
    /// camera only for the alerts it uploads video for. A camera whose clip starts after
    /// the sale happened would show the wrong moment, so a sale that arrived later than
    /// `clip_before` gets no video from it.
    pub fn locate(&self, sale: &FlaggedSale<'_>) -> Vec<VideoLocation> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let names = |c: &&VideoCoverage| c.terminals.iter().any(|t| t == sale.terminal);
        let every = |c: &&VideoCoverage| c.terminals.is_empty();
        let named = self.cameras.iter().filter(names);
        let all = self.cameras.iter().filter(every);
        named
            .chain(all)
            .filter(|c| sale.late_ms <= ms(c.before))
            .filter(|c| {
                c.only
                    .as_ref()
                    .is_none_or(|events| events.chooses(sale.decision, sale.rules.iter().copied()))
            })
            .map(|c| VideoLocation {
                camera: c.camera.clone(),
                stream: c.stream.clone(),
                start_ms: sale.received_ms.saturating_sub(ms(c.before)),
                end_ms: sale.received_ms.saturating_add(ms(c.after)),
            })
            .collect()
    }
}

/// A sale on which a rule fired, as [`VideoLinks::locate`] needs it.
#[derive(Debug, Clone)]
pub struct FlaggedSale<'a> {
    pub terminal: &'a str,
    /// When it reached the gateway, ms since the epoch.
    pub received_ms: i64,
    /// How long after it happened it arrived (by a terminal clock that is not skewed; 0
    /// otherwise).
    pub late_ms: i64,
    /// `allow`, `review` or `block`.
    pub decision: &'a str,
    /// The rules that fired.
    pub rules: Vec<&'a str>,
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
            only: None,
        }
    }

    fn sale(terminal: &str, late_ms: i64) -> FlaggedSale<'_> {
        FlaggedSale {
            terminal,
            received_ms: 1_000_000,
            late_ms,
            decision: "review",
            rules: vec!["velocity"],
        }
    }

    #[test]
    fn a_sale_is_linked_to_the_cameras_that_cover_its_terminal_over_the_clip_range() {
        let links = VideoLinks::new(vec![
            camera("lane1", &["till-1"]),
            camera("door", &[]),
            camera("lane2", &["till-2"]),
        ]);
        let found = links.locate(&sale("till-1", 0));
        assert_eq!(
            found.iter().map(|v| v.camera.as_str()).collect::<Vec<_>>(),
            ["lane1", "door"]
        );
        assert_eq!((found[0].start_ms, found[0].end_ms), (990_000, 1_020_000));
        assert_eq!(found[0].stream, "thing-1.lane1");
        assert!(VideoLinks::none().locate(&sale("till-1", 0)).is_empty());
    }

    #[test]
    fn the_cameras_on_the_till_come_before_those_on_every_till() {
        let links = VideoLinks::new(vec![
            camera("door", &[]),
            camera("aisle", &[]),
            camera("lane2", &["till-2"]),
        ]);
        let found = links.locate(&sale("till-2", 0));
        assert_eq!(
            found.iter().map(|v| v.camera.as_str()).collect::<Vec<_>>(),
            ["lane2", "door", "aisle"]
        );
    }

    #[test]
    fn a_sale_that_arrives_after_its_clip_began_gets_no_video() {
        let links = VideoLinks::new(vec![camera("lane1", &["till-1"])]);
        assert_eq!(links.locate(&sale("till-1", 10_000)).len(), 1, "within clip_before");
        assert!(
            links.locate(&sale("till-1", 10_001)).is_empty(),
            "stored by the terminal and sent later: the video at arrival is another moment"
        );
    }

    #[test]
    fn an_events_mode_camera_has_video_only_for_the_alerts_it_uploads() {
        let mut events = camera("lane1", &["till-1"]);
        events.only = Some(tillgate_sdk::VideoEvents {
            decisions: vec!["block".into()],
            rules: vec!["refund-burst".into()],
        });
        let links = VideoLinks::new(vec![events, camera("door", &[])]);
        let cameras = |s: &FlaggedSale<'_>| links.locate(s).into_iter().map(|v| v.camera).collect::<Vec<_>>();
        assert_eq!(cameras(&sale("till-1", 0)), ["door"], "a review by another rule");
        let block = FlaggedSale {
            decision: "block",
            ..sale("till-1", 0)
        };
        assert_eq!(cameras(&block), ["lane1", "door"]);
        let named = FlaggedSale {
            decision: "allow",
            rules: vec!["other", "refund-burst"],
            ..sale("till-1", 0)
        };
        assert_eq!(cameras(&named), ["lane1", "door"], "a named rule, even in shadow mode");
    }
}
