//! One chain rule as a Flink SQL view.

use super::sql_expr::{translate, Names};
use crate::rules::window::{AggKind, AggSpec, WindowSpec};
use crate::rules::{CompiledRule, TxnField};

/// Aggregates are columns `agg_<name>`, apart from the transaction's own columns.
struct RuleNames<'a>(&'a [AggSpec]);

impl Names for RuleNames<'_> {
    fn aggregate(&self, name: &str) -> Option<String> {
        self.0.iter().any(|a| a.name == name).then(|| agg_column(name))
    }
}

fn agg_column(name: &str) -> String {
    format!("`agg_{name}`")
}

/// Conditions (`filter` of an aggregate) never read aggregates.
struct NoAggregates;

impl Names for NoAggregates {
    fn aggregate(&self, _: &str) -> Option<String> {
        None
    }
}

/// The SQL column of a key or `count_distinct` field.
pub fn field_column(field: TxnField) -> &'static str {
    match field {
        TxnField::CardToken => "`card`.`token`",
        TxnField::CardBin => "`card`.`bin`",
        TxnField::CustomerId => "`customer_id`",
        TxnField::OperatorId => "`operator_id`",
        TxnField::TerminalId => "`terminal_id`",
        TxnField::StoreId => "`store_id`",
        TxnField::Type => "`type`",
        TxnField::EntryMode => "`card`.`entry_mode`",
    }
}

/// `(view name, CREATE TEMPORARY VIEW …)`.
pub fn rule_view(rule: &CompiledRule) -> Result<(String, String), String> {
    let name = format!(
        "`chain_rule_{}`",
        rule.id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
    );
    let names = RuleNames(&rule.aggregates);
    let mut filter: Vec<String> = Vec::new();
    if let Some(f) = &rule.filter {
        filter.push(translate(&f.source, &NoAggregates).map_err(|e| format!("filter: {e}"))?);
    }
    let when = translate(&rule.when.source, &names).map_err(|e| format!("when: {e}"))?;
    let aggregates_json = if rule.aggregates.is_empty() {
        "CAST(NULL AS STRING)".to_string()
    } else {
        format!(
            "JSON_OBJECT({})",
            rule.aggregates
                .iter()
                .map(|a| format!("KEY '{}' VALUE {}", a.name, agg_column(&a.name)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let head = format!(
        "SELECT '{id}' AS rule_id, '{action}' AS action, '{severity}' AS severity, '{mode}' AS mode,\n  \
         `txn_id`, `store_id`, `terminal_id`, `event_time`, {aggregates_json} AS aggregates",
        id = rule.id.replace('\'', "''"),
        action = word(&rule.action),
        severity = word(&rule.severity),
        mode = word(&rule.mode),
    );
    let statement = if rule.aggregates.is_empty() {
        filter.push(when);
        format!(
            "CREATE TEMPORARY VIEW {name} AS\n{head}\nFROM `transactions`\nWHERE {}",
            filter.join(" AND ")
        )
    } else {
        // Transactions without the key feed no window (as at the gateway).
        filter.extend(rule.key.iter().map(|k| format!("{} IS NOT NULL", field_column(*k))));
        let window = window(rule)?;
        let columns = rule
            .aggregates
            .iter()
            .map(|a| aggregate(rule, a).map(|sql| format!("{sql} AS {}", agg_column(&a.name))))
            .collect::<Result<Vec<_>, _>>()?;
        let key: Vec<&str> = rule.key.iter().map(|k| field_column(*k)).collect();
        format!(
            "CREATE TEMPORARY VIEW {name} AS\n{head}\nFROM (\n  SELECT *,\n    {}\n  FROM `transactions`\n  \
             WHERE {}\n  WINDOW w AS (PARTITION BY {} ORDER BY `event_time` {window})\n)\nWHERE {when}",
            columns.join(",\n    "),
            filter.join(" AND "),
            key.join(", "),
        )
    };
    Ok((name, statement))
}

/// The rule's enum values as its TOML spells them.
fn word<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn window(rule: &CompiledRule) -> Result<String, String> {
    match rule.window {
        Some(WindowSpec::Time { width_ms, .. }) => Ok(format!(
            "RANGE BETWEEN {} PRECEDING AND CURRENT ROW",
            interval(width_ms)?
        )),
        Some(WindowSpec::Count { n }) => Ok(format!(
            "ROWS BETWEEN {} PRECEDING AND CURRENT ROW",
            n.saturating_sub(1)
        )),
        None => Err("aggregates without a window".into()),
    }
}

/// A window width as a Flink interval literal in the largest exact unit (Flink's default
/// leading precision is 2 digits, so it is given).
fn interval(ms: i64) -> Result<String, String> {
    if ms <= 0 || ms % 1000 != 0 {
        return Err(format!("a window of {ms} ms: Flink windows here are whole seconds"));
    }
    let s = ms / 1000;
    let (n, unit) = [(86_400, "DAY"), (3_600, "HOUR"), (60, "MINUTE"), (1, "SECOND")]
        .into_iter()
        .find(|(size, _)| s % size == 0)
        .map(|(size, unit)| (s / size, unit))
        .expect("1 divides everything");
    let digits = n.to_string().len().max(2);
    Ok(format!("INTERVAL '{n}' {unit}({digits})"))
}

/// The aggregate over the rule's window `w` (`OVER` applies to the aggregate call itself,
/// so the defaults wrap it).
fn aggregate(rule: &CompiledRule, a: &AggSpec) -> Result<String, String> {
    let condition = match a.group {
        0 => None,
        g => {
            let source = &rule
                .conditions
                .get(g - 1)
                .ok_or_else(|| format!("aggregate `{}`: its filter is missing", a.name))?
                .source;
            Some(translate(source, &NoAggregates).map_err(|e| format!("aggregates.{}.filter: {e}", a.name))?)
        }
    };
    let amount = "`total_minor`";
    let only = |value: &str, otherwise: &str| match &condition {
        None => value.to_string(),
        Some(c) => format!("CASE WHEN {c} THEN {value} ELSE {otherwise} END"),
    };
    // Empty windows read 0 for every kind, as at the gateway (docs/rules.md).
    Ok(match a.kind {
        AggKind::Count => match &condition {
            None => "COUNT(*) OVER w".into(),
            Some(c) => format!("SUM(CASE WHEN {c} THEN 1 ELSE 0 END) OVER w"),
        },
        AggKind::Sum => format!("SUM({}) OVER w", only(amount, "0")),
        AggKind::Min => format!("COALESCE(MIN({}) OVER w, 0)", only(amount, "NULL")),
        AggKind::Max => format!("COALESCE(MAX({}) OVER w, 0)", only(amount, "NULL")),
        AggKind::Avg => format!(
            "COALESCE(AVG({}) OVER w, CAST(0 AS DOUBLE))",
            only(&format!("CAST({amount} AS DOUBLE)"), "NULL")
        ),
        AggKind::CountDistinct(i) => {
            let field = rule
                .distinct
                .get(i)
                .ok_or_else(|| format!("aggregate `{}`: its field is missing", a.name))?;
            format!("COUNT(DISTINCT {}) OVER w", only(field_column(*field), "NULL"))
        }
    })
}
