use super::*;
use chrono::{Duration, Utc};
use proptest::strategy::Strategy;
use serde_json::json;

fn base() -> serde_json::Value {
    json!({
        "txn_id": "t-1", "store_id": "s1", "terminal_id": "p1",
        "occurred_at": Utc::now().to_rfc3339(), "type": "sale",
        "total_minor": 1999, "currency": "EUR",
        "card": {"token": "tok_1", "bin": "411111", "last4": "1111", "entry_mode": "chip"},
        "loyalty": {"tier": "gold"}
    })
}

fn problems(v: &serde_json::Value) -> Vec<FieldError> {
    match parse(v.to_string().as_bytes(), Utc::now()) {
        Err(r @ (Rejection::Invalid(_) | Rejection::CardNumber(_))) => r.problems(),
        other => panic!("expected field errors, got {other:?}"),
    }
}

fn fields(p: &[FieldError]) -> Vec<&str> {
    p.iter().map(|e| e.field.as_str()).collect()
}

#[test]
fn a_valid_transaction_keeps_unknown_fields_and_gets_stamped() {
    let t = parse(base().to_string().as_bytes(), Utc::now()).unwrap();
    assert_eq!(t.total_minor, 1999);
    assert_eq!(t.card.as_ref().unwrap().entry_mode, Some(EntryMode::Chip));
    assert!(!t.clock_skew);
    let body: serde_json::Value = serde_json::from_slice(&t.journal_body(42)).unwrap();
    assert_eq!(body["loyalty"], json!({"tier": "gold"}));
    assert_eq!(body["seq"], 42);
    assert!(body["received_at"].is_string());
    assert_eq!(body["event_time_ms"], t.event_time().timestamp_millis());
}

/// The journal carries the instant the gateway's windows used, in UTC milliseconds,
/// whatever offset or precision the terminal wrote (the cloud windows on it), and a
/// journaled record reads back as the same transaction.
#[test]
fn the_journal_carries_the_event_time_the_windows_used() {
    let received = chrono::DateTime::parse_from_rfc3339("2026-12-04T10:00:00.250Z")
        .unwrap()
        .to_utc();
    let mut v = base();
    v["occurred_at"] = json!("2026-12-04T11:00:07+01:00");
    let t = parse(v.to_string().as_bytes(), received).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&t.journal_body(1)).unwrap();
    assert_eq!(body["event_time_ms"], 1_796_378_407_000i64, "10:00:07 UTC");
    let skewed = parse(v.to_string().as_bytes(), received + chrono::Duration::minutes(10)).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&skewed.journal_body(2)).unwrap();
    assert_eq!(
        body["event_time_ms"],
        skewed.received_at.timestamp_millis(),
        "a skewed clock: received_at"
    );
    let back = super::validate::from_journal(&skewed.journal_body(2)).expect("reads back");
    assert_eq!((back.event_time(), back.clock_skew), (skewed.event_time(), true));
}

/// Received exactly the skew limit's next second after it occurred, both at instants
/// finer than the journal's milliseconds: the transaction replayed from the journal is
/// the one the rules decided live (same skew verdict, same event time), or a restart
/// would rebuild different windows.
#[test]
fn a_transaction_replayed_from_the_journal_is_the_one_decided() {
    let mut v = base();
    for sub_ms_ns in [1, 500_000, 960_447] {
        let occurred = format!("2026-12-04T10:00:00.000{sub_ms_ns:06}Z");
        v["occurred_at"] = json!(occurred);
        let received = chrono::DateTime::parse_from_rfc3339(&occurred).unwrap().to_utc()
            + chrono::Duration::seconds(super::CLOCK_SKEW_LIMIT_SECS + 1);
        let live = parse(v.to_string().as_bytes(), received).unwrap();
        let back = super::validate::from_journal(&live.journal_body(1)).expect("reads back");
        assert_eq!(
            (back.clock_skew, back.event_time(), back.received_at),
            (live.clock_skew, live.event_time(), live.received_at),
            "occurred and received {sub_ms_ns} ns past the millisecond"
        );
    }
}

#[test]
fn pretty_printed_input_is_journaled_on_one_line() {
    let raw = serde_json::to_vec_pretty(&base()).unwrap();
    let t = parse(&raw, Utc::now()).unwrap();
    let body = t.journal_body(1);
    assert!(!body.contains(&b'\n'));
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
}

