//! What the security team reads: one SNS message per alert with video — for each
//! camera, what Rekognition saw in each frame around the sale, or why there is no video.

use crate::labels::{Label, MIN_CONFIDENCE};
use crate::request::VideoRequest;
use std::collections::BTreeMap;
use std::fmt::Write;
use tillgate_alert_handler::alert::VideoLocation;
use tillgate_alert_handler::message::{subject_line, utc, Message};

/// One analysed frame.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenFrame {
    pub at_ms: i64,
    pub labels: Vec<Label>,
}

/// What came of one camera.
#[derive(Debug, Clone, PartialEq)]
pub enum CameraResult {
    Seen {
        frames: Vec<SeenFrame>,
        /// Sampled moments without video, that KVS could not decode, that Rekognition refused.
        missing: usize,
        undecodable: usize,
        refused: usize,
    },
    /// The stream keeps no video, or none came in the time the function waits.
    NoVideo(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CameraFindings {
    pub location: VideoLocation,
    pub result: CameraResult,
}

/// Per label: in how many frames, and most instances in one.
fn tally(frames: &[SeenFrame]) -> BTreeMap<&str, (usize, usize)> {
    let mut seen: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for f in frames {
        for l in &f.labels {
            let e = seen.entry(&l.name).or_default();
            e.0 += 1;
            e.1 = e.1.max(l.instances);
        }
    }
    seen
}

fn label_text(l: &Label) -> String {
    if l.instances > 1 {
        format!("{} x{} ({:.0}%)", l.name, l.instances, l.confidence)
    } else {
        format!("{} ({:.0}%)", l.name, l.confidence)
    }
}

/// The message for `request` and what each camera gave.
pub fn render(request: &VideoRequest, cameras: &[CameraFindings]) -> Message {
    let mut body = String::new();
    let _ = writeln!(body, "Video of the fraud alert \"{}\".", request.alert_subject);
    let _ = writeln!(
        body,
        "Transaction {} at store {}, terminal {} (decision {}).",
        request.txn_id, request.store_id, request.terminal_id, request.decision
    );
    let mut all_frames: Vec<SeenFrame> = Vec::new();
    for c in cameras {
        let v = &c.location;
        let _ = write!(
            body,
            "\nCamera {} (Kinesis Video stream {}), {} to {}: ",
            v.camera,
            v.stream,
            utc(v.start_ms),
            utc(v.end_ms)
        );
        match &c.result {
            CameraResult::NoVideo(why) => {
                let _ = writeln!(body, "no video ({why}).");
            }
            CameraResult::Seen {
                frames,
                missing,
                undecodable,
                refused,
            } => {
                let _ = writeln!(body, "{} frames.", frames.len());
                for f in frames {
                    let labels: Vec<String> = f.labels.iter().map(label_text).collect();
                    let text = if labels.is_empty() {
                        format!("nothing above {MIN_CONFIDENCE:.0}% confidence")
                    } else {
                        labels.join(", ")
                    };
                    let _ = writeln!(body, "  {}  {text}", utc(f.at_ms));
                }
                if missing + undecodable + refused > 0 {
                    let _ = writeln!(
                        body,
                        "  Sampled moments without video: {missing}; not decodable: {undecodable}; refused by Rekognition: {refused}."
                    );
                }
                let summary: Vec<String> = tally(frames)
                    .iter()
                    .map(|(name, (n, most))| {
                        let at_once = if *most > 1 {
                            format!(", at most {most} at once")
                        } else {
                            String::new()
                        };
                        format!("{name} in {n} of {}{at_once}", frames.len())
                    })
                    .collect();
                if !summary.is_empty() {
                    let _ = writeln!(body, "  Seen: {}.", summary.join("; "));
                }
                all_frames.extend(frames.iter().cloned());
            }
        }
    }
    if !request.skipped_cameras.is_empty() {
        let _ = writeln!(
            body,
            "\nNot analysed (over {} cameras per alert): {}",
            crate::request::MAX_CAMERAS,
            request.skipped_cameras.join(", ")
        );
    }
    let seen = tally(&all_frames);
    // Most frequent labels first, for the subject.
    let mut by_count: Vec<(&str, (usize, usize))> = seen.iter().map(|(k, v)| (*k, *v)).collect();
    by_count.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
    let any_video = cameras.iter().any(|c| matches!(c.result, CameraResult::Seen { .. }));
    let headline = if !any_video {
        "no video".to_string()
    } else if all_frames.is_empty() {
        "no frame analysed".to_string()
    } else if by_count.is_empty() {
        "nothing recognised".to_string()
    } else {
        by_count
            .iter()
            .map(|(name, (_, most))| {
                if *most > 1 {
                    format!("{name} x{most}")
                } else {
                    name.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let subject = format!(
        "VIDEO store {} till {}: {headline}",
        request.store_id, request.terminal_id
    );
    let mut attributes = BTreeMap::from([
        ("kind", "video_findings".to_string()),
        ("store_id", request.store_id.clone()),
        ("terminal_id", request.terminal_id.clone()),
        ("txn_id", request.txn_id.clone()),
        ("decision", request.decision.clone()),
        ("video", if any_video { "seen" } else { "none" }.to_string()),
    ]);
    if let Some((_, most)) = seen.get("Person") {
        attributes.insert("people", most.max(&1).to_string());
    }
    Message {
        subject: subject_line(&subject),
        body,
        attributes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> VideoRequest {
        VideoRequest {
            alert_subject: "BLOCK store s-1 till t-1: stolen-card 12.00 EUR".into(),
            txn_id: "txn-7".into(),
            store_id: "s-1".into(),
            terminal_id: "t-1".into(),
            decision: "block".into(),
            video: vec![],
            skipped_cameras: vec![],
        }
    }

    fn location(camera: &str) -> VideoLocation {
        VideoLocation {
            camera: camera.into(),
            stream: format!("gw.{camera}"),
            start_ms: 1_796_380_790_000,
            end_ms: 1_796_380_820_000,
        }
    }

    fn label(name: &str, instances: usize) -> Label {
        Label {
            name: name.into(),
            confidence: 97.4,
            instances,
        }
    }

    #[test]
    fn each_frame_is_listed_and_the_subject_names_what_was_seen_most() {
        let frames = vec![
            SeenFrame {
                at_ms: 1_796_380_790_000,
                labels: vec![label("Person", 2), label("Handbag", 1)],
            },
            SeenFrame {
                at_ms: 1_796_380_800_000,
                labels: vec![label("Person", 1)],
            },
            SeenFrame {
                at_ms: 1_796_380_810_000,
                labels: vec![],
            },
        ];
        let m = render(
            &request(),
            &[CameraFindings {
                location: location("lane1"),
                result: CameraResult::Seen {
                    frames,
                    missing: 1,
                    undecodable: 0,
                    refused: 0,
                },
            }],
        );
        assert_eq!(m.subject, "VIDEO store s-1 till t-1: Person x2, Handbag");
        for needle in [
            "Video of the fraud alert \"BLOCK store s-1 till t-1: stolen-card 12.00 EUR\"",
            "Transaction txn-7 at store s-1, terminal t-1 (decision block)",
            "Camera lane1 (Kinesis Video stream gw.lane1), 2026-12-04T10:39:50.000Z to 2026-12-04T10:40:20.000Z: 3 frames",
            "2026-12-04T10:39:50.000Z  Person x2 (97%), Handbag (97%)",
            "2026-12-04T10:40:10.000Z  nothing above 70% confidence",
            "Sampled moments without video: 1",
            "Seen: Handbag in 1 of 3; Person in 2 of 3, at most 2 at once.",
        ] {
            assert!(m.body.contains(needle), "{needle} in\n{}", m.body);
        }
        assert_eq!(m.attributes["people"], "2");
        assert_eq!(m.attributes["video"], "seen");
    }

    #[test]
    fn a_camera_without_video_says_why_and_so_does_the_subject() {
        let mut r = request();
        r.skipped_cameras = vec!["c4".into()];
        let m = render(
            &r,
            &[CameraFindings {
                location: location("door"),
                result: CameraResult::NoVideo("none arrived within 1h".into()),
            }],
        );
        assert_eq!(m.subject, "VIDEO store s-1 till t-1: no video");
        assert!(m.body.contains("no video (none arrived within 1h)"), "{}", m.body);
        assert!(
            m.body.contains("Not analysed (over 3 cameras per alert): c4"),
            "{}",
            m.body
        );
        assert_eq!(m.attributes["video"], "none");
        assert!(!m.attributes.contains_key("people"));
    }
}
