//! The card-number guard: a full PAN must never be stored, answered or logged.
//!
//! Two tools with two jobs. [`find_pans`] decides: it walks a parsed document (every
//! key, string and number at any depth, so JSON escapes are already decoded) and reports
//! each card number with its JSON path and a masked form. [`redact_pans`] protects: it
//! masks every Luhn-valid 13–19 digit window in raw bytes (ASCII digits and `\u003N`
//! escapes alike) before anything is written to a dead letter, a reason or a log, even
//! input that is not JSON at all.
//!
//! Hand-written: no maintained crate scans JSON for card numbers with paths; the Luhn
//! check is four lines.

use serde_json::Value;
use std::fmt::Write as _;

/// Card numbers are 13 to 19 digits long (ISO/IEC 7812).
const PAN_DIGITS: std::ops::RangeInclusive<usize> = 13..=19;

/// Luhn checksum over ASCII digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d.wrapping_sub(b'0') % 10);
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

/// A card number found in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanHit {
    /// JSON path of the value (or key) that holds it, e.g. `line_items[2].note`.
    pub path: String,
    /// The number with all but the BIN (first 6) and the last 4 digits masked.
    pub masked: String,
}

/// True when `digits` (ASCII digits only) is a card number: 13–19 digits, Luhn-valid,
/// and a payment-card major industry identifier (first digit 2–6: ISO/IEC 7812 gives
/// 2 to airlines and banking, 3 to travel cards (Amex, JCB, Diners), 4–5 to banking,
/// 6 to merchandising and banking). The first digit keeps epoch-millisecond times and
/// other 13-digit counters that start with 1 from being taken for card numbers.
pub fn is_pan(digits: &[u8]) -> bool {
    PAN_DIGITS.contains(&digits.len()) && matches!(digits[0], b'2'..=b'6') && luhn_valid(digits)
}

/// `411111******1111`: the BIN and the last four, as PCI DSS allows to display.
pub fn mask(digits: &[u8]) -> String {
    let n = digits.len();
    let mut out = String::with_capacity(n);
    for (i, d) in digits.iter().enumerate() {
        out.push(if i < 6 || i + 4 >= n { char::from(*d) } else { '*' });
    }
    out
}

/// A separator between groups of one printed card number.
fn is_separator(b: u8) -> bool {
    matches!(b, b' ' | b'-' | b'.')
}

/// Card numbers in a text: maximal runs of digits joined by up to three spaces, dashes
/// or dots (`4111 1111 1111 1111`, `5555-5555-5555-4444`) that stand apart — bounded by
/// anything but a letter or a digit (a space, punctuation, `_`, the text's ends), so
/// `tok_4111111111111111` holds one and the hex id `8a4876802024123456f` does not.
/// Magnetic-stripe track data is recognised despite its letters (`%B4111…^`, `;4111…=`,
/// `4111…D2512`), and leading zeros are looked through (`0004111111111111111`). A run
/// of more than 19 digits is a card number only where it has separators and some
/// consecutive groups of it form one (`4111 1111 1111 1111 2029`); an unseparated run
/// longer than 19 digits is an id, not a PAN.
pub fn pans_in_text(s: &str) -> Vec<Vec<u8>> {
    let b = s.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // Track 1 starts `%B<PAN>^`: a lone `B` after a boundary is not an identifier.
        let track_one = i >= 1 && b[i - 1] == b'B' && (i == 1 || !b[i - 2].is_ascii_alphanumeric());
        let glued_before = i > 0 && b[i - 1].is_ascii_alphabetic() && !track_one;
        // One run: groups of digits separated by up to two separator characters.
        let mut groups: Vec<Vec<u8>> = vec![Vec::new()];
        let mut j = i;
        while j < b.len() {
            if b[j].is_ascii_digit() {
                groups.last_mut().expect("one group at least").push(b[j]);
                j += 1;
                continue;
            }
            let seps = b[j..].iter().take(3).take_while(|c| is_separator(**c)).count();
            if seps > 0 && b.get(j + seps).is_some_and(u8::is_ascii_digit) {
                groups.push(Vec::new());
                j += seps;
            } else {
                break;
            }
        }
        // Track 2 written with `D` as its field separator: `<PAN>D<expiry>…`.
        let track_two = b.get(j) == Some(&b'D') && b.get(j + 1).is_some_and(u8::is_ascii_digit);
        let glued_after = b.get(j).is_some_and(u8::is_ascii_alphabetic) && !track_two;
        if glued_before || glued_after {
            // Part of an identifier, not a number of its own.
            i = j;
            continue;
        }
        let whole: Vec<u8> = groups.concat();
        let unpadded = &whole[whole.iter().take_while(|d| **d == b'0').count()..];
        if is_pan(&whole) {
            found.push(whole);
        } else if groups.len() == 1 && unpadded.len() < whole.len() && is_pan(unpadded) {
            found.push(unpadded.to_vec());
        } else if groups.len() > 1 {
            // Consecutive groups inside a longer separated run.
            'start: for a in 0..groups.len() {
                let mut digits = Vec::new();
                for g in &groups[a..] {
                    digits.extend_from_slice(g);
                    if digits.len() > *PAN_DIGITS.end() {
                        continue 'start;
                    }
                    if is_pan(&digits) {
                        found.push(digits);
                        break 'start;
                    }
                }
            }
        }
        i = j;
    }
    found
}

