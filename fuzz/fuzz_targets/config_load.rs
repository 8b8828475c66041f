//! `tillgate.toml` as written by a person: never a panic, and every error names where.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = tillgate::config::load_str(text) {
        assert!(!e.to_string().is_empty());
    }
});
