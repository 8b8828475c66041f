//! Chain-wide rules on Flink itself: `tillgate rules export` run by PyFlink's local
//! mini-cluster over recorded traffic, compared with `tillgate rules test --scope chain`
//! on the gateways' journal of the same traffic (docs/cloud.md, "Chain-wide rules").

use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;
use tillgate_testkit::{repo_root, run_cli};

/// Chain rules beyond the shipped two: a conditional aggregate, a count window, min/max/
/// avg, and a rule without a window.
const MORE_CHAIN_RULES: &str = r#"
[[rule]]
id = "refund-share-per-customer"
scope = "chain"
filter = 'has(txn.customer_id)'
key = "customer_id"
window = "30m"
aggregates = { all = "count", refunds = { of = "count", filter = 'txn.type == "return"' }, refunded = { of = "sum(total_minor)", filter = 'txn.type == "return"' } }
when = 'all >= 4 && double(refunds) / double(all) >= 0.5 && refunded > 1000'
action = "review"

[[rule]]
id = "terminal-last-8"
scope = "chain"
key = ["store_id", "terminal_id"]
window = { last = 8 }
aggregates = { low = "min(total_minor)", high = "max(total_minor)", mean = "avg(total_minor)" }
when = 'high - low > 40000 && mean > 9000.0'
action = "review"

[[rule]]
id = "keyed-big-sale"
scope = "chain"
filter = 'txn.type == "sale" && has(txn.card.entry_mode) && txn.card.entry_mode in ["keyed", "fallback"]'
when = 'txn.total_minor >= 50000'
action = "review"

[[report]]
id = "store-sales-hourly"
scope = "chain"
filter = 'txn.type == "sale"'
key = "store_id"
window = { tumbling = "1h" }
aggregates = { sales = "count", takings = "sum(total_minor)" }
when = 'sales >= 20'

[[report]]
id = "card-stores-hopping"
scope = "chain"
key = "card.token"
window = { hopping = "30m", every = "10m" }
aggregates = { stores = "count_distinct(store_id)", uses = "count" }
when = 'stores >= 3'

[[report]]
id = "customer-sessions"
scope = "chain"
filter = 'has(txn.customer_id)'
key = ["store_id", "customer_id"]
window = { session_gap = "15m" }
aggregates = { visits = "count", refunds = { of = "count", filter = 'txn.type == "return"' } }
"#;

