//! A CEL expression from a rule file as a Flink SQL expression, for the subset that
//! means the same on both sides; anything else is refused, naming the construct.
//!
//! Written by hand: no crate translates CEL to SQL. The `cel` crate's parser gives the
//! syntax tree (the same parser the gateway compiles the rule with).

use cel::common::ast::{operators, Expr, IdedExpr, LiteralValue};

/// The CEL type of a translated expression, as far as the translation needs it: CEL
/// refuses arithmetic across int and double (the rule never fires at the gateway), and
/// divides doubles by zero to infinity but fails on ints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Int,
    Double,
    Str,
    Bool,
}

/// How the translation names what a CEL identifier refers to.
pub trait Names {
    /// The SQL for aggregate `name` and its type, or `None` if the rule has no such
    /// aggregate.
    fn aggregate(&self, name: &str) -> Option<(String, Ty)>;
}

/// Transaction fields the Flink table has (docs/cloud.md, "Chain-wide rules"), as CEL
/// spells them below `txn.`, with their types.
const TOP_FIELDS: [(&str, Ty); 10] = [
    ("txn_id", Ty::Str),
    ("store_id", Ty::Str),
    ("terminal_id", Ty::Str),
    ("type", Ty::Str),
    ("total_minor", Ty::Int),
    ("currency", Ty::Str),
    ("operator_id", Ty::Str),
    ("customer_id", Ty::Str),
    ("original_txn_id", Ty::Str),
    ("clock_skew", Ty::Bool),
];
const CARD_FIELDS: [&str; 4] = ["token", "bin", "last4", "entry_mode"];

/// Translates `source` (already checked by the gateway's compiler).
pub fn translate(source: &str, names: &dyn Names) -> Result<String, String> {
    let parsed = cel::parser::Parser::new()
        .parse(source)
        .map_err(|e| format!("does not parse: {e}"))?;
    Ok(sql(&parsed, names)?.0)
}

type Typed = (String, Ty);

