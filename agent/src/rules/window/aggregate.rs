//! Aggregates over a window, kept incrementally: add on enter, remove on leave.

use super::{Entry, Tag, NO_TAG};
use smallvec::SmallVec;
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
pub struct AggValues(pub SmallVec<[AggValue; 4]>);

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
    conditional: Box<[Tally]>,
}

/// Count, sum and what min, max and `count_distinct` need, over some events. Count and
/// sum are inline: the usual velocity rule's state needs no allocation beyond its key's.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Tally {
    count: i64,
    /// Exact whatever the events: 128 bits hold any sum of i64 amounts that fits in
    /// memory (validation bounds amounts to ±10^13 besides).
    sum: i128,
    /// Only when min, max or `count_distinct` is asked for.
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Extra {
    /// Multiset of amounts, only when min or max is asked for.
    amounts: Option<BTreeMap<i64, u32>>,
    /// Per tag index asked for: how often each value occurs.
    distinct: SmallVec<[(u32, Occurrences); 1]>,
}

/// Values past which occurrences move from a list to a hash table.
const FEW: usize = 16;

/// How often each distinct value occurs in a window: a short list while the window has
/// few (the usual card or customer holds one or two), a hash table past [`FEW`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Occurrences {
    Few(SmallVec<[(Tag, u32); 2]>),
    /// Seeded per process: tags are public-seeded hashes of what terminals send.
    Many(HashMap<Tag, u32, foldhash::fast::RandomState>),
}

impl Default for Occurrences {
    fn default() -> Self {
        Occurrences::Few(SmallVec::new())
    }
}

impl Occurrences {
    fn len(&self) -> usize {
        match self {
            Occurrences::Few(v) => v.len(),
            Occurrences::Many(m) => m.len(),
        }
    }

    fn add(&mut self, tag: Tag, n: u32) {
        match self {
            Occurrences::Few(v) => {
                if let Some((_, c)) = v.iter_mut().find(|(t, _)| *t == tag) {
                    *c += n;
                } else if v.len() < FEW {
                    v.push((tag, n));
                } else {
                    let mut m: HashMap<Tag, u32, _> = v.drain(..).collect();
                    m.insert(tag, n);
                    *self = Occurrences::Many(m);
                }
            }
            Occurrences::Many(m) => *m.entry(tag).or_insert(0) += n,
        }
    }

    fn remove(&mut self, tag: Tag) {
        match self {
            Occurrences::Few(v) => {
                if let Some(i) = v.iter().position(|(t, _)| *t == tag) {
                    v[i].1 -= 1;
                    if v[i].1 == 0 {
                        v.swap_remove(i);
                    }
                }
            }
            Occurrences::Many(m) => {
                if let Some(c) = m.get_mut(&tag) {
                    *c -= 1;
                    if *c == 0 {
                        m.remove(&tag);
                    }
                }
                if m.len() <= FEW / 4 {
                    // Back to a list: a table keeps the capacity of its busiest moment.
                    *self = Occurrences::Few(m.drain().collect());
                }
            }
        }
    }

    /// Whether this is a state `add` and `remove` can make: no value twice, none counted
    /// zero times, a list no longer than [`FEW`].
    fn sound(&self) -> bool {
        match self {
            Occurrences::Few(v) => {
                v.len() <= FEW
                    && v.iter().all(|(t, n)| *n > 0 && *t != NO_TAG)
                    && v.iter()
                        .enumerate()
                        .all(|(i, (t, _))| v[..i].iter().all(|(u, _)| u != t))
            }
            Occurrences::Many(m) => m.iter().all(|(t, n)| *n > 0 && *t != NO_TAG),
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (Tag, u32)> + '_> {
        match self {
            Occurrences::Few(v) => Box::new(v.iter().copied()),
            Occurrences::Many(m) => Box::new(m.iter().map(|(t, n)| (*t, *n))),
        }
    }
}

impl Tally {
    /// Empty state for the aggregates of `group`.
    fn new(specs: &[AggSpec], group: usize) -> Self {
        let mine = || specs.iter().filter(move |s| s.group == group);
        let needs_order = mine().any(|s| matches!(s.kind, AggKind::Min | AggKind::Max));
        let mut tags: Vec<u32> = mine()
            .filter_map(|s| match s.kind {
                AggKind::CountDistinct(i) => u32::try_from(i).ok(),
                _ => None,
            })
            .collect();
        tags.sort_unstable();
        tags.dedup();
        let extra = (needs_order || !tags.is_empty()).then(|| {
            Box::new(Extra {
                amounts: needs_order.then(BTreeMap::new),
                distinct: tags.into_iter().map(|i| (i, Occurrences::default())).collect(),
            })
        });
        Tally {
            count: 0,
            sum: 0,
            extra,
        }
    }

