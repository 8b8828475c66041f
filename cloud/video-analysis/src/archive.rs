//! Frames of a sale's video, from the Kinesis Video stream's archive with GetImages
//! (KVS decodes the stored fragments and returns JPEGs at producer timestamps), not from
//! image generation to S3: that writes images of every camera all day, this fetches only
//! the few around an alert.

use async_trait::async_trait;
use aws_sdk_kinesisvideo::error::ProvideErrorMetadata;
use aws_sdk_kinesisvideo::types::ApiName;
use aws_sdk_kinesisvideoarchivedmedia::primitives::DateTime;
use aws_sdk_kinesisvideoarchivedmedia::types::{Format, ImageError, ImageSelectorType};
use base64::Engine;
use tillgate_alert_handler::alert::VideoLocation;

/// GetImages' smallest sampling interval.
pub const MIN_SAMPLING_MS: i64 = 200;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Producer timestamp, ms since the epoch.
    pub at_ms: i64,
    pub jpeg: Vec<u8>,
}

/// What the archive holds of one camera's range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frames {
    pub frames: Vec<Frame>,
    /// Sampled timestamps without video (not uploaded yet, a gap, or never recorded).
    pub missing: usize,
    /// Sampled timestamps whose video KVS could not decode.
    pub undecodable: usize,
}

impl Frames {
    /// Every sampled timestamp has a frame or was undecodable: waiting longer brings nothing.
    pub fn complete(&self) -> bool {
        self.missing == 0
    }
}

/// Why no frames came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveError {
    /// KVS will not serve this camera's range however long one waits: the stream keeps
    /// no video, or refuses the name or range, or the function may not read it. Said in
    /// the findings; the other cameras go on.
    Unavailable(String),
    /// Throttled, unreachable: the message is retried.
    Failed(String),
    /// No call may start any more: the invocation's deadline is near.
    OutOfTime,
}

/// Whether another call may start (the invocation's deadline allows it).
pub type MayCall<'a> = &'a (dyn Fn() -> bool + Send + Sync);

#[async_trait]
pub trait VideoArchive: Send + Sync {
    /// Up to `count` frames evenly spread over `location`'s range; every call it makes
    /// is started only when `may_call` says so.
    async fn frames(
        &self,
        location: &VideoLocation,
        count: usize,
        may_call: MayCall<'_>,
    ) -> Result<Frames, ArchiveError>;
}

/// The sampled moments GetImages answers for: from the start every [`sampling_ms`] up to
/// the end, at most `count`.
pub fn samples(location: &VideoLocation, count: usize) -> usize {
    let span = (location.end_ms - location.start_ms).max(0);
    let n = span / sampling_ms(location, count) + 1;
    usize::try_from(n).unwrap_or(usize::MAX).min(count)
}

/// The sampling interval that spreads `count` frames over `[start, end]`, first and last
/// included.
pub fn sampling_ms(location: &VideoLocation, count: usize) -> i64 {
    let span = location.end_ms - location.start_ms;
    let gaps = i64::try_from(count.saturating_sub(1)).unwrap_or(i64::MAX).max(1);
    (span / gaps).max(MIN_SAMPLING_MS)
}

/// Kinesis Video Streams: GetDataEndpoint for GET_IMAGES, then GetImages on it.
#[derive(Debug, Clone)]
pub struct KvsArchive {
    pub control: aws_sdk_kinesisvideo::Client,
    pub sdk: aws_config::SdkConfig,
}

/// What KVS's refusals mean here: the stream not there yet is video still to come;
/// a refused name or range, missing permission or no retention are final for the
/// camera; the rest is retried.
fn refusal(what: &str, stream: &str, code: Option<&str>, detail: String) -> Result<(), ArchiveError> {
    match code {
        Some("ResourceNotFoundException") => Ok(()),
        Some("NoDataRetentionException") => Err(ArchiveError::Unavailable(format!(
            "stream {stream} keeps no video (retention 0 hours)"
        ))),
        Some(c @ ("NotAuthorizedException" | "InvalidArgumentException")) => {
            Err(ArchiveError::Unavailable(format!("{what} {stream}: {c}")))
        }
        _ => Err(ArchiveError::Failed(format!("{what} {stream}: {detail}"))),
    }
}

