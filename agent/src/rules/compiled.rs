//! Rule conditions compiled once into a tree bound to the transaction's fields, the
//! rule's aggregates and the deny lists by index, so an evaluation resolves no name and
//! builds no CEL map. It covers what rule files use: literals, `txn.…`, `original.…` and
//! `has()` of them, aggregates, comparisons, `==`/`!=`, `&& || !`, `?:`, arithmetic,
//! `in` a literal list or a deny list, `double()`. Anything else — and any combination
//! of types whose CEL meaning is not mirrored here — is not compiled, and the `cel`
//! interpreter evaluates it as before. `compiled::tests` and the property test in
//! `rules/compiled/tests.rs` hold the two to the same answers, errors included.
//!
//! Written by hand: the `cel` crate has no compiler to closures or bytecode; its
//! interpreter resolves every name through a map per evaluation.

use super::window::{AggKind, AggSpec, AggValue};
use super::DenyList;
use crate::txn::Transaction;
use cel::common::ast::{operators, Expr, IdedExpr, LiteralValue};
use std::sync::Arc;

/// What an evaluation reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub txn: &'a Transaction,
    /// The sale a return refers to, when the journal has it.
    pub original: Option<&'a Transaction>,
    pub lists: &'a [(String, Arc<DenyList>)],
    /// The rule's aggregates, in spec order (empty for filters).
    pub aggs: &'a [AggValue],
}

/// A value during evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum V<'a> {
    Int(i64),
    Double(f64),
    Str(&'a str),
    Bool(bool),
}

/// CEL would fail here (an absent field, an overflow, a division by zero, NaN compared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fail;

type R<'a> = Result<V<'a>, Fail>;

/// Static types: what the compiler needs to mirror CEL's overloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Int,
    Double,
    Str,
    Bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Txn,
    Original,
}

/// A field of the transaction map (cel::txn_value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    TxnId,
    StoreId,
    TerminalId,
    Type,
    TotalMinor,
    Currency,
    ClockSkew,
    EventTimeMs,
    OperatorId,
    CustomerId,
    OriginalTxnId,
    CardToken,
    CardBin,
    CardLast4,
    CardEntryMode,
}

impl Field {
    fn top(name: &str) -> Option<Field> {
        Some(match name {
            "txn_id" => Field::TxnId,
            "store_id" => Field::StoreId,
            "terminal_id" => Field::TerminalId,
            "type" => Field::Type,
            "total_minor" => Field::TotalMinor,
            "currency" => Field::Currency,
            "clock_skew" => Field::ClockSkew,
            "event_time_ms" => Field::EventTimeMs,
            "operator_id" => Field::OperatorId,
            "customer_id" => Field::CustomerId,
            "original_txn_id" => Field::OriginalTxnId,
            _ => return None,
        })
    }

    fn card(name: &str) -> Option<Field> {
        Some(match name {
            "token" => Field::CardToken,
            "bin" => Field::CardBin,
            "last4" => Field::CardLast4,
            "entry_mode" => Field::CardEntryMode,
            _ => return None,
        })
    }

    fn on_card(self) -> bool {
        matches!(
            self,
            Field::CardToken | Field::CardBin | Field::CardLast4 | Field::CardEntryMode
        )
    }

    fn ty(self) -> Ty {
        match self {
            Field::TotalMinor | Field::EventTimeMs => Ty::Int,
            Field::ClockSkew => Ty::Bool,
            _ => Ty::Str,
        }
    }

