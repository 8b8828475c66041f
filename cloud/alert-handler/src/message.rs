//! What a person on the fraud team reads: one SNS message per alert.

use crate::alert::{Alert, ReportAlert, RuleHitAlert, VideoLocation};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

/// SNS subjects are at most 100 ASCII characters, without line breaks.
pub const SUBJECT_MAX: usize = 100;

/// One SNS message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub subject: String,
    pub body: String,
    /// Message attributes, for subscription filter policies (e.g. only `block`, or one
    /// store's alerts to its manager).
    pub attributes: BTreeMap<&'static str, String>,
}

/// The message for `alert`.
pub fn render(alert: &Alert) -> Message {
    match alert {
        Alert::RuleHit(a) => rule_hit(a),
        Alert::ReportWindow(r) => report(r),
    }
}

fn rule_hit(a: &RuleHitAlert) -> Message {
    let amount = a
        .total_minor
        .map(|minor| amount(minor, a.currency.as_deref().unwrap_or("")))
        .unwrap_or_else(|| "amount not sent by this gateway".into());
    let rules: Vec<&str> = a.rules.iter().map(|r| r.id.as_str()).collect();
    let subject = format!(
        "{} store {} till {}: {} {}",
        a.decision.to_uppercase(),
        a.store_id,
        a.terminal_id,
        rules.join(", "),
        amount
    );
    let mut body = String::new();
    let _ = writeln!(
        body,
        "Decision: {}{}",
        a.decision,
        a.severity
            .as_ref()
            .map(|s| format!(" (severity {s})"))
            .unwrap_or_default()
    );
    let _ = writeln!(body, "Store: {}", a.store_id);
    let _ = writeln!(body, "Terminal: {}", a.terminal_id);
    let _ = writeln!(body, "Amount: {amount}");
    let _ = writeln!(body, "Transaction: {} (gateway journal sequence {})", a.txn_id, a.seq);
    let _ = writeln!(body, "At: {} (decided {})", a.event_time, a.raised_at);
    let _ = writeln!(body, "Rules:");
    for r in &a.rules {
        let how = [Some(r.action.as_str()), r.mode.as_deref(), r.severity.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(body, "  - {} ({how}): {}", r.id, r.reason);
        if !r.aggregates.is_empty() {
            let _ = writeln!(body, "    {}", aggregates(&r.aggregates));
        }
    }
    for v in &a.video {
        let _ = writeln!(
            body,
            "Video: camera {} in Kinesis Video stream {}, producer time {} to {}",
            v.camera,
            v.stream,
            utc(v.start_ms),
            utc(v.end_ms)
        );
    }
    let mut attributes = BTreeMap::from([
        ("kind", "rule_hit".to_string()),
        ("store_id", a.store_id.clone()),
        ("terminal_id", a.terminal_id.clone()),
        ("decision", a.decision.clone()),
        ("txn_id", a.txn_id.clone()),
    ]);
    if let Some(s) = &a.severity {
        attributes.insert("severity", s.clone());
    }
    if !a.video.is_empty() {
        attributes.insert("video", VideoLocation::attribute(&a.video));
    }
    Message {
        subject: subject_line(&subject),
        body,
        attributes,
    }
}

fn report(r: &ReportAlert) -> Message {
    let store = r.store_id.as_deref().unwrap_or("(not sent by this gateway)");
    let subject = format!("REPORT store {store}: {} for {}", r.report, r.key);
    let mut body = String::new();
    let _ = writeln!(body, "Report: {} (severity {})", r.report, r.severity);
    let _ = writeln!(body, "Store: {store}");
    let _ = writeln!(body, "For: {}", r.key);
    let _ = writeln!(
        body,
        "Window: {} to {}{}",
        r.window_start,
        r.window_end,
        if r.closed_early {
            " (closed early: the report reached its key limit; figures cover what it saw)"
        } else {
            ""
        }
    );
    let _ = writeln!(body, "Figures: {}", aggregates(&r.aggregates));
    let _ = writeln!(body, "Closed by transaction {} at {}", r.closed_by_txn_id, r.raised_at);
    let mut attributes = BTreeMap::from([
        ("kind", "report_window".to_string()),
        ("report", r.report.clone()),
        ("severity", r.severity.clone()),
    ]);
    if let Some(s) = &r.store_id {
        attributes.insert("store_id", s.clone());
    }
    Message {
        subject: subject_line(&subject),
        body,
        attributes,
    }
}

/// Milliseconds since the epoch as an RFC 3339 UTC time (to the millisecond).
pub fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms} ms since the epoch"))
}

