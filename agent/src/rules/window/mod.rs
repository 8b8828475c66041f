//! Per-event windows: for the transaction at event time `t`, the key's events in
//! `[t − W, t]` (time windows, this one included) or its last `N` events (count windows),
//! with incremental aggregates.
//!
//! Time windows keep the key's events sorted by (time, arrival). The *active* range
//! `[max_t − W, max_t]` carries running aggregates, so the usual in-order transaction is
//! answered in O(1) amortized. An out-of-order transaction (older than the key's newest)
//! enters the state and gets its own window computed from the retained events (the rare
//! path). Events older than `max_t − W − lateness` are dropped after each transaction, so
//! what a late transaction can see is well defined (and what the oracle test checks).

pub mod aggregate;
mod ring;

pub use aggregate::{AggKind, AggSpec, AggValue, AggValues, Running, MAX_CONDITIONS};

use ring::{Layout, Ring};
use smallvec::SmallVec;

/// The shape of a per-event window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// Events within `width_ms` before this one (inclusive); older events are kept
    /// `lateness_ms` longer for out-of-order arrivals; a key holds at most `max_events`
    /// (past that the oldest leave early, counted: memory per key is bounded).
    Time {
        width_ms: i64,
        lateness_ms: i64,
        max_events: usize,
    },
    /// The last `n` events in arrival order, this one included.
    Count { n: usize },
}

impl WindowSpec {
    /// How far back in event time a restart must replay to rebuild this window.
    pub fn replay_span_ms(&self) -> Option<i64> {
        match self {
            WindowSpec::Time {
                width_ms, lateness_ms, ..
            } => Some(width_ms + lateness_ms),
            WindowSpec::Count { .. } => None,
        }
    }
}

/// A `count_distinct` field's value as a window keeps it: its hash, and
/// [`NO_TAG`] when the transaction lacks the field.
pub type Tag = u64;

/// The tag of an absent field (a hash of 0 is kept as 1: the two count as one value,
/// as any two values whose 64-bit hashes collide do).
pub const NO_TAG: Tag = 0;

/// The tag of a field's value hash.
pub fn tag(hash: Option<u64>) -> Tag {
    hash.map_or(NO_TAG, |h| h.max(1))
}

/// What a rule's event records hold: the amount only if an aggregate sums or compares
/// it, the condition bits only if an aggregate has its own filter, and `tags` tags.
fn layout(specs: &[AggSpec], tags: usize) -> Layout {
    let amount = specs
        .iter()
        .any(|s| matches!(s.kind, AggKind::Sum | AggKind::Min | AggKind::Max | AggKind::Avg));
    let conditions = specs.iter().any(|s| s.group > 0);
    Layout::new(amount, conditions, tags)
}

/// One transaction as a window takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Event time, ms since the epoch.
    pub ts: i64,
    /// `total_minor`.
    pub amount: i64,
    /// One [`Tag`] per `count_distinct` field of the rule (two without an allocation).
    pub tags: SmallVec<[Tag; 2]>,
    /// Bit `c` set: the rule's condition `c` held for this transaction (it counts in
    /// the aggregates with that condition).
    pub mask: u32,
}

impl Event {
    pub fn entry(&self) -> Entry<'_> {
        Entry {
            ts: self.ts,
            amount: self.amount,
            mask: self.mask,
            tags: &self.tags,
        }
    }
}

/// An event as a window holds it (a view of its record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub ts: i64,
    pub amount: i64,
    pub mask: u32,
    pub tags: &'a [Tag],
}

/// The window state of one key of one rule (snapshotted as it is: see `snapshot.rs`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(into = "WindowWire", try_from = "WindowWire")]
pub struct KeyWindow {
    events: Ring,
    /// What the ring's records hold.
    layout: Layout,
    /// Time windows: index of the first event in the active range.
    active_from: u32,
    max_ts: i64,
    running: Running,
}

/// A window in a snapshot: its events as words, oldest first.
#[derive(serde::Serialize, serde::Deserialize)]
struct WindowWire {
    layout: u8,
    words: Vec<u64>,
    active_from: u32,
    max_ts: i64,
    running: Running,
}

impl From<KeyWindow> for WindowWire {
    fn from(w: KeyWindow) -> Self {
        WindowWire {
            words: w.events.to_words(w.layout),
            layout: w.layout.to_byte(),
            active_from: w.active_from,
            max_ts: w.max_ts,
            running: w.running,
        }
    }
}

impl TryFrom<WindowWire> for KeyWindow {
    type Error = &'static str;

    fn try_from(w: WindowWire) -> Result<Self, Self::Error> {
        let layout = Layout::from_byte(w.layout);
        Ok(KeyWindow {
            events: Ring::from_words(layout, w.words).ok_or("events are not whole records")?,
            layout,
            active_from: w.active_from,
            max_ts: w.max_ts,
            running: w.running,
        })
    }
}

impl KeyWindow {
    /// An empty window for aggregates `specs` over events with `tags` distinct fields.
    pub fn new(specs: &[AggSpec], tags: usize) -> Self {
        KeyWindow {
            events: Ring::default(),
            layout: layout(specs, tags),
            active_from: 0,
            max_ts: i64::MIN,
            running: Running::new(specs),
        }
    }