    /// The field's value, or `None` when the map lacks the key.
    fn read(self, t: &Transaction) -> Option<V<'_>> {
        let card = t.card.as_ref();
        fn text(s: &Option<String>) -> Option<V<'_>> {
            s.as_deref().map(V::Str)
        }
        match self {
            Field::TxnId => Some(V::Str(&t.txn_id)),
            Field::StoreId => Some(V::Str(&t.store_id)),
            Field::TerminalId => Some(V::Str(&t.terminal_id)),
            Field::Type => Some(V::Str(t.txn_type.name())),
            Field::TotalMinor => Some(V::Int(t.total_minor)),
            Field::Currency => Some(V::Str(&t.currency)),
            Field::ClockSkew => Some(V::Bool(t.clock_skew)),
            Field::EventTimeMs => Some(V::Int(t.event_time().timestamp_millis())),
            Field::OperatorId => text(&t.operator_id),
            Field::CustomerId => text(&t.customer_id),
            Field::OriginalTxnId => text(&t.original_txn_id),
            Field::CardToken => card.and_then(|c| text(&c.token)),
            Field::CardBin => card.and_then(|c| text(&c.bin)),
            Field::CardLast4 => card.and_then(|c| text(&c.last4)),
            Field::CardEntryMode => card.and_then(|c| c.entry_mode).map(|m| V::Str(m.name())),
        }
    }
}

/// What `has()` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    /// `has(txn.card)`: the map always has it.
    Card,
    Field(Field),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Int(i64),
    Double(f64),
    Str(String),
    Bool(bool),
}

impl Lit {
    fn v(&self) -> V<'_> {
        match self {
            Lit::Int(i) => V::Int(*i),
            Lit::Double(d) => V::Double(*d),
            Lit::Str(s) => V::Str(s),
            Lit::Bool(b) => V::Bool(*b),
        }
    }
}

/// A compiled condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Node(Op);

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Lit(Lit),
    Field(Root, Field),
    Has(Root, Presence),
    Agg(usize),
    Not(Box<Op>),
    Neg(Box<Op>),
    And(Box<Op>, Box<Op>),
    Or(Box<Op>, Box<Op>),
    Cond(Box<Op>, Box<Op>, Box<Op>),
    Cmp(Cmp, Box<Op>, Box<Op>),
    Eq(bool, Box<Op>, Box<Op>),
    Arith(Arith, Box<Op>, Box<Op>),
    InList(Box<Op>, Vec<Lit>),
    InDeny(Box<Op>, usize),
    ToDouble(Box<Op>),
}

/// What the names of an expression refer to.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    /// The rule's (or report's) aggregates, when the expression may read them.
    pub aggregates: &'a [AggSpec],
    pub lists: &'a [(String, Arc<DenyList>)],
}

/// Compiles `source` (already accepted by the `cel` compiler), or `None` when it uses
/// something this form does not mirror.
pub fn compile(source: &str, names: Names<'_>) -> Option<Node> {
    let parsed = cel::parser::Parser::new().parse(source).ok()?;
    let (op, ty) = build(&parsed, names)?;
    (ty == Ty::Bool).then_some(Node(op))
}

fn numeric(t: Ty) -> bool {
    matches!(t, Ty::Int | Ty::Double)
}

/// Types CEL compares (and `==` holds for) without failing on the overload.
fn comparable(a: Ty, b: Ty) -> bool {
    a == b || (numeric(a) && numeric(b))
}

fn build(e: &IdedExpr, names: Names<'_>) -> Option<(Op, Ty)> {
    match &e.expr {
        Expr::Literal(v) => literal(v),
        Expr::Ident(name) => {
            let i = names.aggregates.iter().position(|a| &a.name == name)?;
            let ty = if names.aggregates[i].kind == AggKind::Avg {
                Ty::Double
            } else {
                Ty::Int
            };
            Some((Op::Agg(i), ty))
        }
        Expr::Select(select) => {
            if select.test {
                // has(a.b.c): the path of its operand, then the field it asks about.
                let mut path = segments(&select.operand)?;
                path.push(select.field.as_str());
                let (root, presence) = match path.as_slice() {
                    [root, "card"] => (root_of(root)?, Presence::Card),
                    [root, top] => (root_of(root)?, Presence::Field(Field::top(top)?)),
                    [root, "card", field] => (root_of(root)?, Presence::Field(Field::card(field)?)),
                    _ => return None,
                };
                return Some((Op::Has(root, presence), Ty::Bool));
            }
            match segments(e)?.as_slice() {
                ["lists", _] => None, // only on the right of `in`
                [root, top] => {
                    let f = Field::top(top)?;
                    Some((Op::Field(root_of(root)?, f), f.ty()))
                }
                [root, "card", field] => {
                    let f = Field::card(field)?;
                    Some((Op::Field(root_of(root)?, f), f.ty()))
                }
                _ => None,
            }
        }
        Expr::Call(call) if call.target.is_none() => call_op(&call.func_name, &call.args, names),
        _ => None,
    }
}