    /// Whether this tally has the shape `Tally::new(specs, group)` gives (a snapshot
    /// decoded from another definition would not).
    fn fits(&self, specs: &[AggSpec], group: usize) -> bool {
        let fresh = Tally::new(specs, group);
        let shape = |t: &Tally| {
            t.extra.as_ref().map(|x| {
                (
                    x.amounts.is_some(),
                    x.distinct.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                )
            })
        };
        let occurrences_sound = self.extra.as_ref().is_none_or(|x| {
            x.distinct
                .iter()
                .all(|(_, d)| d.sound() && d.iter().map(|(_, n)| i64::from(n)).sum::<i64>() <= self.count)
        });
        let amounts_sound =
            self.extra.as_ref().and_then(|x| x.amounts.as_ref()).is_none_or(|a| {
                a.values().all(|n| *n > 0) && a.values().map(|n| i64::from(*n)).sum::<i64>() == self.count
            });
        shape(self) == shape(&fresh) && self.count >= 0 && occurrences_sound && amounts_sound
    }

    fn add(&mut self, e: Entry<'_>) {
        self.count += 1;
        self.sum += i128::from(e.amount);
        if let Some(x) = &mut self.extra {
            if let Some(a) = &mut x.amounts {
                *a.entry(e.amount).or_insert(0) += 1;
            }
            for (i, d) in &mut x.distinct {
                match e.tags.get(*i as usize) {
                    Some(&t) if t != NO_TAG => d.add(t, 1),
                    _ => {}
                }
            }
        }
    }

    fn remove(&mut self, e: Entry<'_>) {
        self.count -= 1;
        self.sum -= i128::from(e.amount);
        if let Some(x) = &mut self.extra {
            if let Some(a) = &mut x.amounts {
                if let Some(n) = a.get_mut(&e.amount) {
                    *n -= 1;
                    if *n == 0 {
                        a.remove(&e.amount);
                    }
                }
            }
            for (i, d) in &mut x.distinct {
                match e.tags.get(*i as usize) {
                    Some(&t) if t != NO_TAG => d.remove(t),
                    _ => {}
                }
            }
        }
    }

    /// Adds another window's tally of the same aggregates (session merges).
    fn merge(&mut self, other: &Tally) {
        self.count += other.count;
        self.sum += other.sum;
        let (mine, theirs) = match (&mut self.extra, &other.extra) {
            (Some(a), Some(b)) => (a, b),
            (None, Some(b)) => {
                self.extra = Some(b.clone());
                return;
            }
            _ => return,
        };
        if let (Some(a), Some(b)) = (&mut mine.amounts, &theirs.amounts) {
            for (k, n) in b {
                *a.entry(*k).or_insert(0) += n;
            }
        } else if mine.amounts.is_none() {
            mine.amounts = theirs.amounts.clone();
        }
        for ((_, m), (_, t)) in mine.distinct.iter_mut().zip(&theirs.distinct) {
            for (tag, n) in t.iter() {
                m.add(tag, n);
            }
        }
    }

    fn value(&self, kind: AggKind) -> AggValue {
        let amounts = self.extra.as_ref().and_then(|x| x.amounts.as_ref());
        match kind {
            AggKind::Count => AggValue::Int(self.count),
            // Beyond i64 only after ~922,000 transactions of the largest amount in one
            // window: shown clamped, the state itself stays exact.
            AggKind::Sum => AggValue::Int(self.sum.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64),
            AggKind::Min => AggValue::Int(amounts.and_then(|a| a.keys().next().copied()).unwrap_or(0)),
            AggKind::Max => AggValue::Int(amounts.and_then(|a| a.keys().next_back().copied()).unwrap_or(0)),
            AggKind::Avg => AggValue::Float(if self.count == 0 {
                0.0
            } else {
                self.sum as f64 / self.count as f64
            }),
            AggKind::CountDistinct(i) => AggValue::Int(
                self.extra
                    .as_ref()
                    .and_then(|x| x.distinct.iter().find(|(t, _)| *t as usize == i))
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

    /// Count and sum only (no min/max multiset, no distinct values): a copy costs no
    /// more than a few words.
    pub fn is_light(&self) -> bool {
        self.all.extra.is_none() && self.conditional.iter().all(|t| t.extra.is_none())
    }

    /// Events counted by the tally of all events.
    pub fn count_all(&self) -> i64 {
        self.all.count
    }

    /// Whether this state has the shape `Running::new(specs)` gives.
    pub fn fits(&self, specs: &[AggSpec]) -> bool {
        let groups = specs.iter().map(|s| s.group).max().unwrap_or(0);
        self.all.fits(specs, 0)
            && self.conditional.len() == groups
            && self.conditional.iter().enumerate().all(|(g, t)| t.fits(specs, g + 1))
    }

    /// The conditional tallies `e` belongs to: each whose condition it met.
    fn conditional_of(&mut self, e: Entry<'_>) -> impl Iterator<Item = &mut Tally> + '_ {
        let mask = e.mask;
        self.conditional
            .iter_mut()
            .enumerate()
            .filter(move |(g, _)| mask & (1 << g) != 0)
            .map(|(_, t)| t)
    }

    pub fn add(&mut self, e: Entry<'_>) {
        self.all.add(e);
        if e.mask != 0 {
            for t in self.conditional_of(e) {
                t.add(e);
            }
        }
    }

    pub fn remove(&mut self, e: Entry<'_>) {
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
