//! One batch of queue messages: for each alert with video, the frames of every camera
//! (all of them there, or the wait given up), their labels, one message to the security
//! topic. A message whose video is not all in the archive yet is left on the queue and
//! comes back after the queue's visibility timeout; after `wait_for_video` the findings
//! go out with what there is, and say what is missing.

use crate::archive::{ArchiveError, Frames, VideoArchive};
use crate::findings::{render, CameraFindings, CameraResult, SeenFrame};
use crate::labels::{LabelError, Labeller};
use crate::request::{parse, VideoRequest};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use serde_json::json;
use std::time::Duration;
use tillgate_alert_handler::topic::Topic;

/// No call starts later than this before the invocation's deadline: each SDK call is
/// bounded by settings::OPERATION_TIMEOUT (20 s), plus slack. Every call checks it
/// (each GetImages page too).
pub const CALL_MARGIN_MS: i64 = 22_000;

/// What the handler calls out to.
pub struct Parts<'a> {
    pub archive: &'a dyn VideoArchive,
    pub labeller: &'a dyn Labeller,
    pub topic: &'a dyn Topic,
    /// Milliseconds since the epoch.
    pub clock: &'a (dyn Fn() -> i64 + Sync),
    /// How long after the alert the video may still arrive (a gateway offline backfills).
    pub wait_for_video: Duration,
    pub frames_per_camera: usize,
}

impl std::fmt::Debug for Parts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("wait_for_video", &self.wait_for_video)
            .field("frames_per_camera", &self.frames_per_camera)
            .finish_non_exhaustive()
    }
}

/// What a batch came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Findings published with at least one frame.
    pub analysed: u64,
    /// Findings published saying there is no video.
    pub no_video: u64,
    /// Left on the queue: video not all in the archive yet.
    pub waiting: u64,
    /// Not an alert with video: left on the queue, which moves it to its dead-letter
    /// queue after its receive count.
    pub unreadable: u64,
    /// KVS, Rekognition or SNS failed: retried.
    pub failed: u64,
    /// Left for the retry: the invocation's deadline came near.
    pub out_of_time: u64,
    /// Message ids to report as batch item failures.
    pub failed_messages: Vec<String>,
}

impl Outcome {
    /// The answer Lambda reads (`ReportBatchItemFailures`): these stay on the queue.
    pub fn response(&self) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        response.set_failures(self.failed_messages.iter().cloned());
        response
    }

    /// The counts as one CloudWatch embedded-metric-format log line (namespace
    /// `tillgate/video`).
    pub fn metrics_line(&self, now_ms: i64) -> String {
        let counts = [
            ("Analysed", self.analysed),
            ("NoVideo", self.no_video),
            ("Waiting", self.waiting),
            ("Unreadable", self.unreadable),
            ("Failed", self.failed),
            ("OutOfTime", self.out_of_time),
        ];
        let mut line = json!({
            "_aws": {
                "Timestamp": now_ms,
                "CloudWatchMetrics": [{
                    "Namespace": "tillgate/video",
                    "Dimensions": [[]],
                    "Metrics": counts.iter().map(|(n, _)| json!({"Name": n, "Unit": "Count"})).collect::<Vec<_>>(),
                }],
            },
        });
        for (name, value) in counts {
            line[name] = json!(value);
        }
        line.to_string()
    }

    /// As JSON (the local runner's summary).
    pub fn summary(&self) -> serde_json::Value {
        json!({
            "analysed": self.analysed,
            "no_video": self.no_video,
            "waiting": self.waiting,
            "unreadable": self.unreadable,
            "failed": self.failed,
            "out_of_time": self.out_of_time,
            "failed_messages": self.failed_messages,
        })
    }
}

/// Why a message stays on the queue.
#[derive(Debug)]
enum Retry {
    Waiting,
    Unreadable(String),
    Failed(String),
    OutOfTime,
}

