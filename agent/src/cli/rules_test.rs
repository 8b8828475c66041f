//! `tillgate rules test`: recorded traffic through the rules, offline, for tuning.
//!
//! Each input line is a transaction (as a terminal sends it, or as journaled/archived
//! with `received_at`); it is decided exactly as the agent would in that order, with
//! returns finding their original sales among the earlier lines.

use crate::rules::{self, DecideContext, Decider, Decision, Engine, OriginalLookup};
use crate::txn::{self, Transaction};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

struct Seen(HashMap<String, Transaction>);

impl OriginalLookup for Seen {
    fn original(&self, txn_id: &str) -> Option<Transaction> {
        self.0.get(txn_id).cloned()
    }
}

/// Runs the tester; returns the exit code.
pub fn run(rule_paths: &[PathBuf], input: &PathBuf, as_json: bool, scope: rules::Scope) -> i32 {
    let pack = match rules::load_paths(rule_paths) {
        // The cloud's view: only the chain rules, over whatever stores the input holds.
        Ok(mut p) if scope == rules::Scope::Chain => {
            p.rules = std::mem::take(&mut p.chain);
            p.reports = std::mem::take(&mut p.chain_reports);
            p
        }
        Ok(p) => p,
        Err(e) => {
            eprintln!("tillgate: invalid rules: {e}");
            return super::EXIT_CONFIG;
        }
    };
    let mut engine = Engine::new(pack, None, Duration::ZERO);
    let reader: Box<dyn BufRead> = if input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(input) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("tillgate: cannot read {}: {e}", input.display());
                return 66;
            }
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut seen = Seen(HashMap::new());
    let mut decisions: BTreeMap<&str, u64> = BTreeMap::new();
    let mut hits: BTreeMap<String, u64> = BTreeMap::new();
    let (mut invalid, mut reports) = (0u64, 0u64);
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = match line {
            Ok(l) if l.trim().is_empty() => continue,
            Ok(l) => l,
            Err(e) => {
                eprintln!("tillgate: read error at line {n}: {e}");
                return 74;
            }
        };
        let t = match txn::from_recording(line.as_bytes()) {
            Ok(t) => t,
            Err(e) => {
                invalid += 1;
                let _ = writeln!(
                    out,
                    "{}",
                    if as_json {
                        json!({"line": n, "error": e.to_string()}).to_string()
                    } else {
                        format!("{n:>6}  invalid: {e}")
                    }
                );
                continue;
            }
        };
        let d = engine.decide(
            &t,
            &DecideContext {
                seq: n as u64,
                lookup: &seen,
                replaying: false,
            },
        );
        *decisions.entry(d.action.name()).or_default() += 1;
        for h in &d.hits {
            *hits.entry(h.id.to_string()).or_default() += 1;
        }
        reports += d.reports.len() as u64;
        let _ = writeln!(out, "{}", decision_line(n, &t, &d, as_json));
        seen.0.insert(t.txn_id.clone(), t);
    }
    let _ = out.flush();
    drop(out);
    summary(&decisions, &hits, invalid, reports);
    0
}

/// One decided line: as JSON, or `line  txn_id  action  rule[aggregates], ...` with the
/// report windows it closed below.
fn decision_line(n: usize, t: &Transaction, d: &Decision, as_json: bool) -> String {
    if as_json {
        return json!({"line": n, "txn_id": t.txn_id, "decision": d.action, "rules": d.hits, "reports": d.reports})
            .to_string();
    }
    let rules: Vec<String> = d
        .hits
        .iter()
        .map(|h| {
            let aggs: Vec<String> = h.aggregates.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mode = if h.mode == rules::Mode::Shadow { " (shadow)" } else { "" };
            if aggs.is_empty() {
                format!("{}{mode}", h.id)
            } else {
                format!("{}[{}]{mode}", h.id, aggs.join(" "))
            }
        })
        .collect();
    let mut s = format!("{n:>6}  {:<28} {:<6} {}", t.txn_id, d.action.name(), rules.join(", "));
    for r in &d.reports {
        s.push_str(&format!(
            "\n        report {} key={} [{}, {}) {:?}",
            r.report, r.key, r.window_start_ms, r.window_end_ms, r.aggregates
        ));
    }
    s
}

/// Totals on stderr: decisions by action, invalid lines, report windows, hits by rule.
fn summary(decisions: &BTreeMap<&str, u64>, hits: &BTreeMap<String, u64>, invalid: u64, reports: u64) {
    let total: u64 = decisions.values().sum();
    eprintln!(
        "\n{total} decided ({}), {invalid} invalid, {reports} report windows",
        decisions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (id, n) in hits {
        eprintln!("  {id:<32} {n:>8} hits");
    }
}
