//! Rule files: `[lists]`, `[[rule]]` and `[[report]]` tables in TOML, validated and
//! compiled at load. An error names the file, the line, the rule and, for CEL, the
//! position inside the expression.

use super::aggregate_spec::{aggregates, Aggregates};
use super::cel::{compile, Expr};
use super::field::TxnField;
use super::report::ReportWindow;
use super::window::{AggSpec, WindowSpec};
use super::{Action, DenyList, Mode, Scope, Severity};
use crate::config::{parse_toml, ConfigError};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tillgate_sdk::HumanDuration;

/// A rule-file problem: file, line, key path, and the rule's id in the message.
pub type RuleError = ConfigError;

/// Names an expression may use besides its rule's aggregates.
pub(super) const TXN_VARS: [&str; 3] = ["txn", "lists", "original"];
/// Default bound on keys held per rule (and per report).
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// Default bound on the events one key of a time window holds.
pub const DEFAULT_MAX_EVENTS_PER_KEY: usize = 10_000;

/// The most keys a rule may hold (about 15 GB of state at this many: a typo, not a
/// plan); its table numbers keys with 32 bits.
pub const MAX_KEYS_LIMIT: usize = 100_000_000;

/// The most hopping windows one event may fall in (`hopping / every`): each is its own
/// running state.
pub const MAX_HOPS: i64 = 1000;

