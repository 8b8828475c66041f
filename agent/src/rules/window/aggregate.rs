//! Aggregates over a window, kept incrementally: add on enter, remove on leave.

use super::Event;
use std::collections::{BTreeMap, HashMap};

/// What is aggregated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    /// Events in the window.
    Count,
    /// Sum of `total_minor`.
    Sum,
    /// Smallest `total_minor`.
    Min,
    /// Largest `total_minor`.
    Max,
    /// Mean of `total_minor` (a double).
    Avg,
    /// Distinct values of a field; the index says which of the event's tags.
    CountDistinct(usize),
}

/// A named aggregate of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggSpec {
    pub name: String,
    pub kind: AggKind,
    /// The events it aggregates: 0, every event of the window; `g` ≥ 1, those for
    /// which the rule's condition `g − 1` held (an aggregate with its own `filter`,
    /// bit `g − 1` of [`Event::mask`]).
    pub group: usize,
}

/// Conditions one rule or report may have at most: one bit each in [`Event::mask`].
pub const MAX_CONDITIONS: usize = 32;

/// Aggregate values in spec order.
#[derive(Debug, Clone, PartialEq)]
pub struct AggValues(pub Vec<AggValue>);

/// One aggregate's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggValue {
    Int(i64),
    Float(f64),
}

impl AggValue {
    /// As JSON, for decisions and alerts.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            AggValue::Int(i) => serde_json::Value::from(i),
            AggValue::Float(f) => serde_json::Value::from(f),
        }
    }
}

/// Running state for every aggregate of a rule over one window: one [`Tally`] of all
/// its events, and one per condition of the events for which it held.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Running {
    all: Tally,
    /// Index `g − 1` for group `g`; empty (no allocation) without conditions.
    conditional: Vec<Tally>,
}

/// Count, sum and what min, max and `count_distinct` need, over some events.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Tally {
    count: i64,
    /// Exact whatever the events: 128 bits hold any sum of i64 amounts that fits in
    /// memory (validation bounds amounts to ±10^13 besides).
    sum: i128,
    /// Multiset of amounts, only when min or max is asked for.
    amounts: Option<BTreeMap<i64, u32>>,
    /// Per tag index asked for: value hash → occurrences.
    distinct: Vec<(usize, HashMap<u64, u32>)>,
}

impl Tally {
    /// Empty state for the aggregates of `group`.
    fn new(specs: &[AggSpec], group: usize) -> Self {
        let mine = || specs.iter().filter(move |s| s.group == group);
        let needs_order = mine().any(|s| matches!(s.kind, AggKind::Min | AggKind::Max));
        let mut tags: Vec<usize> = mine()
            .filter_map(|s| match s.kind {
                AggKind::CountDistinct(i) => Some(i),
                _ => None,
            })
            .collect();
        tags.sort_unstable();
        tags.dedup();
        Tally {
            count: 0,
            sum: 0,
            amounts: needs_order.then(BTreeMap::new),
            distinct: tags.into_iter().map(|i| (i, HashMap::new())).collect(),
        }
    }

    /// Whether this tally has the shape `Tally::new(specs, group)` gives (a snapshot
    /// decoded from another definition would not).
    fn fits(&self, specs: &[AggSpec], group: usize) -> bool {
        let fresh = Tally::new(specs, group);
        self.amounts.is_some() == fresh.amounts.is_some()
            && self
                .distinct
                .iter()
                .map(|(i, _)| *i)
                .eq(fresh.distinct.iter().map(|(i, _)| *i))
            && self.count >= 0
    }

    fn add(&mut self, e: &Event) {
        self.count += 1;
        self.sum += i128::from(e.amount);
        if let Some(a) = &mut self.amounts {
            *a.entry(e.amount).or_insert(0) += 1;
        }
        for (i, d) in &mut self.distinct {
            if let Some(Some(h)) = e.tags.get(*i) {
                *d.entry(*h).or_insert(0) += 1;
            }
        }
    }

