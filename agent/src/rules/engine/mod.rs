//! The rule engine: every enabled rule and report over one transaction at a time, in
//! journal order, with per-key window state bounded by `max_keys` (least recently used
//! keys are evicted and counted).

use super::cel::{self, Expr};
use super::compiled::Inputs;
use super::field::{key_id, stable_hash, KeyId, TxnField};
use super::report::ReportState;
use super::snapshot::{report_fingerprint, rule_fingerprint, Restored, Snapshot, UnitSnapshot};
use super::spec::{CompiledReport, CompiledRule, RulePack};
use super::window::{tag, AggSpec, AggValue, AggValues, Event, KeyWindow, WindowSpec};
use super::DenyList;
use super::{DecideContext, Decider, Decision, HitAggregates, ReportHit, RuleHit};
use crate::metrics::Metrics;
use crate::txn::Transaction;
use ::cel::common::types::CelMap;
use ::cel::common::value::Val;
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

mod keys;
mod snapshot;

use keys::KeyTable;

/// The table of a rule's keys hashes their ids again, with a per-process random seed:
/// ids are public-seeded SipHash values, and a table indexed by their bits directly
/// could be flooded with ids crafted to share them.
type KeyHasher = foldhash::fast::RandomState;

struct RuleState {
    rule: CompiledRule,
    keys: KeyTable,
    /// Index into [`Engine::key_ids`]: rules keyed on the same fields share one id per
    /// transaction.
    key_slot: usize,
    /// The state came from a snapshot through this journal sequence: a replay skips
    /// what it already holds (0: nothing restored).
    covered_through: u64,
    /// Of what shapes its state (`snapshot.rs`), computed once.
    fingerprint: String,
    /// What a hit of this rule says, shared by every hit.
    hit: HitText,
    /// `tillgate_rule_live_keys{rule}`, looked up once (a label lookup per transaction
    /// and rule cost more than a simple rule's whole window update).
    live_keys: Option<prometheus::IntGauge>,
}

/// A rule's id, reason and aggregate names as its hits carry them.
struct HitText {
    id: Arc<str>,
    reason: Arc<str>,
    /// Index into the aggregate values and name, sorted by name.
    aggregates: Vec<(usize, Arc<str>)>,
}

impl HitText {
    fn of(rule: &CompiledRule) -> Self {
        let reason = if rule.description.is_empty() {
            &rule.when.source
        } else {
            &rule.description
        };
        let mut aggregates: Vec<(usize, Arc<str>)> = rule
            .aggregates
            .iter()
            .enumerate()
            .map(|(i, a)| (i, a.name.as_str().into()))
            .collect();
        aggregates.sort_by(|a, b| a.1.cmp(&b.1));
        HitText {
            id: rule.id.as_str().into(),
            reason: reason.as_str().into(),
            aggregates,
        }
    }

    fn aggregates(&self, values: &AggValues) -> HitAggregates {
        HitAggregates(
            self.aggregates
                .iter()
                .map(|(i, name)| (name.clone(), values.0[*i].to_json()))
                .collect(),
        )
    }
}

struct ReportRun {
    report: CompiledReport,
    state: ReportState,
    /// As [`RuleState::covered_through`].
    covered_through: u64,
    fingerprint: String,
}

/// Rules and reports with their state. Implements [`Decider`].
pub struct Engine {
    rules: Vec<RuleState>,
    reports: Vec<ReportRun>,
    /// The deny lists, for compiled conditions, and as one CEL map for the interpreter.
    deny_lists: Arc<[(String, Arc<DenyList>)]>,
    lists: Arc<cel::Bound>,
    metrics: Option<Metrics>,
    /// Replay span for rules that count the last N events.
    count_window_replay: Duration,
    /// Some expression the interpreter runs reads `txn` (or `original`): build their
    /// CEL form per transaction. With every condition compiled, nothing is built.
    interprets_txn: bool,
    /// Some expression reads `original`: look the sale up for returns.
    reads_original: bool,
    /// This transaction's key id per distinct list of key fields, computed on first use
    /// (`None`: not yet; `Some(None)`: a field is absent).
    key_ids: Vec<Option<Option<KeyId>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.rules.len())
            .field("reports", &self.reports.len())
            .finish()
    }
}

