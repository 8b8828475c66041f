use super::*;
use crate::archive::Frame;
use crate::labels::Label;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use tillgate_alert_handler::alert::VideoLocation;
use tillgate_alert_handler::topic::MemoryTopic;

const SENT_MS: i64 = 1_796_380_900_000;

/// An archive answering from a table by stream name.
#[derive(Default)]
struct Archive {
    by_stream: HashMap<String, Result<Frames, ArchiveError>>,
    calls: Mutex<u32>,
}

#[async_trait]
impl VideoArchive for Archive {
    async fn frames(
        &self,
        location: &VideoLocation,
        count: usize,
        may_call: crate::archive::MayCall<'_>,
    ) -> Result<Frames, ArchiveError> {
        if !may_call() {
            return Err(ArchiveError::OutOfTime);
        }
        *self.calls.lock().unwrap() += 1;
        let mut found = self
            .by_stream
            .get(&location.stream)
            .cloned()
            .unwrap_or(Ok(Frames::default()));
        if let Ok(f) = &mut found {
            f.frames.truncate(count);
        }
        found
    }
}

/// Labels every frame the same, or fails.
struct Labels(Result<Vec<Label>, LabelError>);

#[async_trait]
impl Labeller for Labels {
    async fn labels(&self, _jpeg: &[u8]) -> Result<Vec<Label>, LabelError> {
        self.0.clone()
    }
}

fn person() -> Labels {
    Labels(Ok(vec![Label {
        name: "Person".into(),
        confidence: 99.0,
        instances: 1,
    }]))
}

fn frames(n: usize, missing: usize) -> Frames {
    Frames {
        frames: (0..n)
            .map(|i| Frame {
                at_ms: SENT_MS - 60_000 + i as i64 * 10_000,
                jpeg: vec![0xFF, 0xD8, 0xFF],
            })
            .collect(),
        missing,
        undecodable: 0,
    }
}

fn message(id: &str, cameras: &[&str]) -> SqsMessage {
    let video: Vec<_> = cameras
        .iter()
        .map(|c| json!({"camera": c, "stream": format!("gw.{c}"), "start_ms": SENT_MS - 60_000, "end_ms": SENT_MS - 30_000}))
        .collect();
    let attr = |v: &str| json!({"Type": "String", "Value": v});
    let body = json!({
        "Type": "Notification",
        "Subject": "REVIEW store s-1 till t-1: high-amount-sale 2500.00 USD",
        "MessageAttributes": {
            "video": attr(&serde_json::to_string(&video).unwrap()),
            "txn_id": attr(id), "store_id": attr("s-1"), "terminal_id": attr("t-1"), "decision": attr("review"),
        }
    });
    serde_json::from_value(json!({
        "messageId": id,
        "body": body.to_string(),
        "attributes": {"SentTimestamp": SENT_MS.to_string()},
    }))
    .unwrap()
}

fn event(messages: Vec<SqsMessage>) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = messages;
    e
}

async fn run(archive: &Archive, labels: &Labels, topic: &MemoryTopic, now_ms: i64, e: &SqsEvent) -> Outcome {
    let clock = move || now_ms;
    let parts = Parts {
        archive,
        labeller: labels,
        topic,
        clock: &clock,
        wait_for_video: Duration::from_secs(3600),
        frames_per_camera: 4,
    };
    handle(e, &parts, now_ms + 120_000).await
}

fn archive(entries: Vec<(&str, Result<Frames, ArchiveError>)>) -> Archive {
    Archive {
        by_stream: entries.into_iter().map(|(s, f)| (s.to_string(), f)).collect(),
        ..Archive::default()
    }
}

#[tokio::test]
async fn an_alert_whose_video_is_all_there_gets_one_message_with_each_frames_labels() {
    let a = archive(vec![("gw.lane1", Ok(frames(4, 0))), ("gw.door", Ok(frames(4, 0)))]);
    let topic = MemoryTopic::default();
    let out = run(
        &a,
        &person(),
        &topic,
        SENT_MS + 1_000,
        &event(vec![message("m-1", &["lane1", "door"])]),
    )
    .await;
    assert_eq!((out.analysed, out.failed_messages.len()), (1, 0), "{out:?}");
    let published = topic.published.lock().unwrap();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].subject, "VIDEO store s-1 till t-1: Person");
    assert!(
        published[0].body.contains("Camera door (Kinesis Video stream gw.door)"),
        "{}",
        published[0].body
    );
    assert!(
        published[0].body.contains("Seen: Person in 4 of 4."),
        "{}",
        published[0].body
    );
}

#[tokio::test]
async fn video_still_on_its_way_keeps_the_message_until_the_wait_is_over() {
    let a = archive(vec![("gw.lane1", Ok(frames(2, 2)))]);
    let topic = MemoryTopic::default();
    let e = event(vec![message("m-1", &["lane1"])]);
    let out = run(&a, &person(), &topic, SENT_MS + 60_000, &e).await;
    assert_eq!((out.waiting, out.failed_messages.clone()), (1, vec!["m-1".to_string()]));
    assert!(
        topic.published.lock().unwrap().is_empty(),
        "no Rekognition call, no message yet"
    );

    let out = run(&a, &person(), &topic, SENT_MS + 3_600_000, &e).await;
    assert_eq!(out.analysed, 1, "{out:?}");
    let body = topic.published.lock().unwrap()[0].body.clone();
    assert!(body.contains("Sampled moments without video: 2"), "{body}");
}

