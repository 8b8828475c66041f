//! A CEL expression from a rule file as a Flink SQL expression, for the subset that
//! means the same on both sides; anything else is refused, naming the construct.
//!
//! Written by hand: no crate translates CEL to SQL. The `cel` crate's parser gives the
//! syntax tree (the same parser the gateway compiles the rule with).

use cel::common::ast::{operators, Expr, IdedExpr, LiteralValue};

/// How the translation names what a CEL identifier refers to.
pub trait Names {
    /// The SQL column for aggregate `name`, or `None` if the rule has no such aggregate.
    fn aggregate(&self, name: &str) -> Option<String>;
}

/// Transaction fields the Flink table has (docs/cloud.md, "Chain-wide rules"), as CEL
/// spells them below `txn.`.
const TOP_FIELDS: [&str; 10] = [
    "txn_id",
    "store_id",
    "terminal_id",
    "type",
    "total_minor",
    "currency",
    "operator_id",
    "customer_id",
    "original_txn_id",
    "clock_skew",
];
const CARD_FIELDS: [&str; 4] = ["token", "bin", "last4", "entry_mode"];

/// Translates `source` (already checked by the gateway's compiler).
pub fn translate(source: &str, names: &dyn Names) -> Result<String, String> {
    let parsed = cel::parser::Parser::new()
        .parse(source)
        .map_err(|e| format!("does not parse: {e}"))?;
    sql(&parsed, names)
}

fn sql(e: &IdedExpr, names: &dyn Names) -> Result<String, String> {
    match &e.expr {
        Expr::Literal(v) => literal(v),
        Expr::Ident(name) => names.aggregate(name).ok_or_else(|| gateway_only(name)),
        Expr::Select(select) => {
            if let Some(root @ ("lists" | "original")) = segments(e).and_then(|s| s.first().copied()) {
                return Err(gateway_only(root));
            }
            let column = column(e).ok_or_else(|| {
                format!(
                    "`{}` is not a transaction field the Flink table has (txn.{}, txn.card.{})",
                    path_text(e),
                    TOP_FIELDS.join("|"),
                    CARD_FIELDS.join("|")
                )
            })?;
            if select.test {
                Ok(format!("({column} IS NOT NULL)"))
            } else {
                Ok(column)
            }
        }
        Expr::Call(call) => {
            let args = &call.args;
            let bin = |op: &str| -> Result<String, String> {
                Ok(format!("({} {op} {})", sql(&args[0], names)?, sql(&args[1], names)?))
            };
            match (call.func_name.as_str(), args.len(), call.target.is_some()) {
                (operators::LOGICAL_AND, 2, false) => bin("AND"),
                (operators::LOGICAL_OR, 2, false) => bin("OR"),
                (operators::LOGICAL_NOT, 1, false) => Ok(format!("(NOT {})", sql(&args[0], names)?)),
                (operators::EQUALS, 2, false) => bin("="),
                (operators::NOT_EQUALS, 2, false) => bin("<>"),
                (operators::LESS, 2, false) => bin("<"),
                (operators::LESS_EQUALS, 2, false) => bin("<="),
                (operators::GREATER, 2, false) => bin(">"),
                (operators::GREATER_EQUALS, 2, false) => bin(">="),
                (operators::ADD, 2, false) => bin("+"),
                (operators::SUBSTRACT, 2, false) => bin("-"),
                (operators::MULTIPLY, 2, false) => bin("*"),
                // CEL fails on an integer division by zero (the rule does not fire); a
                // Flink job would fail: NULL keeps the rule from firing instead.
                (operators::DIVIDE, 2, false) => Ok(format!(
                    "({} / NULLIF({}, 0))",
                    sql(&args[0], names)?,
                    sql(&args[1], names)?
                )),
                (operators::MODULO, 2, false) => Ok(format!(
                    "MOD({}, NULLIF({}, 0))",
                    sql(&args[0], names)?,
                    sql(&args[1], names)?
                )),
                (operators::NEGATE, 1, false) => Ok(format!("(- {})", sql(&args[0], names)?)),
                (operators::CONDITIONAL, 3, false) => Ok(format!(
                    "(CASE WHEN {} THEN {} ELSE {} END)",
                    sql(&args[0], names)?,
                    sql(&args[1], names)?,
                    sql(&args[2], names)?
                )),
                (operators::IN, 2, false) => match &args[1].expr {
                    Expr::List(list) => {
                        let items: Vec<String> =
                            list.elements.iter().map(|i| sql(i, names)).collect::<Result<_, _>>()?;
                        if items.is_empty() {
                            return Ok("FALSE".into());
                        }
                        Ok(format!("({} IN ({}))", sql(&args[0], names)?, items.join(", ")))
                    }
                    _ => Err(match sql(&args[1], names) {
                        Err(why) => why,
                        Ok(_) => "`in` takes a list written in the rule (`x in [\"a\", \"b\"]`)".into(),
                    }),
                },
                ("double", 1, false) => Ok(format!("CAST({} AS DOUBLE)", sql(&args[0], names)?)),
                ("int", 1, false) => Ok(format!("CAST({} AS BIGINT)", sql(&args[0], names)?)),
                (other, _, _) => Err(format!(
                    "`{}` is outside what translates to Flink SQL (comparisons, && || !, arithmetic, \
                     `in` a literal list, has(), double(), int(), ?:)",
                    operator_text(other)
                )),
            }
        }
        Expr::List(_) => Err("a list is translated only on the right of `in`".into()),
        Expr::Map(_) | Expr::Struct(_) => Err("map and message literals do not translate".into()),
        Expr::Comprehension(_) => Err("macros (all, exists, map, filter) do not translate".into()),
        Expr::Unspecified => Err("an empty expression".into()),
    }
}