/// The key's values joined by `/`, as reports show it; `None` when one is absent.
fn key_of(fields: &[TxnField], txn: &Transaction) -> Option<String> {
    let mut key = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            key.push('/');
        }
        key.push_str(f.get(txn)?);
    }
    Some(key)
}

/// The transaction as a window keeps it; `mask`: the conditions it met.
fn event(txn: &Transaction, distinct: &[TxnField], mask: u32) -> Event {
    Event {
        ts: txn.event_time().timestamp_millis(),
        amount: txn.total_minor,
        tags: distinct.iter().map(|f| tag(f.get(txn).map(stable_hash))).collect(),
        mask,
    }
}

fn named<'s>(specs: &'s [AggSpec], values: &AggValues) -> Vec<(&'s str, cel::Bound)> {
    specs
        .iter()
        .zip(&values.0)
        .map(|(s, v)| {
            let v = match v {
                AggValue::Int(i) => ::cel::Value::Int(*i),
                AggValue::Float(f) => ::cel::Value::Float(*f),
            };
            (s.name.as_str(), cel::bind(v))
        })
        .collect()
}

fn json(specs: &[AggSpec], values: &AggValues) -> BTreeMap<String, serde_json::Value> {
    specs
        .iter()
        .zip(&values.0)
        .map(|(s, v)| (s.name.clone(), v.to_json()))
        .collect()
}

impl Engine {
    /// An engine over `pack`, counting errors and evictions in `metrics` when given.
    /// Rules that count the last N events are rebuilt from `count_window_replay` of
    /// journal after a restart.
    pub fn new(pack: RulePack, metrics: Option<Metrics>, count_window_replay: Duration) -> Self {
        let lists = Arc::new(cel::lists_value(&pack.lists));
        let deny_lists: Arc<[(String, Arc<DenyList>)]> = pack.lists.clone().into();
        let mut key_fields: Vec<Vec<TxnField>> = Vec::new();
        let rules: Vec<RuleState> = pack
            .rules
            .into_iter()
            .map(|rule| {
                let cap = NonZeroUsize::new(rule.max_keys).unwrap_or(NonZeroUsize::MIN);
                let key_slot = match key_fields.iter().position(|k| *k == rule.key) {
                    Some(slot) => slot,
                    None => {
                        key_fields.push(rule.key.clone());
                        key_fields.len() - 1
                    }
                };
                RuleState {
                    fingerprint: rule_fingerprint(&rule, &deny_lists),
                    hit: HitText::of(&rule),
                    key_slot,
                    live_keys: metrics
                        .as_ref()
                        .map(|m| m.rule_live_keys.with_label_values(&[&rule.id])),
                    keys: KeyTable::new(cap),
                    covered_through: 0,
                    rule,
                }
            })
            .collect();
        let reports = pack
            .reports
            .into_iter()
            .map(|report| ReportRun {
                state: ReportState::new(report.window, report.lateness_ms, report.max_keys),
                covered_through: 0,
                fingerprint: report_fingerprint(&report, &deny_lists),
                report,
            })
            .collect();
        let mut engine = Engine {
            rules,
            reports,
            deny_lists,
            lists,
            metrics,
            count_window_replay,
            interprets_txn: false,
            reads_original: false,
            key_ids: vec![None; key_fields.len()],
        };
        let interprets_txn = engine
            .exprs()
            .any(|e| e.compiled.is_none() && (e.reads("txn") || e.reads("original")));
        let reads_original = engine.exprs().any(|e| e.reads("original"));
        engine.interprets_txn = interprets_txn;
        engine.reads_original = reads_original;
        engine
    }

