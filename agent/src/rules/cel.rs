//! CEL (Common Expression Language, crate `cel`) for rule conditions: compiled once at
//! load, evaluated per transaction against the transaction, the rule's aggregates, the
//! deny lists and, for returns, the original sale.

use crate::txn::Transaction;
use cel::common::types::{CelBool, CelInt, CelMap, CelMapKey, CelString};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
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
    /// The variables it reads, so callers build only what is needed.
    pub reads: Vec<String>,
    /// The same condition compiled ([`super::compiled`]); `None`: the interpreter runs it.
    pub compiled: Option<super::compiled::Node>,
}

impl Expr {
    /// Whether the expression reads variable `name`.
    pub fn reads(&self, name: &str) -> bool {
        self.reads.iter().any(|r| r == name)
    }
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
    let reads = program
        .references()
        .variables()
        .into_iter()
        .map(str::to_string)
        .collect();
    Ok(Expr {
        source: source.to_string(),
        program,
        reads,
        compiled: None,
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

/// A value converted once into CEL's runtime form and then lent to every evaluation.
/// (Binding a `Value` per evaluation deep-copies maps, lists included.)
pub type Bound = Box<dyn Val>;

/// Converts a `Value` into its runtime form.
pub fn bind(v: Value) -> Bound {
    v.try_into()
        .expect("plain values (maps, strings, numbers, booleans) always convert")
}

/// Variables by name, lent to the interpreter without copying.
struct Lent<'a>(&'a [(&'a str, &'a (dyn Val + 'a))]);

impl VariableResolver for Lent<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        self.0
            .iter()
            .find(|(n, _)| *n == variable)
            .map(|(_, v)| CowVal::Borrowed(*v))
    }
}

impl Expr {
    /// Evaluates the compiled form when there is one, else the interpreter over `vars`
    /// (built by `vars` only then).
    pub fn eval<'a>(
        &self,
        inputs: &super::compiled::Inputs<'_>,
        vars: impl FnOnce() -> Vec<(&'a str, &'a (dyn Val + 'a))>,
    ) -> Result<bool, String> {
        match &self.compiled {
            Some(node) => node
                .eval(inputs)
                .map_err(|_| format!("`{}` could not be evaluated", self.source)),
            None => self.eval_bool(&vars()),
        }
    }

    /// Evaluates to a boolean; anything else (or a runtime error) is an error.
    pub fn eval_bool<'a>(&self, vars: &'a [(&'a str, &'a (dyn Val + 'a))]) -> Result<bool, String> {
        let lent = Lent(vars);
        let mut ctx = Context::with_env(ENV.clone());
        ctx.set_variable_resolver(&lent);
        match self.program.execute(&ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("`{}` gave {other:?}, not a boolean", self.source)),
            Err(e) => Err(format!("`{}`: {e}", self.source)),
        }
    }
}

/// The transaction as CEL sees it: `txn.type`, `txn.total_minor`, `txn.card.token`, ...
/// Absent optional fields are absent keys (test them with `has(txn.customer_id)`).
/// Built once per transaction, borrowing its strings (no copies).
pub fn txn_value(txn: &Transaction) -> Box<dyn Val + '_> {
    fn text(v: &str) -> Box<dyn Val + '_> {
        Box::new(CelString::from(v))
    }
    let mut m: HashMap<CelMapKey<'_>, Box<dyn Val + '_>> = HashMap::with_capacity(14);
    let mut put = |k: &'static str, v| {
        m.insert(CelMapKey::from(k), v);
    };
    put("txn_id", text(&txn.txn_id));
    put("store_id", text(&txn.store_id));
    put("terminal_id", text(&txn.terminal_id));
    put("type", text(txn.txn_type.name()));
    put("total_minor", Box::new(CelInt::from(txn.total_minor)));
    put("currency", text(&txn.currency));
    put("clock_skew", Box::new(CelBool::from(txn.clock_skew)));
    put(
        "event_time_ms",
        Box::new(CelInt::from(txn.event_time().timestamp_millis())),
    );
    for (name, v) in [
        ("operator_id", &txn.operator_id),
        ("customer_id", &txn.customer_id),
        ("original_txn_id", &txn.original_txn_id),
    ] {
        if let Some(v) = v {
            put(name, text(v));
        }
    }
    // `card` is always a map, so `has(txn.card.token)` works without a card.
    let mut c: HashMap<CelMapKey<'_>, Box<dyn Val + '_>> = HashMap::new();
    if let Some(card) = &txn.card {
        for (name, v) in [("token", &card.token), ("bin", &card.bin), ("last4", &card.last4)] {
            if let Some(v) = v {
                c.insert(CelMapKey::from(name), text(v));
            }
        }
        if let Some(mode) = card.entry_mode {
            c.insert(CelMapKey::from("entry_mode"), text(mode.name()));
        }
    }
    put("card", Box::new(CelMap::from(c)));
    Box::new(CelMap::from(m))
}

/// Deny lists as CEL maps (`value in lists.name` is a hash lookup).
pub fn lists_value(lists: &[(String, Arc<super::DenyList>)]) -> Bound {
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
    bind(Value::Map(m.into()))
}

/// An empty map, for `original` when there is no original transaction.
pub static EMPTY_MAP: LazyLock<Bound> = LazyLock::new(|| Box::new(CelMap::default()));

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
        assert_eq!(e.eval_bool(&[("txn", v.as_ref())]), Ok(true));
        let e = compile("txn.total_minor", &["txn"]).unwrap();
        assert!(e
            .eval_bool(&[("txn", v.as_ref())])
            .unwrap_err()
            .contains("not a boolean"));
    }
}