/// Recorded chain traffic, journaled as the gateways journal it (`received_at`,
/// `event_time_ms`): `n` transactions in 8 stores, strictly increasing event times (ties
/// would be peers in Flink's RANGE window but not at a gateway), terminal clocks written
/// with offsets (+01:00) or whole seconds as tills do, a small pool of cards and customers
/// so that windows fill, a burst of one card in four stores and one of a customer's seven
/// purchases in a few minutes, and, a day later, one sale that passes every report's
/// filter (its watermark closes every window above at the gateway, as the end of the
/// file does in Flink). Returns the gateway's journal and what the stream delivers: the
/// same with every 40th transaction delivered twice (the gateways ship at least once).
fn chain_traffic(n: usize, seed: u64) -> (String, String) {
    use chrono::{FixedOffset, SecondsFormat};
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut next = move |m: u64| rng.random_range(0..m);
    let start = chrono::DateTime::parse_from_rfc3339("2026-12-04T08:00:00.000Z")
        .unwrap()
        .to_utc();
    let plus_one = FixedOffset::east_opt(3600).unwrap();
    let mut at_ms = 0i64;
    let (mut journal, mut stream) = (String::new(), String::new());
    let mut line = |t: &Value, twice: bool| {
        for _ in 0..if twice { 2 } else { 1 } {
            stream.push_str(&t.to_string());
            stream.push('\n');
        }
        journal.push_str(&t.to_string());
        journal.push('\n');
    };
    for i in 0..=n {
        let flush = i == n;
        at_ms += if flush { 86_400_000 } else { 500 + next(20_000) as i64 };
        let whole_seconds = i % 5 == 0;
        if whole_seconds {
            at_ms += (1000 - at_ms % 1000) % 1000;
        }
        let instant = start + chrono::Duration::milliseconds(at_ms);
        let precision = if whole_seconds {
            SecondsFormat::Secs
        } else {
            SecondsFormat::Millis
        };
        let occurred = if i % 3 == 0 {
            instant.with_timezone(&plus_one).to_rfc3339_opts(precision, true)
        } else {
            instant.to_rfc3339_opts(precision, true)
        };
        let burst = (300..304).contains(&i);
        let store = if burst {
            format!("s{}", i - 299)
        } else {
            format!("s{}", next(8) + 1)
        };
        let card = if burst {
            "tok_burst".to_string()
        } else {
            format!("tok_{}", next(40))
        };
        let kind = match next(20) {
            0..=1 if !flush => "return",
            2 if !flush => "void",
            _ => "sale",
        };
        let entry = if flush {
            "chip"
        } else {
            ["chip", "contactless", "keyed", "swipe", "fallback"][next(5) as usize]
        };
        let mut t = serde_json::json!({
            "txn_id": format!("c-{i:05}"), "store_id": store, "terminal_id": format!("pos-{}", next(3) + 1),
            "occurred_at": occurred, "received_at": instant.to_rfc3339_opts(SecondsFormat::Millis, true),
            "clock_skew": false, "event_time_ms": instant.timestamp_millis(), "seq": i + 1,
            "type": kind, "total_minor": if flush { 100 } else { 100 + next(70_000) as i64 }, "currency": "EUR",
            "card": {"token": if flush { "tok_flush".to_string() } else { card }, "bin": "411111", "last4": "1111", "entry_mode": entry}
        });
        if (600..607).contains(&i) {
            t["customer_id"] = serde_json::json!("cust_burst");
        } else if flush || next(3) > 0 {
            t["customer_id"] = serde_json::json!(format!("cust_{}", next(25)));
        }
        if kind == "return" {
            t["original_txn_id"] = serde_json::json!(format!("c-{:05}", i.saturating_sub(1)));
        }
        // A txn_id is unique in its store's journal only: every 50th reuses the id of
        // the transaction before it, from another store (both count, as at the gateways).
        if i % 50 == 49 {
            t["txn_id"] = serde_json::json!(format!("c-{:05}", i - 1));
            t["store_id"] = serde_json::json!("s-twin");
        }
        line(&t, i % 40 == 7);
    }
    (journal, stream)
}

/// A reported window: (report, key, start, end, its integer figures as JSON text).
fn window_of(w: &Value, id_field: &str, start: i64) -> (String, String, i64, i64, String) {
    let figures: std::collections::BTreeMap<String, i64> = w["aggregates"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_i64().unwrap_or_else(|| panic!("{k} = {v} is not an integer")),
            )
        })
        .collect();
    (
        w[id_field].as_str().unwrap().to_string(),
        w["key"].as_str().unwrap().to_string(),
        start,
        w["window_end_ms"].as_i64().unwrap(),
        format!("{figures:?}"),
    )
}

