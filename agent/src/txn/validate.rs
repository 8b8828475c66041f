//! Validation of `pos.txn.v1`: every problem is reported with the field, what was wrong
//! and what is allowed, so a POS integrator can fix the terminal without reading code.
//!
//! No message built here quotes a card number: the whole document is scanned for them
//! first (a hit is refused with the path and a masked number, nothing else), and every
//! value quoted in a problem is cut short and passed through [`redact_text`].

use super::{Card, EntryMode, Transaction, TxnType, CLOCK_SKEW_LIMIT_SECS};
use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;
use tillgate_sdk::pan::{find_pans, redact_text, PanHit};

/// Largest accepted transaction document by default (`intake.max_txn_bytes`).
pub const MAX_TXN_BYTES: usize = 64 * 1024;

/// Largest `total_minor`, either sign: 10^13 minor units (100 billion in a currency with
/// cents). With it, no sum a rule keeps can overflow (see `rules::window::aggregate`).
pub const MAX_AMOUNT_MINOR: i64 = 10_000_000_000_000;

/// The `schema` values this agent understands; absent means the first.
pub const SCHEMAS: [&str; 1] = ["pos.txn.v1"];

/// Longest piece of input quoted back in a problem.
const QUOTE_CHARS: usize = 64;
/// Card numbers reported one by one; past it, a count.
const MAX_PAN_PROBLEMS: usize = 10;
/// The longest reason answered, dead-lettered or logged: whatever the input, a
/// refusal stays small.
pub const MAX_REASON_BYTES: usize = 4096;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON path of the field, e.g. `card.bin`.
    pub field: String,
    /// What was wrong.
    pub problem: String,
    /// What is allowed.
    pub allowed: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (allowed: {})", self.field, self.problem, self.allowed)
    }
}

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Larger than the transaction size limit.
    TooLarge { size: usize, limit: usize },
    /// Not JSON, or JSON but not an object.
    Malformed(String),
    /// Full card numbers somewhere in the document: where, and masked.
    CardNumber(Vec<PanHit>),
    /// A JSON object with field problems.
    Invalid(Vec<FieldError>),
}

/// What kind of rejection, for metrics labels and dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectionClass {
    TooLarge,
    Malformed,
    CardNumber,
    Invalid,
}

impl RejectionClass {
    /// The label: `too_large`, `malformed`, `pan`, `invalid`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionClass::TooLarge => "too_large",
            RejectionClass::Malformed => "malformed",
            RejectionClass::CardNumber => "pan",
            RejectionClass::Invalid => "invalid",
        }
    }
}

impl fmt::Display for RejectionClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const PAN_PROBLEM: &str = "holds a full card number (a Luhn-valid 13–19 digit PAN), which is never stored";
const PAN_ALLOWED: &str = "a processor token, the 6–8 digit BIN and the last 4 digits";

impl Rejection {
    /// What kind of rejection this is.
    pub fn class(&self) -> RejectionClass {
        match self {
            Rejection::TooLarge { .. } => RejectionClass::TooLarge,
            Rejection::Malformed(_) => RejectionClass::Malformed,
            Rejection::CardNumber(_) => RejectionClass::CardNumber,
            Rejection::Invalid(_) => RejectionClass::Invalid,
        }
    }

    /// Each problem as a field error (one per card number for [`Rejection::CardNumber`]).
    pub fn problems(&self) -> Vec<FieldError> {
        match self {
            Rejection::TooLarge { .. } | Rejection::Malformed(_) => Vec::new(),
            Rejection::CardNumber(hits) => {
                let mut out: Vec<FieldError> = hits
                    .iter()
                    .take(MAX_PAN_PROBLEMS)
                    .map(|h| FieldError {
                        field: h.path.clone(),
                        problem: format!("{PAN_PROBLEM} ({})", h.masked),
                        allowed: PAN_ALLOWED.into(),
                    })
                    .collect();
                if hits.len() > MAX_PAN_PROBLEMS {
                    out.push(FieldError {
                        field: "(document)".into(),
                        problem: format!("{} more full card numbers", hits.len() - MAX_PAN_PROBLEMS),
                        allowed: PAN_ALLOWED.into(),
                    });
                }
                out
            }
            Rejection::Invalid(errors) => errors.clone(),
        }
    }