    fn exprs(&self) -> impl Iterator<Item = &Expr> {
        let rules = self
            .rules
            .iter()
            .flat_map(|r| r.rule.filter.iter().chain([&r.rule.when]).chain(&r.rule.conditions));
        let reports = self.reports.iter().flat_map(|r| {
            r.report
                .filter
                .iter()
                .chain(r.report.when.iter())
                .chain(&r.report.conditions)
        });
        rules.chain(reports)
    }

    /// Rule ids, in evaluation order.
    pub fn rule_ids(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.rule.id.as_str()).collect()
    }

    /// Report ids.
    pub fn report_ids(&self) -> Vec<&str> {
        self.reports.iter().map(|r| r.report.id.as_str()).collect()
    }

    /// Keys held over all rules.
    pub fn live_keys(&self) -> usize {
        self.rules.iter().map(|r| r.keys.len()).sum()
    }

    /// Events held in windows over all rules and keys.
    pub fn held_events(&self) -> usize {
        self.rules
            .iter()
            .map(|r| r.keys.windows().map(|w| w.len()).sum::<usize>())
            .sum()
    }

    fn count_error(&self, what: &str, id: &str, e: &str) {
        tracing::debug!(
            rule = id,
            error = e,
            "{what} could not be evaluated; treated as not matching"
        );
        if let Some(m) = &self.metrics {
            m.rule_errors.with_label_values(&[id]).inc();
        }
    }

    /// Which of `conditions` (aggregates' filters) hold, one bit each; one that cannot
    /// be evaluated is counted and does not hold.
    fn conditions_met(
        &self,
        id: &str,
        conditions: &[Expr],
        inputs: &Inputs<'_>,
        vars: &[(&str, &(dyn Val + '_))],
    ) -> u32 {
        let mut mask = 0;
        for (c, condition) in conditions.iter().enumerate() {
            match condition.eval(inputs, || vars.to_vec()) {
                Ok(true) => mask |= 1 << c,
                Ok(false) => {}
                Err(e) => self.count_error("aggregate filter", id, &e),
            }
        }
        mask
    }

    fn passes(&self, id: &str, filter: &Option<Expr>, inputs: &Inputs<'_>, vars: &[(&str, &(dyn Val + '_))]) -> bool {
        match filter {
            None => true,
            Some(f) => match f.eval(inputs, || vars.to_vec()) {
                Ok(b) => b,
                Err(e) => {
                    self.count_error("filter", id, &e);
                    false
                }
            },
        }
    }
}

impl RuleState {
    /// Adds the transaction to its key's window (a new key may push the least recently
    /// seen one out; a full window drops its oldest events: both counted) and returns
    /// the aggregates of its window.
    fn observe(
        &mut self,
        window: WindowSpec,
        key: KeyId,
        txn: &Transaction,
        mask: u32,
        metrics: Option<&Metrics>,
    ) -> AggValues {
        let ev = event(txn, &self.rule.distinct, mask);
        let aggs = &self.rule.aggregates;
        let (values, capped) = if let Some(w) = self.keys.get_mut(&key) {
            w.observe(window, aggs, &ev)
        } else {
            let mut w = KeyWindow::new(aggs, self.rule.distinct.len());
            let observed = w.observe(window, aggs, &ev);
            if self.keys.push(key, w).is_some() {
                if let Some(m) = metrics {
                    m.rule_keys_evicted.with_label_values(&[&self.rule.id]).inc();
                }
            }
            observed
        };
        if capped > 0 {
            if let Some(m) = metrics {
                m.rule_events_capped
                    .with_label_values(&[&self.rule.id])
                    .inc_by(capped as u64);
            }
        }
        values
    }
}