/// A card number sent as a number with a fraction or an exponent
/// (`4111111111111111e3`, `4111111111111111.0`). Exact integers (below 2^53) are
/// judged like any number; a larger one of 13 or more significant digits with a
/// card-industry first digit counts whatever its checksum, because once rounded a card
/// number cannot be told apart. Small fractions (`0.30000000000000004`) never count.
fn float_pan(f: f64) -> Option<Vec<u8>> {
    let f = f.abs();
    if f < 1e12 {
        return None;
    }
    if f.fract() == 0.0 && f < 9_007_199_254_740_992.0 {
        let digits = format!("{f:.0}").into_bytes();
        return is_pan(&digits).then_some(digits);
    }
    let sci = format!("{f:e}");
    let mantissa = sci.split('e').next().unwrap_or_default();
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    (digits.len() >= *PAN_DIGITS.start() && matches!(digits[0], b'2'..=b'6')).then_some(digits)
}

/// Every card number in `doc`: keys, strings and numbers at any depth. The caller
/// refuses the document when this is not empty.
pub fn find_pans(doc: &Value) -> Vec<PanHit> {
    let mut hits = Vec::new();
    walk(doc, &mut String::new(), &mut hits);
    hits
}

/// The longest key quoted in a path: a path is answered and logged, so its size must
/// not follow the input's.
const MAX_PATH_KEY: usize = 64;

fn walk(v: &Value, path: &mut String, hits: &mut Vec<PanHit>) {
    let report = |text: &str, path: &str, hits: &mut Vec<PanHit>| {
        for digits in pans_in_text(text) {
            hits.push(PanHit {
                path: if path.is_empty() {
                    "(document)".into()
                } else {
                    path.to_string()
                },
                masked: mask(&digits),
            });
        }
    };
    match v {
        Value::String(s) => report(s, path, hits),
        Value::Number(n) => match (n.is_f64(), n.as_f64().and_then(float_pan)) {
            (true, Some(digits)) => hits.push(PanHit {
                path: if path.is_empty() {
                    "(document)".into()
                } else {
                    path.clone()
                },
                masked: mask(&digits),
            }),
            _ => report(&n.to_string(), path, hits),
        },
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                walk(item, path, hits);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                push_key(path, key);
                // A key can carry a card number too; its own path shows it masked.
                report(key, path, hits);
                walk(item, path, hits);
                path.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

/// Appends `.key` (or `["key"]` when the key is not a plain name); card numbers in a
/// key are masked in the path, which is answered and logged.
fn push_key(path: &mut String, key: &str) {
    let mut key = redact_text(key);
    if key.len() > MAX_PATH_KEY {
        let mut cut = MAX_PATH_KEY;
        while !key.is_char_boundary(cut) {
            cut -= 1;
        }
        key.truncate(cut);
        key.push('…');
    }
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&key);
    } else {
        let _ = write!(path, "[{}]", Value::String(key));
    }
}

