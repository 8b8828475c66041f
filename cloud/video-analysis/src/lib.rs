//! The chain's video analysis: an AWS Lambda function on a queue subscribed to the fraud
//! topic, for the alerts whose sale has video (the gateway names each camera's Kinesis
//! Video stream and the producer-time range around the sale; the alert handler passes
//! that on as the `video` message attribute, and the subscription's filter lets only
//! those through).
//!
//! For each such alert: a few frames of each camera spread over the range, from the
//! stream's archive ([`archive`], GetImages), labelled by Rekognition ([`labels`],
//! DetectLabels), one message to the security team's topic ([`findings`]). The queue
//! delays each message so the video can arrive; video not all there yet leaves the
//! message on the queue for another try, and after a wait the findings go out with what
//! there is and say what is missing ([`handler`]). Unreadable messages are left to the
//! queue's own dead-letter queue.
//!
//! The queue delivers at least once: a rare second delivery sends the findings twice.
//! Layout: [`request`] (the queue message), [`settings`] (environment, SDK clients).
//! Programs: `video-analysis` (packaged as the Lambda runtime's `bootstrap`) and
//! `video-from-queue` (the same handler over the queue read directly, for local runs and
//! tests).

pub mod archive;
pub mod findings;
pub mod handler;
pub mod labels;
pub mod request;
pub mod settings;
