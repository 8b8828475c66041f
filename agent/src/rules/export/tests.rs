use super::*;
use crate::rules::load_paths;

fn pack(text: &str) -> RulePack {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chain.toml"), text).unwrap();
    load_paths(&[dir.path().join("chain.toml")]).unwrap_or_else(|e| panic!("{e}"))
}

const CARD_IN_STORES: &str = r#"
[[rule]]
id = "card-in-many-stores"
scope = "chain"
filter = 'txn.type == "sale" && has(txn.card.token)'
key = "card.token"
window = "10m"
aggregates = { stores = "count_distinct(store_id)", sales = "count", big = { of = "sum(total_minor)", filter = 'txn.total_minor >= 10000' } }
when = 'stores >= 3'
action = "review"
severity = "high"

[[rule]]
id = "store-only"
when = 'txn.total_minor > 1'
action = "review"
"#;

#[test]
fn chain_rules_go_to_the_export_and_never_to_the_gateways_engine() {
    let p = pack(CARD_IN_STORES);
    assert_eq!(
        p.rules.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["store-only"]
    );
    assert_eq!(p.chain.len(), 1);
    let out = export(&p).unwrap();
    assert_eq!(out.rules, ["card-in-many-stores"]);
    assert!(
        out.statements[0].contains("ROW_NUMBER() OVER (PARTITION BY `store_id`, `txn_id` ORDER BY `event_time` ASC)")
    );
    let view = &out.statements[1];
    for needle in [
        "CREATE TEMPORARY VIEW `chain_rule_card_in_many_stores` AS",
        "COUNT(DISTINCT `store_id`) OVER w AS `agg_stores`",
        "COUNT(*) OVER w AS `agg_sales`",
        "SUM(CASE WHEN (`total_minor` >= 10000) THEN `total_minor` ELSE 0 END) OVER w AS `agg_big`",
        "FROM `transactions_once`",
        "WHERE ((`type` = 'sale') AND (`card`.`token` IS NOT NULL)) AND `card`.`token` IS NOT NULL",
        "WINDOW w AS (PARTITION BY `card`.`token` ORDER BY `event_time` RANGE BETWEEN INTERVAL '10' MINUTE(2) PRECEDING AND CURRENT ROW)",
        "WHERE (`agg_stores` >= 3)",
        "'review' AS action, 'high' AS severity, 'enforce' AS mode",
    ] {
        assert!(view.contains(needle), "{needle}\nin\n{view}");
    }
    assert!(out.statements.last().unwrap().starts_with("INSERT INTO `chain_alerts`"));
    assert!(out.script().contains(";\n\n"));
}

#[test]
fn count_windows_are_rows_and_long_windows_keep_their_digits() {
    let p = pack(
        r#"
[[rule]]
id = "last-20"
scope = "chain"
key = ["store_id", "terminal_id"]
window = { last = 20 }
aggregates = { n = "count" }
when = 'n >= 20'
action = "review"

[[rule]]
id = "two-hours"
scope = "chain"
key = "customer_id"
window = "120m"
aggregates = { n = "avg(total_minor)" }
when = 'n > 10.0'
action = "review"
"#,
    );
    let out = export(&p).unwrap();
    assert!(out.statements[1]
        .contains("PARTITION BY `store_id`, `terminal_id` ORDER BY `event_time` ROWS BETWEEN 19 PRECEDING"));
    assert!(
        out.statements[2].contains("INTERVAL '2' HOUR(2)"),
        "{}",
        out.statements[2]
    );
    assert!(out.statements[2].contains("COALESCE(AVG(CAST(`total_minor` AS DOUBLE)) OVER w, CAST(0 AS DOUBLE))"));
}