/// One digit of raw input: where it is and which digit it is.
#[derive(Clone, Copy)]
struct RawDigit {
    at: usize,
    len: usize,
    digit: u8,
}

/// A digit at `i` of `raw`: an ASCII digit, or a JSON escape `\u003N` of one.
fn digit_at(raw: &[u8], i: usize) -> Option<RawDigit> {
    match raw[i] {
        d @ b'0'..=b'9' => Some(RawDigit {
            at: i,
            len: 1,
            digit: d,
        }),
        b'\\'
            if raw.len() >= i + 6
                && raw[i + 1] == b'u'
                && raw[i + 2..i + 5] == *b"003"
                && raw[i + 5].is_ascii_digit() =>
        {
            Some(RawDigit {
                at: i,
                len: 6,
                digit: raw[i + 5],
            })
        }
        _ => None,
    }
}

/// A separator between digits of one printed card number at `i`: a space, a dash or a
/// dot, plain or escaped. Returns its length.
fn separator_at(raw: &[u8], i: usize) -> Option<usize> {
    match raw[i] {
        b' ' | b'-' | b'.' => Some(1),
        b'\\'
            if raw.len() >= i + 6
                && raw[i + 1] == b'u'
                && (raw[i + 2..i + 6].eq_ignore_ascii_case(b"0020")
                    || raw[i + 2..i + 6].eq_ignore_ascii_case(b"002d")) =>
        {
            Some(6)
        }
        _ => None,
    }
}

/// One to three separators at `j` followed by a digit: their length.
fn separators_at(raw: &[u8], j: usize) -> Option<usize> {
    let mut at = j;
    for _ in 0..3 {
        at += separator_at(raw, at)?;
        if at >= raw.len() {
            return None;
        }
        if digit_at(raw, at).is_some() {
            return Some(at - j);
        }
    }
    None
}

/// Masks every Luhn-valid run of 13–19 digits in raw input, keeping the last four:
/// dead letters keep the raw bytes for diagnosis, but never a card number. Deliberately
/// wider than [`is_pan`]: any window of any digit run, whatever its first digit, and
/// digits written as JSON escapes. The length is unchanged.
pub fn redact_pans(raw: &[u8]) -> Vec<u8> {
    let mut out = raw.to_vec();
    let mut i = 0;
    while i < raw.len() {
        let Some(first) = digit_at(raw, i) else {
            i += 1;
            continue;
        };
        // A run of digits, possibly separated by single spaces or dashes.
        let mut run = vec![first];
        let mut j = first.at + first.len;
        while j < raw.len() {
            if let Some(d) = digit_at(raw, j) {
                run.push(d);
                j = d.at + d.len;
            } else if let Some(sep) = separators_at(raw, j) {
                j += sep;
            } else {
                break;
            }
        }
        if run.len() >= *PAN_DIGITS.start() {
            let digits: Vec<u8> = run.iter().map(|d| d.digit).collect();
            let mut masked = vec![false; run.len()];
            for len in PAN_DIGITS {
                for w in 0..run.len().saturating_sub(len - 1) {
                    if luhn_valid(&digits[w..w + len]) {
                        masked[w..w + len - 4].iter_mut().for_each(|m| *m = true);
                    }
                }
            }
            for (d, m) in run.iter().zip(masked) {
                if m {
                    out[d.at..d.at + d.len].fill(b'*');
                }
            }
        }
        i = j.max(first.at + 1);
    }
    out
}

/// [`redact_pans`] for text: what any message that may quote input goes through.
pub fn redact_text(s: &str) -> String {
    // Only ASCII bytes are replaced, so the text stays valid UTF-8.
    String::from_utf8_lossy(&redact_pans(s.as_bytes())).into_owned()
}

#[cfg(test)]
mod tests;