    fn remove(&mut self, e: &Event) {
        self.count -= 1;
        self.sum -= i128::from(e.amount);
        if let Some(a) = &mut self.amounts {
            if let Some(n) = a.get_mut(&e.amount) {
                *n -= 1;
                if *n == 0 {
                    a.remove(&e.amount);
                }
            }
        }
        for (i, d) in &mut self.distinct {
            if let Some(Some(h)) = e.tags.get(*i) {
                if let Some(n) = d.get_mut(h) {
                    *n -= 1;
                    if *n == 0 {
                        d.remove(h);
                    }
                }
            }
        }
    }

    /// Adds another window's tally of the same aggregates (session merges).
    fn merge(&mut self, other: &Tally) {
        self.count += other.count;
        self.sum += other.sum;
        if let (Some(a), Some(b)) = (&mut self.amounts, &other.amounts) {
            for (k, n) in b {
                *a.entry(*k).or_insert(0) += n;
            }
        } else if self.amounts.is_none() {
            self.amounts = other.amounts.clone();
        }
        for ((_, mine), (_, theirs)) in self.distinct.iter_mut().zip(&other.distinct) {
            for (h, n) in theirs {
                *mine.entry(*h).or_insert(0) += n;
            }
        }
    }

    fn value(&self, kind: AggKind) -> AggValue {
        match kind {
            AggKind::Count => AggValue::Int(self.count),
            // Beyond i64 only after ~922,000 transactions of the largest amount in one
            // window: shown clamped, the state itself stays exact.
            AggKind::Sum => AggValue::Int(self.sum.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64),
            AggKind::Min => AggValue::Int(
                self.amounts
                    .as_ref()
                    .and_then(|a| a.keys().next().copied())
                    .unwrap_or(0),
            ),
            AggKind::Max => AggValue::Int(
                self.amounts
                    .as_ref()
                    .and_then(|a| a.keys().next_back().copied())
                    .unwrap_or(0),
            ),
            AggKind::Avg => AggValue::Float(if self.count == 0 {
                0.0
            } else {
                self.sum as f64 / self.count as f64
            }),
            AggKind::CountDistinct(i) => AggValue::Int(
                self.distinct
                    .iter()
                    .find(|(t, _)| *t == i)
                    .map_or(0, |(_, d)| d.len() as i64),
            ),
        }
    }
}

impl Running {
    /// Empty state for `specs`.
    pub fn new(specs: &[AggSpec]) -> Self {
        let groups = specs.iter().map(|s| s.group).max().unwrap_or(0);
        Running {
            all: Tally::new(specs, 0),
            conditional: (1..=groups).map(|g| Tally::new(specs, g)).collect(),
        }
    }

    /// Whether this state has the shape `Running::new(specs)` gives.
    pub fn fits(&self, specs: &[AggSpec]) -> bool {
        let groups = specs.iter().map(|s| s.group).max().unwrap_or(0);
        self.all.fits(specs, 0)
            && self.conditional.len() == groups
            && self.conditional.iter().enumerate().all(|(g, t)| t.fits(specs, g + 1))
    }

    /// The conditional tallies `e` belongs to: each whose condition it met.
    fn conditional_of<'a>(&'a mut self, e: &Event) -> impl Iterator<Item = &'a mut Tally> + 'a {
        let mask = e.mask;
        self.conditional
            .iter_mut()
            .enumerate()
            .filter(move |(g, _)| mask & (1 << g) != 0)
            .map(|(_, t)| t)
    }

    pub fn add(&mut self, _specs: &[AggSpec], e: &Event) {
        self.all.add(e);
        if e.mask != 0 {
            for t in self.conditional_of(e) {
                t.add(e);
            }
        }
    }

    pub fn remove(&mut self, _specs: &[AggSpec], e: &Event) {
        self.all.remove(e);
        if e.mask != 0 {
            for t in self.conditional_of(e) {
                t.remove(e);
            }
        }
    }

    /// Adds another window's state of the same aggregates (session merges).
    pub fn merge(&mut self, other: &Running) {
        self.all.merge(&other.all);
        for (mine, theirs) in self.conditional.iter_mut().zip(&other.conditional) {
            mine.merge(theirs);
        }
    }

    pub fn values(&self, specs: &[AggSpec]) -> AggValues {
        AggValues(
            specs
                .iter()
                .map(|s| {
                    let tally = match s.group {
                        0 => &self.all,
                        g => &self.conditional[g - 1],
                    };
                    tally.value(s.kind)
                })
                .collect(),
        )
    }
}
