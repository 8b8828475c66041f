//! "A full card number is never stored, answered or logged", as a property: random
//! documents, a random Luhn-valid PAN put at a random place in a random form (a string,
//! a number, inside free text, spaced or dashed, JSON-escaped, as a key), sent over
//! HTTP (single and NDJSON) and MQTT; also forms the parser reads differently from the
//! text (a key given twice, a long number written as a float). Afterwards the digits of
//! no PAN appear in the journal file, its WAL, the archive, any answer, any MQTT message
//! or the agent's log.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tillgate_testkit::{post, post_ndjson, scratch_dir, txn, Agent, AgentOptions, Broker, BrokerOptions, Terminal};

/// Luhn check digit for `body`.
fn with_check_digit(body: &str) -> String {
    (0..10u8)
        .map(|d| format!("{body}{d}"))
        .find(|c| luhn(c))
        .expect("one digit fits")
}

fn luhn(s: &str) -> bool {
    let sum: u32 = s
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// How the number is written into the document.
#[derive(Debug, Clone)]
enum Form {
    Plain,
    Spaced,
    Dashed,
    Number,
    InText,
    /// Digits as `\u003N` escapes in the raw JSON.
    Escaped,
    Key,
    /// The same key twice: the parser keeps the last (harmless) value.
    DuplicateKey,
    /// A number with a fraction: 17–19 digits lose precision as a float.
    Float,
}

/// Where it goes.
#[derive(Debug, Clone, Copy)]
enum Transport {
    Http,
    Ndjson,
    Mqtt,
}

#[derive(Debug, Clone)]
struct Case {
    pan: String,
    form: Form,
    path: Vec<String>,
    transport: Transport,
    noise: Vec<(String, String)>,
}

fn pan() -> impl Strategy<Value = String> {
    (2u8..=6, 12usize..=18)
        .prop_flat_map(|(first, len)| proptest::collection::vec(0u8..10, len - 1).prop_map(move |d| (first, d)))
        .prop_map(|(first, digits)| {
            let body: String = std::iter::once(first)
                .chain(digits)
                .map(|d| char::from(b'0' + d))
                .collect();
            with_check_digit(&body)
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        pan(),
        prop_oneof![
            Just(Form::Plain),
            Just(Form::Spaced),
            Just(Form::Dashed),
            Just(Form::Number),
            Just(Form::InText),
            Just(Form::Escaped),
            Just(Form::Key),
            Just(Form::DuplicateKey),
            Just(Form::Float),
        ],
        proptest::collection::vec(
            prop_oneof![
                Just("card".to_string()),
                Just("line_items".to_string()),
                Just("tenders".to_string()),
                Just("loyalty".to_string()),
                "[a-z]{1,6}"
            ],
            1..4,
        ),
        prop_oneof![Just(Transport::Http), Just(Transport::Ndjson), Just(Transport::Mqtt)],
        proptest::collection::vec(("[a-z]{1,8}", "[a-z0-9 ]{0,12}"), 0..4),
    )
        .prop_map(|(pan, form, path, transport, noise)| Case {
            pan,
            form,
            path,
            transport,
            noise,
        })
}

const MARK: &str = "@@PAN@@";

/// The document for `case` as raw JSON text, with the PAN written in its form.
fn document(id: &str, case: &Case) -> String {
    let mut doc = txn(id, "till-1", 100);
    for (k, v) in &case.noise {
        doc[format!("x_{k}")] = json!(v);
    }
    let grouped = |sep: &str| {
        case.pan
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect::<Vec<_>>()
            .join(sep)
    };
    let (value, key) = match case.form {
        Form::Plain => (json!(case.pan), None),
        Form::Spaced => (json!(grouped(" ")), None),
        Form::Dashed => (json!(grouped("-")), None),
        Form::Number => (json!(case.pan.parse::<u64>().unwrap()), None),
        Form::InText => (json!(format!("paid with {} ok", grouped(" "))), None),
        Form::Escaped => (json!(MARK), None),
        Form::Key => (json!(true), Some(case.pan.clone())),
        Form::DuplicateKey | Form::Float => (json!("fine"), None),
    };
    // Walk (and build) the path: arrays for line_items/tenders, objects elsewhere.
    let mut at = &mut doc;
    for (depth, step) in case.path.iter().enumerate() {
        let last = depth + 1 == case.path.len();
        let listy = step == "line_items" || step == "tenders";
        if at.get(step).is_none() || (listy && !at[step].is_array()) || (!listy && !at[step].is_object()) {
            at[step] = if listy { json!([{}]) } else { json!({}) };
        }
        at = if listy { &mut at[step][0] } else { &mut at[step] };
        if last {
            let key = key.clone().unwrap_or_else(|| "note".into());
            at[key] = value.clone();
        }
    }
    let text = doc.to_string();
    match case.form {
        Form::Escaped => {
            let escaped: String = case.pan.chars().map(|c| format!("\\u003{c}")).collect();
            text.replace(MARK, &escaped)
        }
        Form::DuplicateKey => text.replacen('{', &format!("{{\"dup\":\"{}\",\"dup\":\"fine\",", case.pan), 1),
        Form::Float => text.replacen('{', &format!("{{\"float\":{}.0,", case.pan), 1),
        _ => text,
    }
}

/// Forms the parser may read as something harmless: accepted or refused, their digits
/// must not be stored either way.
fn may_be_accepted(form: &Form) -> bool {
    matches!(form, Form::DuplicateKey | Form::Float)
}

/// Every file below `dir`, read whole.
fn files(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p.display().to_string(), bytes));
        }
    }
}

