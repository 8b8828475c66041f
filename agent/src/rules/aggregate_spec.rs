//! A rule's or report's `aggregates` table: `count`, `sum(total_minor)`, ... each alone
//! or with its own `filter`, checked and numbered (tag indices for `count_distinct`,
//! condition indices for filters) for the window state.

use super::field::TxnField;
use super::spec::TXN_VARS;
use super::window::{AggKind, AggSpec, MAX_CONDITIONS};
use std::collections::BTreeMap;

/// A rule's or report's aggregates, parsed: specs, the `count_distinct` fields by tag
/// index, and the distinct conditions (`filter`s) by index.
pub(super) struct Aggregates {
    pub(super) specs: Vec<AggSpec>,
    pub(super) distinct: Vec<TxnField>,
    /// The source of each condition; aggregates with the same filter share one.
    pub(super) conditions: Vec<String>,
}

/// Parses `count`, `sum(total_minor)`, `count_distinct(card.token)`, ..., each either
/// alone or as `{ of = "count", filter = '<CEL>' }` (over the events the filter holds
/// for). Errors name the aggregate and what is allowed.
pub(super) fn aggregates(raw: &BTreeMap<String, toml::Value>) -> Result<Aggregates, String> {
    let mut out = Aggregates {
        specs: Vec::new(),
        distinct: Vec::new(),
        conditions: Vec::new(),
    };
    for (name, def) in raw {
        let ok_name = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok_name || TXN_VARS.contains(&name.as_str()) {
            return Err(format!(
                "aggregate name `{name}` must be a lower-case identifier other than txn, lists, original"
            ));
        }
        let (of, filter) = aggregate_parts(name, def)?;
        let kind = aggregate_kind(name, of, &mut out.distinct)?;
        let group = match filter {
            None => 0,
            Some(src) => match out.conditions.iter().position(|c| c == src) {
                Some(c) => c + 1,
                None if out.conditions.len() == MAX_CONDITIONS => {
                    return Err(format!(
                        "aggregate `{name}`: more than {MAX_CONDITIONS} different filters in one rule or report"
                    ))
                }
                None => {
                    out.conditions.push(src.to_string());
                    out.conditions.len()
                }
            },
        };
        out.specs.push(AggSpec {
            name: name.clone(),
            kind,
            group,
        });
    }
    Ok(out)
}

/// An aggregate's function and, for `{ of = …, filter = … }`, its filter.
fn aggregate_parts<'v>(name: &str, def: &'v toml::Value) -> Result<(&'v str, Option<&'v str>), String> {
    let shape = || {
        format!(
            "aggregate `{name}` must be a string such as \"count\" or a table {{ of = \"count\", filter = '<CEL>' }}"
        )
    };
    match def {
        toml::Value::String(of) => Ok((of, None)),
        toml::Value::Table(t) => {
            if let Some(unknown) = t.keys().find(|k| !["of", "filter"].contains(&k.as_str())) {
                return Err(format!(
                    "aggregate `{name}`: unknown key `{unknown}`; allowed: of, filter"
                ));
            }
            match (t.get("of"), t.get("filter")) {
                (Some(toml::Value::String(of)), Some(toml::Value::String(filter))) => Ok((of, Some(filter))),
                _ => Err(shape()),
            }
        }
        _ => Err(shape()),
    }
}

/// `count`, `sum(total_minor)`, ...; a `count_distinct` field gets the next tag index.
fn aggregate_kind(name: &str, of: &str, distinct: &mut Vec<TxnField>) -> Result<AggKind, String> {
    const ALLOWED: &str =
        "count, sum(total_minor), min(total_minor), max(total_minor), avg(total_minor), count_distinct(<field>)";
    let of = of.replace(' ', "");
    Ok(match of.as_str() {
        "count" | "count()" => AggKind::Count,
        "sum(total_minor)" => AggKind::Sum,
        "min(total_minor)" => AggKind::Min,
        "max(total_minor)" => AggKind::Max,
        "avg(total_minor)" => AggKind::Avg,
        d if d.starts_with("count_distinct(") && d.ends_with(')') => {
            let field = &d["count_distinct(".len()..d.len() - 1];
            let f = TxnField::parse(field).ok_or_else(|| {
                format!(
                    "aggregate `{name}`: unknown field `{field}`; allowed: {}",
                    TxnField::NAMES
                )
            })?;
            // One tag per field, however many aggregates count it: an event's record
            // holds at most one word per transaction field.
            let tag = match distinct.iter().position(|g| *g == f) {
                Some(i) => i,
                None => {
                    distinct.push(f);
                    distinct.len() - 1
                }
            };
            AggKind::CountDistinct(tag)
        }
        other => {
            return Err(format!(
                "aggregate `{name}` = \"{other}\" is not understood; allowed: {ALLOWED}"
            ))
        }
    })
}