    /// The JSON answered to the client.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({
            "error": self.class().as_str(),
            "message": self.to_string(),
        });
        if matches!(self, Rejection::CardNumber(_) | Rejection::Invalid(_)) {
            v["problems"] = serde_json::json!(self.problems());
        }
        v
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Rejection::TooLarge { size, limit } => {
                format!("transaction is {size} bytes; the limit is {limit} bytes (intake.max_txn_bytes)")
            }
            Rejection::Malformed(m) => m.clone(),
            Rejection::CardNumber(_) | Rejection::Invalid(_) => {
                let problems: Vec<String> = self.problems().iter().map(ToString::to_string).collect();
                format!("invalid pos.txn.v1 transaction: {}", problems.join("; "))
            }
        };
        // Belt and braces: whatever a message quotes, it carries no card number; and it
        // stays small whatever the input.
        f.write_str(&cut(&redact_text(&text), MAX_REASON_BYTES))
    }
}

/// A piece of input quoted in a problem: card numbers masked first, then cut to
/// [`QUOTE_CHARS`] (digits at the cut masked too, so a card number split by it shows no
/// more than a whole one would).
pub fn quoted(s: &str) -> String {
    let red = redact_text(s);
    let mut q: String = red.chars().take(QUOTE_CHARS).collect();
    if q.len() < red.len() {
        let kept: String = q
            .chars()
            .rev()
            .scan(true, |tail, c| {
                if *tail && (c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '*')) {
                    Some(if c.is_ascii_digit() { '*' } else { c })
                } else {
                    *tail = false;
                    Some(c)
                }
            })
            .collect::<Vec<char>>()
            .into_iter()
            .rev()
            .collect();
        q = format!("{kept}… ({} bytes)", s.len());
    }
    format!("{q:?}")
}

/// `text` cut to at most `max` bytes (on a character boundary), marked when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

const ID_CHARS: &str = "1–64 characters from A-Z a-z 0-9 . _ -";
const TEXT_ID: &str = "a string of 1–128 printable ASCII characters without spaces";
/// Fields the agent sets; a terminal sending them is confused about who stamps what.
const RESERVED: [&str; 4] = ["received_at", "clock_skew", "event_time_ms", "seq"];

/// Parses and validates one transaction received at `received_at`, under the default
/// size limit.
pub fn parse(raw: &[u8], received_at: DateTime<Utc>) -> Result<Transaction, Rejection> {
    parse_limited(raw, received_at, MAX_TXN_BYTES)
}

/// Parses and validates one transaction of at most `max_bytes`. The whole document is
/// scanned for card numbers before any field is looked at.
pub fn parse_limited(raw: &[u8], received_at: DateTime<Utc>, max_bytes: usize) -> Result<Transaction, Rejection> {
    if raw.len() > max_bytes {
        return Err(Rejection::TooLarge {
            size: raw.len(),
            limit: max_bytes,
        });
    }
    // serde_json refuses nesting deeper than 128 levels: deep input is malformed, not a
    // stack overflow.
    let value: Value = serde_json::from_slice(raw).map_err(|e| {
        Rejection::Malformed(format!(
            "malformed JSON at line {} column {}: {}",
            e.line(),
            e.column(),
            strip_position(&e.to_string())
        ))
    })?;
    let hits = find_pans(&value);
    if !hits.is_empty() {
        return Err(Rejection::CardNumber(hits));
    }
    let Value::Object(doc) = value else {
        return Err(Rejection::Malformed(format!(
            "expected a JSON object (one pos.txn.v1 transaction), got {}",
            kind(&value)
        )));
    };
    validate(doc, true, received_at)
}

/// Validates a parsed document. `journaled`: build the body to journal; false for
/// transactions read back from the journal, which are never journaled again (their
/// `body_head` stays empty).
fn validate(doc: Map<String, Value>, journaled: bool, received_at: DateTime<Utc>) -> Result<Transaction, Rejection> {
    // The journal keeps `received_at` in milliseconds: the live decision uses the same
    // instant, so a replay (restart, reload) sees the transaction the rules saw — the skew
    // verdict and the event time included.
    let received_at = received_at.trunc_subsecs(3);
    let mut v = Validator {
        doc: &doc,
        errors: Vec::new(),
    };
    v.schema();
    let txn_id = v.text_id("txn_id", true);
    let store_id = v.short_id("store_id");
    let terminal_id = v.short_id("terminal_id");
    let occurred_at = v.timestamp("occurred_at");
    let txn_type = v.txn_type();
    let total_minor = v.minor_units("total_minor");
    let currency = v.currency();
    let operator_id = v.text_id("operator_id", false);
    let customer_id = v.text_id("customer_id", false);
    let original_txn_id = v.text_id("original_txn_id", false);
    let card = v.card();
    v.array("line_items");
    v.array("tenders");
    for key in RESERVED {
        if doc.contains_key(key) {
            v.err(key, "is set by the agent, not the terminal", "leave it out");
        }
    }
    if !v.errors.is_empty() {
        return Err(Rejection::Invalid(v.errors));
    }
    let occurred_at = occurred_at.expect("validated");
    let clock_skew = (occurred_at - received_at).num_seconds().abs() > CLOCK_SKEW_LIMIT_SECS;
    Ok(Transaction {
        txn_id: txn_id.expect("validated"),
        store_id: store_id.expect("validated"),
        terminal_id: terminal_id.expect("validated"),
        occurred_at,
        txn_type: txn_type.expect("validated"),
        total_minor: total_minor.expect("validated"),
        currency: currency.expect("validated"),
        operator_id,
        customer_id,
        card,
        original_txn_id,
        received_at,
        clock_skew,
        body_head: if journaled {
            let event_time = if clock_skew { received_at } else { occurred_at };
            body_head(&doc, received_at, clock_skew, event_time.timestamp_millis())
        } else {
            Vec::new()
        },
    })
}