fn aggregates(values: &BTreeMap<String, Value>) -> String {
    values
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `minor` units of `currency` in major units, e.g. 150000 EUR → "1500.00 EUR", 1500 JPY
/// → "1500 JPY"; an unknown code keeps the minor units and says so.
pub fn amount(minor: i64, currency: &str) -> String {
    let Some(exponent) = iso_currency::Currency::from_code(currency).and_then(|c| c.exponent()) else {
        return format!("{minor} minor units of {currency:?}");
    };
    if exponent == 0 {
        return format!("{minor} {currency}");
    }
    let scale = 10u64.pow(u32::from(exponent));
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!(
        "{sign}{}.{:0width$} {currency}",
        abs / scale,
        abs % scale,
        width = usize::from(exponent)
    )
}

/// Printable ASCII, one line, at most [`SUBJECT_MAX`] characters (SNS refuses others).
pub fn subject_line(text: &str) -> String {
    let mut line: String = text
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .collect();
    if line.len() > SUBJECT_MAX {
        line.truncate(SUBJECT_MAX - 3);
        line.push_str("...");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::RuleHit;

    fn hit() -> RuleHitAlert {
        RuleHitAlert {
            txn_id: "t-981".into(),
            store_id: "s-12".into(),
            terminal_id: "pos-3".into(),
            seq: 4411,
            total_minor: Some(150_000),
            currency: Some("EUR".into()),
            decision: "block".into(),
            severity: Some("high".into()),
            rules: vec![RuleHit {
                id: "card-velocity".into(),
                action: "block".into(),
                mode: Some("enforce".into()),
                severity: Some("high".into()),
                reason: "6 uses of one card in 10 minutes".into(),
                aggregates: BTreeMap::from([("uses".into(), Value::from(6))]),
            }],
            event_time: "2026-12-04T10:00:00.000Z".into(),
            raised_at: "2026-12-04T10:00:00.011Z".into(),
            video: vec![],
        }
    }

    #[test]
    fn a_rule_hit_with_video_says_where_it_is_and_carries_it_for_the_video_queue() {
        let mut a = hit();
        a.video = vec![VideoLocation {
            camera: "lane3".into(),
            stream: "gw-12.lane3".into(),
            start_ms: 1_796_380_790_000,
            end_ms: 1_796_380_820_000,
        }];
        let m = render(&Alert::RuleHit(a));
        assert!(
            m.body.contains(
                "Video: camera lane3 in Kinesis Video stream gw-12.lane3, producer time \
                 2026-12-04T10:39:50.000Z to 2026-12-04T10:40:20.000Z"
            ),
            "{}",
            m.body
        );
        let carried: Vec<VideoLocation> = serde_json::from_str(&m.attributes["video"]).unwrap();
        assert_eq!(carried[0].stream, "gw-12.lane3");
        assert!(!render(&Alert::RuleHit(hit())).attributes.contains_key("video"));
    }

    #[test]
    fn a_rule_hit_names_store_terminal_rule_amount_and_decision() {
        let m = render(&Alert::RuleHit(hit()));
        assert_eq!(m.subject, "BLOCK store s-12 till pos-3: card-velocity 1500.00 EUR");
        for needle in [
            "Store: s-12",
            "Terminal: pos-3",
            "Amount: 1500.00 EUR",
            "t-981",
            "card-velocity",
            "uses = 6",
        ] {
            assert!(m.body.contains(needle), "{needle} in\n{}", m.body);
        }
        assert_eq!(m.attributes["decision"], "block");
        assert_eq!(m.attributes["store_id"], "s-12");
    }

    #[test]
    fn amounts_follow_the_currencys_minor_unit() {
        assert_eq!(amount(1999, "EUR"), "19.99 EUR");
        assert_eq!(amount(-5, "USD"), "-0.05 USD");
        assert_eq!(amount(1500, "JPY"), "1500 JPY");
        assert_eq!(amount(1234, "BHD"), "1.234 BHD");
        assert_eq!(amount(7, "ZZZ"), "7 minor units of \"ZZZ\"");
    }

    #[test]
    fn subjects_stay_within_what_sns_accepts() {
        let mut a = hit();
        a.store_id = "Zürich-Hauptbahnhof\n".repeat(10);
        let m = render(&Alert::RuleHit(a));
        assert!(m.subject.len() <= SUBJECT_MAX, "{}", m.subject.len());
        assert!(
            m.subject.chars().all(|c| c.is_ascii_graphic() || c == ' '),
            "{}",
            m.subject
        );
    }
}