#[async_trait]
impl VideoArchive for KvsArchive {
    async fn frames(
        &self,
        location: &VideoLocation,
        count: usize,
        may_call: MayCall<'_>,
    ) -> Result<Frames, ArchiveError> {
        let expected = samples(location, count);
        let not_yet = Frames {
            missing: expected,
            ..Frames::default()
        };
        if !may_call() {
            return Err(ArchiveError::OutOfTime);
        }
        let endpoint = match self
            .control
            .get_data_endpoint()
            .stream_name(&location.stream)
            .api_name(ApiName::GetImages)
            .send()
            .await
        {
            Ok(found) => found
                .data_endpoint
                .ok_or_else(|| ArchiveError::Failed(format!("GetDataEndpoint {}: no endpoint", location.stream)))?,
            Err(e) => {
                let detail = aws_sdk_kinesisvideo::error::DisplayErrorContext(&e).to_string();
                refusal("GetDataEndpoint", &location.stream, e.code(), detail)?;
                // The gateway creates its stream when it first uploads.
                return Ok(not_yet);
            }
        };
        let media = aws_sdk_kinesisvideoarchivedmedia::Client::from_conf(
            aws_sdk_kinesisvideoarchivedmedia::config::Builder::from(&self.sdk)
                .endpoint_url(endpoint)
                .build(),
        );
        let mut out = Frames::default();
        let mut token: Option<String> = None;
        // Every page holds at least one image, so `expected` pages are the most there are.
        for _ in 0..expected.max(1) {
            if !may_call() {
                return Err(ArchiveError::OutOfTime);
            }
            let page = media
                .get_images()
                .stream_name(&location.stream)
                .image_selector_type(ImageSelectorType::ProducerTimestamp)
                .start_timestamp(DateTime::from_millis(location.start_ms))
                .end_timestamp(DateTime::from_millis(location.end_ms))
                .sampling_interval(i32::try_from(sampling_ms(location, count)).unwrap_or(i32::MAX))
                .format(Format::Jpeg)
                .max_results(i64::try_from(expected).unwrap_or(i64::MAX))
                .set_next_token(token.take())
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    let detail = aws_sdk_kinesisvideoarchivedmedia::error::DisplayErrorContext(&e).to_string();
                    refusal("GetImages", &location.stream, e.code(), detail)?;
                    return Ok(not_yet);
                }
            };
            for image in page.images() {
                let at_ms = image.time_stamp().map_or(0, |t| t.to_millis().unwrap_or(0));
                match (image.error(), image.image_content()) {
                    (Some(ImageError::NoMedia), _) | (None, None) => out.missing += 1,
                    (Some(_), _) => out.undecodable += 1,
                    (None, Some(content)) => match base64::engine::general_purpose::STANDARD.decode(content) {
                        Ok(jpeg) => out.frames.push(Frame { at_ms, jpeg }),
                        Err(_) => out.undecodable += 1,
                    },
                }
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() || out.frames.len() + out.missing + out.undecodable >= expected {
                break;
            }
        }
        // Moments KVS gave no entry for count as not there (yet).
        let answered = out.frames.len() + out.missing + out.undecodable;
        out.missing += expected.saturating_sub(answered);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start_ms: i64, end_ms: i64) -> VideoLocation {
        VideoLocation {
            camera: "c".into(),
            stream: "s".into(),
            start_ms,
            end_ms,
        }
    }

    #[test]
    fn frames_are_spread_over_the_range_first_and_last_included() {
        assert_eq!(sampling_ms(&range(0, 30_000), 4), 10_000);
        assert_eq!(samples(&range(0, 30_000), 4), 4);
        assert_eq!(sampling_ms(&range(0, 30_000), 1), 30_000);
        assert_eq!(samples(&range(0, 30_000), 1), 1);
        assert_eq!(
            sampling_ms(&range(0, 100), 4),
            MIN_SAMPLING_MS,
            "never below what GetImages takes"
        );
        assert_eq!(
            samples(&range(0, 100), 4),
            1,
            "a range shorter than one interval: its start"
        );
        assert_eq!(samples(&range(0, 5_000), 4), 4);
    }

    #[test]
    fn kvs_refusals_are_final_per_camera_except_a_stream_not_there_yet() {
        let r = |code: &str| refusal("GetImages", "gw.lane1", Some(code), "detail".into());
        assert_eq!(r("ResourceNotFoundException"), Ok(()));
        assert!(
            matches!(r("NoDataRetentionException"), Err(ArchiveError::Unavailable(w)) if w.contains("retention 0"))
        );
        assert!(matches!(r("NotAuthorizedException"), Err(ArchiveError::Unavailable(_))));
        assert!(matches!(
            r("InvalidArgumentException"),
            Err(ArchiveError::Unavailable(_))
        ));
        assert!(matches!(
            r("ClientLimitExceededException"),
            Err(ArchiveError::Failed(_))
        ));
        assert!(matches!(
            refusal("GetImages", "s", None, "timed out".into()),
            Err(ArchiveError::Failed(w)) if w.contains("timed out")
        ));
    }

    #[test]
    fn a_range_is_complete_when_no_sampled_moment_lacks_video() {
        let mut f = Frames::default();
        assert!(f.complete());
        f.missing = 1;
        assert!(!f.complete());
    }
}
