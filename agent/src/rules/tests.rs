use super::*;
use crate::txn::parse;
use chrono::{Duration as Dur, Utc};
use std::collections::HashMap;
use std::time::Duration;

fn txn(id: &str, minutes_ago: i64, extra: serde_json::Value) -> Transaction {
    let now = Utc::now();
    let mut v = serde_json::json!({
        "txn_id": id, "store_id": "s1", "terminal_id": "p1", "operator_id": "op1",
        "occurred_at": (now - Dur::minutes(minutes_ago)).to_rfc3339(),
        "type": "sale", "total_minor": 1500, "currency": "USD",
        "card": {"token": "tok_a", "bin": "411111", "entry_mode": "chip"}
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    // Received when it occurred, so the event time is occurred_at.
    parse(v.to_string().as_bytes(), now - Dur::minutes(minutes_ago)).unwrap()
}

/// Loads `text` as the only rule file, beside a deny list `denied.txt` holding `tok_bad`.
fn load(text: &str) -> Result<RulePack, RuleError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("denied.txt"), "tok_bad\n").unwrap();
    std::fs::write(dir.path().join("pack.toml"), text).unwrap();
    load_paths(&[dir.path().join("pack.toml")])
}

fn engine(text: &str) -> Engine {
    Engine::new(load(text).unwrap(), None, Duration::ZERO)
}

fn load_err(text: &str) -> RuleError {
    load(text).unwrap_err()
}

struct Originals(HashMap<String, Transaction>);

/// Originals holding one sale, `s` (card `tok_a`).
fn sale_s() -> Originals {
    Originals(HashMap::from([("s".to_string(), txn("s", 5, serde_json::json!({})))]))
}

/// A return of `s` to card `tok_z`, and a return of a sale nobody knows.
fn returns_to_another_card_and_of_no_known_sale() -> (Transaction, Transaction) {
    let other = serde_json::json!({"type": "return", "original_txn_id": "s", "card": {"token": "tok_z"}});
    let unknown = serde_json::json!({"type": "return", "original_txn_id": "nope"});
    (txn("r2", 0, other), txn("r3", 0, unknown))
}
impl OriginalLookup for Originals {
    fn original(&self, id: &str) -> Option<Transaction> {
        self.0.get(id).cloned()
    }
}

fn decide(e: &mut Engine, t: &Transaction, seq: u64) -> Decision {
    e.decide(
        t,
        &DecideContext {
            seq,
            lookup: &NoOriginals,
            replaying: false,
        },
    )
}

#[test]
fn strongest_enforced_action_wins_and_shadow_never_decides() {
    let mut e = engine(
        r#"
[lists]
denied = "denied.txt"

[[rule]]
id = "high-amount"
when = 'txn.total_minor >= 100000'
action = "review"

[[rule]]
id = "denied-token"
when = 'txn.card.token in lists.denied'
action = "block"
mode = "shadow"
"#,
    );
    let t = txn(
        "t1",
        0,
        serde_json::json!({"total_minor": 150000, "card": {"token": "tok_bad"}}),
    );
    let d = decide(&mut e, &t, 1);
    assert_eq!(d.action, Action::Review);
    assert_eq!(
        d.hits.iter().map(|h| &*h.id).collect::<Vec<_>>(),
        ["high-amount", "denied-token"]
    );
}

#[test]
fn card_velocity_counts_the_sliding_window_per_event() {
    let mut e = engine(
        r#"
[[rule]]
id = "card-velocity"
filter = 'txn.type == "sale"'
key = "card.token"
window = "10m"
aggregates = { attempts = "count", spent = "sum(total_minor)", cards = "count_distinct(card.bin)" }
when = 'attempts >= 3'
action = "block"
"#,
    );
    // 12, 6 and 1 minutes ago: the first leaves the window before the third.
    assert_eq!(
        decide(&mut e, &txn("a", 12, serde_json::json!({})), 1).action,
        Action::Allow
    );
    assert_eq!(
        decide(&mut e, &txn("b", 6, serde_json::json!({})), 2).action,
        Action::Allow
    );
    assert_eq!(
        decide(&mut e, &txn("c", 1, serde_json::json!({})), 3).action,
        Action::Allow
    );
    let d = decide(&mut e, &txn("d", 0, serde_json::json!({})), 4);
    assert_eq!(d.action, Action::Block);
    assert_eq!(d.hits[0].aggregates["attempts"], 3);
    assert_eq!(d.hits[0].aggregates["spent"], 4500);
    assert_eq!(d.hits[0].aggregates["cards"], 1);
    // Another card has its own window; returns are filtered out.
    let other = txn("e", 0, serde_json::json!({"card": {"token": "tok_b"}}));
    assert_eq!(decide(&mut e, &other, 5).action, Action::Allow);
    let ret = txn("f", 0, serde_json::json!({"type": "return"}));
    assert_eq!(decide(&mut e, &ret, 6).action, Action::Allow);
}

