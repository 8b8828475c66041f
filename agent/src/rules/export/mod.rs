//! `tillgate rules export`: the chain-scoped rules (`scope = "chain"`) as Flink SQL for
//! the cloud's job, which sees every store's transactions.
//!
//! Each rule becomes a view over the `transactions` table (schema and event time in
//! `cloud/flink/transactions.sql`): its filter, its key, its per-event sliding window as
//! an `OVER (PARTITION BY key ORDER BY event_time RANGE … PRECEDING AND CURRENT ROW)`
//! (`ROWS` for `{ last = N }`), its aggregates, and its `when`. The views are united
//! into `chain_alert_rows`, which the job inserts into `chain_alerts`. What does not
//! translate is refused naming the rule and the construct (docs/cloud.md lists the
//! subset).

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
}

/// The name of the union view a test can read without the insert.
pub const UNION_VIEW: &str = "chain_alert_rows";
/// The sink table the job writes to.
pub const SINK_TABLE: &str = "chain_alerts";

/// Exports every chain rule of `pack`; the first rule that does not translate is an
/// error naming it.
pub fn export(pack: &RulePack) -> Result<Export, String> {
    if pack.chain.is_empty() {
        return Err("no rule has `scope = \"chain\"`: nothing to export".into());
    }
    let mut statements = Vec::new();
    let mut views = Vec::new();
    for rule in &pack.chain {
        let (name, statement) = view::rule_view(rule).map_err(|e| format!("rule `{}`: {e}", rule.id))?;
        statements.push(statement);
        views.push(name);
    }
    let union = views
        .iter()
        .map(|v| format!("SELECT * FROM {v}"))
        .collect::<Vec<_>>()
        .join("\nUNION ALL\n");
    statements.push(format!("CREATE TEMPORARY VIEW `{UNION_VIEW}` AS\n{union}"));
    statements.push(format!("INSERT INTO `{SINK_TABLE}` SELECT * FROM `{UNION_VIEW}`"));
    Ok(Export {
        statements,
        rules: pack.chain.iter().map(|r: &CompiledRule| r.id.clone()).collect(),
    })
}

impl Export {
    /// The statements as one script (`;` after each), with a header.
    pub fn script(&self) -> String {
        let mut out = String::from(
            "-- tillgate rules export: the chain-scoped rules as Flink SQL (docs/cloud.md).\n\
             -- Reads `transactions` (cloud/flink/transactions.sql), writes `chain_alerts`.\n\n",
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