#[test]
fn every_missing_required_field_is_reported_at_once() {
    let p = problems(&json!({"loyalty": 1}));
    assert_eq!(
        fields(&p),
        [
            "txn_id",
            "store_id",
            "terminal_id",
            "occurred_at",
            "type",
            "total_minor",
            "currency"
        ]
    );
    assert!(p
        .iter()
        .all(|e| e.problem == "is required but missing" && !e.allowed.is_empty()));
}

#[test]
fn wrong_types_say_what_was_sent_and_what_is_allowed() {
    let mut v = base();
    v["total_minor"] = json!("19.99");
    v["store_id"] = json!(7);
    v["card"]["entry_mode"] = json!("telepathy");
    v["card"]["bin"] = json!("41");
    v["line_items"] = json!({"sku": 1});
    let p = problems(&v);
    let by = |f: &str| {
        p.iter()
            .find(|e| e.field == f)
            .unwrap_or_else(|| panic!("{f} not reported: {p:?}"))
    };
    assert!(by("total_minor").problem.contains("got a string"));
    assert!(by("store_id").problem.contains("got an integer"));
    assert!(by("card.entry_mode").allowed.contains("contactless"));
    assert!(by("card.bin").allowed.contains("6–8 digits"));
    assert!(by("line_items").problem.contains("array"));
}

#[test]
fn money_is_never_a_float_and_currency_is_iso_4217() {
    let mut v = base();
    v["total_minor"] = json!(19.99);
    v["currency"] = json!("usd");
    let p = problems(&v);
    assert!(p[0].problem.contains("decimal"), "{p:?}");
    assert_eq!(p[1].field, "currency");
}

#[test]
fn identifiers_are_checked() {
    let mut v = base();
    v["terminal_id"] = json!("till 1/../x");
    v["txn_id"] = json!("");
    assert_eq!(fields(&problems(&v)), ["txn_id", "terminal_id"]);
}

#[test]
fn fields_the_agent_sets_are_refused() {
    let mut v = base();
    v["seq"] = json!(1);
    v["received_at"] = json!("2026-01-01T00:00:00Z");
    assert_eq!(fields(&problems(&v)), ["received_at", "seq"]);
}

#[test]
fn a_pan_in_any_card_field_is_refused_once() {
    for field in ["token", "last4", "pan_backup"] {
        let mut v = base();
        v["card"][field] = json!("5555555555554444");
        let p = problems(&v);
        assert_eq!(fields(&p), [format!("card.{field}").as_str()], "{p:?}");
        assert!(p[0].problem.contains("full card number"));
        assert!(p[0].problem.contains("555555******4444"), "{p:?}");
    }
    let mut v = base();
    v["card"]["token"] = json!(4111111111111111u64);
    assert!(problems(&v)[0].problem.contains("full card number"));
}

#[test]
fn skewed_terminal_clock_is_flagged_and_windows_use_received_at() {
    let mut v = base();
    // Whole milliseconds: the agent keeps received instants in the journal's precision.
    let received = chrono::SubsecRound::trunc_subsecs(Utc::now(), 3);
    v["occurred_at"] = json!((received - Duration::seconds(121)).to_rfc3339());
    let t = parse(v.to_string().as_bytes(), received).unwrap();
    assert!(t.clock_skew);
    assert_eq!(t.event_time(), received);
    v["occurred_at"] = json!((received - Duration::seconds(119)).to_rfc3339());
    let t = parse(v.to_string().as_bytes(), received).unwrap();
    assert!(!t.clock_skew);
}

#[test]
fn oversize_and_malformed_inputs_have_their_own_errors() {
    let big = vec![b' '; MAX_TXN_BYTES + 1];
    assert!(matches!(parse(&big, Utc::now()), Err(Rejection::TooLarge { .. })));
    let e = parse(b"{\"a\": }", Utc::now()).unwrap_err();
    assert!(e.to_string().starts_with("malformed JSON at line 1 column"), "{e}");
    let e = parse(b"\"just a string\"", Utc::now()).unwrap_err();
    assert!(e.to_string().contains("got a string"), "{e}");
}