#[test]
fn refund_to_a_different_card_sees_the_original_sale() {
    let mut e = engine(
        r#"
[[rule]]
id = "refund-to-different-card"
filter = 'txn.type == "return" && has(txn.original_txn_id)'
when = 'has(original.card.token) && original.card.token != txn.card.token'
action = "review"
"#,
    );
    let lookup = sale_s();
    let same = txn("r1", 0, serde_json::json!({"type": "return", "original_txn_id": "s"}));
    let (other, unknown) = returns_to_another_card_and_of_no_known_sale();
    let cx = |seq| DecideContext {
        seq,
        lookup: &lookup,
        replaying: false,
    };
    assert_eq!(e.decide(&same, &cx(1)).action, Action::Allow);
    assert_eq!(e.decide(&other, &cx(2)).action, Action::Review);
    assert_eq!(e.decide(&unknown, &cx(3)).action, Action::Allow);
}

/// A pack where some conditions run compiled and one on the interpreter (`size()` is not
/// compiled): the interpreter gets the real transaction and original, the compiled ones
/// the same answers as alone.
#[test]
fn compiled_and_interpreted_conditions_share_one_pack() {
    let mut e = engine(
        r#"
[[rule]]
id = "refund-to-different-card"
filter = 'txn.type == "return" && has(txn.original_txn_id)'
when = 'has(original.card.token) && original.card.token != txn.card.token'
action = "review"

[[rule]]
id = "known-original"
filter = 'txn.type == "return"'
when = 'size(original) > 0 && size(txn.txn_id) == 2'
action = "block"
mode = "shadow"
"#,
    );
    let lookup = sale_s();
    let (other, unknown) = returns_to_another_card_and_of_no_known_sale();
    let cx = |seq| DecideContext {
        seq,
        lookup: &lookup,
        replaying: false,
    };
    let d = e.decide(&other, &cx(1));
    let ids: Vec<&str> = d.hits.iter().map(|h| &*h.id).collect();
    assert_eq!(ids, ["refund-to-different-card", "known-original"]);
    assert_eq!(d.action, Action::Review, "the shadow rule does not decide");
    assert!(e.decide(&unknown, &cx(2)).hits.is_empty());
}

#[test]
fn a_closed_report_window_comes_with_the_decision_but_not_during_replay() {
    let mut e = engine(
        r#"
[[report]]
id = "per-customer"
key = "customer_id"
window = { tumbling = "5m" }
aggregates = { n = "count" }
"#,
    );
    let c = serde_json::json!({"customer_id": "c1"});
    assert!(decide(&mut e, &txn("a", 30, c.clone()), 1).reports.is_empty());
    let d = decide(&mut e, &txn("b", 0, c.clone()), 2);
    assert_eq!(d.reports.len(), 1);
    assert_eq!(d.reports[0].aggregates["n"], 1);
    assert_eq!(d.reports[0].window_end_ms - d.reports[0].window_start_ms, 300_000);
    let mut replaying = engine("[[report]]\nid = \"r\"\nkey = \"customer_id\"\nwindow = { tumbling = \"5m\" }\n");
    replaying.decide(
        &txn("a", 30, c.clone()),
        &DecideContext {
            seq: 1,
            lookup: &NoOriginals,
            replaying: true,
        },
    );
    let d = replaying.decide(
        &txn("b", 0, c),
        &DecideContext {
            seq: 2,
            lookup: &NoOriginals,
            replaying: true,
        },
    );
    assert!(d.reports.is_empty());
}