impl Decider for Engine {
    fn decide(&mut self, txn: &Transaction, cx: &DecideContext<'_>) -> Decision {
        // Only when the interpreter runs an expression that reads them: building them is
        // most of a simple rule's cost.
        let txn_v = if self.interprets_txn {
            cel::txn_value(txn)
        } else {
            Box::new(CelMap::default())
        };
        let original = txn
            .original_txn_id
            .as_ref()
            .filter(|_| self.reads_original)
            .and_then(|id| cx.lookup.original(id));
        let original_v = original.as_ref().filter(|_| self.interprets_txn).map(cel::txn_value);
        let original_v: &(dyn Val + '_) = match &original_v {
            Some(v) => v.as_ref(),
            None => cel::EMPTY_MAP.as_ref(),
        };
        // A clone of the Arc, so `base` does not borrow `self`.
        let lists = self.lists.clone();
        let base: [(&str, &(dyn Val + '_)); 3] = [
            ("txn", txn_v.as_ref()),
            ("lists", lists.as_ref().as_ref()),
            ("original", original_v),
        ];
        let deny_lists = self.deny_lists.clone();
        let inputs = Inputs {
            txn,
            original: original.as_ref(),
            lists: &deny_lists,
            aggs: &[],
        };
        let mut hits = Vec::new();
        self.key_ids.fill(None);
        for i in 0..self.rules.len() {
            if cx.replaying && cx.seq <= self.rules[i].covered_through {
                // Restored from a snapshot that already holds this transaction.
                continue;
            }
            let r = &self.rules[i].rule;
            if !self.passes(&r.id, &r.filter, &inputs, &base) {
                continue;
            }
            // The key first: a transaction that lacks it does not concern the rule, and
            // its aggregate filters are not evaluated.
            let windowed = match r.window {
                None => None,
                Some(window) => {
                    let slot = self.rules[i].key_slot;
                    let id = *self.key_ids[slot].get_or_insert_with(|| key_id(&r.key, txn));
                    match id {
                        Some(key) => Some((window, key)),
                        None => continue,
                    }
                }
            };
            let values = match windowed {
                None => None,
                Some((window, key)) => {
                    let mask = self.conditions_met(&r.id, &r.conditions, &inputs, &base);
                    Some(self.rules[i].observe(window, key, txn, mask, self.metrics.as_ref()))
                }
            };
            if cx.replaying {
                // Rebuilding state: the decision was made (and journaled) before.
                continue;
            }
            let rule = &self.rules[i].rule;
            let aggs = values.as_ref().map_or(&[][..], |v| v.0.as_slice());
            // Bound for the interpreter only.
            let agg_vars = match (&rule.when.compiled, &values) {
                (None, Some(v)) => named(&rule.aggregates, v),
                _ => Vec::new(),
            };
            let vars = || {
                let mut vars: Vec<(&str, &(dyn Val + '_))> = base.to_vec();
                vars.extend(agg_vars.iter().map(|(n, v)| (*n, v.as_ref())));
                vars
            };
            match rule.when.eval(&Inputs { aggs, ..inputs }, vars) {
                Ok(true) => {
                    let hit = &self.rules[i].hit;
                    hits.push(RuleHit {
                        id: hit.id.clone(),
                        action: rule.action,
                        mode: rule.mode,
                        severity: rule.severity,
                        reason: hit.reason.clone(),
                        aggregates: values.map(|v| hit.aggregates(&v)).unwrap_or_default(),
                    })
                }
                Ok(false) => {}
                Err(e) => self.count_error("when", &rule.id, &e),
            }
        }
        for r in &self.rules {
            if let Some(g) = &r.live_keys {
                g.set(r.keys.len() as i64);
            }
        }
        let mut decision = Decision::from_hits(hits);
        decision.reports = self.observe_reports(txn, cx, &inputs, &base);
        decision
    }

    fn reset(&mut self) {
        for r in &mut self.rules {
            r.keys.clear();
            r.covered_through = 0;
        }
        for r in &mut self.reports {
            r.state = ReportState::new(r.report.window, r.report.lateness_ms, r.report.max_keys);
            r.covered_through = 0;
        }
    }

    fn snapshot_units(&self) -> Vec<String> {
        self.unit_names()
    }

    fn snapshot_unit(&self, unit: &str, through_seq: u64) -> Result<Option<UnitSnapshot>, String> {
        self.encode_unit(unit, through_seq)
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Restored {
        self.restore_units(snapshot)
    }

    fn replay_span(&self) -> Option<Duration> {
        let count_windows = self
            .rules
            .iter()
            .any(|r| matches!(r.rule.window, Some(WindowSpec::Count { .. })));
        let rules = self
            .rules
            .iter()
            .filter_map(|r| r.rule.window.and_then(|w| w.replay_span_ms()));
        let reports = self
            .reports
            .iter()
            .map(|r| r.report.window.replay_span_ms() + r.report.lateness_ms);
        let span = rules
            .chain(reports)
            .max()
            .map(|ms| Duration::from_millis(ms.max(0) as u64));
        match (span, count_windows) {
            (s, true) => Some(s.unwrap_or_default().max(self.count_window_replay)),
            (s, false) => s,
        }
    }
}

impl Engine {
    fn observe_reports(
        &mut self,
        txn: &Transaction,
        cx: &DecideContext<'_>,
        inputs: &Inputs<'_>,
        base: &[(&str, &(dyn Val + '_)); 3],
    ) -> Vec<ReportHit> {
        let mut out = Vec::new();
        for i in 0..self.reports.len() {
            if cx.replaying && cx.seq <= self.reports[i].covered_through {
                continue;
            }
            let r = &self.reports[i].report;
            if !self.passes(&r.id, &r.filter, inputs, base) {
                continue;
            }
            let Some(key) = key_id(&r.key, txn) else {
                continue;
            };
            let mask = self.conditions_met(&r.id, &r.conditions, inputs, base);
            let run = &mut self.reports[i];
            let ev = event(txn, &run.report.distinct, mask);
            let (late_before, early_before) = (run.state.late, run.state.closed_early);
            let fields = &run.report.key;
            let name = || key_of(fields, txn).unwrap_or_default();
            let closed = run.state.observe(key, name, &run.report.aggregates, &ev);
            if let Some(m) = &self.metrics {
                if run.state.late > late_before {
                    m.report_late_events.with_label_values(&[&run.report.id]).inc();
                }
                if run.state.closed_early > early_before {
                    m.report_windows_evicted
                        .with_label_values(&[&run.report.id])
                        .inc_by(run.state.closed_early - early_before);
                }
            }
            if cx.replaying {
                // Emitted (and journaled) before the restart.
                continue;
            }
            for w in closed {
                let report = &self.reports[i].report;
                let vars_owned = match &report.when {
                    Some(when) if when.compiled.is_none() => named(&report.aggregates, &w.values),
                    _ => Vec::new(),
                };
                let vars = || {
                    let mut vars: Vec<(&str, &(dyn Val + '_))> = vec![base[1]];
                    vars.extend(vars_owned.iter().map(|(n, v)| (*n, v.as_ref())));
                    vars
                };
                let window_inputs = Inputs {
                    aggs: &w.values.0,
                    ..*inputs
                };
                let fire = match &report.when {
                    None => true,
                    Some(when) => match when.eval(&window_inputs, vars) {
                        Ok(b) => b,
                        Err(e) => {
                            self.count_error("when", &report.id.clone(), &e);
                            false
                        }
                    },
                };
                if fire {
                    out.push(ReportHit {
                        report: report.id.clone(),
                        severity: report.severity,
                        key: w.key,
                        window_start_ms: w.start_ms,
                        window_end_ms: w.end_ms,
                        aggregates: json(&report.aggregates, &w.values),
                        closed_early: w.early,
                    });
                }
            }
        }
        out
    }
}
