//! A restored engine decides exactly as the engine it was snapshotted from; units whose
//! definition changed are left to be rebuilt, the others are taken.

use crate::rules::snapshot::{rule_unit, Snapshot};
use crate::rules::{load_paths, DecideContext, Decider, Decision, Engine, NoOriginals, RulePack};
use crate::txn::{parse, Transaction};
use chrono::{Duration as Dur, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use std::time::Duration;

/// A pack that crosses every kind of state and every cap: LRU key eviction (2 keys),
/// the per-key event cap, count windows, distinct counts, min/max, conditional
/// aggregates, out-of-order lateness, and tumbling, hopping and session reports with a
/// key cap.
const CAPPED: &str = r#"
[[rule]]
id = "card-velocity"
key = "card.token"
window = "10m"
lateness = "2m"
max_keys = 2
max_events_per_key = 4
aggregates = { n = "count", top = "max(total_minor)", low = "min(total_minor)", tills = "count_distinct(terminal_id)" }
when = 'n >= 3 || tills >= 2'
action = "review"

[[rule]]
id = "operator-last-5"
key = "operator_id"
window = { last = 5 }
aggregates = { total = "sum(total_minor)", voids = { of = "count", filter = 'txn.type == "void"' } }
when = 'voids >= 2'
action = "block"

[[report]]
id = "till-tumbling"
key = "terminal_id"
window = { tumbling = "1m" }
allowed_lateness = "30s"
max_keys = 2
aggregates = { n = "count", avg = "avg(total_minor)" }

[[report]]
id = "till-hopping"
key = "terminal_id"
window = { hopping = "2m", every = "1m" }
aggregates = { n = "count" }

[[report]]
id = "customer-session"
key = "customer_id"
window = { session_gap = "90s" }
max_keys = 2
aggregates = { n = "count", cards = "count_distinct(card.token)" }
"#;

fn pack(text: &str) -> RulePack {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pack.toml"), text).unwrap();
    load_paths(&[dir.path().join("pack.toml")]).unwrap()
}

fn shipped() -> RulePack {
    load_paths(&[std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rules")]).unwrap()
}

/// One generated transaction: few cards, operators, tills and customers, event times
/// advancing with some arriving late.
fn txn(i: usize, pick: (u8, u8, u8, u8, u8), late_s: i64, amount: i64) -> Transaction {
    let (card, op, till, cust, kind) = pick;
    let t0 = Utc::now() - Dur::hours(2);
    let at = t0 + Dur::seconds(i as i64 * 7 - late_s);
    let kind = ["sale", "sale", "sale", "void", "return", "no_sale"][kind as usize % 6];
    let v = serde_json::json!({
        "txn_id": format!("t{i}"), "store_id": "s1",
        "terminal_id": format!("till-{}", till % 3),
        "operator_id": format!("op-{}", op % 3),
        "customer_id": format!("c-{}", cust % 4),
        "occurred_at": at.to_rfc3339(), "type": kind, "total_minor": amount, "currency": "USD",
        "card": {"token": format!("tok-{}", card % 4), "entry_mode": if card % 5 == 0 { "keyed" } else { "chip" }},
    });
    parse(v.to_string().as_bytes(), at + Dur::seconds(late_s)).unwrap()
}

fn stream() -> impl Strategy<Value = Vec<Transaction>> {
    prop::collection::vec(
        (
            any::<(u8, u8, u8, u8, u8)>(),
            prop_oneof![4 => Just(0i64), 1 => 0i64..200],
            1i64..500_000,
        ),
        40..160,
    )
    .prop_map(|items| {
        items
            .into_iter()
            .enumerate()
            .map(|(i, (pick, late, amount))| txn(i, pick, late, amount))
            .collect()
    })
}

fn decide(e: &mut Engine, t: &Transaction, seq: u64, replaying: bool) -> Decision {
    e.decide(
        t,
        &DecideContext {
            seq,
            lookup: &NoOriginals,
            replaying,
        },
    )
}

/// Decisions of the uninterrupted engine after `cut`, and of one restored into a fresh
/// engine from units snapshotted at different points up to `cut` (as the journal takes
/// them, one at a time), then brought to `cut` by a replay from the oldest, as a start
/// does: each unit skips what it holds.
fn both_ways(text: Option<&str>, txns: &[Transaction], cut: usize) -> (Vec<Decision>, Vec<Decision>) {
    let build = || {
        let pack = text.map_or_else(shipped, pack);
        Engine::new(pack, None, Duration::from_secs(3600))
    };
    let mut whole = build();
    let mut first = build();
    let names = first.snapshot_units();
    // Unit k is taken k transactions before the cut (or at the start).
    let taken_at = |k: usize| cut.saturating_sub(k);
    let mut units = Vec::new();
    let mut expected = Vec::new();
    for step in 0..=txns.len() {
        for (k, name) in names.iter().enumerate() {
            if taken_at(k) == step {
                units.extend(first.snapshot_unit(name, step as u64).unwrap());
            }
        }
        let Some(t) = txns.get(step) else { break };
        let d = decide(&mut whole, t, step as u64 + 1, false);
        if step < cut {
            decide(&mut first, t, step as u64 + 1, false);
        } else {
            expected.push(d);
        }
    }
    let snapshot = Snapshot { units };
    let mut restored = build();
    let outcome = restored.restore(&snapshot);
    assert!(outcome.complete(), "{outcome:?}");
    let from = snapshot.oldest_seq().unwrap() as usize;
    for (i, t) in txns[from..cut].iter().enumerate() {
        decide(&mut restored, t, (from + i) as u64 + 1, true);
    }
    let got = txns[cut..]
        .iter()
        .enumerate()
        .map(|(i, t)| decide(&mut restored, t, (cut + i) as u64 + 1, false))
        .collect();
    (expected, got)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_restored_engine_decides_as_the_uninterrupted_one(txns in stream(), cut in 0.0f64..1.0) {
        let cut = (txns.len() as f64 * cut) as usize;
        let (expected, got) = both_ways(Some(CAPPED), &txns, cut);
        prop_assert_eq!(expected, got);
    }

    #[test]
    fn the_shipped_pack_restored_decides_as_the_uninterrupted_one(txns in stream(), cut in 0.0f64..1.0) {
        let cut = (txns.len() as f64 * cut) as usize;
        let (expected, got) = both_ways(None, &txns, cut);
        prop_assert_eq!(expected, got);
    }
}

#[test]
fn the_generated_streams_make_rules_fire_and_reports_close() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let txns = stream().new_tree(&mut runner).unwrap().current();
    let mut e = Engine::new(pack(CAPPED), None, Duration::from_secs(3600));
    let (mut hits, mut reports) = (0, 0);
    for (i, t) in txns.iter().enumerate() {
        let d = decide(&mut e, t, i as u64 + 1, false);
        hits += d.hits.len();
        reports += d.reports.len();
    }
    assert!(
        hits > 0 && reports > 0,
        "hits {hits}, reports {reports}: the property would test nothing"
    );
}

#[test]
fn only_units_whose_state_shaping_definition_changed_are_rebuilt() {
    let mut before = Engine::new(pack(CAPPED), None, Duration::ZERO);
    let t = txn(0, (1, 1, 1, 1, 0), 0, 100);
    decide(&mut before, &t, 1, false);
    let snapshot = Snapshot {
        units: before.snapshot(1).unwrap(),
    };
    // `when` and action changed (state kept); the count window changed (rebuilt); a new
    // rule (rebuilt).
    let edited = CAPPED
        .replace("when = 'n >= 3 || tills >= 2'\naction = \"review\"", "when = 'n >= 2'\naction = \"block\"")
        .replace("window = { last = 5 }", "window = { last = 6 }")
        + "\n[[rule]]\nid = \"new\"\nkey = \"card.token\"\nwindow = \"1m\"\naggregates = { n = \"count\" }\nwhen = 'n > 9'\naction = \"review\"\n";
    let mut after = Engine::new(pack(&edited), None, Duration::ZERO);
    let outcome = after.restore(&snapshot);
    assert_eq!(outcome.rebuilt, vec![rule_unit("operator-last-5"), rule_unit("new")]);
    assert!(outcome.restored.contains(&rule_unit("card-velocity")), "{outcome:?}");
    assert_eq!(outcome.restored.len(), 4, "{outcome:?}");
    assert_eq!(
        after.live_keys(),
        1,
        "card-velocity's key came back, the rebuilt ones are empty"
    );
}

#[test]
fn an_unreadable_state_is_rebuilt_not_trusted() {
    let mut e = Engine::new(pack(CAPPED), None, Duration::ZERO);
    decide(&mut e, &txn(0, (1, 1, 1, 1, 0), 0, 100), 1, false);
    let mut units = e.snapshot(1).unwrap();
    for u in &mut units {
        u.state.truncate(u.state.len() / 2);
    }
    let mut fresh = Engine::new(pack(CAPPED), None, Duration::ZERO);
    let outcome = fresh.restore(&Snapshot { units });
    assert_eq!(outcome.restored, Vec::<String>::new());
    assert_eq!(outcome.rebuilt.len(), 5);
    assert_eq!(fresh.live_keys(), 0);

    // Bytes left over after a whole state: not this state.
    let mut units = e.snapshot(1).unwrap();
    for u in &mut units {
        u.state.push(0);
    }
    let mut fresh = Engine::new(pack(CAPPED), None, Duration::ZERO);
    assert_eq!(fresh.restore(&Snapshot { units }).restored, Vec::<String>::new());
}

#[test]
fn a_state_shaped_for_other_aggregates_is_rebuilt_even_under_the_right_fingerprint() {
    // The same rule with one more aggregate filter: a state of the other shape decodes,
    // but must not be taken (an aggregate would read a tally that is not there).
    let plain = "[[rule]]\nid = \"r\"\nkey = \"card.token\"\nwindow = \"5m\"\naggregates = { n = \"count\" }\nwhen = 'n > 1'\naction = \"review\"\n";
    let filtered = plain.replace(
        "aggregates = { n = \"count\" }",
        "aggregates = { n = \"count\", voids = { of = \"count\", filter = 'txn.type == \"void\"' } }",
    );
    let mut other = Engine::new(pack(plain), None, Duration::ZERO);
    decide(&mut other, &txn(0, (1, 1, 1, 1, 0), 0, 100), 1, false);
    let mut target = Engine::new(pack(&filtered), None, Duration::ZERO);
    let mut units = other.snapshot(1).unwrap();
    let genuine = target.snapshot(0).unwrap();
    units[0].fingerprint = genuine[0].fingerprint.clone();
    let outcome = target.restore(&Snapshot { units });
    assert_eq!(outcome.rebuilt, vec![rule_unit("r")]);
    assert_eq!(target.live_keys(), 0);
}

#[test]
fn a_deny_list_change_rebuilds_only_the_rules_whose_filter_reads_it() {
    let text = |listed: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.txt"), listed).unwrap();
        std::fs::write(
            dir.path().join("pack.toml"),
            "[lists]\nbad = \"bad.txt\"\n\
             [[rule]]\nid = \"listed\"\nfilter = 'txn.card.token in lists.bad'\nkey = \"card.token\"\nwindow = \"5m\"\naggregates = { n = \"count\" }\nwhen = 'n > 1'\naction = \"block\"\n\
             [[rule]]\nid = \"plain\"\nkey = \"card.token\"\nwindow = \"5m\"\naggregates = { n = \"count\" }\nwhen = 'n > 1 && txn.card.token in lists.bad'\naction = \"block\"\n",
        )
        .unwrap();
        load_paths(&[dir.path().join("pack.toml")]).unwrap()
    };
    let before = Engine::new(text("tok-1\n"), None, Duration::ZERO);
    let snapshot = Snapshot {
        units: before.snapshot(0).unwrap(),
    };
    let mut after = Engine::new(text("tok-1\ntok-2\n"), None, Duration::ZERO);
    let outcome = after.restore(&snapshot);
    assert_eq!(outcome.rebuilt, vec![rule_unit("listed")]);
    assert_eq!(
        outcome.restored,
        vec![rule_unit("plain")],
        "a `when` reading the list shapes no state"
    );
}

#[test]
fn every_state_shaping_field_changes_the_fingerprint_and_the_others_do_not() {
    let base = "[[rule]]\nid = \"r\"\nfilter = 'txn.total_minor > 0'\nkey = \"card.token\"\nwindow = \"5m\"\nlateness = \"1m\"\nmax_keys = 100\nmax_events_per_key = 50\naggregates = { n = \"count\", voids = { of = \"count\", filter = 'txn.type == \"void\"' } }\nwhen = 'n > 1'\naction = \"review\"\nseverity = \"low\"\ndescription = \"d\"\n";
    let fingerprint = |text: &str| {
        Engine::new(pack(text), None, Duration::ZERO).snapshot(0).unwrap()[0]
            .fingerprint
            .clone()
    };
    let original = fingerprint(base);
    // (edit, whether it shapes the state)
    let edits = [
        ("filter = 'txn.total_minor > 0'", "filter = 'txn.total_minor > 1'", true),
        ("key = \"card.token\"", "key = \"customer_id\"", true),
        ("window = \"5m\"", "window = \"6m\"", true),
        ("lateness = \"1m\"", "lateness = \"2m\"", true),
        ("max_keys = 100", "max_keys = 101", true),
        ("max_events_per_key = 50", "max_events_per_key = 51", true),
        ("txn.type == \"void\"", "txn.type == \"post_void\"", true),
        ("n = \"count\"", "n = \"sum(total_minor)\"", true),
        ("when = 'n > 1'", "when = 'n > 2'", false),
        ("action = \"review\"", "action = \"block\"", false),
        ("severity = \"low\"", "severity = \"high\"", false),
        ("description = \"d\"", "description = \"e\"", false),
    ];
    for (from, to, shapes) in edits {
        let edited = base.replace(from, to);
        assert_ne!(edited, base, "the edit {from} -> {to} applies");
        assert_eq!(
            fingerprint(&edited) != original,
            shapes,
            "{from} -> {to} shapes the state: {shapes}"
        );
    }
}