fn sql(e: &IdedExpr, names: &dyn Names) -> Result<Typed, String> {
    match &e.expr {
        Expr::Literal(v) => literal(v),
        Expr::Ident(name) => names.aggregate(name).ok_or_else(|| gateway_only(name)),
        Expr::Select(select) => {
            if let Some(root @ ("lists" | "original")) = segments(e).and_then(|s| s.first().copied()) {
                return Err(gateway_only(root));
            }
            let (column, ty) = column(e).ok_or_else(|| {
                format!(
                    "`{}` is not a transaction field the Flink table has (txn.{}, txn.card.{})",
                    path_text(e),
                    TOP_FIELDS.map(|(f, _)| f).join("|"),
                    CARD_FIELDS.join("|")
                )
            })?;
            if select.test {
                Ok((format!("({column} IS NOT NULL)"), Ty::Bool))
            } else {
                Ok((column, ty))
            }
        }
        Expr::Call(call) => {
            let args = &call.args;
            if call.target.is_some() {
                return Err(format!(
                    "the method `.{}()` is outside what translates to Flink SQL",
                    call.func_name
                ));
            }
            let two = || -> Result<(Typed, Typed), String> { Ok((sql(&args[0], names)?, sql(&args[1], names)?)) };
            let logic = |op: &str| -> Result<Typed, String> {
                let ((a, ta), (b, tb)) = two()?;
                if ta != Ty::Bool || tb != Ty::Bool {
                    return Err(format!(
                        "`{op}` of a {ta:?} and a {tb:?}: both sides must be conditions"
                    ));
                }
                Ok((format!("({a} {op} {b})"), Ty::Bool))
            };
            match (call.func_name.as_str(), args.len()) {
                (operators::LOGICAL_AND, 2) => logic("AND"),
                (operators::LOGICAL_OR, 2) => logic("OR"),
                (operators::LOGICAL_NOT, 1) => Ok((format!("(NOT {})", sql(&args[0], names)?.0), Ty::Bool)),
                // Comparisons: CEL compares int with double numerically, as SQL does;
                // anything else across types CEL answers or fails where Flink refuses
                // to plan the job.
                (operators::EQUALS, 2) => compare(two()?, "="),
                (operators::NOT_EQUALS, 2) => compare(two()?, "<>"),
                (operators::LESS, 2) => compare(two()?, "<"),
                (operators::LESS_EQUALS, 2) => compare(two()?, "<="),
                (operators::GREATER, 2) => compare(two()?, ">"),
                (operators::GREATER_EQUALS, 2) => compare(two()?, ">="),
                (operators::ADD, 2) => {
                    let ((a, ta), (b, tb)) = two()?;
                    match (ta, tb) {
                        (Ty::Str, Ty::Str) => Ok((format!("({a} || {b})"), Ty::Str)),
                        _ => arithmetic("+", (a, ta), (b, tb)),
                    }
                }
                (operators::SUBSTRACT, 2) => {
                    let (a, b) = two()?;
                    arithmetic("-", a, b)
                }
                (operators::MULTIPLY, 2) => {
                    let (a, b) = two()?;
                    arithmetic("*", a, b)
                }
                (operators::DIVIDE, 2) => {
                    let (a, b) = two()?;
                    arithmetic("/", a, b)
                }
                (operators::MODULO, 2) => {
                    let (a, b) = two()?;
                    arithmetic("%", a, b)
                }
                (operators::NEGATE, 1) => {
                    let (a, t) = sql(&args[0], names)?;
                    numeric(t, "-")?;
                    Ok((format!("(- {a})"), t))
                }
                // A condition that fails in CEL (an absent field) fails the rule; SQL's
                // CASE would take the ELSE branch on NULL, so NULL is passed on instead.
                (operators::CONDITIONAL, 3) => {
                    let (c, _) = sql(&args[0], names)?;
                    let (a, ta) = sql(&args[1], names)?;
                    let (b, tb) = sql(&args[2], names)?;
                    if ta != tb {
                        return Err(format!("`?:` with a {ta:?} and a {tb:?} branch"));
                    }
                    Ok((
                        format!("(CASE WHEN {c} IS NULL THEN NULL WHEN {c} THEN {a} ELSE {b} END)"),
                        ta,
                    ))
                }
                (operators::IN, 2) => in_list(&args[0], &args[1], names),
                // TRY_CAST: text that is no number fails the CEL call (no hit), and must
                // not fail the job.
                ("double", 1) => Ok((format!("TRY_CAST({} AS DOUBLE)", sql(&args[0], names)?.0), Ty::Double)),
                ("int", 1) => Ok((format!("TRY_CAST({} AS BIGINT)", sql(&args[0], names)?.0), Ty::Int)),
                (other, _) => Err(format!(
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

fn comparable(a: Ty, b: Ty) -> bool {
    a == b || matches!((a, b), (Ty::Int, Ty::Double) | (Ty::Double, Ty::Int))
}

fn compare(((a, ta), (b, tb)): (Typed, Typed), op: &str) -> Result<Typed, String> {
    if !comparable(ta, tb) {
        return Err(format!(
            "`{op}` between a {ta:?} and a {tb:?}: CEL and SQL disagree on it (write both sides of one type)"
        ));
    }
    Ok((format!("({a} {op} {b})"), Ty::Bool))
}

fn numeric(t: Ty, op: &str) -> Result<(), String> {
    match t {
        Ty::Int | Ty::Double => Ok(()),
        _ => Err(format!("`{op}` on a {t:?}: CEL refuses it")),
    }
}

/// Arithmetic on two numbers of one type: CEL fails on int with double (the rule never
/// fires at the gateway), so the export refuses it rather than compute what the gateway
/// does not. Integer `/` and `%` by zero fail in CEL and would fail the Flink job: NULL
/// (no hit) instead. Doubles divide by zero to infinity on both sides.
fn arithmetic(op: &str, (a, ta): Typed, (b, tb): Typed) -> Result<Typed, String> {
    numeric(ta, op)?;
    numeric(tb, op)?;
    if ta != tb {
        return Err(format!(
            "`{op}` of an int and a double fails in CEL, so the gateway never fires this rule: \
             convert with double() or int()"
        ));
    }
    Ok(match (op, ta) {
        ("/", Ty::Int) => (format!("({a} / NULLIF({b}, 0))"), Ty::Int),
        ("%", Ty::Int) => (format!("MOD({a}, NULLIF({b}, 0))"), Ty::Int),
        ("%", _) => return Err("`%` of doubles fails in CEL".into()),
        _ => (format!("({a} {op} {b})"), ta),
    })
}

/// `x in [literals]`. An absent `x` fails in CEL (no hit), so it is NULL here too, also
/// for an empty list; list elements must be literals (an absent field in the list fails
/// in CEL while SQL's IN could still hold).
fn in_list(item: &IdedExpr, list: &IdedExpr, names: &dyn Names) -> Result<Typed, String> {
    let Expr::List(list) = &list.expr else {
        return Err(match sql(list, names) {
            Err(why) => why,
            Ok(_) => "`in` takes a list written in the rule (`x in [\"a\", \"b\"]`)".into(),
        });
    };
    let (x, tx) = sql(item, names)?;
    let items: Vec<String> = list
        .elements
        .iter()
        .map(|i| match &i.expr {
            Expr::Literal(v) => literal(v).and_then(|(s, t)| {
                if comparable(tx, t) {
                    Ok(s)
                } else {
                    Err(format!(
                        "`in` a list holding a {t:?} for a {tx:?}: CEL and SQL disagree on it"
                    ))
                }
            }),
            _ => Err("`in` takes a list of literals here".into()),
        })
        .collect::<Result<_, _>>()?;
    if items.is_empty() {
        return Ok((format!("(CASE WHEN {x} IS NULL THEN NULL ELSE FALSE END)"), Ty::Bool));
    }
    Ok((format!("({x} IN ({}))", items.join(", ")), Ty::Bool))
}

fn gateway_only(name: &str) -> String {
    match name {
        "lists" => "deny lists (`lists.…`) live on the gateways".to_string(),
        "original" => "`original` (a return's sale) is looked up in a gateway's journal".to_string(),
        _ => format!("`{name}` is not one of the rule's aggregates"),
    }
}

/// `txn.a` → `` `a` ``, `txn.card.b` → `` `card`.`b` `` for the table's fields.
fn column(e: &IdedExpr) -> Option<Typed> {
    let segments = segments(e)?;
    match segments.as_slice() {
        ["txn", field] => TOP_FIELDS
            .iter()
            .find(|(f, _)| f == field)
            .map(|(f, ty)| (format!("`{f}`"), *ty)),
        ["txn", "card", field] if CARD_FIELDS.contains(field) => Some((format!("`card`.`{field}`"), Ty::Str)),
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

fn literal(v: &LiteralValue) -> Result<Typed, String> {
    Ok(match v {
        LiteralValue::Boolean(b) => (if **b { "TRUE" } else { "FALSE" }.to_string(), Ty::Bool),
        LiteralValue::Int(i) => (i.to_string(), Ty::Int),
        LiteralValue::UInt(_) => {
            return Err("unsigned literals (`1u`) do not translate: CEL keeps them apart from ints".into())
        }
        LiteralValue::Double(d) => {
            let d: f64 = **d;
            if !d.is_finite() {
                return Err(format!("the number {d} has no SQL literal"));
            }
            (format!("CAST({d:?} AS DOUBLE)"), Ty::Double)
        }
        LiteralValue::String(s) => {
            let text = s.inner();
            // One statement per line-free literal: a script splitter must not cut it.
            if text.chars().any(char::is_control) {
                return Err("a string literal with control characters (line breaks) does not translate".into());
            }
            (format!("'{}'", text.replace('\'', "''")), Ty::Str)
        }
        LiteralValue::Null => return Err("`null` does not translate (test presence with has())".into()),
        LiteralValue::Bytes(_) => return Err("bytes literals do not translate".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Aggs(&'static [&'static str]);
    impl Names for Aggs {
        fn aggregate(&self, name: &str) -> Option<(String, Ty)> {
            let ty = if name == "mean" { Ty::Double } else { Ty::Int };
            self.0.contains(&name).then(|| (format!("`agg_{name}`"), ty))
        }
    }

    fn t(source: &str) -> Result<String, String> {
        translate(source, &Aggs(&["attempts", "voids", "total", "mean"]))
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
            "((TRY_CAST(`agg_voids` AS DOUBLE) / TRY_CAST(`agg_total` AS DOUBLE)) >= CAST(0.05 AS DOUBLE))"
        );
        assert_eq!(
            t(r#"txn.operator_id == "o'brien""#).unwrap(),
            "(`operator_id` = 'o''brien')"
        );
    }

    #[test]
    fn what_cel_fails_on_never_fires_in_sql_either() {
        // int with double: CEL fails, so the export refuses rather than compute it.
        assert!(t("mean * 2 > 10.0").unwrap_err().contains("int and a double"));
        // Integer division by zero: NULL (no hit), not a failed job.
        assert_eq!(
            t("total / attempts > 1").unwrap(),
            "((`agg_total` / NULLIF(`agg_attempts`, 0)) > 1)"
        );
        // A failing condition: NULL, not the ELSE branch.
        assert_eq!(
            t(r#"(txn.customer_id == "a" ? 1 : 2) == 2"#).unwrap(),
            "((CASE WHEN (`customer_id` = 'a') IS NULL THEN NULL WHEN (`customer_id` = 'a') THEN 1 ELSE 2 END) = 2)"
        );
        // An absent field in an empty list: NULL, not FALSE.
        assert_eq!(
            t("!(txn.customer_id in [])").unwrap(),
            "(NOT (CASE WHEN `customer_id` IS NULL THEN NULL ELSE FALSE END))"
        );
        assert!(t(r#""a" in [txn.customer_id]"#).unwrap_err().contains("literals"));
        assert_eq!(
            t(r#"txn.store_id + "/" + txn.terminal_id == "s/p""#).unwrap(),
            "(((`store_id` || '/') || `terminal_id`) = 's/p')"
        );
        assert!(t(r#"txn.store_id + 1 == 2"#).unwrap_err().contains("Str"));
        assert!(t("txn.operator_id == \"a\\nb\"").unwrap_err().contains("control"));
        // Comparisons across types: CEL answers (or fails) where Flink would not plan.
        assert!(t(r#"txn.store_id == 1"#).unwrap_err().contains("Str"));
        assert!(t(r#"txn.total_minor in ["a"]"#).unwrap_err().contains("Str"));
        assert!(t("txn.total_minor > 1u").unwrap_err().contains("unsigned"));
        assert_eq!(t("mean >= 2").unwrap(), "(`agg_mean` >= 2)");
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