proptest::proptest! {
    /// Bad input never panics: any bytes get a transaction or a specific rejection, and
    /// redaction keeps the length.
    #[test]
    fn arbitrary_bytes_are_answered_not_panicked_on(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let _ = parse(&raw, Utc::now());
        proptest::prop_assert_eq!(redact_pans(&raw).len(), raw.len());
    }

    /// Near-valid documents (one field replaced by an arbitrary JSON scalar): accepted
    /// exactly when the value is one the field allows (an oracle written apart from the
    /// validator), and otherwise refused with an error naming that field.
    #[test]
    fn mutated_fields_get_field_errors(field in "txn_id|store_id|terminal_id|occurred_at|type|total_minor|currency|card|line_items",
                                      value in proptest::prop_oneof![
                                          proptest::num::i64::ANY.prop_map(serde_json::Value::from),
                                          (-20_000_000_000_000i64..20_000_000_000_000).prop_map(serde_json::Value::from),
                                          proptest::num::f64::NORMAL.prop_map(|f| serde_json::json!(f)),
                                          ".{0,40}".prop_map(serde_json::Value::from),
                                          "[A-Za-z0-9._-]{1,70}".prop_map(serde_json::Value::from),
                                          proptest::sample::select(vec!["sale", "void", "EUR", "usd", "2026-11-27T14:03:07Z", "2026-13-01T00:00:00Z"]).prop_map(serde_json::Value::from),
                                          proptest::bool::ANY.prop_map(serde_json::Value::from),
                                      ]) {
        let mut v = base();
        v[&field] = value.clone();
        let outcome = parse(v.to_string().as_bytes(), Utc::now());
        let allowed = field_allows(&field, &value);
        match outcome {
            Ok(_) => proptest::prop_assert!(allowed, "{field} = {value} was accepted"),
            Err(r @ (Rejection::Invalid(_) | Rejection::CardNumber(_))) => {
                proptest::prop_assert!(!allowed, "{field} = {value} was refused: {r}");
                let problems = r.problems();
                proptest::prop_assert!(problems.iter().any(|p| p.field == field), "{r}");
                proptest::prop_assert!(problems.iter().all(|p| !p.allowed.is_empty()), "{r}");
            }
            Err(other) => proptest::prop_assert!(false, "{field} = {value}: {other}"),
        }
    }
}

/// What each field allows, written from the schema in README.md, not from the validator.
fn field_allows(field: &str, v: &serde_json::Value) -> bool {
    let s = v.as_str();
    let pan_free = s.is_none_or(|s| tillgate_sdk::pan::pans_in_text(s).is_empty())
        && v.as_i64()
            .is_none_or(|n| tillgate_sdk::pan::pans_in_text(&n.to_string()).is_empty());
    pan_free
        && match field {
            "txn_id" => s.is_some_and(|s| (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())),
            "store_id" | "terminal_id" => s.is_some_and(|s| {
                (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            }),
            "occurred_at" => s.is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
            "type" => s.is_some_and(|s| ["sale", "return", "void", "post_void", "no_sale", "paid_out"].contains(&s)),
            "total_minor" => v.as_i64().is_some_and(|n| n.abs() <= 10_000_000_000_000),
            "currency" => s.is_some_and(|s| iso_currency::Currency::from_code(s).is_some()),
            // An object or an array is required; a scalar never is one.
            "card" | "line_items" => false,
            _ => unreachable!("{field}"),
        }
}

#[test]
fn a_pan_anywhere_is_refused_with_its_path_and_never_quoted() {
    for (path, doc) in [
        (
            "line_items[0].note",
            json!({"line_items": [{"note": "4111 1111 1111 1111"}]}),
        ),
        (
            "tenders[1].ref",
            json!({"tenders": [{}, {"ref": "5555-5555-5555-4444"}]}),
        ),
        ("customer_id", json!({"customer_id": "378282246310005"})),
        ("operator_id", json!({"operator_id": 4012888888881881u64})),
        (
            "card.extra.nested.deep",
            json!({"card": {"extra": {"nested": {"deep": "4111111111111111"}}}}),
        ),
        ("loyalty.memo", json!({"loyalty": {"memo": "card 4111111111111111 ok"}})),
    ] {
        let mut v = base();
        for (k, val) in doc.as_object().unwrap() {
            v[k] = val.clone();
        }
        let r = parse(v.to_string().as_bytes(), Utc::now()).unwrap_err();
        assert_eq!(r.class(), RejectionClass::CardNumber, "{r}");
        let p = r.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].field, path);
        let answered = format!("{r} {}", r.to_json());
        for digits in [
            "4111111111111111",
            "5555555555554444",
            "378282246310005",
            "4012888888881881",
        ] {
            let squeezed: String = answered.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
            assert!(!squeezed.contains(digits), "{answered}");
        }
        assert!(answered.contains("*****"), "the masked number is shown: {answered}");
    }
}

