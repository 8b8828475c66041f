//! CEL (Common Expression Language, crate `cel`) for rule conditions: compiled once at
//! load, evaluated per transaction against the transaction, the rule's aggregates, the
//! deny lists and, for returns, the original sale.

use crate::txn::Transaction;
use cel::objects::Key;
use cel::{Context, Env, Program, Value};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// The standard library, built once and shared by every evaluation.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A compiled expression and its source (for reasons and errors).
#[derive(Debug)]
pub struct Expr {
    pub source: String,
    program: Program,
}

/// Where a compile problem is, inside the expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// 1-based line and column within the expression.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ExprError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at {}:{}: {}", self.line, self.column, self.message)
    }
}

/// Compiles `source`, refusing variables outside `allowed`.
pub fn compile(source: &str, allowed: &[&str]) -> Result<Expr, ExprError> {
    let program = ENV.compile(source).map_err(|errs| {
        let e = errs.errors.first();
        ExprError {
            line: e.map_or(1, |e| e.pos.0.max(1) as usize),
            column: e.map_or(1, |e| e.pos.1.max(0) as usize + 1),
            message: e.map_or_else(|| errs.to_string(), |e| e.msg.clone()),
        }
    })?;
    for var in program.references().variables() {
        if !allowed.contains(&var) {
            let (line, column) = position_of(source, var);
            return Err(ExprError {
                line,
                column,
                message: format!("unknown name `{var}`; allowed here: {}", allowed.join(", ")),
            });
        }
    }
    Ok(Expr {
        source: source.to_string(),
        program,
    })
}

/// Line and column of the first whole-word occurrence of `word`.
fn position_of(source: &str, word: &str) -> (usize, usize) {
    let bytes = source.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut from = 0;
    while let Some(i) = source[from..].find(word).map(|i| i + from) {
        let before = i == 0 || !is_ident(bytes[i - 1]);
        let after = i + word.len() >= bytes.len() || !is_ident(bytes[i + word.len()]);
        if before && after {
            let line = source[..i].matches('\n').count() + 1;
            let column = i - source[..i].rfind('\n').map_or(0, |n| n + 1) + 1;
            return (line, column);
        }
        from = i + word.len();
    }
    (1, 1)
}

impl Expr {
    /// Evaluates to a boolean; anything else (or a runtime error) is an error.
    pub fn eval_bool(&self, vars: &[(&str, &Value)]) -> Result<bool, String> {
        let mut ctx = Context::with_env(ENV.clone());
        for (name, value) in vars {
            ctx.add_variable_from_value(*name, (*value).clone());
        }
        match self.program.execute(&ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("`{}` gave {other:?}, not a boolean", self.source)),
            Err(e) => Err(format!("`{}`: {e}", self.source)),
        }
    }
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let m: HashMap<Key, Value> = entries
        .into_iter()
        .map(|(k, v)| (Key::String(Arc::new(k.to_string())), v))
        .collect();
    Value::Map(m.into())
}

fn s(v: &str) -> Value {
    Value::String(Arc::new(v.to_string()))
}

/// The transaction as CEL sees it: `txn.type`, `txn.total_minor`, `txn.card.token`, ...
/// Absent optional fields are absent keys (test them with `has(txn.customer_id)`).
pub fn txn_value(txn: &Transaction) -> Value {
    let mut e = vec![
        ("txn_id", s(&txn.txn_id)),
        ("store_id", s(&txn.store_id)),
        ("terminal_id", s(&txn.terminal_id)),
        ("type", s(txn.txn_type.name())),
        ("total_minor", Value::Int(txn.total_minor)),
        ("currency", s(&txn.currency)),
        ("clock_skew", Value::Bool(txn.clock_skew)),
        ("event_time_ms", Value::Int(txn.event_time().timestamp_millis())),
    ];
    for (name, v) in [
        ("operator_id", &txn.operator_id),
        ("customer_id", &txn.customer_id),
        ("original_txn_id", &txn.original_txn_id),
    ] {
        if let Some(v) = v {
            e.push((name, s(v)));
        }
    }
    // `card` is always a map, so `has(txn.card.token)` works without a card.
    {
        let mut c = Vec::new();
        let card = txn.card.clone().unwrap_or_default();
        for (name, v) in [("token", &card.token), ("bin", &card.bin), ("last4", &card.last4)] {
            if let Some(v) = v {
                c.push((name, s(v)));
            }
        }
        if let Some(m) = card.entry_mode {
            c.push(("entry_mode", s(m.name())));
        }
        e.push(("card", map(c)));
    }
    map(e)
}

/// Deny lists as CEL maps (`value in lists.name` is a hash lookup).
pub fn lists_value(lists: &[(String, Arc<super::DenyList>)]) -> Value {
    let m: HashMap<Key, Value> = lists
        .iter()
        .map(|(name, list)| {
            let values: HashMap<Key, Value> = list
                .values()
                .map(|v| (Key::String(Arc::new(v.to_string())), Value::Bool(true)))
                .collect();
            (Key::String(Arc::new(name.clone())), Value::Map(values.into()))
        })
        .collect();
    Value::Map(m.into())
}

/// An empty map, for `original` when there is no original transaction.
pub fn empty_map() -> Value {
    map(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_and_unknown_names_are_located() {
        let e = compile("txn.total_minor >= ", &["txn"]).unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        let e = compile("txn.type == \"sale\" &&\n  atempts >= 6", &["txn", "attempts"]).unwrap_err();
        assert_eq!((e.line, e.column), (2, 3), "{e}");
        assert!(
            e.message.contains("unknown name `atempts`") && e.message.contains("attempts"),
            "{e}"
        );
    }

    #[test]
    fn expressions_see_the_transaction() {
        let raw = format!(
            r#"{{"txn_id":"t","store_id":"s","terminal_id":"p","occurred_at":"{}","type":"sale","total_minor":500,"currency":"USD","card":{{"token":"tok","entry_mode":"keyed"}}}}"#,
            chrono::Utc::now().to_rfc3339()
        );
        let t = crate::txn::parse(raw.as_bytes(), chrono::Utc::now()).unwrap();
        let v = txn_value(&t);
        let e = compile(
            r#"txn.type == "sale" && txn.card.entry_mode == "keyed" && !has(txn.customer_id)"#,
            &["txn"],
        )
        .unwrap();
        assert_eq!(e.eval_bool(&[("txn", &v)]), Ok(true));
        let e = compile("txn.total_minor", &["txn"]).unwrap();
        assert!(e.eval_bool(&[("txn", &v)]).unwrap_err().contains("not a boolean"));
    }
}
