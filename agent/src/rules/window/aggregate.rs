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
}

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

/// Running state for every aggregate of a rule over one window.
#[derive(Debug, Clone, Default)]
pub struct Running {
    count: i64,
    /// Exact whatever the events: 128 bits hold any sum of i64 amounts that fits in
    /// memory (validation bounds amounts to ±10^13 besides).
    sum: i128,
    /// Multiset of amounts, only when min or max is asked for.
    amounts: Option<BTreeMap<i64, u32>>,
    /// Per tag index: value hash → occurrences.
    distinct: Vec<HashMap<u64, u32>>,
}

impl Running {
    /// Empty state for `specs`.
    pub fn new(specs: &[AggSpec]) -> Self {
        let needs_order = specs.iter().any(|s| matches!(s.kind, AggKind::Min | AggKind::Max));
        let tags = specs
            .iter()
            .filter_map(|s| match s.kind {
                AggKind::CountDistinct(i) => Some(i + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        Running {
            count: 0,
            sum: 0,
            amounts: needs_order.then(BTreeMap::new),
            distinct: vec![HashMap::new(); tags],
        }
    }

    pub fn add(&mut self, _specs: &[AggSpec], e: &Event) {
        self.count += 1;
        self.sum += i128::from(e.amount);
        if let Some(a) = &mut self.amounts {
            *a.entry(e.amount).or_insert(0) += 1;
        }
        for (i, d) in self.distinct.iter_mut().enumerate() {
            if let Some(Some(h)) = e.tags.get(i) {
                *d.entry(*h).or_insert(0) += 1;
            }
        }
    }

    pub fn remove(&mut self, _specs: &[AggSpec], e: &Event) {
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
        for (i, d) in self.distinct.iter_mut().enumerate() {
            if let Some(Some(h)) = e.tags.get(i) {
                if let Some(n) = d.get_mut(h) {
                    *n -= 1;
                    if *n == 0 {
                        d.remove(h);
                    }
                }
            }
        }
    }

    /// Adds another window's state (session merges).
    pub fn merge(&mut self, other: &Running) {
        self.count += other.count;
        self.sum += other.sum;
        if let (Some(a), Some(b)) = (&mut self.amounts, &other.amounts) {
            for (k, n) in b {
                *a.entry(*k).or_insert(0) += n;
            }
        } else if self.amounts.is_none() {
            self.amounts = other.amounts.clone();
        }
        if self.distinct.len() < other.distinct.len() {
            self.distinct.resize(other.distinct.len(), HashMap::new());
        }
        for (mine, theirs) in self.distinct.iter_mut().zip(&other.distinct) {
            for (h, n) in theirs {
                *mine.entry(*h).or_insert(0) += n;
            }
        }
    }

    pub fn values(&self, specs: &[AggSpec]) -> AggValues {
        AggValues(
            specs
                .iter()
                .map(|s| match s.kind {
                    AggKind::Count => AggValue::Int(self.count),
                    // Beyond i64 only after ~922,000 transactions of the largest amount
                    // in one window: shown clamped, the state itself stays exact.
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
                    AggKind::CountDistinct(i) => AggValue::Int(self.distinct.get(i).map_or(0, |d| d.len() as i64)),
                })
                .collect(),
        )
    }
}