#[test]
fn an_unknown_schema_version_is_refused_naming_the_supported_ones() {
    let mut v = base();
    v["schema"] = json!("pos.txn.v9");
    let p = problems(&v);
    assert_eq!(fields(&p), ["schema"]);
    assert!(p[0].allowed.contains("\"pos.txn.v1\""), "{p:?}");
    v["schema"] = json!("pos.txn.v1");
    assert!(parse(v.to_string().as_bytes(), Utc::now()).is_ok());
    v["schema"] = json!(1);
    assert_eq!(fields(&problems(&v)), ["schema"]);
}

#[test]
fn amounts_beyond_the_documented_bound_are_refused() {
    let mut v = base();
    for ok in [MAX_AMOUNT_MINOR, -MAX_AMOUNT_MINOR, 0] {
        v["total_minor"] = json!(ok);
        assert!(parse(v.to_string().as_bytes(), Utc::now()).is_ok(), "{ok}");
    }
    for bad in [MAX_AMOUNT_MINOR + 1, i64::MAX, i64::MIN] {
        v["total_minor"] = json!(bad);
        assert_eq!(fields(&problems(&v)), ["total_minor"], "{bad}");
    }
}

#[test]
fn deep_or_long_input_is_refused_without_quoting_it_whole() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let r = parse(deep.as_bytes(), Utc::now()).unwrap_err();
    assert_eq!(r.class(), RejectionClass::Malformed, "{r}");
    let mut v = base();
    v["txn_id"] = json!("x ".repeat(5_000));
    let r = parse(v.to_string().as_bytes(), Utc::now()).unwrap_err();
    assert!(
        r.to_string().len() < 500,
        "an echoed value is cut short: {} bytes",
        r.to_string().len()
    );
}

/// What the parser reads differently from the text must not carry a card number past
/// the scan into the journal: a key given twice (only the last counts) and a long
/// number written as a float.
#[test]
fn the_journal_gets_what_was_scanned_not_the_raw_text() {
    let base = base().to_string();
    let head = &base[..base.len() - 1];
    for raw in [
        format!(r#"{head},"note":"4111111111111111","note":"fine"}}"#),
        format!(r#"{head},"amount_pan":4111111111111111111.0}}"#),
    ] {
        let outcome = parse(raw.as_bytes(), Utc::now());
        if let Ok(t) = outcome {
            let body = String::from_utf8(t.journal_body(1)).unwrap();
            assert!(tillgate_sdk::pan::pans_in_text(&body).is_empty(), "journaled: {body}");
            assert!(!body.contains("4111111111111111"), "journaled: {body}");
        }
    }
}

/// A 64 KiB document made of card numbers under a huge key: the refusal stays a few
/// KiB, however many numbers and however long the path.
#[test]
fn a_refusal_stays_small_whatever_the_input() {
    let key = "a".repeat(32_000);
    let pans = vec!["4222222222222"; 2_300].join(",");
    let raw = format!("{{\"{key}\": [{pans}]}}");
    assert!(raw.len() <= MAX_TXN_BYTES);
    let r = parse(raw.as_bytes(), Utc::now()).unwrap_err();
    assert_eq!(r.class(), RejectionClass::CardNumber);
    assert!(r.to_string().len() <= MAX_REASON_BYTES, "{} bytes", r.to_string().len());
    assert!(
        r.to_json().to_string().len() < 4 * MAX_REASON_BYTES,
        "{} bytes",
        r.to_json().to_string().len()
    );
    assert!(r.to_string().contains("more full card numbers"), "{r}");
}

/// A number cut by the quote's length limit shows none of its digits at the cut.
#[test]
fn a_quote_never_keeps_most_of_a_card_number() {
    let s = format!("{}4111111111111111", "x".repeat(56));
    let q = quoted(&s);
    let digits: String = q.chars().filter(char::is_ascii_digit).collect();
    assert!(!digits.contains("41111111"), "{q}");
}

/// Found by fuzzing (`txn_parse`): a 40-digit integer parsed to a double that printed
/// back differently, and the journaled text then looked like a card number the scan
/// never saw. Parsing round-trips now, so what is journaled is what was scanned.
#[test]
fn a_huge_number_journals_as_the_number_that_was_scanned() {
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/corpus/txn_parse/regression-float-roundtrip.json"
    ))
    .unwrap();
    let t = parse(&raw, Utc::now()).expect("accepted: no card number in it");
    let body: serde_json::Value = serde_json::from_slice(&t.journal_body(1)).unwrap();
    assert!(tillgate_sdk::pan::find_pans(&body).is_empty(), "{body}");
}