#[test]
fn broken_rule_files_name_file_rule_line_and_expression_position() {
    let e = load_err("[[rule]]\nid = \"a\"\nwhen = 'txn.total_minor >= '\naction = \"block\"\n");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(
        e.message.contains("rule `a`") && e.message.contains("`when` at 1:"),
        "{e}"
    );
    assert!(e.to_string().contains("pack.toml:3"), "{e}");

    let e = load_err("[[rule]]\nid = \"v\"\nkey = \"card.token\"\nwindow = \"10m\"\naggregates = { attempts = \"count\" }\nwhen = 'atempts >= 6'\naction = \"block\"\n");
    assert_eq!(e.line, Some(6), "{e}");
    assert!(
        e.message.contains("at 1:1: unknown name `atempts`") && e.message.contains("attempts"),
        "{e}"
    );

    let e = load_err("[[rule]]\nid = \"x\"\nkey = \"card.token\"\nwindow = \"10m\"\naggregates = { m = \"median(total_minor)\" }\nwhen = 'm > 1'\naction = \"block\"\n");
    assert!(
        e.message.contains("median") && e.message.contains("count_distinct"),
        "{e}"
    );
    assert_eq!(e.line, Some(5), "{e}");

    let e = load_err("[[rule]]\nid = \"l\"\nwhen = 'txn.card.token in lists.nope'\naction = \"block\"\n");
    assert!(e.message.contains("`lists.nope` is not defined"), "{e}");

    let e = load_err("[[rule]]\nid = \"w\"\nwindow = \"10m\"\nwhen = 'true'\naction = \"block\"\n");
    assert!(e.message.contains("needs a `key`"), "{e}");

    let e = load_err("[[rule]]\nid = \"k\"\nkey = \"shoe_size\"\nwindow = \"1m\"\nwhen = 'true'\naction = \"block\"\n");
    assert!(
        e.message.contains("unknown field `shoe_size`") && e.message.contains("card.token"),
        "{e}"
    );

    let e =
        load_err("[[report]]\nid = \"r\"\nkey = \"store_id\"\nwindow = { tumbling = \"5m\", session_gap = \"1m\" }\n");
    assert!(e.message.contains("exactly one of"), "{e}");
    assert_eq!(e.line, Some(4), "{e}");
}

#[test]
fn the_shipped_rule_pack_loads() {
    let pack = load_paths(&[std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rules")]).unwrap();
    assert!(pack.rules.len() >= 10, "{} rules", pack.rules.len());
    assert!(pack.reports.iter().any(|r| r.id == "customer-5m-tumbling"));
}

#[test]
fn max_keys_evicts_the_least_recently_used_key() {
    let mut e = engine("[[rule]]\nid = \"v\"\nkey = \"card.token\"\nwindow = \"10m\"\nmax_keys = 2\naggregates = { n = \"count\" }\nwhen = 'n >= 2'\naction = \"block\"\n");
    for (i, tok) in ["a", "b", "a", "c", "a"].iter().enumerate() {
        decide(
            &mut e,
            &txn(&format!("t{i}"), 0, serde_json::json!({"card": {"token": tok}})),
            i as u64,
        );
    }
    assert_eq!(e.live_keys(), 2);
    // `b` was evicted when `c` arrived; it starts again from 1.
    assert_eq!(
        decide(&mut e, &txn("t9", 0, serde_json::json!({"card": {"token": "b"}})), 9).action,
        Action::Allow
    );
}

#[test]
fn reset_forgets_every_window_for_a_rebuild() {
    let mut e = engine("[[rule]]\nid = \"v\"\nkey = \"card.token\"\nwindow = \"10m\"\naggregates = { n = \"count\" }\nwhen = 'n >= 2'\naction = \"block\"\n");
    decide(&mut e, &txn("a", 1, serde_json::json!({})), 1);
    assert_eq!(
        decide(&mut e, &txn("b", 0, serde_json::json!({})), 2).action,
        Action::Block
    );
    e.reset();
    assert_eq!(e.live_keys(), 0);
    assert_eq!(
        decide(&mut e, &txn("c", 0, serde_json::json!({})), 3).action,
        Action::Allow
    );
}

#[test]
fn ids_are_unique_across_files_rules_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "[[rule]]\nid = \"same\"\nwhen = 'true'\naction = \"allow\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.toml"),
        "\n[[report]]\nid = \"same\"\nkey = \"store_id\"\nwindow = { tumbling = \"1m\" }\n",
    )
    .unwrap();
    let e = load_paths(&[dir.path().to_path_buf()]).unwrap_err();
    assert!(
        e.to_string().contains("b.toml:3") && e.message.contains("also defined in") && e.message.contains("a.toml"),
        "{e}"
    );
}