fn call_op(func: &str, args: &[IdedExpr], names: Names<'_>) -> Option<(Op, Ty)> {
    let arg = |i: usize| build(&args[i], names);
    let boxed = |op: Op| Box::new(op);
    Some(match (func, args.len()) {
        (operators::LOGICAL_AND | operators::LOGICAL_OR, 2) => {
            let ((a, ta), (b, tb)) = (arg(0)?, arg(1)?);
            if ta != Ty::Bool || tb != Ty::Bool {
                return None;
            }
            let op = if func == operators::LOGICAL_AND {
                Op::And(boxed(a), boxed(b))
            } else {
                Op::Or(boxed(a), boxed(b))
            };
            (op, Ty::Bool)
        }
        (operators::LOGICAL_NOT, 1) => {
            let (a, t) = arg(0)?;
            (t == Ty::Bool).then_some((Op::Not(boxed(a)), Ty::Bool))?
        }
        (operators::NEGATE, 1) => {
            let (a, t) = arg(0)?;
            numeric(t).then_some((Op::Neg(boxed(a)), t))?
        }
        (operators::CONDITIONAL, 3) => {
            let ((c, tc), (a, ta), (b, tb)) = (arg(0)?, arg(1)?, arg(2)?);
            if tc != Ty::Bool || ta != tb {
                return None;
            }
            (Op::Cond(boxed(c), boxed(a), boxed(b)), ta)
        }
        (operators::EQUALS | operators::NOT_EQUALS, 2) => {
            let ((a, ta), (b, tb)) = (arg(0)?, arg(1)?);
            if !comparable(ta, tb) {
                return None;
            }
            (Op::Eq(func == operators::NOT_EQUALS, boxed(a), boxed(b)), Ty::Bool)
        }
        (operators::LESS | operators::LESS_EQUALS | operators::GREATER | operators::GREATER_EQUALS, 2) => {
            let ((a, ta), (b, tb)) = (arg(0)?, arg(1)?);
            if !(comparable(ta, tb) && ta != Ty::Bool) {
                return None;
            }
            let cmp = match func {
                operators::LESS => Cmp::Lt,
                operators::LESS_EQUALS => Cmp::Le,
                operators::GREATER => Cmp::Gt,
                _ => Cmp::Ge,
            };
            (Op::Cmp(cmp, boxed(a), boxed(b)), Ty::Bool)
        }
        (operators::ADD | operators::SUBSTRACT | operators::MULTIPLY | operators::DIVIDE | operators::MODULO, 2) => {
            let ((a, ta), (b, tb)) = (arg(0)?, arg(1)?);
            // CEL's arithmetic takes two ints or two doubles (no `%` of doubles); strings
            // and lists add by concatenation, which this form does not mirror.
            let op = match func {
                operators::ADD => Arith::Add,
                operators::SUBSTRACT => Arith::Sub,
                operators::MULTIPLY => Arith::Mul,
                operators::DIVIDE => Arith::Div,
                _ => Arith::Rem,
            };
            let fits = ta == tb && (ta == Ty::Int || (ta == Ty::Double && op != Arith::Rem));
            fits.then_some((Op::Arith(op, boxed(a), boxed(b)), ta))?
        }
        (operators::IN, 2) => in_op(&args[0], &args[1], names)?,
        ("double", 1) => {
            let (a, t) = arg(0)?;
            numeric(t).then_some((Op::ToDouble(boxed(a)), Ty::Double))?
        }
        _ => return None,
    })
}

