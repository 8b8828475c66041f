//! The compiled form against the `cel` interpreter: the same answer, or both failing,
//! for every expression of the shipped rule pack and for expressions chosen for CEL's
//! corners (overflow, division by zero, NaN, absent fields, errors absorbed by `&&`/`||`,
//! int/double comparisons), over generated transactions, originals and aggregates.

use super::*;
use crate::rules::cel as interp;
use crate::rules::load_paths;
use crate::rules::window::AggSpec;
use crate::txn::parse;
use ::cel::common::value::Val;
use proptest::prelude::*;

/// `a` (count), `b` (sum), `m` (avg): the aggregates the corner expressions read.
fn specs() -> Vec<AggSpec> {
    [("a", AggKind::Count), ("b", AggKind::Sum), ("m", AggKind::Avg)]
        .map(|(name, kind)| AggSpec {
            name: name.into(),
            kind,
            group: 0,
        })
        .to_vec()
}

const CORNERS: &[&str] = &[
    "txn.total_minor >= 200000",
    "txn.total_minor + a > 10",
    "a * b > 0",
    "b / a >= 1",
    "b % a == 0",
    "a - b < 0",
    "-a < 0",
    "double(a) / double(b) >= 0.05",
    "m > 0.5 || a > 3",
    "m == m",
    "m >= a",
    "a == 1.0",
    "m * 2.0 > 1.0",
    "-m < 0.0",
    "txn.customer_id == 'c1' || txn.total_minor > 100",
    "txn.total_minor > 100 || txn.customer_id == 'c1'",
    "txn.customer_id == 'c1' && false",
    "false && txn.customer_id == 'c1'",
    "txn.customer_id == 'c1' && txn.operator_id == 'op1'",
    "!(txn.customer_id == 'c1')",
    "has(txn.card.token) && txn.card.token in lists.denied",
    "txn.card.token in lists.denied",
    "txn.type in ['void', 'post_void']",
    "txn.total_minor in [100, 1500.0]",
    "txn.total_minor in []",
    "has(original.card.token)",
    "has(original.card)",
    "has(original.txn_id) && original.card.token != txn.card.token",
    "original.total_minor == txn.total_minor",
    "txn.total_minor > 100 ? a > 1 : b > 1",
    "(txn.customer_id == 'x' ? 1 : 2) == 2",
    "-txn.total_minor < 0",
    "txn.clock_skew == false",
    "txn.event_time_ms > 0",
    "txn.operator_id < 'op5'",
    "has(txn.card) && has(txn.card.entry_mode) && txn.card.entry_mode == 'keyed'",
    "txn.total_minor != 1500",
    "txn.card.last4 == '4242'",
];

/// Not mirrored: the interpreter keeps them (their answers are its own).
const INTERPRETED: &[&str] = &[
    "txn.currency + 'x' == 'USDx'",
    "m % 2.0 == 0.0",
    "txn.type.startsWith('s')",
    "size(txn.txn_id) > 3",
    "txn.txn_id.endsWith('1')",
    "txn.total_minor == 'x'",
    "int(m) > 1",
    // has() is a boolean: selecting from it, or `in` it, fails in CEL.
    "has(txn.card).token == 'tok_bad'",
    "has(has(txn.card).token)",
    "txn.card.token in has(lists.denied)",
    "has(original.card).token == 'x'",
];

fn deny_lists() -> Vec<(String, Arc<DenyList>)> {
    vec![(
        "denied".into(),
        Arc::new(DenyList::parse(
            std::path::Path::new("denied.txt"),
            "tok_bad\ntok_worse\n",
        )),
    )]
}

/// Both forms of `source`, over the corner aggregates.
fn both(source: &str, lists: &[(String, Arc<DenyList>)]) -> (interp::Expr, Option<Node>) {
    let specs = specs();
    let allowed = ["txn", "lists", "original", "a", "b", "m"];
    let expr = interp::compile(source, &allowed).unwrap_or_else(|e| panic!("{source}: {e}"));
    let node = compile(
        source,
        Names {
            aggregates: &specs,
            lists,
        },
    );
    (expr, node)
}

