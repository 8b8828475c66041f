//! Rule files: `[[rule]]` tables in TOML, validated and resolved at load.

use super::{Action, Condition, DenyList, Mode, Rule, RuleSet, Severity, TxnField};
use crate::config::{parse_toml, ConfigError};
use crate::txn::{EntryMode, TxnType};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A rule-file problem: file, key path, line, and the rule's id when known.
pub type RuleError = ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    #[serde(default)]
    description: String,
    action: Action,
    #[serde(default)]
    severity: Severity,
    #[serde(default)]
    mode: Mode,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(rename = "match")]
    matches: MatchSpec,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchSpec {
    types: Option<Vec<TxnType>>,
    total_minor_at_least: Option<i64>,
    total_minor_at_most: Option<i64>,
    currencies: Option<Vec<String>>,
    entry_modes: Option<Vec<EntryMode>>,
    in_list: Option<ListSpec>,
    #[serde(default)]
    missing: Vec<TxnField>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListSpec {
    field: TxnField,
    /// Relative to the rule file.
    file: PathBuf,
}

/// Loads every rule file under `paths` (files, or directories of `*.toml` in name order).
pub fn load_paths(paths: &[PathBuf]) -> Result<RuleSet, RuleError> {
    let mut rules = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for file in rule_files(paths)? {
        for rule in load_file(&file)? {
            if let Some(first) = seen.insert(rule.id.clone(), file.clone()) {
                return Err(error(
                    &file,
                    None,
                    format!(
                        "rule `{}` is also defined in {}; ids must be unique",
                        rule.id,
                        first.display()
                    ),
                ));
            }
            rules.push(rule);
        }
    }
    Ok(RuleSet::new(rules))
}

fn rule_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RuleError> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p)
            .map_err(|e| error(p, None, format!("cannot read rules path: {e}")))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| error(p, None, format!("cannot list rules directory: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

fn error(file: &Path, key: Option<String>, message: String) -> RuleError {
    RuleError {
        file: Some(file.to_path_buf()),
        line: None,
        column: None,
        key,
        message,
    }
}

fn load_file(file: &Path) -> Result<Vec<Rule>, RuleError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| error(file, None, format!("cannot read rule file: {e}")))?;
    let parsed: RuleFile = parse_toml(&text).map_err(|mut e| {
        e.file = Some(file.to_path_buf());
        e
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, spec) in parsed.rule.into_iter().enumerate() {
        let id = spec.id.clone();
        if !spec.enabled {
            continue;
        }
        let at = |message: String| {
            let mut e = error(
                file,
                Some(format!("rule[{i}]")),
                format!("rule `{id}`: {message}"),
            );
            // Point at the rule's `id = ...` line: the nth `id` key in the file.
            e.line = text
                .lines()
                .enumerate()
                .filter(|(_, l)| l.trim_start().starts_with("id") && l.contains('='))
                .nth(i)
                .map(|(n, _)| n + 1);
            e
        };
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(at("the id must be 1 or more of A-Z a-z 0-9 - _".into()));
        }
        let conditions = conditions(spec.matches, base).map_err(at)?;
        out.push(Rule {
            id: spec.id,
            description: spec.description,
            action: spec.action,
            severity: spec.severity,
            mode: spec.mode,
            conditions,
        });
    }
    Ok(out)
}

fn conditions(m: MatchSpec, base: &Path) -> Result<Vec<Condition>, String> {
    let mut c = Vec::new();
    if let Some(types) = m.types {
        c.push(Condition::TypeIn(types.into_iter().collect()));
    }
    if let Some(n) = m.total_minor_at_least {
        c.push(Condition::TotalAtLeast(n));
    }
    if let Some(n) = m.total_minor_at_most {
        c.push(Condition::TotalAtMost(n));
    }
    if let Some(cur) = m.currencies {
        if let Some(bad) = cur
            .iter()
            .find(|c| iso_currency::Currency::from_code(c).is_none())
        {
            return Err(format!("match.currencies: {bad:?} is not an ISO 4217 code"));
        }
        c.push(Condition::CurrencyIn(
            cur.into_iter().collect::<HashSet<_>>(),
        ));
    }
    if let Some(modes) = m.entry_modes {
        c.push(Condition::EntryModeIn(modes.into_iter().collect()));
    }
    if let Some(list) = m.in_list {
        let path = if list.file.is_absolute() {
            list.file
        } else {
            base.join(list.file)
        };
        let loaded = DenyList::load(&path)
            .map_err(|e| format!("match.in_list: cannot read {}: {e}", path.display()))?;
        c.push(Condition::InList(list.field, Arc::new(loaded)));
    }
    c.extend(m.missing.into_iter().map(Condition::Missing));
    if c.is_empty() {
        return Err(
            "[rule.match] has no condition; a rule that always fires is a mistake \
                    (allowed: types, total_minor_at_least, total_minor_at_most, currencies, \
                    entry_modes, in_list, missing)"
                .into(),
        );
    }
    Ok(c)
}