    /// Whether a decoded window is one this build could have made for a rule with
    /// `window`, aggregates `specs` and `tags` distinct fields: its records, active range,
    /// event cap and running aggregates agree.
    pub fn fits(&self, window: WindowSpec, specs: &[AggSpec], tags: usize) -> bool {
        let (len, active_from) = (self.events.len(), self.active_from as usize);
        let shape = match window {
            WindowSpec::Count { n } => active_from == 0 && len <= n,
            WindowSpec::Time { max_events, .. } => active_from <= len && len <= max_events.max(1),
        };
        shape
            && self.layout == layout(specs, tags)
            && self.running.fits(specs)
            && self.running.count_all() == (len - active_from) as i64
    }

    /// Events held (for memory accounting).
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.events.len() == 0
    }

    /// Adds `ev` (with as many tags as the window was made for) and returns the
    /// aggregates of its window, and how many events left early because the key
    /// reached its event cap.
    pub fn observe(&mut self, spec: WindowSpec, specs: &[AggSpec], ev: &Event) -> (AggValues, usize) {
        debug_assert_eq!(ev.tags.len(), self.layout.tags());
        match spec {
            WindowSpec::Count { n } => (self.observe_count(n, specs, ev), 0),
            WindowSpec::Time {
                width_ms,
                lateness_ms,
                max_events,
            } => self.observe_time(width_ms, lateness_ms, max_events, specs, ev),
        }
    }

    /// Lets the oldest event go; its aggregates leave with it if it was active.
    fn drop_oldest(&mut self) {
        let s = self.layout;
        if let Some(old) = self.events.front(s) {
            if self.active_from == 0 {
                self.running.remove(old);
            } else {
                self.active_from -= 1;
            }
            self.events.pop_front(s);
        }
    }

    /// Lets the oldest events go until at most `max` are held; returns how many went.
    fn cap(&mut self, max: usize) -> usize {
        let mut dropped = 0;
        while self.events.len() > max.max(1) {
            self.drop_oldest();
            dropped += 1;
        }
        dropped
    }

    fn observe_count(&mut self, n: usize, specs: &[AggSpec], ev: &Event) -> AggValues {
        self.running.add(self.layout.held(ev.entry()));
        self.events.push_back(self.layout, ev);
        while self.events.len() > n {
            self.drop_oldest();
        }
        self.running.values(specs)
    }

    fn observe_time(
        &mut self,
        width: i64,
        lateness: i64,
        max: usize,
        specs: &[AggSpec],
        ev: &Event,
    ) -> (AggValues, usize) {
        let (s, ts) = (self.layout, ev.ts);
        let capped;
        let values = if ts >= self.max_ts {
            // In order: the active range after advancing is exactly [ts − W, ts].
            self.events.push_back(s, ev);
            self.max_ts = ts;
            self.running.add(self.layout.held(ev.entry()));
            capped = self.cap(max);
            let start = ts.saturating_sub(width);
            while (self.active_from as usize) < self.events.len() {
                let leaving = self.events.get(s, self.active_from as usize);
                if leaving.ts >= start {
                    break;
                }
                self.running.remove(leaving);
                self.active_from += 1;
            }
            self.running.values(specs)
        } else {
            // Out of order: insert by (time, arrival), after every held event of its
            // time (they all arrived before it, see `ring.rs`); its own window is
            // computed from the retained events.
            let pos = self.events.partition_point(s, |e| e.ts <= ts);
            self.events.insert(s, pos, ev);
            if ts >= self.max_ts.saturating_sub(width) {
                self.running.add(self.layout.held(ev.entry()));
            } else if pos <= self.active_from as usize {
                self.active_from += 1;
            }
            capped = self.cap(max);
            let lo = self.events.partition_point(s, |e| e.ts < ts.saturating_sub(width));
            let hi = self.events.partition_point(s, |e| e.ts <= ts);
            self.aggregates_of(lo..hi, specs)
        };
        let keep_from = self.max_ts.saturating_sub(width).saturating_sub(lateness);
        while self.events.front(s).is_some_and(|e| e.ts < keep_from) {
            self.events.pop_front(s);
            self.active_from = self.active_from.saturating_sub(1);
        }
        (values, capped)
    }

    /// The aggregates of the held events `window` (a late event's own window). When the
    /// running aggregates are cheap to copy (count and sum only) and fewer events differ
    /// between `window` and the active range than `window` holds, they are the running
    /// aggregates less the active events outside it plus its events outside the active
    /// range: a slightly late event then costs the events between it and the newest, not
    /// its whole window. Otherwise the window is summed afresh.
    fn aggregates_of(&self, window: std::ops::Range<usize>, specs: &[AggSpec]) -> AggValues {
        let (s, active, len) = (self.layout, self.active_from as usize, self.events.len());
        let (lo, hi) = (window.start, window.end);
        // Active events outside the window: before it, and after it.
        let leave = [active..lo.max(active), hi.max(active)..len];
        // The window's events before the active range.
        let join = lo..hi.min(active).max(lo);
        let differ = leave.iter().map(ExactSizeIterator::len).sum::<usize>() + join.len();
        let incremental = self.running.is_light() && differ < window.len();
        let (mut running, added) = if incremental {
            let mut running = self.running.clone();
            for i in leave.into_iter().flatten() {
                running.remove(self.events.get(s, i));
            }
            (running, join)
        } else {
            (Running::new(specs), window)
        };
        for i in added {
            running.add(self.events.get(s, i));
        }
        running.values(specs)
    }
}

#[cfg(test)]
mod tests;
