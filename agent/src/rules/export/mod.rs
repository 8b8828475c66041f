//! `tillgate rules export`: the chain-scoped rules (`scope = "chain"`) as Flink SQL for
//! the cloud's job, which sees every store's transactions.
//!
//! Each rule becomes a view over the `transactions` table (schema and event time in
//! docs/cloud.md): its filter, its key, its per-event sliding window as
//! an `OVER (PARTITION BY key ORDER BY event_time RANGE … PRECEDING AND CURRENT ROW)`
//! (`ROWS` for `{ last = N }`), its aggregates, and its `when`. The views are united
//! into `chain_alert_rows`, which the job inserts into `chain_alerts`. A chain report
//! becomes a window table function (`TUMBLE`, `HOP`, `SESSION`) grouped by its key and
//! window with `HAVING` its `when`, united into `chain_report_rows` for `chain_reports`.
//! What does not translate is refused naming the rule and the construct (docs/cloud.md
//! lists the subset).

mod sql_expr;
mod view;

use super::{CompiledRule, RulePack};
use serde::Serialize;

/// The job's statements, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Export {
    /// `CREATE TEMPORARY VIEW` per rule, the union view, then the `INSERT`.
    pub statements: Vec<String>,
    /// The rules exported, in file order.
    pub rules: Vec<String>,
    /// The reports exported, in file order.
    pub reports: Vec<String>,
}

/// The union views a test can read without the inserts, and the sink tables.
pub const UNION_VIEW: &str = "chain_alert_rows";
pub const SINK_TABLE: &str = "chain_alerts";
pub const REPORT_UNION_VIEW: &str = "chain_report_rows";
pub const REPORT_SINK_TABLE: &str = "chain_reports";

/// Exports every chain rule of `pack`; the first rule that does not translate is an
/// error naming it.
pub fn export(pack: &RulePack) -> Result<Export, String> {
    if pack.chain.is_empty() && pack.chain_reports.is_empty() {
        return Err("no rule or report has `scope = \"chain\"`: nothing to export".into());
    }
    // Event-time deduplication (first row per store and txn_id: a txn_id is unique in
    // its store's journal, not across the chain): append-only, keeps event_time a time
    // attribute for the windows; its state lives as long as the job's state TTL.
    let mut statements = vec![format!(
        "CREATE TEMPORARY VIEW {input} AS\nSELECT * FROM (\n  SELECT *, ROW_NUMBER() OVER \
         (PARTITION BY `store_id`, `txn_id` ORDER BY `event_time` ASC) AS once FROM `transactions`\n)\nWHERE once = 1",
        input = view::INPUT
    )];
    let mut views = Vec::new();
    for rule in &pack.chain {
        let (name, statement) = view::rule_view(rule).map_err(|e| format!("rule `{}`: {e}", rule.id))?;
        statements.push(statement);
        views.push(name);
    }
    let mut report_views = Vec::new();
    for report in &pack.chain_reports {
        let (name, report_statements) =
            view::report_view(report).map_err(|e| format!("report `{}`: {e}", report.id))?;
        statements.extend(report_statements);
        report_views.push(name);
    }
    for (views, union, sink) in [
        (&views, UNION_VIEW, SINK_TABLE),
        (&report_views, REPORT_UNION_VIEW, REPORT_SINK_TABLE),
    ] {
        if views.is_empty() {
            continue;
        }
        let selects = views
            .iter()
            .map(|v| format!("SELECT * FROM {v}"))
            .collect::<Vec<_>>()
            .join("\nUNION ALL\n");
        statements.push(format!("CREATE TEMPORARY VIEW `{union}` AS\n{selects}"));
        statements.push(format!("INSERT INTO `{sink}` SELECT * FROM `{union}`"));
    }
    // Every generated view has its own name: ids that differ only in characters SQL
    // names cannot hold, or an id that spells another generated name (a report `rows`
    // is `chain_report_rows`, the union), would make the job fail to deploy.
    let mut seen = std::collections::HashSet::new();
    for statement in &statements {
        if let Some(name) = statement
            .strip_prefix("CREATE TEMPORARY VIEW ")
            .and_then(|rest| rest.split(" AS").next())
        {
            if !seen.insert(name.to_string()) {
                return Err(format!(
                    "two chain rules or reports would both make the SQL view {name} (their ids differ \
                     only in characters SQL names cannot hold, or one spells a generated name): rename one"
                ));
            }
        }
    }
    Ok(Export {
        statements,
        rules: pack.chain.iter().map(|r: &CompiledRule| r.id.clone()).collect(),
        reports: pack.chain_reports.iter().map(|r| r.id.clone()).collect(),
    })
}

impl Export {
    /// The statements as one script (`;` after each), with a header.
    pub fn script(&self) -> String {
        let mut out = String::from(
            "-- tillgate rules export: the chain-scoped rules and reports as Flink SQL (docs/cloud.md).\n\
             -- Reads `transactions`, writes `chain_alerts` and `chain_reports`.\n\n",
        );
        for s in &self.statements {
            out.push_str(s);
            out.push_str(";\n\n");
        }
        out
    }
}

#[cfg(test)]
mod tests;
