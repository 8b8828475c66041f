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
        Err(Rejection::Invalid(p)) => p,
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
    }
    let mut v = base();
    v["card"]["token"] = json!(4111111111111111u64);
    assert!(problems(&v)[0].problem.contains("full card number"));
}

#[test]
fn skewed_terminal_clock_is_flagged_and_windows_use_received_at() {
    let mut v = base();
    let received = Utc::now();
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

    /// Near-valid documents (one field replaced by an arbitrary JSON scalar) never panic.
    #[test]
    fn mutated_fields_get_field_errors(field in "txn_id|store_id|terminal_id|occurred_at|type|total_minor|currency|card|line_items",
                                      value in proptest::prop_oneof![
                                          proptest::num::i64::ANY.prop_map(serde_json::Value::from),
                                          proptest::num::f64::NORMAL.prop_map(|f| serde_json::json!(f)),
                                          ".{0,40}".prop_map(serde_json::Value::from),
                                          proptest::bool::ANY.prop_map(serde_json::Value::from),
                                      ]) {
        let mut v = base();
        v[&field] = value;
        if let Err(Rejection::Invalid(problems)) = parse(v.to_string().as_bytes(), Utc::now()) {
            proptest::prop_assert!(problems.iter().all(|p| !p.field.is_empty() && !p.allowed.is_empty()));
        }
    }
}
