//! An NDJSON batch as the HTTP endpoint splits it: every line gets the same verdict
//! as on its own, under the shared size limit; a line over the limit is refused as too
//! large without being parsed; the dead letter of any line carries no card number.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tillgate::intake::{dead_letter_bytes, parse_input};
use tillgate::txn::RejectionClass;

fuzz_target!(|data: &[u8]| {
    let limit = 2048;
    for line in data.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_input(line, line.len(), limit) {
            Ok(_) => assert!(line.len() <= limit),
            Err(r) if line.len() > limit => assert_eq!(r.class(), RejectionClass::TooLarge),
            Err(_) => {}
        }
        let kept = dead_letter_bytes(line, line.len());
        assert!(kept.len() <= line.len());
        let text = String::from_utf8_lossy(&kept);
        assert!(
            tillgate_sdk::pan::pans_in_text(&text).is_empty(),
            "a dead letter keeps a card number"
        );
    }
});