fn gateway_only(name: &str) -> String {
    match name {
        "lists" => "deny lists (`lists.…`) live on the gateways".to_string(),
        "original" => "`original` (a return's sale) is looked up in a gateway's journal".to_string(),
        _ => format!("`{name}` is not one of the rule's aggregates"),
    }
}

/// `txn.a` → `` `a` ``, `txn.card.b` → `` `card`.`b` `` for the table's fields.
fn column(e: &IdedExpr) -> Option<String> {
    let segments = segments(e)?;
    match segments.as_slice() {
        ["txn", field] if TOP_FIELDS.contains(field) => Some(format!("`{field}`")),
        ["txn", "card", field] if CARD_FIELDS.contains(field) => Some(format!("`card`.`{field}`")),
        _ => None,
    }
}

/// The names of a field selection (`has()` included), root first.
fn segments(e: &IdedExpr) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut at = e;
    loop {
        match &at.expr {
            Expr::Ident(name) => {
                out.push(name.as_str());
                out.reverse();
                return Some(out);
            }
            Expr::Select(s) => {
                out.push(s.field.as_str());
                at = &s.operand;
            }
            _ => return None,
        }
    }
}

fn path_text(e: &IdedExpr) -> String {
    segments(e).map_or_else(|| "this selection".into(), |s| s.join("."))
}

fn operator_text(name: &str) -> String {
    name.trim_matches('_')
        .replace("_", "")
        .trim_start_matches('@')
        .to_string()
}

fn literal(v: &LiteralValue) -> Result<String, String> {
    Ok(match v {
        LiteralValue::Boolean(b) => if **b { "TRUE" } else { "FALSE" }.to_string(),
        LiteralValue::Int(i) => i.to_string(),
        LiteralValue::UInt(u) => u.to_string(),
        LiteralValue::Double(d) => {
            let d: f64 = **d;
            if !d.is_finite() {
                return Err(format!("the number {d} has no SQL literal"));
            }
            format!("CAST({d:?} AS DOUBLE)")
        }
        LiteralValue::String(s) => format!("'{}'", s.inner().replace('\'', "''")),
        LiteralValue::Null => return Err("`null` does not translate (test presence with has())".into()),
        LiteralValue::Bytes(_) => return Err("bytes literals do not translate".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Aggs(&'static [&'static str]);
    impl Names for Aggs {
        fn aggregate(&self, name: &str) -> Option<String> {
            self.0.contains(&name).then(|| format!("`agg_{name}`"))
        }
    }

    fn t(source: &str) -> Result<String, String> {
        translate(source, &Aggs(&["attempts", "voids", "total"]))
    }

    #[test]
    fn the_subset_translates() {
        assert_eq!(
            t(r#"txn.type == "sale" && has(txn.card.token)"#).unwrap(),
            "((`type` = 'sale') AND (`card`.`token` IS NOT NULL))"
        );
        assert_eq!(t("attempts >= 6").unwrap(), "(`agg_attempts` >= 6)");
        assert_eq!(
            t(r#"txn.card.entry_mode in ["keyed", "fallback"]"#).unwrap(),
            "(`card`.`entry_mode` IN ('keyed', 'fallback'))"
        );
        assert_eq!(
            t("double(voids) / double(total) >= 0.05").unwrap(),
            "((CAST(`agg_voids` AS DOUBLE) / NULLIF(CAST(`agg_total` AS DOUBLE), 0)) >= CAST(0.05 AS DOUBLE))"
        );
        assert_eq!(
            t(r#"txn.operator_id == "o'brien""#).unwrap(),
            "(`operator_id` = 'o''brien')"
        );
    }

    #[test]
    fn what_does_not_translate_is_named() {
        assert!(t("txn.card.token in lists.denied_card_tokens")
            .unwrap_err()
            .contains("deny lists"));
        assert!(t("original.total_minor > 0").unwrap_err().contains("`original`"));
        assert!(
            t("txn.line_items.size() > 3").unwrap_err().contains("size"),
            "{:?}",
            t("txn.line_items.size() > 3")
        );
        assert!(t("txn.event_time_ms > 0").unwrap_err().contains("txn.event_time_ms"));
        assert!(t("spent > 0")
            .unwrap_err()
            .contains("`spent` is not one of the rule's aggregates"));
        assert!(t("[1].all(x, x > 0)").unwrap_err().contains("macros"));
    }
}