/// Void rate per shift, as loss prevention defines it: voids over all of the operator's
/// transactions in the same window, one rule, two aggregates over the same events.
#[test]
fn a_conditional_aggregate_counts_only_the_events_its_filter_holds_for() {
    let mut e = engine(
        r#"
[[rule]]
id = "void-rate"
filter = 'has(txn.operator_id)'
key = "operator_id"
window = "8h"
aggregates = { transactions = "count", voids = { of = "count", filter = 'txn.type in ["void", "post_void"]' }, voided = { of = "sum(total_minor)", filter = 'txn.type in ["void", "post_void"]' }, void_cards = { of = "count_distinct(card.token)", filter = 'txn.type == "void"' } }
when = 'transactions >= 10 && double(voids) / double(transactions) >= 0.2'
action = "review"
"#,
    );
    let mut last = None;
    for i in 0..10u64 {
        let kind = match i {
            1 | 9 => "void",
            5 => "post_void",
            _ => "sale",
        };
        let card = format!("tok_{i}");
        let t = txn(
            &format!("t{i}"),
            60 - i as i64,
            serde_json::json!({"type": kind, "total_minor": 100 * (i as i64 + 1), "card": {"token": card}}),
        );
        last = Some(decide(&mut e, &t, i + 1));
    }
    // Voids at i = 1, 5 (a post-void), 9: 3 of 10 (30 %), 200 + 600 + 1000 voided; the
    // plain voids on 2 cards.
    let d = last.unwrap();
    assert_eq!(d.action, Action::Review, "{d:?}");
    let a = &d.hits[0].aggregates;
    assert_eq!((a["transactions"].as_i64(), a["voids"].as_i64()), (Some(10), Some(3)));
    assert_eq!((a["voided"].as_i64(), a["void_cards"].as_i64()), (Some(1800), Some(2)));
    // Another operator with many sales and one void: a count would not tell them apart
    // from a quiet till, the rate does.
    for i in 0..20u64 {
        let kind = if i == 0 { "void" } else { "sale" };
        let t = txn(
            &format!("u{i}"),
            30,
            serde_json::json!({"type": kind, "operator_id": "op2"}),
        );
        let d = decide(&mut e, &t, 100 + i);
        assert_eq!(d.action, Action::Allow, "op2 at {i}: {d:?}");
    }
}

/// Aggregates with the same filter share one condition (evaluated once); a report's
/// aggregates take filters too.
#[test]
fn aggregates_with_the_same_filter_share_it_and_reports_take_them_too() {
    let pack = load(
        r#"
[[rule]]
id = "r"
key = "operator_id"
window = "1h"
aggregates = { a = { of = "count", filter = 'txn.total_minor > 1000' }, b = { of = "sum(total_minor)", filter = 'txn.total_minor > 1000' }, c = { of = "count", filter = 'txn.type == "void"' } }
when = 'a > 0'
action = "allow"

[[report]]
id = "big-sales"
key = "operator_id"
window = { tumbling = "5m" }
aggregates = { big = { of = "count", filter = 'txn.total_minor > 1000' }, all = "count" }
"#,
    )
    .unwrap();
    assert_eq!(pack.rules[0].conditions.len(), 2);
    let groups: Vec<usize> = pack.rules[0].aggregates.iter().map(|a| a.group).collect();
    assert_eq!(groups, [1, 1, 2]);
    assert_eq!(pack.reports[0].conditions.len(), 1);
}

#[test]
fn a_bad_conditional_aggregate_is_refused_naming_it_and_what_is_allowed() {
    let rule = |aggs: &str| {
        format!(
            "[[rule]]\nid = \"r\"\nkey = \"operator_id\"\nwindow = \"1h\"\naggregates = {aggs}\nwhen = 'true'\naction = \"allow\"\n"
        )
    };
    let e = load_err(&rule("{ v = { of = \"count\" } }"));
    assert!(
        e.message
            .contains("aggregate `v` must be a string such as \"count\" or a table"),
        "{e}"
    );
    let e = load_err(&rule("{ v = { of = \"count\", filter = 'true', where = 'x' } }"));
    assert!(e.message.contains("unknown key `where`; allowed: of, filter"), "{e}");
    let e = load_err(&rule("{ v = { of = \"median\", filter = 'true' } }"));
    assert!(
        e.message.contains("\"median\" is not understood; allowed: count"),
        "{e}"
    );
    let e = load_err(&rule("{ v = 7 }"));
    assert!(e.message.contains("aggregate `v` must be a string"), "{e}");
    // A filter that does not compile names the aggregate's key and its line.
    let e = load_err(&rule("{ v = { of = \"count\", filter = 'txn.type ==' } }"));
    assert_eq!(e.key.as_deref(), Some("rule[0].aggregates.v.filter"), "{e}");
    assert_eq!(e.line, Some(5), "{e}");
    // Aggregates are not variables of an aggregate's filter.
    let e = load_err(&rule("{ n = \"count\", v = { of = \"count\", filter = 'n > 1' } }"));
    assert_eq!(e.key.as_deref(), Some("rule[0].aggregates.v.filter"), "{e}");
    let filters: Vec<String> = (0..33)
        .map(|i| format!("f{i} = {{ of = \"count\", filter = 'txn.total_minor > {i}' }}"))
        .collect();
    let e = load_err(&rule(&format!("{{ {} }}", filters.join(", "))));
    assert!(e.message.contains("more than 32 different filters"), "{e}");
}