/// The chain rules and reports, exported to Flink SQL and run by Flink itself over what
/// the stream delivers (duplicates included), flag exactly the (transaction, rule) pairs
/// and report the windows (with their figures) that `tillgate rules test --scope chain`
/// does on the gateways' journal of the same traffic.
#[test]
fn exported_chain_rules_on_flink_flag_what_rules_test_flags() {
    let dir = tillgate_testkit::scratch_dir();
    let rules = dir.join("more-chain.toml");
    std::fs::write(&rules, MORE_CHAIN_RULES).unwrap();
    let shipped = repo_root().join("config/rules/70-chain.toml");
    let (journal, stream) = chain_traffic(1_500, 7);
    let input = dir.join("journal.ndjson");
    std::fs::write(&input, journal).unwrap();
    let delivered = dir.join("stream.ndjson");
    std::fs::write(&delivered, stream).unwrap();
    let rule_args = ["--rules", shipped.to_str().unwrap(), "--rules", rules.to_str().unwrap()];

    let mut args = vec!["rules", "export", "--json"];
    args.extend_from_slice(&rule_args);
    let (code, export, err) = run_cli(&args);
    assert_eq!(code, 0, "{err}");
    let export_file = dir.join("export.json");
    std::fs::write(&export_file, &export).unwrap();

    let mut args = vec![
        "rules",
        "test",
        "--scope",
        "chain",
        "--json",
        "--input",
        input.to_str().unwrap(),
    ];
    args.extend_from_slice(&rule_args);
    let (code, decided, err) = run_cli(&args);
    assert_eq!(code, 0, "{err}");
    // Decision lines name the input line; the journal line names the store.
    let stores: Vec<String> = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["store_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut gateway_view = BTreeSet::new();
    let mut gateway_windows = BTreeSet::new();
    for line in decided.lines().filter(|l| l.starts_with('{')) {
        let d: Value = serde_json::from_str(line).unwrap();
        let store = &stores[d["line"].as_u64().unwrap() as usize - 1];
        for hit in d["rules"].as_array().into_iter().flatten() {
            gateway_view.insert((
                store.clone(),
                d["txn_id"].as_str().unwrap().to_string(),
                hit["id"].as_str().unwrap().to_string(),
            ));
        }
        for w in d["reports"].as_array().into_iter().flatten() {
            gateway_windows.insert(window_of(w, "report", w["window_start_ms"].as_i64().unwrap()));
        }
    }

    let out = Command::new(tillgate_testkit::emulators::kinesis_local::tools_dir().join("flink-venv/bin/python"))
        .arg(repo_root().join("tests/kit/python/flink_rules.py"))
        .arg(&export_file)
        .arg(&delivered)
        .output()
        .expect("PyFlink runs (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "flink_rules.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flink: Value = serde_json::from_slice(&out.stdout).expect("JSON from flink_rules.py");
    let flagged: Vec<Value> = flink["alerts"].as_array().unwrap().clone();
    let flush_ms = serde_json::from_str::<Value>(std::fs::read_to_string(&input).unwrap().lines().last().unwrap())
        .unwrap()["event_time_ms"]
        .as_i64()
        .unwrap();
    // Flink closes every window at the end of the file; the gateway those the flush
    // transaction's watermark passed: all but the flush's own.
    let flink_windows: BTreeSet<_> = flink["reports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["window_start_ms"].as_i64().unwrap() < flush_ms)
        .map(|w| window_of(w, "report_id", w["window_start_ms"].as_i64().unwrap()))
        .collect();
    let reported: BTreeSet<&str> = gateway_windows.iter().map(|w| w.0.as_str()).collect();
    for report in ["store-sales-hourly", "card-stores-hopping", "customer-sessions"] {
        assert!(
            reported.contains(report),
            "the traffic exercises {report}: reported {reported:?}"
        );
    }
    let only_gateway: Vec<_> = gateway_windows.difference(&flink_windows).collect();
    let only_flink: Vec<_> = flink_windows.difference(&gateway_windows).collect();
    assert!(
        only_gateway.is_empty() && only_flink.is_empty(),
        "windows only rules test reported: {only_gateway:?}\nonly Flink: {only_flink:?}"
    );
    let flink_view: BTreeSet<(String, String, String)> = flagged
        .iter()
        .map(|f| {
            (
                f["store_id"].as_str().unwrap().to_string(),
                f["txn_id"].as_str().unwrap().to_string(),
                f["rule_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(flagged.len(), flink_view.len(), "each pair once");

    let fired: BTreeSet<&str> = gateway_view.iter().map(|(_, _, r)| r.as_str()).collect();
    for rule in [
        "card-in-many-stores",
        "customer-velocity-chain",
        "refund-share-per-customer",
        "terminal-last-8",
        "keyed-big-sale",
    ] {
        assert!(fired.contains(rule), "the traffic exercises {rule}: fired {fired:?}");
    }
    let only_gateway: Vec<_> = gateway_view.difference(&flink_view).collect();
    let only_flink: Vec<_> = flink_view.difference(&gateway_view).collect();
    assert!(
        only_gateway.is_empty() && only_flink.is_empty(),
        "only rules test: {only_gateway:?}\nonly Flink: {only_flink:?}"
    );
}