#[test]
fn a_rule_outside_the_subset_is_refused_naming_it_and_the_construct() {
    let p = pack(
        r#"
[lists]
denied = "denied.txt"

[[rule]]
id = "denied-anywhere"
scope = "chain"
when = 'txn.card.token in lists.denied'
action = "block"
"#
        .replace("denied.txt", "/dev/null")
        .as_str(),
    );
    let e = export(&p).unwrap_err();
    assert!(
        e.contains("rule `denied-anywhere`") && e.contains("when:") && e.contains("deny lists"),
        "{e}"
    );
    assert!(export(&pack("")).unwrap_err().contains("nothing to export"));
    let twins = pack(
        r#"
[[rule]]
id = "a-b"
scope = "chain"
when = 'txn.total_minor > 1'
action = "review"

[[rule]]
id = "a_b"
scope = "chain"
when = 'txn.total_minor > 2'
action = "review"
"#,
    );
    let e = export(&twins).unwrap_err();
    assert!(e.contains("chain_rule_a_b"), "{e}");
    // A report named like the reports' union view.
    let spelled = pack(
        r#"
[[report]]
id = "rows"
scope = "chain"
key = "store_id"
window = { tumbling = "1h" }
"#,
    );
    assert!(export(&spelled).unwrap_err().contains("chain_report_rows"));
    // Windows Flink refuses: an offset of a whole window wraps, a size not a whole
    // number of hops is refused.
    let wrapped = pack(
        r#"
[[report]]
id = "late-shift"
scope = "chain"
key = "store_id"
window = { tumbling = "1h", offset = "75m" }

[[report]]
id = "odd-hops"
scope = "chain"
key = "store_id"
window = { hopping = "10m", every = "3m" }
enabled = false
"#,
    );
    let all = export(&wrapped).unwrap().statements.join("\n");
    assert!(all.contains("INTERVAL '1' HOUR(2), INTERVAL '15' MINUTE(2))"), "{all}");
    let odd = pack(
        r#"
[[report]]
id = "odd-hops"
scope = "chain"
key = "store_id"
window = { hopping = "10m", every = "3m" }
"#,
    );
    assert!(export(&odd).unwrap_err().contains("whole number of hops"));
}

#[test]
fn a_keyed_rule_without_a_window_judges_transactions_without_the_key_as_the_gateway_does() {
    let p = pack(
        r#"
[[rule]]
id = "keyed-plain"
scope = "chain"
key = "customer_id"
when = 'txn.total_minor > 1'
action = "review"
"#,
    );
    let out = export(&p).unwrap();
    assert!(
        out.statements[1].ends_with("FROM `transactions_once`\nWHERE (`total_minor` > 1)"),
        "{}",
        out.statements[1]
    );
}

#[test]
fn reports_become_window_table_functions_grouped_by_key_and_window() {
    let p = pack(
        r#"
[[report]]
id = "store-hourly"
scope = "chain"
key = "store_id"
window = { tumbling = "1h", offset = "15m" }
aggregates = { sales = "count" }
when = 'sales >= 20'

[[report]]
id = "card-hop"
scope = "chain"
key = ["card.token"]
window = { hopping = "30m", every = "10m" }
aggregates = { stores = "count_distinct(store_id)" }

[[report]]
id = "sessions"
scope = "chain"
filter = 'has(txn.customer_id)'
key = ["store_id", "customer_id"]
window = { session_gap = "15m" }
aggregates = { visits = "count", refunds = { of = "count", filter = 'txn.type == "return"' } }

[[report]]
id = "store-local"
key = "store_id"
window = { tumbling = "1h" }
"#,
    );
    assert_eq!(p.reports.len(), 1, "the store report stays at the gateway");
    let out = export(&p).unwrap();
    assert_eq!(out.reports, ["store-hourly", "card-hop", "sessions"]);
    let all = out.statements.join("\n");
    for needle in [
        "TUMBLE(TABLE `chain_report_input_store_hourly`, DESCRIPTOR(`event_time`), INTERVAL '1' HOUR(2), INTERVAL '15' MINUTE(2))",
        "GROUP BY report_key, window_start, window_end\nHAVING (COUNT(*) >= 20)",
        "HOP(TABLE `chain_report_input_card_hop`, DESCRIPTOR(`event_time`), INTERVAL '10' MINUTE(2), INTERVAL '30' MINUTE(2))",
        "SESSION(TABLE `chain_report_input_sessions` PARTITION BY report_key, DESCRIPTOR(`event_time`), INTERVAL '15' MINUTE(2))",
        "CONCAT_WS('/', `store_id`, `customer_id`) AS report_key FROM `transactions_once`",
        "SUM(CASE WHEN (`type` = 'return') THEN 1 ELSE 0 END) AS `agg_refunds`",
        "INSERT INTO `chain_reports` SELECT * FROM `chain_report_rows`",
    ] {
        assert!(all.contains(needle), "{needle}\nin\n{all}");
    }
    assert!(!all.contains("chain_alerts"), "no rules, no rule sink");
}