/// An aggregate filter that cannot be evaluated (a field the transaction lacks) is
/// counted as a rule error and leaves the transaction out of that aggregate only.
#[test]
fn an_aggregate_filter_that_fails_is_counted_and_leaves_the_transaction_out() {
    let pack = load(
        r#"
[[rule]]
id = "r"
key = "operator_id"
window = "1h"
aggregates = { all = "count", vip = { of = "count", filter = 'txn.customer_id == "vip"' } }
when = 'true'
action = "allow"
"#,
    )
    .unwrap();
    let metrics = crate::metrics::Metrics::new();
    let mut e = Engine::new(pack, Some(metrics.clone()), Duration::ZERO);
    decide(&mut e, &txn("a", 3, serde_json::json!({"customer_id": "vip"})), 1);
    let d = decide(&mut e, &txn("b", 2, serde_json::json!({})), 2);
    assert_eq!(d.hits[0].aggregates["all"], 2);
    assert_eq!(d.hits[0].aggregates["vip"], 1);
    assert_eq!(metrics.rule_errors.with_label_values(&["r"]).get(), 1);
}

#[test]
fn state_bounds_past_what_a_key_table_or_ring_counts_are_refused_naming_the_key() {
    let rule = |extra: &str| {
        format!(
            "[[rule]]\nid = \"r\"\nkey = \"card.token\"\nwindow = \"1h\"\naggregates = {{ n = \"count\" }}\nwhen = 'n > 1'\naction = \"block\"\n{extra}\n"
        )
    };
    let e = load_err(&rule("max_keys = 100000001"));
    assert_eq!(e.key.as_deref(), Some("rule[0].max_keys"), "{e}");
    assert!(e.message.contains("at most 100000000"), "{e}");
    let e = load_err(&rule("max_events_per_key = 10000001"));
    assert_eq!(e.key.as_deref(), Some("rule[0].max_events_per_key"), "{e}");
    assert!(e.message.contains("must be 1–10000000"), "{e}");
    load(&rule("max_keys = 100000000\nmax_events_per_key = 10000000")).expect("the limits themselves are allowed");
}

#[test]
fn aggregates_counting_the_same_field_share_one_tag() {
    let aggs: Vec<String> = (0..300)
        .map(|i| format!("d{i} = \"count_distinct(card.token)\""))
        .collect();
    let text = format!(
        "[[rule]]\nid = \"r\"\nkey = \"terminal_id\"\nwindow = \"1h\"\naggregates = {{ {}, s = \"count_distinct(store_id)\" }}\nwhen = 'd0 > 1'\naction = \"review\"\n",
        aggs.join(", ")
    );
    let pack = load(&text).unwrap();
    assert_eq!(pack.rules[0].distinct.len(), 2, "one tag per field");
    let mut e = Engine::new(pack, None, Duration::ZERO);
    let d = decide(&mut e, &txn("t1", 1, serde_json::json!({})), 1);
    assert_eq!(d.hits.len(), 0);
    let card_b = serde_json::json!({"card": {"token": "tok_b", "bin": "411111", "entry_mode": "chip"}});
    let d = decide(&mut e, &txn("t2", 0, card_b), 2);
    assert_eq!(d.hits[0].aggregates["d299"], 2);
    assert_eq!(d.hits[0].aggregates["s"], 1);
}

#[test]
fn a_hopping_report_with_more_than_a_thousand_windows_per_event_is_refused() {
    let report = |every: &str| {
        format!("[[report]]\nid = \"r\"\nkey = \"store_id\"\nwindow = {{ hopping = \"1h\", every = \"{every}\" }}\naggregates = {{ n = \"count\" }}\n")
    };
    let e = load_err(&report("1s"));
    assert_eq!(e.key.as_deref(), Some("report[0].window"), "{e}");
    assert!(e.message.contains("hopping / every ≤ 1000"), "{e}");
    load(&report("4s")).expect("900 windows per event are allowed");
}
