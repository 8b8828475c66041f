use super::*;
use crate::claims::MemoryClaims;
use crate::topic::MemoryTopic;
use tillgate_kpl::AggregateBuilder;

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
    let claims = MemoryClaims::new(60_000);
    let topic = MemoryTopic::default();
    let first = handle(&event(&[("100", agg.clone())]), &claims, &topic, 1_000).await;
    assert_eq!((first.published, first.duplicates), (5, 0));
    // The same aggregate again (a gateway re-shipped it), and as a Lambda retry.
    let again = handle(&event(&[("200", agg.clone()), ("100", agg)]), &claims, &topic, 2_000).await;
    assert_eq!((again.published, again.duplicates), (0, 10));
    assert!(again.response().batch_item_failures.is_empty());
    let subjects: Vec<String> = topic
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.subject.clone())
        .collect();
    assert_eq!(subjects.len(), 5, "{subjects:?}");
}

#[tokio::test]
async fn a_corrupted_aggregate_is_a_batch_item_failure_and_the_rest_of_the_batch_goes_on() {
    let mut bad = aggregate(&[alert(1), alert(2)]);
    let last = bad.len() - 1;
    bad[last] ^= 0xFF; // the MD5 no longer matches
    let good = aggregate(&[alert(3)]);
    let claims = MemoryClaims::new(60_000);
    let topic = MemoryTopic::default();
    let out = handle(&event(&[("1", bad), ("2", good)]), &claims, &topic, 0).await;
    assert_eq!((out.published, out.unreadable), (1, 1));
    let failures: Vec<_> = out
        .response()
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier.unwrap())
        .collect();
    assert_eq!(failures, ["1"]);
    assert!(out.metrics_line(0).contains("\"Unreadable\":1"));
}

#[tokio::test]
async fn a_failed_publish_is_retried_and_then_published_once() {
    let claims = MemoryClaims::new(60_000);
    let topic = MemoryTopic::default();
    *topic.fail_next.lock().unwrap() = 1;
    let agg = aggregate(&[alert(7)]);
    let out = handle(&event(&[("9", agg.clone())]), &claims, &topic, 0).await;
    assert_eq!(
        (out.published, out.failed, out.failed_records.clone()),
        (0, 1, vec!["9".to_string()])
    );
    // Lambda's retry: the claim was released, so it goes out now, once.
    let retry = handle(&event(&[("9", agg)]), &claims, &topic, 10).await;
    assert_eq!(retry.published, 1);
    assert_eq!(topic.published.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_claim_held_by_a_live_invocation_waits_and_a_dead_ones_is_taken_over() {
    let claims = MemoryClaims::new(60_000);
    let id = alert_id(alert(4).as_bytes());
    assert_eq!(claims.claim(&id, 0).await.unwrap(), Claim::Granted);
    let topic = MemoryTopic::default();
    let agg = aggregate(&[alert(4)]);
    let during = handle(&event(&[("5", agg.clone())]), &claims, &topic, 30_000).await;
    assert_eq!((during.held_elsewhere, during.failed_records.len()), (1, 1));
    let after = handle(&event(&[("5", agg)]), &claims, &topic, 61_000).await;
    assert_eq!(after.published, 1, "the first holder died before publishing");
}

#[tokio::test]
async fn a_plain_record_that_is_not_an_alert_is_unreadable() {
    let claims = MemoryClaims::new(1);
    let topic = MemoryTopic::default();
    let out = handle(&event(&[("3", b"hello".to_vec())]), &claims, &topic, 0).await;
    assert_eq!((out.unreadable, out.failed_records.len()), (1, 1));
}