/// The journaled document without its closing brace: the document as parsed (unknown
/// fields kept) plus the agent's stamps: `received_at`, `clock_skew`, and
/// `event_time_ms`, the time the gateway's windows used (ms since the epoch, UTC), so a
/// consumer (the cloud's Flink job) windows the same instant without parsing the
/// terminal's RFC 3339 text. The writer appends `,"seq":N}`; building the
/// rest here keeps it off the writer thread.
///
/// Serialized from what was scanned, never the raw bytes: input the parser reads
/// differently from its text (a key given twice, of which only the last counts; a
/// 19-digit number written as a float) must not carry what the card-number scan never
/// saw into the journal. It is one line, as NDJSON consumers need.
fn body_head(doc: &Map<String, Value>, received_at: DateTime<Utc>, clock_skew: bool, event_time_ms: i64) -> Vec<u8> {
    let mut head = serde_json::to_vec(doc).expect("a JSON map always serializes");
    head.pop();
    head.extend_from_slice(
        format!(
            ",\"received_at\":\"{}\",\"clock_skew\":{clock_skew},\"event_time_ms\":{event_time_ms}",
            super::rfc3339(received_at)
        )
        .as_bytes(),
    );
    head
}

/// A transaction as journaled (with `received_at`, `clock_skew`, `seq`), for replay and
/// for original-sale lookups. `None` when the body is not a journaled transaction.
pub fn from_journal(body: &[u8]) -> Option<Transaction> {
    let mut doc: Map<String, Value> = serde_json::from_slice(body).ok()?;
    let received = DateTime::parse_from_rfc3339(doc.remove("received_at")?.as_str()?)
        .ok()?
        .with_timezone(&Utc);
    doc.remove("clock_skew");
    doc.remove("event_time_ms");
    doc.remove("seq");
    validate(doc, false, received).ok()
}

/// A transaction from a file of recorded traffic (the rule tester): journaled records
/// keep their `received_at`; plain terminal documents are taken as received when they
/// occurred.
pub fn from_recording(line: &[u8]) -> Result<Transaction, Rejection> {
    if let Some(t) = from_journal(line) {
        return Ok(t);
    }
    let occurred = serde_json::from_slice::<Map<String, Value>>(line)
        .ok()
        .and_then(|d| d.get("occurred_at").and_then(Value::as_str).map(str::to_string))
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
    parse(line, occurred)
}

