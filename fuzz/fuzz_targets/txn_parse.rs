//! One transaction document, as HTTP and MQTT hand it to the validator: never a panic;
//! an accepted one journals as JSON without a card number; a refused one's answer
//! quotes no card number; redaction keeps the length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tillgate_sdk::pan::{find_pans, pans_in_text, redact_pans};

fuzz_target!(|data: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_764_000_000, 0).expect("a valid time");
    match tillgate::txn::parse(data, now) {
        Ok(t) => {
            let body = t.journal_body(7);
            let v: serde_json::Value = serde_json::from_slice(&body).expect("a journaled body is JSON");
            assert!(find_pans(&v).is_empty(), "an accepted document holds a card number");
            // The text itself too: the journal stores bytes, not a parsed tree.
            let text = String::from_utf8_lossy(&body);
            assert!(
                pans_in_text(&text).is_empty(),
                "a journaled body holds a card number: {text}"
            );
            assert_eq!(v["seq"], 7);
        }
        Err(r) => {
            let said = format!("{r} {}", r.to_json());
            assert!(pans_in_text(&said).is_empty(), "a refusal quotes a card number: {said}");
        }
    }
    assert_eq!(redact_pans(data).len(), data.len());
});
