//! The card-number guard: a full PAN must never be stored, not even in a dead letter.

/// Luhn checksum over ASCII digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// True when `s` is a full card number: 13–19 digits (spaces and dashes allowed between
/// them, as printed on cards) that pass the Luhn check.
pub fn looks_like_pan(s: &str) -> bool {
    if !s.bytes().all(|b| b.is_ascii_digit() || b == b' ' || b == b'-') {
        return false;
    }
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_digit).collect();
    (13..=19).contains(&digits.len()) && luhn_valid(&digits)
}

/// Masks every Luhn-valid run of 13–19 digits in raw input, keeping the last four:
/// dead letters keep the raw bytes for diagnosis, but never a card number.
pub fn redact_pans(raw: &[u8]) -> Vec<u8> {
    let mut out = raw.to_vec();
    let mut i = 0;
    while i < raw.len() {
        if !raw[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // A run of digits, possibly separated by single spaces or dashes.
        let start = i;
        let mut positions = Vec::new();
        let mut j = i;
        while j < raw.len() {
            if raw[j].is_ascii_digit() {
                positions.push(j);
                j += 1;
            } else if (raw[j] == b' ' || raw[j] == b'-') && j + 1 < raw.len() && raw[j + 1].is_ascii_digit() {
                j += 1;
            } else {
                break;
            }
        }
        // Any 13–19 digit window inside the run that is Luhn-valid is masked.
        for len in (13..=19).rev() {
            for w in 0..positions.len().saturating_sub(len - 1) {
                let window = &positions[w..w + len];
                let digits: Vec<u8> = window.iter().map(|&p| raw[p]).collect();
                if luhn_valid(&digits) {
                    for &p in &window[..len - 4] {
                        out[p] = b'*';
                    }
                }
            }
        }
        i = j.max(start + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_test_cards_are_pans() {
        for pan in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "5555-5555-5555-4444",
            "378282246310005",
        ] {
            assert!(looks_like_pan(pan), "{pan}");
        }
    }

    #[test]
    fn tokens_bins_and_bad_checksums_are_not_pans() {
        for s in [
            "4111111111111112",
            "411111",
            "1234",
            "tok_4111111111111111",
            "123456789012",
        ] {
            assert!(!looks_like_pan(s), "{s}");
        }
    }

    #[test]
    fn redaction_keeps_last_four_and_nothing_else() {
        let raw = br#"{"card":{"token":"4111111111111111"},"n":12}"#;
        let red = redact_pans(raw);
        let s = String::from_utf8(red).unwrap();
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

    /// Appends the Luhn check digit to `body`.
    fn with_check_digit(body: &str) -> String {
        (0..10u8)
            .map(|d| format!("{body}{d}"))
            .find(|c| luhn_valid(c.as_bytes()))
            .expect("one check digit always fits")
    }

    fn has_pan_run(s: &[u8]) -> bool {
        s.split(|b| !b.is_ascii_digit())
            .any(|run| (13..=19).any(|len| run.windows(len).any(luhn_valid)))
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
            proptest::prop_assert!(looks_like_pan(&pan));
        }
    }
}