fn strip_position(msg: &str) -> &str {
    msg.split(" at line ").next().unwrap_or(msg)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a decimal number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct Validator<'a> {
    doc: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Validator<'a> {
    fn err(&mut self, field: &str, problem: impl Into<String>, allowed: &str) {
        self.errors.push(FieldError {
            field: field.into(),
            problem: problem.into(),
            allowed: allowed.into(),
        });
    }

    /// The field's value; `None` when absent or null (recording an error if required).
    fn get(&mut self, field: &str, required: bool, allowed: &str) -> Option<&'a Value> {
        let doc: &'a Map<String, Value> = self.doc;
        match doc.get(field) {
            None | Some(Value::Null) if required => {
                self.err(field, "is required but missing", allowed);
                None
            }
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// `schema`: absent means `pos.txn.v1`; anything else this agent does not know is
    /// refused rather than read as v1.
    fn schema(&mut self) {
        let allowed = format!(
            "{} (or leave `schema` out)",
            SCHEMAS.map(|s| format!("\"{s}\"")).join(", ")
        );
        if let Some(s) = self.string("schema", false, &allowed) {
            if !SCHEMAS.contains(&s.as_str()) {
                self.err(
                    "schema",
                    format!("{} is not a schema version this agent supports", quoted(&s)),
                    &allowed,
                );
            }
        }
    }

    fn string(&mut self, field: &str, required: bool, allowed: &str) -> Option<String> {
        let v = self.get(field, required, allowed)?;
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                let k = kind(other);
                self.err(field, format!("must be a string, got {k}"), allowed);
                None
            }
        }
    }

    fn text_id(&mut self, field: &str, required: bool) -> Option<String> {
        let s = self.string(field, required, TEXT_ID)?;
        if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            self.err(field, format!("{} is not a valid identifier", quoted(&s)), TEXT_ID);
            return None;
        }
        Some(s)
    }

    fn short_id(&mut self, field: &str) -> Option<String> {
        let s = self.string(field, true, ID_CHARS)?;
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if !ok {
            self.err(field, format!("{} is not a valid identifier", quoted(&s)), ID_CHARS);
            return None;
        }
        Some(s)
    }

    fn timestamp(&mut self, field: &str) -> Option<DateTime<Utc>> {
        const ALLOWED: &str = "an RFC 3339 timestamp with offset, e.g. \"2026-11-27T14:03:07.250Z\"";
        let s = self.string(field, true, ALLOWED)?;
        match DateTime::parse_from_rfc3339(&s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(e) => {
                self.err(
                    field,
                    format!("{} is not an RFC 3339 timestamp ({e})", quoted(&s)),
                    ALLOWED,
                );
                None
            }
        }
    }

    fn txn_type(&mut self) -> Option<TxnType> {
        let allowed = TxnType::NAMES.join(", ");
        let s = self.string("type", true, &allowed)?;
        let t = TxnType::from_name(&s);
        if t.is_none() {
            self.err("type", format!("unknown transaction type {}", quoted(&s)), &allowed);
        }
        t
    }

    fn minor_units(&mut self, field: &str) -> Option<i64> {
        const ALLOWED: &str =
            "an integer amount in minor units (1999 for 19.99), never a decimal, between -10^13 and 10^13";
        let v = self.get(field, true, ALLOWED)?;
        match v.as_i64() {
            Some(n) if n.unsigned_abs() <= MAX_AMOUNT_MINOR.unsigned_abs() => Some(n),
            Some(n) => {
                self.err(
                    field,
                    format!("{n} is beyond the largest amount a till can take"),
                    ALLOWED,
                );
                None
            }
            None => {
                let problem = match v {
                    Value::Number(n) if n.is_f64() => {
                        format!("{n} is a decimal; money is sent as integer minor units")
                    }
                    Value::Number(n) => format!("{n} is out of range"),
                    other => format!("must be an integer, got {}", kind(other)),
                };
                self.err(field, problem, ALLOWED);
                None
            }
        }
    }

    fn currency(&mut self) -> Option<String> {
        const ALLOWED: &str = "an ISO 4217 alphabetic code in upper case, e.g. \"USD\", \"EUR\"";
        let s = self.string("currency", true, ALLOWED)?;
        if iso_currency::Currency::from_code(&s).is_none() {
            self.err(
                "currency",
                format!("{} is not an ISO 4217 currency code", quoted(&s)),
                ALLOWED,
            );
            return None;
        }
        Some(s)
    }

    fn array(&mut self, field: &str) {
        if let Some(v) = self.get(field, false, "an array") {
            if !v.is_array() {
                let k = kind(v);
                self.err(field, format!("must be an array, got {k}"), "an array");
            }
        }
    }

    fn card(&mut self) -> Option<Card> {
        const ALLOWED: &str = "an object with token, bin, last4, entry_mode";
        let v = self.get("card", false, ALLOWED)?;
        let Value::Object(card) = v else {
            let k = kind(v);
            self.err("card", format!("must be an object, got {k}"), ALLOWED);
            return None;
        };
        let mut out = Card::default();
        let mut sub = Validator {
            doc: card,
            errors: Vec::new(),
        };
        out.token = sub.text_id("token", false);
        if let Some(bin) = sub.string("bin", false, "6–8 digits") {
            if (6..=8).contains(&bin.len()) && bin.bytes().all(|b| b.is_ascii_digit()) {
                out.bin = Some(bin);
            } else {
                sub.err("bin", format!("{} is not a BIN", quoted(&bin)), "6–8 digits");
            }
        }
        if let Some(last4) = sub.string("last4", false, "exactly 4 digits") {
            if last4.len() == 4 && last4.bytes().all(|b| b.is_ascii_digit()) {
                out.last4 = Some(last4);
            } else {
                sub.err(
                    "last4",
                    format!("{} is not 4 digits", quoted(&last4)),
                    "exactly 4 digits",
                );
            }
        }
        let modes = EntryMode::NAMES.join(", ");
        if let Some(mode) = sub.string("entry_mode", false, &modes) {
            out.entry_mode = EntryMode::from_name(&mode);
            if out.entry_mode.is_none() {
                sub.err("entry_mode", format!("unknown entry mode {}", quoted(&mode)), &modes);
            }
        }
        for mut e in sub.errors {
            e.field = format!("card.{}", e.field);
            self.errors.push(e);
        }
        Some(out)
    }
}