prop_compose! {
    fn a_transaction(id: &'static str)(
        kind in prop::sample::select(vec!["sale", "return", "void", "post_void", "no_sale", "paid_out"]),
        amount in prop::sample::select(vec![0i64, 1, 100, 200, 1500, 200_000, -5, 9_999_999_999_999, -9_999_999_999_999]),
        customer in prop::option::of(prop::sample::select(vec!["c1", "c2"])),
        operator in prop::option::of(prop::sample::select(vec!["op1", "op9"])),
        card in prop::option::of((
            prop::option::of(prop::sample::select(vec!["tok_a", "tok_bad", "tok_worse"])),
            prop::option::of(Just("411111")),
            prop::option::of(prop::sample::select(vec!["4242", "0000"])),
            prop::option::of(prop::sample::select(vec!["chip", "keyed", "fallback", "contactless"])),
        )),
        skewed in any::<bool>(),
    ) -> Transaction {
        let now = chrono::Utc::now();
        let occurred = if skewed { now - chrono::Duration::hours(3) } else { now };
        let mut v = serde_json::json!({
            "txn_id": id, "store_id": "s1", "terminal_id": "p1",
            "occurred_at": occurred.to_rfc3339(), "type": kind,
            "total_minor": amount, "currency": "USD",
        });
        if let Some(c) = customer { v["customer_id"] = c.into(); }
        if let Some(o) = operator { v["operator_id"] = o.into(); }
        if kind == "return" { v["original_txn_id"] = "orig-1".into(); }
        if let Some((token, bin, last4, mode)) = card {
            let mut c = serde_json::json!({});
            if let Some(t) = token { c["token"] = t.into(); }
            if let Some(b) = bin { c["bin"] = b.into(); }
            if let Some(l) = last4 { c["last4"] = l.into(); }
            if let Some(m) = mode { c["entry_mode"] = m.into(); }
            v["card"] = c;
        }
        parse(v.to_string().as_bytes(), now).unwrap_or_else(|e| panic!("{v}: {e:?}"))
    }
}

fn an_int() -> impl Strategy<Value = i64> {
    prop::sample::select(vec![0i64, 1, 3, 5, -1, 1500, i64::MAX, i64::MIN])
}

fn a_double() -> impl Strategy<Value = f64> {
    prop::sample::select(vec![
        0.0,
        -0.0,
        0.05,
        0.6,
        1.0,
        1e300,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ])
}

/// The interpreter's answer with aggregates `names` = `aggs`: `Ok(b)`, or `None` when it
/// fails.
fn interpreted(
    expr: &interp::Expr,
    t: &Transaction,
    original: Option<&Transaction>,
    lists: &[(String, Arc<DenyList>)],
    names: &[&str],
    aggs: &[AggValue],
) -> Option<bool> {
    let txn_v = interp::txn_value(t);
    let original_v = original.map(interp::txn_value);
    let original_v: &dyn Val = match &original_v {
        Some(v) => v.as_ref(),
        None => interp::EMPTY_MAP.as_ref(),
    };
    let lists_v = interp::lists_value(lists);
    let agg_v: Vec<interp::Bound> = aggs
        .iter()
        .map(|v| {
            interp::bind(match v {
                AggValue::Int(i) => ::cel::Value::Int(*i),
                AggValue::Float(f) => ::cel::Value::Float(*f),
            })
        })
        .collect();
    let mut vars: Vec<(&str, &dyn Val)> = vec![
        ("txn", txn_v.as_ref()),
        ("lists", lists_v.as_ref()),
        ("original", original_v),
    ];
    for (name, v) in names.iter().zip(&agg_v) {
        vars.push((name, v.as_ref()));
    }
    expr.eval_bool(&vars).ok()
}