/// The most events one key may hold (a window's ring counts them with 32 bits).
pub const MAX_EVENTS_PER_KEY_LIMIT: usize = 10_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    lists: BTreeMap<String, PathBuf>,
    #[serde(default)]
    rule: Vec<RuleSpec>,
    #[serde(default)]
    report: Vec<ReportSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum KeySpec {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WindowToml {
    Time(HumanDuration),
    Count { last: usize },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    #[serde(default)]
    description: String,
    filter: Option<String>,
    key: Option<KeySpec>,
    window: Option<WindowToml>,
    /// Out-of-order tolerance for time windows.
    #[serde(default)]
    lateness: HumanDuration,
    #[serde(default)]
    aggregates: BTreeMap<String, toml::Value>,
    when: String,
    action: Action,
    #[serde(default)]
    severity: Severity,
    #[serde(default)]
    mode: Mode,
    /// `store` (the gateway) or `chain` (the cloud's Flink job).
    #[serde(default)]
    scope: Scope,
    #[serde(default = "yes")]
    enabled: bool,
    max_keys: Option<usize>,
    max_events_per_key: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportWindowToml {
    tumbling: Option<HumanDuration>,
    hopping: Option<HumanDuration>,
    every: Option<HumanDuration>,
    session_gap: Option<HumanDuration>,
    #[serde(default)]
    offset: HumanDuration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportSpec {
    id: String,
    #[serde(default)]
    description: String,
    filter: Option<String>,
    key: KeySpec,
    window: ReportWindowToml,
    #[serde(default)]
    allowed_lateness: HumanDuration,
    #[serde(default)]
    aggregates: BTreeMap<String, toml::Value>,
    when: Option<String>,
    #[serde(default)]
    severity: Severity,
    /// `store` (the gateway) or `chain` (the cloud's Flink job).
    #[serde(default)]
    scope: Scope,
    #[serde(default = "yes")]
    enabled: bool,
    max_keys: Option<usize>,
}

fn yes() -> bool {
    true
}

/// A rule ready to evaluate.
#[derive(Debug)]
pub struct CompiledRule {
    pub id: String,
    pub description: String,
    pub action: Action,
    pub severity: Severity,
    pub mode: Mode,
    pub scope: Scope,
    pub filter: Option<Expr>,
    pub when: Expr,
    /// Empty: a single-transaction rule.
    pub key: Vec<TxnField>,
    pub window: Option<WindowSpec>,
    pub aggregates: Vec<AggSpec>,
    /// The fields counted by `count_distinct`, by tag index.
    pub distinct: Vec<TxnField>,
    /// The aggregates' own filters, by condition index (bit of an event's mask).
    pub conditions: Vec<Expr>,
    pub max_keys: usize,
}

/// A reporting window ready to run.
#[derive(Debug)]
pub struct CompiledReport {
    pub id: String,
    pub description: String,
    pub severity: Severity,
    pub scope: Scope,
    pub filter: Option<Expr>,
    pub key: Vec<TxnField>,
    pub window: ReportWindow,
    pub lateness_ms: i64,
    pub aggregates: Vec<AggSpec>,
    pub distinct: Vec<TxnField>,
    /// The aggregates' own filters, by condition index (bit of an event's mask).
    pub conditions: Vec<Expr>,
    pub when: Option<Expr>,
    /// Keys with open windows at most; past it the windows closing first close early.
    pub max_keys: usize,
}

/// Everything the rule files define.
#[derive(Debug, Default)]
pub struct RulePack {
    /// Store rules: what the gateway evaluates.
    pub rules: Vec<CompiledRule>,
    pub reports: Vec<CompiledReport>,
    /// Chain rules and reports: checked here, evaluated in the cloud (`tillgate rules
    /// export`).
    pub chain: Vec<CompiledRule>,
    pub chain_reports: Vec<CompiledReport>,
    pub lists: Vec<(String, Arc<DenyList>)>,
}

/// Loads every rule file under `paths` (files, or directories of `*.toml` in name order).
pub fn load_paths(paths: &[PathBuf]) -> Result<RulePack, RuleError> {
    let mut pack = RulePack::default();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    let mut parsed = Vec::new();
    for file in rule_files(paths)? {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| error(&file, None, None, format!("cannot read rule file: {e}")))?;
        let rf: RuleFile = parse_toml(&text).map_err(|mut e| {
            e.file = Some(file.clone());
            e
        })?;
        let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        for (name, path) in &rf.lists {
            let path = if path.is_absolute() {
                path.clone()
            } else {
                base.join(path)
            };
            let list = DenyList::load(&path).map_err(|e| {
                error(
                    &file,
                    find_line(&text, "lists", 0, name),
                    Some(format!("lists.{name}")),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if pack.lists.iter().any(|(n, _)| n == name) {
                return Err(error(
                    &file,
                    None,
                    Some(format!("lists.{name}")),
                    format!("list `{name}` is defined twice"),
                ));
            }
            pack.lists.push((name.clone(), Arc::new(list)));
        }
        parsed.push((file, text, rf));
    }
    for (file, text, rf) in parsed {
        // Rule and report ids share one namespace (metrics and alerts carry them).
        let mut claim = |table: &'static str, i: usize, id: &str| match seen.insert(id.to_string(), file.clone()) {
            None => Ok(()),
            Some(first) => Err(error(
                &file,
                find_line(&text, table, i, "id"),
                None,
                format!(
                    "`{id}` is also defined in {}; rule and report ids must be unique",
                    first.display()
                ),
            )),
        };
        for (i, spec) in rf.rule.into_iter().enumerate() {
            claim("[[rule]]", i, &spec.id)?;
            if spec.enabled {
                let rule = compile_rule(&file, &text, i, spec, &pack.lists)?;
                match rule.scope {
                    Scope::Store => pack.rules.push(rule),
                    Scope::Chain => pack.chain.push(rule),
                }
            }
        }
        for (i, spec) in rf.report.into_iter().enumerate() {
            claim("[[report]]", i, &spec.id)?;
            if spec.enabled {
                let report = compile_report(&file, &text, i, spec, &pack.lists)?;
                match report.scope {
                    Scope::Store => pack.reports.push(report),
                    Scope::Chain => pack.chain_reports.push(report),
                }
            }
        }
    }
    Ok(pack)
}

fn rule_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RuleError> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| error(p, None, None, format!("cannot read rules path: {e}")))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| error(p, None, None, format!("cannot list rules directory: {e}")))?
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

fn error(file: &Path, line: Option<usize>, key: Option<String>, message: String) -> RuleError {
    RuleError {
        file: Some(file.to_path_buf()),
        line,
        column: None,
        key,
        message,
    }
}

/// The line of `key` in the `n`th `table` block (`[[rule]]`, `[[report]]`, or a plain
/// `[lists]` table), from the parser's spans; the block's first line if it is not set.
fn find_line(text: &str, table: &str, n: usize, key: &str) -> Option<usize> {
    let name = table.trim_matches(['[', ']']);
    let path = if table.starts_with("[[") {
        format!("{name}[{n}].{key}")
    } else {
        format!("{name}.{key}")
    };
    crate::config::key_position(text, &path).map(|(line, _)| line)
}

fn keys(spec: &KeySpec) -> Result<Vec<TxnField>, String> {
    let names: Vec<&str> = match spec {
        KeySpec::One(s) => vec![s.as_str()],
        KeySpec::Many(v) => v.iter().map(String::as_str).collect(),
    };
    if names.is_empty() {
        return Err(format!("`key` is empty; allowed fields: {}", TxnField::NAMES));
    }
    names
        .into_iter()
        .map(|n| TxnField::parse(n).ok_or_else(|| format!("`key`: unknown field `{n}`; allowed: {}", TxnField::NAMES)))
        .collect()
}

fn check_lists(source: &str, lists: &[(String, Arc<DenyList>)]) -> Result<(), String> {
    let mut rest = source;
    while let Some(i) = rest.find("lists.") {
        let after = &rest[i + 6..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !lists.iter().any(|(n, _)| *n == name) {
            let known: Vec<&str> = lists.iter().map(|(n, _)| n.as_str()).collect();
            return Err(format!(
                "`lists.{name}` is not defined; defined lists: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
        rest = &after[name.len()..];
    }
    Ok(())
}

struct Where<'a> {
    file: &'a Path,
    text: &'a str,
    table: &'static str,
    index: usize,
    id: &'a str,
}

impl Where<'_> {
    fn err(&self, key: &str, message: String) -> RuleError {
        let kind = if self.table == "[[rule]]" { "rule" } else { "report" };
        error(
            self.file,
            find_line(self.text, self.table, self.index, key),
            Some(format!("{kind}[{}].{key}", self.index)),
            format!("{kind} `{}`: {message}", self.id),
        )
    }

    fn expr(
        &self,
        key: &str,
        source: &str,
        allowed: &[&str],
        lists: &[(String, Arc<DenyList>)],
        aggregates: &[AggSpec],
    ) -> Result<Expr, RuleError> {
        check_lists(source, lists).map_err(|m| self.err(key, m))?;
        let mut expr = compile(source, allowed).map_err(|e| self.err(key, format!("`{key}` {e}")))?;
        expr.compiled = super::compiled::compile(source, super::compiled::Names { aggregates, lists });
        Ok(expr)
    }

    /// The aggregates' filters compiled, over the transaction like the rule's own
    /// `filter`; an error names the first aggregate with that filter.
    fn conditions(&self, aggs: &Aggregates, lists: &[(String, Arc<DenyList>)]) -> Result<Vec<Expr>, RuleError> {
        aggs.conditions
            .iter()
            .enumerate()
            .map(|(c, src)| {
                let first = aggs
                    .specs
                    .iter()
                    .find(|a| a.group == c + 1)
                    .expect("every condition belongs to an aggregate");
                self.expr(&format!("aggregates.{}.filter", first.name), src, &TXN_VARS, lists, &[])
            })
            .collect()
    }
}

fn compile_rule(
    file: &Path,
    text: &str,
    index: usize,
    spec: RuleSpec,
    lists: &[(String, Arc<DenyList>)],
) -> Result<CompiledRule, RuleError> {
    let at = Where {
        file,
        text,
        table: "[[rule]]",
        index,
        id: &spec.id,
    };
    if spec.id.is_empty()
        || !spec
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(at.err("id", "the id must be 1 or more of A-Z a-z 0-9 - _".into()));
    }
    let key = match &spec.key {
        Some(k) => keys(k).map_err(|m| at.err("key", m))?,
        None => Vec::new(),
    };
    let window = window_of(&at, &spec, key.is_empty())?;
    if spec.max_keys.is_some_and(|n| n > MAX_KEYS_LIMIT) {
        return Err(at.err("max_keys", format!("must be at most {MAX_KEYS_LIMIT}")));
    }
    let parsed = aggregates(&spec.aggregates).map_err(|m| at.err("aggregates", m))?;
    let conditions = at.conditions(&parsed, lists)?;
    let Aggregates {
        specs: aggs, distinct, ..
    } = parsed;
    if !aggs.is_empty() && window.is_none() {
        return Err(at.err(
            "aggregates",
            "aggregates need a `window` (\"10m\", or { last = 20 })".into(),
        ));
    }
    let filter = match &spec.filter {
        Some(src) => Some(at.expr("filter", src, &TXN_VARS, lists, &[])?),
        None => None,
    };
    let mut allowed: Vec<&str> = TXN_VARS.to_vec();
    allowed.extend(aggs.iter().map(|a| a.name.as_str()));
    let when = at.expr("when", &spec.when, &allowed, lists, &aggs)?;
    Ok(CompiledRule {
        id: spec.id.clone(),
        description: spec.description,
        action: spec.action,
        severity: spec.severity,
        mode: spec.mode,
        scope: spec.scope,
        filter,
        when,
        key,
        window,
        aggregates: aggs,
        distinct,
        conditions,
        max_keys: spec.max_keys.unwrap_or(DEFAULT_MAX_KEYS).max(1),
    })
}

/// The rule's window: a time span or the last n events, per key.
fn window_of(at: &Where<'_>, spec: &RuleSpec, keyless: bool) -> Result<Option<WindowSpec>, RuleError> {
    Ok(match (&spec.window, keyless) {
        (None, _) => None,
        (Some(_), true) => return Err(at.err("window", "a window needs a `key` (whose events are counted)".into())),
        (Some(WindowToml::Time(d)), false) => {
            if d.get().is_zero() {
                return Err(at.err("window", "must be longer than 0s".into()));
            }
            let max_events = spec.max_events_per_key.unwrap_or(DEFAULT_MAX_EVENTS_PER_KEY);
            if max_events == 0 || max_events > MAX_EVENTS_PER_KEY_LIMIT {
                return Err(at.err("max_events_per_key", format!("must be 1–{MAX_EVENTS_PER_KEY_LIMIT}")));
            }
            Some(WindowSpec::Time {
                width_ms: d.get().as_millis() as i64,
                lateness_ms: spec.lateness.get().as_millis() as i64,
                max_events,
            })
        }
        (Some(WindowToml::Count { last }), false) => {
            let max_events = spec.max_events_per_key.unwrap_or(DEFAULT_MAX_EVENTS_PER_KEY);
            if max_events == 0 || max_events > MAX_EVENTS_PER_KEY_LIMIT {
                return Err(at.err("max_events_per_key", format!("must be 1–{MAX_EVENTS_PER_KEY_LIMIT}")));
            }
            if *last == 0 || *last > max_events {
                return Err(at.err(
                    "window",
                    format!("`last` must be 1–{max_events} (max_events_per_key: the events a key may hold)"),
                ));
            }
            Some(WindowSpec::Count { n: *last })
        }
    })
}

fn compile_report(
    file: &Path,
    text: &str,
    index: usize,
    spec: ReportSpec,
    lists: &[(String, Arc<DenyList>)],
) -> Result<CompiledReport, RuleError> {
    let at = Where {
        file,
        text,
        table: "[[report]]",
        index,
        id: &spec.id,
    };
    let key = keys(&spec.key).map_err(|m| at.err("key", m))?;
    let ms = |d: HumanDuration| d.get().as_millis() as i64;
    let w = &spec.window;
    let offset = ms(w.offset);
    let window =
        match (w.tumbling, w.hopping, w.every, w.session_gap) {
            (Some(size), None, None, None) if ms(size) > 0 => ReportWindow::Tumbling {
                size_ms: ms(size),
                offset_ms: offset,
            },
            (None, Some(size), Some(every), None)
                if ms(size) > 0 && ms(every) > 0 && ms(every) <= ms(size) && ms(size) / ms(every) <= MAX_HOPS =>
            {
                ReportWindow::Hopping {
                    size_ms: ms(size),
                    hop_ms: ms(every),
                    offset_ms: offset,
                }
            }
            (None, None, None, Some(gap)) if ms(gap) > 0 => ReportWindow::Session { gap_ms: ms(gap) },
            _ => return Err(at.err(
                "window",
                "give exactly one of { tumbling = \"5m\" }, { hopping = \"10m\", every = \"5m\" } (every ≤ hopping, \
                 at most 1000 windows per event: hopping / every ≤ 1000), \
                 { session_gap = \"30m\" }; durations above 0s"
                    .into(),
            )),
        };
    let parsed = aggregates(&spec.aggregates).map_err(|m| at.err("aggregates", m))?;
    let conditions = at.conditions(&parsed, lists)?;
    let Aggregates {
        specs: aggs, distinct, ..
    } = parsed;
    let filter = match &spec.filter {
        Some(src) => Some(at.expr("filter", src, &TXN_VARS, lists, &[])?),
        None => None,
    };
    let mut allowed: Vec<&str> = vec!["lists"];
    allowed.extend(aggs.iter().map(|a| a.name.as_str()));
    let when = match &spec.when {
        Some(src) => Some(at.expr("when", src, &allowed, lists, &aggs)?),
        None => None,
    };
    Ok(CompiledReport {
        id: spec.id.clone(),
        description: spec.description,
        severity: spec.severity,
        scope: spec.scope,
        filter,
        key,
        window,
        lateness_ms: ms(spec.allowed_lateness),
        aggregates: aggs,
        distinct,
        conditions,
        when,
        max_keys: spec.max_keys.unwrap_or(DEFAULT_MAX_KEYS).max(1),
    })
}
