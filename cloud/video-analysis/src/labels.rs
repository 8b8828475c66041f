//! What is in a frame: Rekognition's DetectLabels (people, bags, phones, ...) with the
//! number of instances it located.
//!
//! DetectFaces is deliberately not called: analysing shoppers' faces is biometric
//! processing that a retailer must decide on (GDPR, BIPA), not a default of this stack.

use async_trait::async_trait;
use aws_sdk_rekognition::operation::detect_labels::DetectLabelsError;
use aws_sdk_rekognition::primitives::Blob;
use aws_sdk_rekognition::types::Image;

/// Rekognition takes images of at most 5 MB as bytes.
pub const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;

/// Labels below this confidence (percent) are not reported.
pub const MIN_CONFIDENCE: f32 = 70.0;

/// Labels per frame.
pub const MAX_LABELS: i32 = 10;

/// One label in one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub name: String,
    /// Percent.
    pub confidence: f32,
    /// Located instances (people in the frame, for `Person`); 0 for scene labels.
    pub instances: usize,
}

/// Why a frame has no labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelError {
    /// Rekognition will never take this frame (too large, not an image): said in the
    /// findings, the rest go on.
    Refused(String),
    /// Throttled, unreachable, not authorised: the message is retried.
    Failed(String),
}

#[async_trait]
pub trait Labeller: Send + Sync {
    async fn labels(&self, jpeg: &[u8]) -> Result<Vec<Label>, LabelError>;
}

/// Amazon Rekognition.
#[derive(Debug, Clone)]
pub struct Rekognition {
    pub client: aws_sdk_rekognition::Client,
}

#[async_trait]
impl Labeller for Rekognition {
    async fn labels(&self, jpeg: &[u8]) -> Result<Vec<Label>, LabelError> {
        if jpeg.len() > MAX_IMAGE_BYTES {
            return Err(LabelError::Refused(format!(
                "a frame of {} bytes is over Rekognition's 5 MB",
                jpeg.len()
            )));
        }
        let found = self
            .client
            .detect_labels()
            .image(Image::builder().bytes(Blob::new(jpeg)).build())
            .max_labels(MAX_LABELS)
            .min_confidence(MIN_CONFIDENCE)
            .send()
            .await
            .map_err(|e| {
                let refused = matches!(
                    e.as_service_error(),
                    Some(
                        DetectLabelsError::ImageTooLargeException(_)
                            | DetectLabelsError::InvalidImageFormatException(_)
                    )
                );
                let why = format!("DetectLabels: {}", aws_sdk_rekognition::error::DisplayErrorContext(e));
                if refused {
                    LabelError::Refused(why)
                } else {
                    LabelError::Failed(why)
                }
            })?;
        Ok(found
            .labels()
            .iter()
            .map(|l| Label {
                name: l.name().unwrap_or("?").to_string(),
                confidence: l.confidence().unwrap_or(0.0),
                instances: l.instances().len(),
            })
            .collect())
    }
}
