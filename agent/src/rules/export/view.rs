//! One chain rule as a Flink SQL view.

use super::sql_expr::{translate, Names, Ty};
use crate::rules::cel::Expr;
use crate::rules::report::ReportWindow;
use crate::rules::window::{AggKind, AggSpec, WindowSpec};
use crate::rules::{CompiledReport, CompiledRule, TxnField};

/// Aggregates are columns `agg_<name>`, apart from the transaction's own columns.
struct RuleNames<'a>(&'a [AggSpec]);

impl Names for RuleNames<'_> {
    fn aggregate(&self, name: &str) -> Option<(String, Ty)> {
        let a = self.0.iter().find(|a| a.name == name)?;
        Some((agg_column(name), agg_type(a)))
    }
}

/// `avg` is a double at the gateway; every other aggregate an int.
fn agg_type(a: &AggSpec) -> Ty {
    match a.kind {
        AggKind::Avg => Ty::Double,
        _ => Ty::Int,
    }
}

fn agg_column(name: &str) -> String {
    format!("`agg_{name}`")
}

/// Conditions (`filter` of an aggregate) never read aggregates.
struct NoAggregates;

impl Names for NoAggregates {
    fn aggregate(&self, _: &str) -> Option<(String, Ty)> {
        None
    }
}

/// What every view reads: the transactions once each (docs/cloud.md: the gateways ship
/// at least once, and a re-shipped transaction must not count twice).
pub const INPUT: &str = "`transactions_once`";

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
    let name = view_name("chain_rule", &rule.id);
    let names = RuleNames(&rule.aggregates);
    let mut filter: Vec<String> = Vec::new();
    if let Some(f) = &rule.filter {
        filter.push(translate(&f.source, &NoAggregates).map_err(|e| format!("filter: {e}"))?);
    }
    let when = translate(&rule.when.source, &names).map_err(|e| format!("when: {e}"))?;
    let aggregates_json = aggregates_json(&rule.aggregates);
    let head = format!(
        "SELECT '{id}' AS rule_id, '{action}' AS action, '{severity}' AS severity, '{mode}' AS mode,\n  \
         `txn_id`, `store_id`, `terminal_id`, `event_time`, {aggregates_json} AS aggregates",
        id = rule.id.replace('\'', "''"),
        action = word(&rule.action),
        severity = word(&rule.severity),
        mode = word(&rule.mode),
    );
    // Transactions without the key feed no window (as at the gateway, which looks the
    // key up only for a rule with a window).
    if rule.window.is_some() {
        filter.extend(rule.key.iter().map(|k| format!("{} IS NOT NULL", field_column(*k))));
    }
    let statement = if rule.aggregates.is_empty() {
        filter.push(when);
        format!(
            "CREATE TEMPORARY VIEW {name} AS\n{head}\nFROM {INPUT}\nWHERE {}",
            filter.join(" AND ")
        )
    } else {
        let window = window(rule)?;
        let columns = rule
            .aggregates
            .iter()
            .map(|a| {
                aggregate(&rule.conditions, &rule.distinct, a, " OVER w")
                    .map(|sql| format!("{sql} AS {}", agg_column(&a.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let key: Vec<&str> = rule.key.iter().map(|k| field_column(*k)).collect();
        format!(
            "CREATE TEMPORARY VIEW {name} AS\n{head}\nFROM (\n  SELECT *,\n    {}\n  FROM {INPUT}\n  \
             WHERE {}\n  WINDOW w AS (PARTITION BY {} ORDER BY `event_time` {window})\n)\nWHERE {when}",
            columns.join(",\n    "),
            filter.join(" AND "),
            key.join(", "),
        )
    };
    Ok((name, statement))
}

/// The aggregates as one JSON object column (`CAST(NULL AS STRING)` without any).
fn aggregates_json(aggregates: &[AggSpec]) -> String {
    if aggregates.is_empty() {
        return "CAST(NULL AS STRING)".to_string();
    }
    format!(
        "JSON_OBJECT({})",
        aggregates
            .iter()
            .map(|a| format!("KEY '{}' VALUE {}", a.name, agg_column(&a.name)))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A SQL name for a rule or report id: `<prefix>_<id>` with other characters as `_`.
fn view_name(prefix: &str, id: &str) -> String {
    format!(
        "`{prefix}_{}`",
        id.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
    )
}

/// `(view name, CREATE TEMPORARY VIEW …)` for a chain report: its filter as an input
/// view, the window table function (`TUMBLE`, `HOP`, `SESSION`), `GROUP BY` the key
/// and the window, `HAVING` its `when`.
pub fn report_view(report: &CompiledReport) -> Result<(String, Vec<String>), String> {
    let name = view_name("chain_report", &report.id);
    let input = view_name("chain_report_input", &report.id);
    let mut filter: Vec<String> = Vec::new();
    if let Some(f) = &report.filter {
        filter.push(translate(&f.source, &NoAggregates).map_err(|e| format!("filter: {e}"))?);
    }
    filter.extend(report.key.iter().map(|k| format!("{} IS NOT NULL", field_column(*k))));
    let key: Vec<&str> = report.key.iter().map(|k| field_column(*k)).collect();
    // The key as the gateway writes it (values joined by `/`), one column: a session
    // window partitions by it (Flink drops the parentheses of a multi-column
    // `PARTITION BY` when it expands a view), and every window groups by it.
    let input_view = format!(
        "CREATE TEMPORARY VIEW {input} AS\nSELECT *, CONCAT_WS('/', {}) AS report_key FROM {INPUT} WHERE {}",
        key.join(", "),
        filter.join(" AND ")
    );
    let window = match report.window {
        // The gateway counts an offset modulo the window (report.rs); Flink refuses one
        // of a whole window or more.
        ReportWindow::Tumbling { size_ms, offset_ms } => {
            format!(
                "TUMBLE(TABLE {input}, DESCRIPTOR(`event_time`), {}{})",
                interval(size_ms)?,
                offset(offset_ms.rem_euclid(size_ms))?
            )
        }
        ReportWindow::Hopping { size_ms, hop_ms, .. } if size_ms % hop_ms != 0 => {
            return Err(format!(
                "a hopping window of {size_ms} ms every {hop_ms} ms: Flink's HOP needs the size to be a \
                 whole number of hops"
            ))
        }
        // The gateway's offset counts modulo the hop.
        ReportWindow::Hopping {
            size_ms,
            hop_ms,
            offset_ms,
        } => format!(
            "HOP(TABLE {input}, DESCRIPTOR(`event_time`), {}, {}{})",
            interval(hop_ms)?,
            interval(size_ms)?,
            offset(offset_ms.rem_euclid(hop_ms))?
        ),
        ReportWindow::Session { gap_ms } => format!(
            "SESSION(TABLE {input} PARTITION BY report_key, DESCRIPTOR(`event_time`), {})",
            interval(gap_ms)?
        ),
    };
    let names = RuleNames(&report.aggregates);
    let having = match &report.when {
        Some(w) => format!("\nHAVING {}", translate_having(&w.source, report, &names)?),
        None => String::new(),
    };
    let columns = report
        .aggregates
        .iter()
        .map(|a| {
            aggregate(&report.conditions, &report.distinct, a, "")
                .map(|sql| format!("{sql} AS {}", agg_column(&a.name)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let id = report.id.replace('\'', "''");
    let severity = word(&report.severity);
    let inner = format!(
        "SELECT report_key, window_start, window_end,\n    {cols}\n  FROM TABLE({window})\n  GROUP BY report_key, window_start, window_end{having}",
        cols = columns.join(",\n    "),
    );
    let json = aggregates_json(&report.aggregates);
    let statement = format!(
        "CREATE TEMPORARY VIEW {name} AS\nSELECT '{id}' AS report_id, '{severity}' AS severity, report_key, \
         window_start, window_end, {json} AS aggregates\nFROM (\n  {inner}\n)",
    );
    Ok((name, vec![input_view, statement]))
}

/// A `when` of a report: over its aggregates, which `HAVING` names by their expressions.
fn translate_having(source: &str, report: &CompiledReport, _names: &RuleNames) -> Result<String, String> {
    struct Having<'a>(&'a CompiledReport);
    impl Names for Having<'_> {
        fn aggregate(&self, name: &str) -> Option<(String, Ty)> {
            let a = self.0.aggregates.iter().find(|a| a.name == name)?;
            Some((
                aggregate(&self.0.conditions, &self.0.distinct, a, "").ok()?,
                agg_type(a),
            ))
        }
    }
    translate(source, &Having(report)).map_err(|e| format!("when: {e}"))
}

fn offset(ms: i64) -> Result<String, String> {
    if ms == 0 {
        Ok(String::new())
    } else {
        Ok(format!(", {}", interval(ms)?))
    }
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

/// The aggregate, `over` its window (`" OVER w"` for a rule, `""` in a report's
/// `GROUP BY`): `OVER` applies to the aggregate call itself, so the defaults wrap it.
fn aggregate(conditions: &[Expr], distinct: &[TxnField], a: &AggSpec, over: &str) -> Result<String, String> {
    let condition = match a.group {
        0 => None,
        g => {
            let source = &conditions
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
            None => format!("COUNT(*){over}"),
            Some(c) => format!("SUM(CASE WHEN {c} THEN 1 ELSE 0 END){over}"),
        },
        AggKind::Sum => format!("SUM({}){over}", only(amount, "0")),
        AggKind::Min => format!("COALESCE(MIN({}){over}, 0)", only(amount, "NULL")),
        AggKind::Max => format!("COALESCE(MAX({}){over}, 0)", only(amount, "NULL")),
        AggKind::Avg => format!(
            "COALESCE(AVG({}){over}, CAST(0 AS DOUBLE))",
            only(&format!("CAST({amount} AS DOUBLE)"), "NULL")
        ),
        AggKind::CountDistinct(i) => {
            let field = distinct
                .get(i)
                .ok_or_else(|| format!("aggregate `{}`: its field is missing", a.name))?;
            format!("COUNT(DISTINCT {}){over}", only(field_column(*field), "NULL"))
        }
    })
}