/// `x in [literals]` (CEL's list membership is `==`), `x in lists.name` (a string key).
fn in_op(item: &IdedExpr, container: &IdedExpr, names: Names<'_>) -> Option<(Op, Ty)> {
    let (x, tx) = build(item, names)?;
    match &container.expr {
        Expr::List(list) => {
            let items = list
                .elements
                .iter()
                .map(|el| match &el.expr {
                    Expr::Literal(v) => literal(v).and_then(|(op, t)| match op {
                        Op::Lit(l) if comparable(tx, t) => Some(l),
                        _ => None,
                    }),
                    _ => None,
                })
                .collect::<Option<Vec<Lit>>>()?;
            Some((Op::InList(Box::new(x), items), Ty::Bool))
        }
        Expr::Select(_) => match segments(container)?.as_slice() {
            ["lists", name] if tx == Ty::Str => {
                let i = names.lists.iter().position(|(n, _)| n == name)?;
                Some((Op::InDeny(Box::new(x), i), Ty::Bool))
            }
            _ => None,
        },
        _ => None,
    }
}

fn root_of(name: &str) -> Option<Root> {
    match name {
        "txn" => Some(Root::Txn),
        "original" => Some(Root::Original),
        _ => None,
    }
}

/// The names of a field selection, root first. A `has()` inside the path is a boolean,
/// not a map (selecting from it fails in CEL): no path.
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
            Expr::Select(s) if !s.test => {
                out.push(s.field.as_str());
                at = &s.operand;
            }
            _ => return None,
        }
    }
}

fn literal(v: &LiteralValue) -> Option<(Op, Ty)> {
    let (lit, ty) = match v {
        LiteralValue::Boolean(b) => (Lit::Bool(**b), Ty::Bool),
        LiteralValue::Int(i) => (Lit::Int(**i), Ty::Int),
        LiteralValue::Double(d) => (Lit::Double(**d), Ty::Double),
        LiteralValue::String(s) => (Lit::Str(s.to_string()), Ty::Str),
        _ => return None,
    };
    Some((Op::Lit(lit), ty))
}

impl Node {
    /// Evaluates to a boolean, or fails where CEL fails.
    pub fn eval(&self, scope: &Inputs<'_>) -> Result<bool, Fail> {
        match self.0.eval(scope)? {
            V::Bool(b) => Ok(b),
            _ => Err(Fail),
        }
    }
}

/// CEL's ordering of two values of comparable types; NaN fails.
fn order(a: V<'_>, b: V<'_>) -> Result<std::cmp::Ordering, Fail> {
    match (a, b) {
        (V::Int(x), V::Int(y)) => Ok(x.cmp(&y)),
        (V::Int(x), V::Double(y)) => (x as f64).partial_cmp(&y).ok_or(Fail),
        (V::Double(x), V::Int(y)) => x.partial_cmp(&(y as f64)).ok_or(Fail),
        (V::Double(x), V::Double(y)) => x.partial_cmp(&y).ok_or(Fail),
        (V::Str(x), V::Str(y)) => Ok(x.cmp(y)),
        (V::Bool(x), V::Bool(y)) => Ok(x.cmp(&y)),
        _ => Err(Fail),
    }
}

/// CEL's `==`: equal when they compare equal; values that cannot be compared are unequal.
fn equal(a: V<'_>, b: V<'_>) -> bool {
    order(a, b) == Ok(std::cmp::Ordering::Equal)
}