#[test]
fn what_is_not_mirrored_is_left_to_the_interpreter() {
    let lists = deny_lists();
    for source in INTERPRETED {
        assert!(both(source, &lists).1.is_none(), "{source} should not compile");
    }
    for source in CORNERS {
        assert!(both(source, &lists).1.is_some(), "{source} should compile");
    }
}

#[test]
fn every_condition_of_the_shipped_pack_is_compiled() {
    let pack = load_paths(&[std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rules")]).unwrap();
    let rules = pack
        .rules
        .iter()
        .flat_map(|r| r.filter.iter().chain([&r.when]).chain(&r.conditions));
    let reports = pack
        .reports
        .iter()
        .flat_map(|r| r.filter.iter().chain(r.when.iter()).chain(&r.conditions));
    for e in rules.chain(reports) {
        assert!(e.compiled.is_some(), "`{}` runs on the interpreter", e.source);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn compiled_and_interpreted_answer_the_same(
        t in a_transaction("t-1"),
        orig in prop::option::of(a_transaction("orig-1")),
        a in an_int(),
        b in an_int(),
        m in a_double(),
    ) {
        let lists = deny_lists();
        let aggs = [AggValue::Int(a), AggValue::Int(b), AggValue::Float(m)];
        let inputs = Inputs { txn: &t, original: orig.as_ref(), lists: &lists, aggs: &aggs };
        for source in CORNERS {
            let (expr, node) = both(source, &lists);
            let node = node.expect("compiles");
            let want = interpreted(&expr, &t, orig.as_ref(), &lists, &["a", "b", "m"], &aggs);
            let got = node.eval(&inputs).ok();
            prop_assert_eq!(got, want, "{} (a={}, b={}, m={}) on {:?}", source, a, b, m, t);
        }
    }
}

/// Each condition of the shipped pack with the aggregates it may read.
fn shipped_conditions(pack: &crate::rules::RulePack) -> Vec<(&interp::Expr, &[AggSpec])> {
    let mut out: Vec<(&interp::Expr, &[AggSpec])> = Vec::new();
    for r in &pack.rules {
        out.extend(r.filter.iter().chain(&r.conditions).map(|e| (e, &[][..])));
        out.push((&r.when, &r.aggregates));
    }
    for r in &pack.reports {
        out.extend(r.filter.iter().chain(&r.conditions).map(|e| (e, &[][..])));
        out.extend(r.when.iter().map(|e| (e, &r.aggregates[..])));
    }
    out
}

static SHIPPED: std::sync::LazyLock<crate::rules::RulePack> = std::sync::LazyLock::new(|| {
    load_paths(&[std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rules")]).expect("the pack loads")
});

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The pack's own conditions, over its own aggregates (an avg is a double, the rest
    /// ints) and deny lists, the way the engine evaluates them.
    #[test]
    fn the_shipped_packs_conditions_answer_the_same_both_ways(
        t in a_transaction("t-1"),
        orig in prop::option::of(a_transaction("orig-1")),
        ints in prop::collection::vec(an_int(), 8),
        doubles in prop::collection::vec(a_double(), 8),
    ) {
        let pack = &*SHIPPED;
        for (expr, specs) in shipped_conditions(pack) {
            let aggs: Vec<AggValue> = specs
                .iter()
                .enumerate()
                .map(|(k, s)| if s.kind == AggKind::Avg { AggValue::Float(doubles[k % 8]) } else { AggValue::Int(ints[k % 8]) })
                .collect();
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            let inputs = Inputs { txn: &t, original: orig.as_ref(), lists: &pack.lists, aggs: &aggs };
            let node = expr.compiled.as_ref().expect("the pack compiles");
            let want = interpreted(expr, &t, orig.as_ref(), &pack.lists, &names, &aggs);
            prop_assert_eq!(node.eval(&inputs).ok(), want, "{} ({:?}) on {:?}", &expr.source, aggs, t);
        }
    }
}