/// The digits of `bytes`, JSON escapes decoded, everything else dropped: a PAN
/// printed with separators or escapes still shows as its digit string.
fn digits(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() / 4);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"\\u003") && bytes.get(i + 5).is_some_and(u8::is_ascii_digit) {
            out.push(bytes[i + 5]);
            i += 6;
        } else {
            if bytes[i].is_ascii_digit() {
                out.push(bytes[i]);
            } else if !matches!(bytes[i], b' ' | b'-') {
                // A separator keeps a run whole; anything else ends it.
                out.push(b'|');
            }
            i += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_card_number_is_stored_answered_or_logged_wherever_it_is_put() {
    let dir = scratch_dir();
    let broker = Broker::start(&dir.join("broker"), &BrokerOptions::default());
    let opts = AgentOptions {
        extra_toml: broker.agent_toml("tillgate-e2e-pans"),
        ..AgentOptions::default()
    };
    let agent = Agent::start(&dir.join("agent"), &opts);
    while agent.status_json().await["mqtt"]["subscribed"] != true {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let terminal = Terminal::connect(broker.port, "store-1", "till-1").await;

    let mut runner = TestRunner::deterministic();
    let cases: Vec<Case> = (0..80)
        .map(|_| case().new_tree(&mut runner).expect("a case").current())
        .collect();
    let Sent {
        mut answers,
        mqtt_sent,
        mut refused,
    } = send_every_case(&agent, &terminal, &cases).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while terminal.errors().len() < mqtt_sent {
        assert!(
            std::time::Instant::now() < deadline,
            "MQTT refusals: {}",
            terminal.errors().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the forms that may be accepted be answered too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        terminal.errors().iter().all(|e| e["error"] == "pan"),
        "{:?}",
        terminal.errors()
    );
    refused += terminal.errors().len();
    answers.extend(terminal.errors().iter().map(Value::to_string));
    answers.extend(terminal.decisions().values().flatten().map(Value::to_string));
    let metrics = agent.metrics_text().await;
    let status = agent.status_json().await.to_string();

    // Everything the agent wrote or said, while it runs (the WAL) and after it stops.
    let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
    files(&agent.data_dir, &mut seen);
    let agent_dir = agent.dir.clone();
    agent.stop();
    files(&agent_dir, &mut seen);
    seen.push(("answers".into(), answers.join("\n").into_bytes()));
    seen.push(("metrics".into(), metrics.into_bytes()));
    seen.push(("status".into(), status.into_bytes()));
    assert!(
        seen.iter().any(|(name, _)| name.ends_with("journal.db-wal")),
        "the WAL was read while the agent ran"
    );
    let dead_letters = tillgate_testkit::dead_letters(&agent_dir.join("journal.db"));
    assert_eq!(dead_letters.len(), refused, "every refusal left a (masked) dead letter");
    assert!(refused >= cases.iter().filter(|c| !may_be_accepted(&c.form)).count());
    for (name, bytes) in &seen {
        let haystack = digits(bytes);
        for case in &cases {
            assert!(
                !haystack.windows(case.pan.len()).any(|w| w == case.pan.as_bytes()),
                "{name} holds the card number of {case:?}"
            );
        }
    }
}

/// What the cases got back over HTTP and NDJSON, and what is still owed over MQTT.
struct Sent {
    answers: Vec<String>,
    /// MQTT cases that must be refused (their answers arrive on the error topic).
    mqtt_sent: usize,
    refused: usize,
}

/// Sends each case over its transport; a refusal must name the card number (`pan`).
async fn send_every_case(agent: &Agent, terminal: &Terminal, cases: &[Case]) -> Sent {
    let client = tillgate_testkit::http_client();
    let mut answers = Vec::new();
    let mut mqtt_sent = 0;
    let mut refused = 0;
    for (i, case) in cases.iter().enumerate() {
        let id = format!("pan-{i}");
        let raw = document(&id, case);
        match case.transport {
            Transport::Http => {
                let (status, answer) = post(&client, &agent.url(), raw).await.unwrap();
                if status == 400 {
                    assert_eq!(answer["error"], "pan", "{case:?}: {answer}");
                    refused += 1;
                } else {
                    assert!(status == 200 && may_be_accepted(&case.form), "{case:?}: {answer}");
                }
                answers.push(answer.to_string());
            }
            Transport::Ndjson => {
                let good = txn(&format!("{id}-good"), "till-1", 100).to_string();
                let (_, lines) = post_ndjson(&client, &agent.url(), format!("{good}\n{raw}\n"))
                    .await
                    .unwrap();
                assert_eq!(lines[0]["status"], 200);
                if lines[1]["status"] == 400 {
                    assert_eq!(lines[1]["error"], "pan", "{case:?}: {}", lines[1]);
                    refused += 1;
                } else {
                    assert!(may_be_accepted(&case.form), "{case:?}: {}", lines[1]);
                }
                answers.extend(lines.iter().map(Value::to_string));
            }
            Transport::Mqtt => {
                terminal.publish_raw(&terminal.txn_topic(), raw.into_bytes()).await;
                if !may_be_accepted(&case.form) {
                    mqtt_sent += 1;
                }
            }
        }
    }
    Sent {
        answers,
        mqtt_sent,
        refused,
    }
}