impl Op {
    fn eval<'a>(&'a self, s: &Inputs<'a>) -> R<'a> {
        match self {
            Op::Lit(l) => Ok(l.v()),
            Op::Field(root, f) => {
                let t = match root {
                    Root::Txn => s.txn,
                    Root::Original => s.original.ok_or(Fail)?,
                };
                f.read(t).ok_or(Fail)
            }
            Op::Has(root, presence) => {
                let t = match root {
                    Root::Txn => Some(s.txn),
                    Root::Original => s.original,
                };
                Ok(V::Bool(match (t, presence) {
                    // No original: `original` is an empty map, so `original.card` itself
                    // is absent and has() of a field below it fails.
                    (None, Presence::Field(f)) if f.on_card() => return Err(Fail),
                    (None, _) => false,
                    (Some(_), Presence::Card) => true,
                    (Some(t), Presence::Field(f)) => f.read(t).is_some(),
                }))
            }
            Op::Agg(i) => match s.aggs.get(*i) {
                Some(AggValue::Int(v)) => Ok(V::Int(*v)),
                Some(AggValue::Float(v)) => Ok(V::Double(*v)),
                None => Err(Fail),
            },
            Op::Not(a) => match a.eval(s)? {
                V::Bool(b) => Ok(V::Bool(!b)),
                _ => Err(Fail),
            },
            Op::Neg(a) => match a.eval(s)? {
                V::Int(i) => i.checked_neg().map(V::Int).ok_or(Fail),
                V::Double(d) => Ok(V::Double(-d)),
                _ => Err(Fail),
            },
            Op::And(a, b) => logic(a.eval(s), || b.eval(s), false),
            Op::Or(a, b) => logic(a.eval(s), || b.eval(s), true),
            Op::Cond(c, a, b) => match c.eval(s)? {
                V::Bool(true) => a.eval(s),
                V::Bool(false) => b.eval(s),
                _ => Err(Fail),
            },
            Op::Cmp(cmp, a, b) => {
                let (a, b) = (a.eval(s)?, b.eval(s)?);
                let o = order(a, b)?;
                Ok(V::Bool(match cmp {
                    Cmp::Lt => o.is_lt(),
                    Cmp::Le => o.is_le(),
                    Cmp::Gt => o.is_gt(),
                    Cmp::Ge => o.is_ge(),
                }))
            }
            Op::Eq(negate, a, b) => {
                let (a, b) = (a.eval(s)?, b.eval(s)?);
                Ok(V::Bool(equal(a, b) != *negate))
            }
            Op::Arith(op, a, b) => arith(*op, a.eval(s)?, b.eval(s)?),
            Op::InList(x, items) => {
                let x = x.eval(s)?;
                Ok(V::Bool(items.iter().any(|l| equal(l.v(), x))))
            }
            Op::InDeny(x, i) => match x.eval(s)? {
                V::Str(v) => Ok(V::Bool(s.lists.get(*i).is_some_and(|(_, l)| l.contains(v)))),
                _ => Err(Fail),
            },
            Op::ToDouble(a) => match a.eval(s)? {
                V::Int(i) => Ok(V::Double(i as f64)),
                V::Double(d) => Ok(V::Double(d)),
                _ => Err(Fail),
            },
        }
    }
}

/// CEL's `&&` (`short = false`) and `||` (`short = true`), as the `cel` crate evaluates
/// them: the left side decides when it is `short`; otherwise the right side is
/// evaluated (its failure is the answer), and a failed left side is absorbed only by a
/// right side equal to `short`.
fn logic<'a>(left: R<'a>, right: impl FnOnce() -> R<'a>, short: bool) -> R<'a> {
    let left = match left {
        Ok(V::Bool(b)) => Ok(b),
        _ => Err(Fail),
    };
    if left == Ok(short) {
        return Ok(V::Bool(short));
    }
    let right = match right()? {
        V::Bool(b) => b,
        _ => return Err(Fail),
    };
    match left {
        Ok(_) => Ok(V::Bool(right)),
        Err(_) if right == short => Ok(V::Bool(short)),
        Err(_) => Err(Fail),
    }
}

/// CEL's arithmetic: ints checked (overflow, division and remainder by zero fail),
/// doubles IEEE 754.
fn arith<'a>(op: Arith, a: V<'a>, b: V<'a>) -> R<'a> {
    match (a, b) {
        (V::Int(x), V::Int(y)) => match op {
            Arith::Add => x.checked_add(y),
            Arith::Sub => x.checked_sub(y),
            Arith::Mul => x.checked_mul(y),
            Arith::Div => x.checked_div(y),
            Arith::Rem => x.checked_rem(y),
        }
        .map(V::Int)
        .ok_or(Fail),
        (V::Double(x), V::Double(y)) => match op {
            Arith::Add => Ok(V::Double(x + y)),
            Arith::Sub => Ok(V::Double(x - y)),
            Arith::Mul => Ok(V::Double(x * y)),
            Arith::Div => Ok(V::Double(x / y)),
            Arith::Rem => Err(Fail),
        },
        _ => Err(Fail),
    }
}

#[cfg(test)]
mod tests;