/// Handles `event` before `deadline_ms`.
pub async fn handle(event: &SqsEvent, parts: &Parts<'_>, deadline_ms: i64) -> Outcome {
    let mut out = Outcome::default();
    for message in &event.records {
        let id = message.message_id.clone().unwrap_or_default();
        match analyse(message, parts, deadline_ms).await {
            Ok(true) => out.analysed += 1,
            Ok(false) => out.no_video += 1,
            Err(retry) => {
                match &retry {
                    Retry::Waiting => out.waiting += 1,
                    Retry::Unreadable(why) => {
                        tracing::error!(message = %id, error = %why, "not an alert with video");
                        out.unreadable += 1;
                    }
                    Retry::Failed(why) => {
                        tracing::warn!(message = %id, error = %why, "video analysis failed; retried");
                        out.failed += 1;
                    }
                    Retry::OutOfTime => out.out_of_time += 1,
                }
                out.failed_messages.push(id);
            }
        }
    }
    out
}

/// One message: `Ok(true)` when findings with frames went out, `Ok(false)` when they
/// say there is no video.
async fn analyse(message: &SqsMessage, parts: &Parts<'_>, deadline_ms: i64) -> Result<bool, Retry> {
    let may_call = || (parts.clock)() + CALL_MARGIN_MS <= deadline_ms;
    let call = || if may_call() { Ok(()) } else { Err(Retry::OutOfTime) };
    let request = parse(message.body.as_deref().unwrap_or_default()).map_err(Retry::Unreadable)?;
    let sent_ms = message
        .attributes
        .get("SentTimestamp")
        .and_then(|t| t.parse::<i64>().ok())
        .unwrap_or_else(|| (parts.clock)());
    let waited_enough = (parts.clock)() - sent_ms >= parts.wait_for_video.as_millis() as i64;
    let mut fetched = Vec::new();
    for location in &request.video {
        let frames = match parts.archive.frames(location, parts.frames_per_camera, &may_call).await {
            Ok(frames) => Ok(frames),
            Err(ArchiveError::Unavailable(why)) => Err(why),
            Err(ArchiveError::Failed(why)) => return Err(Retry::Failed(why)),
            Err(ArchiveError::OutOfTime) => return Err(Retry::OutOfTime),
        };
        if matches!(&frames, Ok(f) if !f.complete()) && !waited_enough {
            return Err(Retry::Waiting);
        }
        fetched.push(frames);
    }
    let mut cameras = Vec::new();
    for (location, frames) in request.video.iter().zip(fetched) {
        let result = match frames {
            Err(why) => CameraResult::NoVideo(why),
            Ok(f) if f.frames.is_empty() && f.missing == 0 => CameraResult::NoVideo(format!(
                "KVS could not decode the video at any of the {} sampled moments",
                f.undecodable
            )),
            Ok(f) if f.frames.is_empty() => CameraResult::NoVideo(format!(
                "none arrived within {} of the alert",
                humantime::format_duration(parts.wait_for_video)
            )),
            Ok(f) => label(f, parts, &call).await?,
        };
        cameras.push(CameraFindings {
            location: location.clone(),
            result,
        });
    }
    call()?;
    let message = render(&request, &cameras);
    parts.topic.publish(&message).await.map_err(Retry::Failed)?;
    log_published(&request, &message.subject);
    Ok(cameras.iter().any(|c| matches!(c.result, CameraResult::Seen { .. })))
}

/// Rekognition's labels for each frame of one camera.
async fn label(f: Frames, parts: &Parts<'_>, call: &impl Fn() -> Result<(), Retry>) -> Result<CameraResult, Retry> {
    let mut frames = Vec::new();
    let mut refused = 0;
    for frame in f.frames {
        call()?;
        match parts.labeller.labels(&frame.jpeg).await {
            Ok(labels) => frames.push(SeenFrame {
                at_ms: frame.at_ms,
                labels,
            }),
            Err(LabelError::Refused(why)) => {
                tracing::warn!(error = %why, "a frame Rekognition will not take");
                refused += 1;
            }
            Err(LabelError::Failed(why)) => return Err(Retry::Failed(why)),
        }
    }
    Ok(CameraResult::Seen {
        frames,
        missing: f.missing,
        undecodable: f.undecodable,
        refused,
    })
}

fn log_published(request: &VideoRequest, subject: &str) {
    tracing::info!(txn = %request.txn_id, store = %request.store_id, subject, "video findings published");
}

#[cfg(test)]
mod tests;
