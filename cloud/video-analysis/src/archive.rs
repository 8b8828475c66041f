//! Frames of a sale's video, from the Kinesis Video stream's archive with GetImages
//! (KVS decodes the stored fragments and returns JPEGs at producer timestamps), not from
//! image generation to S3: that writes images of every camera all day, this fetches only
//! the few around an alert.

use async_trait::async_trait;
use aws_sdk_kinesisvideo::types::ApiName;
use aws_sdk_kinesisvideoarchivedmedia::operation::get_images::GetImagesError;
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
    /// The stream keeps no video (retention 0): no wait helps; said in the findings.
    NotKept(String),
    /// Throttled, unreachable, not authorised: the message is retried.
    Failed(String),
}

#[async_trait]
pub trait VideoArchive: Send + Sync {
    /// Up to `count` frames evenly spread over `location`'s range.
    async fn frames(&self, location: &VideoLocation, count: usize) -> Result<Frames, ArchiveError>;
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

#[async_trait]
impl VideoArchive for KvsArchive {
    async fn frames(&self, location: &VideoLocation, count: usize) -> Result<Frames, ArchiveError> {
        let endpoint = self
            .control
            .get_data_endpoint()
            .stream_name(&location.stream)
            .api_name(ApiName::GetImages)
            .send()
            .await
            .map_err(|e| {
                ArchiveError::Failed(format!(
                    "GetDataEndpoint {}: {}",
                    location.stream,
                    aws_sdk_kinesisvideo::error::DisplayErrorContext(e)
                ))
            })?
            .data_endpoint
            .ok_or_else(|| ArchiveError::Failed(format!("GetDataEndpoint {}: no endpoint", location.stream)))?;
        let media = aws_sdk_kinesisvideoarchivedmedia::Client::from_conf(
            aws_sdk_kinesisvideoarchivedmedia::config::Builder::from(&self.sdk)
                .endpoint_url(endpoint)
                .build(),
        );
        let mut out = Frames::default();
        let mut token: Option<String> = None;
        loop {
            let page = media
                .get_images()
                .stream_name(&location.stream)
                .image_selector_type(ImageSelectorType::ProducerTimestamp)
                .start_timestamp(DateTime::from_millis(location.start_ms))
                .end_timestamp(DateTime::from_millis(location.end_ms))
                .sampling_interval(i32::try_from(sampling_ms(location, count)).unwrap_or(i32::MAX))
                .format(Format::Jpeg)
                .max_results(i64::try_from(count).unwrap_or(i64::MAX))
                .set_next_token(token.take())
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                // No fragment of the stream yet (the gateway has not created or filled it).
                Err(e) if matches!(e.as_service_error(), Some(GetImagesError::ResourceNotFoundException(_))) => {
                    out.missing = count.max(1);
                    return Ok(out);
                }
                Err(e) if matches!(e.as_service_error(), Some(GetImagesError::NoDataRetentionException(_))) => {
                    return Err(ArchiveError::NotKept(format!(
                        "stream {} keeps no video (retention 0 hours)",
                        location.stream
                    )));
                }
                Err(e) => {
                    return Err(ArchiveError::Failed(format!(
                        "GetImages {}: {}",
                        location.stream,
                        aws_sdk_kinesisvideoarchivedmedia::error::DisplayErrorContext(e)
                    )))
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
            if token.is_none() || out.frames.len() + out.missing + out.undecodable >= count {
                return Ok(out);
            }
        }
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
        assert_eq!(sampling_ms(&range(0, 30_000), 1), 30_000);
        assert_eq!(
            sampling_ms(&range(0, 100), 4),
            MIN_SAMPLING_MS,
            "never below what GetImages takes"
        );
    }

    #[test]
    fn a_range_is_complete_when_no_sampled_moment_lacks_video() {
        let mut f = Frames::default();
        assert!(f.complete());
        f.missing = 1;
        assert!(!f.complete());
    }
}
