use super::*;
use crate::claims::MemoryClaims;
use crate::dead_letters::MemoryDeadLetters;
use crate::topic::MemoryTopic;
use std::sync::atomic::{AtomicI64, Ordering};
use tillgate_kpl::AggregateBuilder;

/// Memory sinks and a clock the test sets.
#[derive(Default)]
struct Fakes {
    claims: MemoryClaims,
    topic: MemoryTopic,
    dead: MemoryDeadLetters,
    now: AtomicI64,
}

impl Fakes {
    async fn run(&self, event: &KinesisEvent, now: i64, deadline: i64) -> Outcome {
        self.now.store(now, Ordering::SeqCst);
        let clock = || self.now.load(Ordering::SeqCst);
        let sinks = Sinks {
            claims: &self.claims,
            topic: &self.topic,
            dead_letters: &self.dead,
            clock: &clock,
        };
        handle(event, &sinks, deadline).await
    }
}

/// A deadline far away.
const LATER: i64 = i64::MAX / 2;

fn alert(n: u32) -> String {
    format!(
        r#"{{"kind":"rule_hit","txn_id":"t-{n}","store_id":"s-1","terminal_id":"pos-{n}","seq":{n},"total_minor":1000,"currency":"EUR","decision":"review","rules":[{{"id":"amount","action":"review","reason":"big"}}],"event_time":"x","raised_at":"y"}}"#
    )
}

fn aggregate(alerts: &[String]) -> Vec<u8> {
    let mut b = AggregateBuilder::new();
    for a in alerts {
        b.push("s-1/pos", bytes::Bytes::from(a.clone()));
    }
    b.finish().to_vec()
}

/// A Lambda event as the service sends it (JSON, data in base64).
fn event(records: &[(&str, Vec<u8>)]) -> KinesisEvent {
    use base64::Engine;
    let records: Vec<_> = records
        .iter()
        .map(|(seq, data)| {
            serde_json::json!({
                "eventSource": "aws:kinesis",
                "kinesis": {
                    "partitionKey": "s-1/pos",
                    "sequenceNumber": seq,
                    "data": base64::engine::general_purpose::STANDARD.encode(data),
                    "approximateArrivalTimestamp": 1764842400.0,
                    "kinesisSchemaVersion": "1.0"
                }
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
}

#[tokio::test]
async fn each_alert_of_an_aggregate_is_published_once_even_when_delivered_twice() {
    let alerts: Vec<String> = (1..=5).map(alert).collect();
    let agg = aggregate(&alerts);
    let f = Fakes::default();
    let first = f.run(&event(&[("100", agg.clone())]), 1_000, LATER).await;
    assert_eq!((first.published, first.duplicates), (5, 0));
    // The same aggregate again (a gateway re-shipped it), and as a Lambda retry.
    let again = f.run(&event(&[("200", agg.clone()), ("100", agg)]), 2_000, LATER).await;
    assert_eq!((again.published, again.duplicates), (0, 10));
    assert!(again.response().batch_item_failures.is_empty());
    assert_eq!(f.topic.published.lock().unwrap().len(), 5);
}

#[tokio::test]
async fn a_corrupted_aggregate_goes_to_the_dead_letters_with_its_bytes_and_the_shard_moves_on() {
    let mut bad = aggregate(&[alert(1), alert(2)]);
    let last = bad.len() - 1;
    bad[last] ^= 0xFF; // the MD5 no longer matches
    let good = aggregate(&[alert(3)]);
    let f = Fakes::default();
    let out = f.run(&event(&[("1", bad.clone()), ("2", good)]), 0, LATER).await;
    assert_eq!((out.published, out.unreadable), (1, 1));
    assert!(
        out.response().batch_item_failures.is_empty(),
        "never retried: it cannot get better"
    );
    let dead = f.dead.sent.lock().unwrap().clone();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].sequence_number.as_str(), &dead[0].data), ("1", &bad));
    assert!(dead[0].reason.contains("MD5"), "{}", dead[0].reason);
    assert!(out.metrics_line(0).contains("\"Unreadable\":1"));
}

#[tokio::test]
async fn near_the_deadline_the_rest_of_the_batch_is_left_for_the_next_invocation() {
    let f = Fakes::default();
    let batch = event(&[("1", aggregate(&[alert(1)])), ("2", aggregate(&[alert(2)]))]);
    let out = f.run(&batch, 100_000, 100_000 + DEADLINE_MARGIN_MS).await;
    assert_eq!((out.published, out.out_of_time), (0, 2));
    assert_eq!(out.failed_records, ["1", "2"]);
    let next = f.run(&batch, 200_000, LATER).await;
    assert_eq!(next.published, 2);
}

#[tokio::test]
async fn a_failed_publish_is_retried_and_then_published_once() {
    let f = Fakes::default();
    *f.topic.fail_next.lock().unwrap() = 1;
    let agg = aggregate(&[alert(7)]);
    let out = f.run(&event(&[("9", agg.clone())]), 0, LATER).await;
    assert_eq!(
        (out.published, out.failed, out.failed_records.clone()),
        (0, 1, vec!["9".to_string()])
    );
    // Lambda's retry: the claim was released, so it goes out now, once.
    let retry = f.run(&event(&[("9", agg)]), 10, LATER).await;
    assert_eq!(retry.published, 1);
    assert_eq!(f.topic.published.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_claim_holds_until_its_invocations_deadline_then_is_taken_over() {
    let f = Fakes::default();
    let id = alert_id(alert(4).as_bytes());
    // An invocation claimed it, with its deadline at 60 s, and died.
    assert_eq!(f.claims.claim(&id, 0, 60_000).await.unwrap(), Claim::Granted);
    let agg = aggregate(&[alert(4)]);
    let during = f.run(&event(&[("5", agg.clone())]), 30_000, LATER).await;
    assert_eq!((during.held_elsewhere, during.failed_records.len()), (1, 1));
    let after = f
        .run(&event(&[("5", agg)]), 60_000 + crate::claims::CLOCK_ALLOWANCE_MS, LATER)
        .await;
    assert_eq!(after.published, 1, "the first holder died before publishing");
}

#[tokio::test]
async fn a_plain_record_that_is_not_an_alert_is_a_dead_letter() {
    let f = Fakes::default();
    let out = f.run(&event(&[("3", b"hello".to_vec())]), 0, LATER).await;
    assert_eq!((out.unreadable, out.failed_records.len()), (1, 0));
    assert_eq!(f.dead.sent.lock().unwrap()[0].data, b"hello");
}

#[tokio::test]
async fn after_a_record_that_must_be_retried_the_rest_of_the_batch_is_left_untouched() {
    let f = Fakes::default();
    *f.topic.fail_next.lock().unwrap() = 1;
    let batch = event(&[
        ("1", aggregate(&[alert(1), alert(2)])),
        ("2", b"not an alert".to_vec()),
        ("3", aggregate(&[alert(3)])),
    ]);
    let out = f.run(&batch, 0, LATER).await;
    assert_eq!(out.failed_records, ["1", "2", "3"]);
    assert_eq!(
        (out.published, out.unreadable),
        (0, 0),
        "nothing after the failure is touched"
    );
    assert!(
        f.dead.sent.lock().unwrap().is_empty(),
        "no dead letter sent twice on retries"
    );
    assert!(out.metrics_line(0).contains("\"OutOfTime\":0"));
    let retry = f.run(&batch, 1, LATER).await;
    assert_eq!(
        (retry.published, retry.unreadable, retry.failed_records.len()),
        (3, 1, 0)
    );
}
