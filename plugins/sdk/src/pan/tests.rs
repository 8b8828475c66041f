use super::*;
use serde_json::json;

fn pan_text(s: &str) -> bool {
    !pans_in_text(s).is_empty()
}

#[test]
fn known_test_cards_are_pans() {
    for pan in [
        "4111111111111111",
        "4111 1111 1111 1111",
        "5555-5555-5555-4444",
        "378282246310005",
        "card 4111 1111 1111 1111 declined",
        "tok_4111111111111111",
        "4111 1111 1111 1111 2029",
        // Track data, dots and double separators, zero padding.
        "%B4111111111111111^DOE/JOHN^2512",
        ";4111111111111111=2512101",
        "4111111111111111D2512101",
        "4111.1111.1111.1111",
        "4111 - 1111 - 1111 - 1111",
        "0004111111111111111",
    ] {
        assert!(pan_text(pan), "{pan}");
    }
}

#[test]
fn ids_times_bins_and_bad_checksums_are_not_pans() {
    for s in [
        "4111111111111112",
        "411111",
        "1234",
        "123456789012",
        // Epoch milliseconds: 13 digits, Luhn-valid, but a 1 is no card industry.
        "1764253387252",
        // Twenty digits without separators: an id, not a card number.
        "41111111111111111111",
        "till-7-000123",
        // Glued to letters: part of an identifier (hex ids hold digit runs by chance).
        "8a4111111111111111f",
        "cust4111111111111111",
    ] {
        assert!(!pan_text(s), "{s}");
    }
    assert!(
        luhn_valid(b"1764253387252"),
        "the epoch-ms case above must be Luhn-valid to mean anything"
    );
}

/// docs/limits.md: a barcode that passes Luhn by chance is taken for a card number
/// unless it is glued to a letter.
#[test]
fn a_luhn_valid_barcode_is_refused_unless_marked_as_an_identifier() {
    assert!(pan_text("5901234123457"));
    assert!(pan_text("ean: 5901234123457"));
    assert!(!pan_text("EAN5901234123457"));
}

#[test]
fn masks_keep_the_bin_and_the_last_four() {
    assert_eq!(mask(b"4111111111111111"), "411111******1111");
    assert_eq!(mask(b"378282246310005"), "378282*****0005");
}

#[test]
fn the_whole_document_is_scanned_with_paths() {
    let doc = json!({
        "txn_id": "t-1",
        "card": {"token": "tok_1", "extra": {"deep": ["x", "5555-5555-5555-4444"]}},
        "line_items": [{"sku": "a"}, {"note": "paid with 4111 1111 1111 1111"}],
        "customer_id": 378282246310005u64,
        "4012888888881881": true,
        "weird key": {"a.b": "4111111111111111"},
    });
    let hits = find_pans(&doc);
    let paths: Vec<&str> = hits.iter().map(|h| h.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "card.extra.deep[1]",
            "line_items[1].note",
            "customer_id",
            "[\"************1881\"]",
            "[\"weird key\"][\"a.b\"]",
        ]
    );
    assert_eq!(hits[0].masked, "555555******4444");
    for h in &hits {
        assert!(!h.path.contains("4012888888881881"), "{}", h.path);
    }
}

#[test]
fn redaction_keeps_last_four_and_nothing_else() {
    let raw = br#"{"card":{"token":"4111111111111111"},"n":12}"#;
    let s = String::from_utf8(redact_pans(raw)).unwrap();
    assert!(s.contains("************1111"), "{s}");
    assert!(!s.contains("4111111111111111"));
    assert!(s.contains("\"n\":12"));
}

#[test]
fn redaction_finds_pans_inside_longer_digit_runs_and_with_separators() {
    let s = String::from_utf8(redact_pans(b"x 4111 1111 1111 1111 y 94111111111111111")).unwrap();
    assert!(!s.contains("4111 1111 1111 1111"), "{s}");
    assert!(!s.contains("4111111111111111"), "{s}");
}

#[test]
fn redaction_sees_digits_written_as_json_escapes() {
    let raw = br#"{"x":"\u0034111\u00201111 1111 111\u0031"}"#;
    let parsed: Value = serde_json::from_slice(raw).unwrap();
    assert_eq!(parsed["x"], "4111 1111 1111 1111");
    assert_eq!(find_pans(&parsed).len(), 1);
    let red = redact_pans(raw);
    let reparsed: Value = serde_json::from_slice(&red).unwrap();
    assert!(find_pans(&reparsed).is_empty(), "{}", String::from_utf8_lossy(&red));
    assert_eq!(red.len(), raw.len());
}

/// Appends the Luhn check digit to `body`.
pub(crate) fn with_check_digit(body: &str) -> String {
    (0..10u8)
        .map(|d| format!("{body}{d}"))
        .find(|c| luhn_valid(c.as_bytes()))
        .expect("one check digit always fits")
}

fn has_pan_run(s: &[u8]) -> bool {
    s.split(|b| !b.is_ascii_digit())
        .any(|run| PAN_DIGITS.clone().any(|len| run.windows(len).any(luhn_valid)))
}

proptest::proptest! {
    #[test]
    fn redaction_leaves_no_card_number(
        prefix in "[a-z\\\" :{},]{0,16}",
        body in "[0-9]{12,18}",
        suffix in "[a-z\\\" :{},]{0,16}",
    ) {
        let pan = with_check_digit(&body);
        let raw = format!("{prefix}{pan}{suffix}");
        let red = redact_pans(raw.as_bytes());
        proptest::prop_assert!(!has_pan_run(&red), "{}", String::from_utf8_lossy(&red));
        proptest::prop_assert_eq!(red.len(), raw.len());
    }

    /// A card number with a card-industry first digit is found wherever it sits in a
    /// text, with or without separators.
    #[test]
    fn a_pan_in_any_text_is_found(
        first in 2u8..=6,
        body in "[0-9]{11,17}",
        sep in proptest::prop_oneof![proptest::strategy::Just(""), proptest::strategy::Just(" "), proptest::strategy::Just("-")],
        prefix in "([a-z:_]{1,8} )?",
        suffix in "( [a-z]{1,8})?",
    ) {
        let pan = with_check_digit(&format!("{first}{body}"));
        let printed: Vec<String> = pan.as_bytes().chunks(4).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
        let text = format!("{prefix}{}{suffix}", printed.join(sep));
        let found = pans_in_text(&text);
        proptest::prop_assert_eq!(found, vec![pan.into_bytes()]);
    }
}

/// A card number sent as a number with a fraction or an exponent is one too.
#[test]
fn card_numbers_written_as_floats_are_found() {
    for text in [
        "4111111111111111e3",
        "4111111111111111.0",
        "4111111111111111118.5",
        "4.111111111111111e18",
    ] {
        let doc: Value = serde_json::from_str(&format!("{{\"n\": {text}}}")).unwrap();
        assert_eq!(find_pans(&doc).len(), 1, "{text}");
    }
    let doc: Value = serde_json::from_str(
        r#"{"price": 12.99, "rate": 0.175, "epoch": 1764253387.252, "noise": 0.30000000000000004, "big": 2.599e39}"#,
    )
    .unwrap();
    assert!(find_pans(&doc).is_empty());
}

#[test]
fn a_path_stays_short_whatever_the_keys() {
    let key = "k".repeat(50_000);
    let doc: Value = serde_json::from_str(&format!("{{\"{key}\": [\"4111111111111111\"]}}")).unwrap();
    let hits = find_pans(&doc);
    assert!(hits[0].path.len() < 100, "{}", hits[0].path.len());
}
