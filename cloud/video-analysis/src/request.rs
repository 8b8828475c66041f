//! What the queue brings: the fraud topic's message for an alert whose sale has video
//! (the queue's subscription lets through only messages with a `video` attribute), as
//! SNS wraps it for SQS: a JSON envelope with the subject and the message attributes.

use serde::Deserialize;
use std::collections::HashMap;
use tillgate_alert_handler::alert::VideoLocation;

/// Cameras looked at per alert: the work of one message stays bounded whatever a
/// gateway's config says (the rest are named in the findings, not analysed).
pub const MAX_CAMERAS: usize = 3;

/// GetImages serves at most 300 s per request; a longer range is cut to its first 300 s.
pub const MAX_RANGE_MS: i64 = 300_000;

/// One alert's video to analyse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoRequest {
    /// The fraud team's subject line for the alert.
    pub alert_subject: String,
    pub txn_id: String,
    pub store_id: String,
    pub terminal_id: String,
    pub decision: String,
    /// At most [`MAX_CAMERAS`], each at most [`MAX_RANGE_MS`] long.
    pub video: Vec<VideoLocation>,
    /// Cameras beyond [`MAX_CAMERAS`].
    pub skipped_cameras: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Subject", default)]
    subject: Option<String>,
    #[serde(rename = "MessageAttributes", default)]
    attributes: HashMap<String, Attribute>,
}

#[derive(Debug, Deserialize)]
struct Attribute {
    #[serde(rename = "Value")]
    value: String,
}

/// Reads one queue message; the error says what is missing or wrong.
pub fn parse(body: &str) -> Result<VideoRequest, String> {
    let envelope: Envelope = serde_json::from_str(body).map_err(|e| format!("not an SNS notification: {e}"))?;
    if envelope.kind != "Notification" {
        return Err(format!("an SNS {:?}, not a Notification", envelope.kind));
    }
    let attribute = |name: &str| {
        envelope
            .attributes
            .get(name)
            .map(|a| a.value.clone())
            .ok_or_else(|| format!("the message has no {name:?} attribute"))
    };
    let mut video: Vec<VideoLocation> = serde_json::from_str(&attribute("video")?)
        .map_err(|e| format!("the \"video\" attribute is not a list of video locations: {e}"))?;
    if video.is_empty() {
        return Err("the \"video\" attribute lists no camera".into());
    }
    // The cameras beyond the first few are named, not analysed (nor checked).
    let skipped_cameras = video
        .split_off(video.len().min(MAX_CAMERAS))
        .into_iter()
        .map(|v| v.camera)
        .collect();
    for v in &mut video {
        if v.stream.is_empty() || v.end_ms < v.start_ms {
            return Err(format!(
                "camera {:?}: stream {:?} from {} to {} ms is not a range of a stream",
                v.camera, v.stream, v.start_ms, v.end_ms
            ));
        }
        v.end_ms = v.end_ms.min(v.start_ms.saturating_add(MAX_RANGE_MS));
    }
    Ok(VideoRequest {
        alert_subject: envelope.subject.unwrap_or_default(),
        txn_id: attribute("txn_id")?,
        store_id: attribute("store_id")?,
        terminal_id: attribute("terminal_id")?,
        decision: attribute("decision")?,
        video,
        skipped_cameras,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(video: serde_json::Value) -> String {
        let attr = |v: &str| json!({"Type": "String", "Value": v});
        json!({
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:chain-fraud-alerts",
            "Subject": "BLOCK store s-1 till t-1: stolen-card 12.00 EUR",
            "Message": "Decision: block\n...",
            "MessageAttributes": {
                "video": attr(&video.to_string()),
                "txn_id": attr("txn-7"),
                "store_id": attr("s-1"),
                "terminal_id": attr("t-1"),
                "decision": attr("block"),
            }
        })
        .to_string()
    }

    fn camera(name: &str, start_ms: i64, end_ms: i64) -> serde_json::Value {
        json!({"camera": name, "stream": format!("gw.{name}"), "start_ms": start_ms, "end_ms": end_ms})
    }

    #[test]
    fn a_fraud_topic_notification_with_video_reads() {
        let r = parse(&envelope(json!([camera("lane1", 1_000, 31_000)]))).unwrap();
        assert_eq!(
            (r.txn_id.as_str(), r.store_id.as_str(), r.decision.as_str()),
            ("txn-7", "s-1", "block")
        );
        assert_eq!(r.video[0].stream, "gw.lane1");
        assert!(r.alert_subject.starts_with("BLOCK store s-1"));
    }

    #[test]
    fn the_work_of_one_message_is_bounded() {
        let mut many: Vec<_> = (0..4).map(|i| camera(&format!("c{i}"), 0, 900_000)).collect();
        many.push(camera("c4", 10, 5)); // not analysed, so not a reason to refuse the rest
        let r = parse(&envelope(json!(many))).unwrap();
        assert_eq!(r.video.len(), MAX_CAMERAS);
        assert_eq!(r.skipped_cameras, ["c3", "c4"]);
        assert!(r.video.iter().all(|v| v.end_ms - v.start_ms == MAX_RANGE_MS));
    }

    #[test]
    fn what_is_not_an_alert_with_video_says_why() {
        assert!(parse("{}").unwrap_err().contains("not an SNS notification"));
        assert!(parse(&envelope(json!([]))).unwrap_err().contains("no camera"));
        assert!(parse(&envelope(json!([camera("x", 10, 5)])))
            .unwrap_err()
            .contains("not a range"));
        assert!(parse(&envelope(json!("lane1"))).unwrap_err().contains("not a list"));
        let unsubscribed = envelope(json!([camera("x", 0, 1)])).replace("Notification", "SubscriptionConfirmation");
        assert!(parse(&unsubscribed).unwrap_err().contains("SubscriptionConfirmation"));
    }
}