#[tokio::test]
async fn no_video_after_the_wait_is_said_not_swallowed() {
    let a = archive(vec![
        ("gw.lane1", Ok(frames(0, 4))),
        (
            "gw.door",
            Err(ArchiveError::Unavailable("stream gw.door keeps no video".into())),
        ),
    ]);
    let topic = MemoryTopic::default();
    let out = run(
        &a,
        &person(),
        &topic,
        SENT_MS + 3_600_000,
        &event(vec![message("m-1", &["lane1", "door"])]),
    )
    .await;
    assert_eq!(out.no_video, 1, "{out:?}");
    let m = topic.published.lock().unwrap()[0].clone();
    assert_eq!(m.subject, "VIDEO store s-1 till t-1: no video");
    assert!(
        m.body.contains("no video (none arrived within 1h of the alert)"),
        "{}",
        m.body
    );
    assert!(
        m.body.contains("no video (stream gw.door keeps no video)"),
        "{}",
        m.body
    );
}

#[tokio::test]
async fn failures_of_kvs_rekognition_or_sns_leave_the_message_for_a_retry_and_publish_nothing() {
    let e = event(vec![message("m-1", &["lane1"])]);
    let down = archive(vec![("gw.lane1", Err(ArchiveError::Failed("throttled".into())))]);
    let topic = MemoryTopic::default();
    let out = run(&down, &person(), &topic, SENT_MS, &e).await;
    assert_eq!((out.failed, out.failed_messages.len()), (1, 1));

    let up = archive(vec![("gw.lane1", Ok(frames(4, 0)))]);
    let throttled = Labels(Err(LabelError::Failed("ThrottlingException".into())));
    let out = run(&up, &throttled, &topic, SENT_MS, &e).await;
    assert_eq!(out.failed, 1);
    assert!(topic.published.lock().unwrap().is_empty());

    *topic.fail_next.lock().unwrap() = 1;
    let out = run(&up, &person(), &topic, SENT_MS, &e).await;
    assert_eq!(out.failed, 1);
    let out = run(&up, &person(), &topic, SENT_MS, &e).await;
    assert_eq!(out.analysed, 1, "the retry goes through");
}

#[tokio::test]
async fn a_frame_rekognition_refuses_is_counted_and_the_rest_go_out() {
    let a = archive(vec![("gw.lane1", Ok(frames(4, 0)))]);
    let refused = Labels(Err(LabelError::Refused("over 5 MB".into())));
    let topic = MemoryTopic::default();
    let out = run(&a, &refused, &topic, SENT_MS, &event(vec![message("m-1", &["lane1"])])).await;
    assert_eq!(out.analysed, 1);
    let m = topic.published.lock().unwrap()[0].clone();
    assert!(m.body.contains("refused by Rekognition: 4"), "{}", m.body);
    assert_eq!(
        m.subject, "VIDEO store s-1 till t-1: no frame analysed",
        "there was video"
    );
}

#[tokio::test]
async fn video_kvs_cannot_decode_is_said_as_such_at_once() {
    let a = archive(vec![(
        "gw.lane1",
        Ok(Frames {
            frames: vec![],
            missing: 0,
            undecodable: 4,
        }),
    )]);
    let topic = MemoryTopic::default();
    let out = run(&a, &person(), &topic, SENT_MS, &event(vec![message("m-1", &["lane1"])])).await;
    assert_eq!(out.no_video, 1, "{out:?}");
    let body = topic.published.lock().unwrap()[0].body.clone();
    assert!(
        body.contains("KVS could not decode the video at any of the 4 sampled moments"),
        "{body}"
    );
}

#[tokio::test]
async fn an_unreadable_message_is_left_for_the_queues_dead_letter_queue() {
    let a = archive(vec![]);
    let topic = MemoryTopic::default();
    let mut bad = message("m-9", &["lane1"]);
    bad.body = Some("{\"Type\":\"Notification\"}".into());
    let out = run(
        &a,
        &person(),
        &topic,
        SENT_MS,
        &event(vec![bad, message("m-2", &["lane1"])]),
    )
    .await;
    assert_eq!((out.unreadable, out.failed_messages[0].as_str()), (1, "m-9"));
    assert_eq!(*a.calls.lock().unwrap(), 1, "the next message is still handled");
}

#[tokio::test]
async fn no_call_starts_when_the_deadline_is_near() {
    let a = archive(vec![("gw.lane1", Ok(frames(4, 0)))]);
    let topic = MemoryTopic::default();
    let clock = || SENT_MS;
    let labels = person();
    let parts = Parts {
        archive: &a,
        labeller: &labels,
        topic: &topic,
        clock: &clock,
        wait_for_video: Duration::from_secs(3600),
        frames_per_camera: 4,
    };
    let out = handle(
        &event(vec![message("m-1", &["lane1"])]),
        &parts,
        SENT_MS + CALL_MARGIN_MS - 1,
    )
    .await;
    assert_eq!((out.out_of_time, out.failed_messages.len()), (1, 1));
    assert_eq!(*a.calls.lock().unwrap(), 0);
    assert!(topic.published.lock().unwrap().is_empty());
}
