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

pub use aggregate::{AggKind, AggSpec, AggValue, AggValues, Running, MAX_CONDITIONS};

use std::collections::VecDeque;

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

/// One transaction as a window keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// Event time, ms since the epoch.
    pub ts: i64,
    /// Arrival order (journal sequence).
    pub seq: u64,
    /// `total_minor`.
    pub amount: i64,
    /// One hash per `count_distinct` aggregate; `None` when the field is absent.
    pub tags: Box<[Option<u64>]>,
    /// Bit `c` set: the rule's condition `c` held for this transaction (it counts in
    /// the aggregates with that condition).
    pub mask: u32,
}

/// The window state of one key of one rule (snapshotted as it is: see `snapshot.rs`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeyWindow {
    events: VecDeque<Event>,
    /// Time windows: index of the first event in the active range.
    active_from: usize,
    max_ts: i64,
    running: Running,
}

impl KeyWindow {
    /// An empty window for aggregates `specs`.
    pub fn new(specs: &[AggSpec]) -> Self {
        KeyWindow {
            // Most keys (cards, customers) hold one event: room for one, not the four a
            // first push would reserve.
            events: VecDeque::with_capacity(1),
            active_from: 0,
            max_ts: i64::MIN,
            running: Running::new(specs),
        }
    }

    /// Whether a decoded window fits aggregates `specs` with `tags` distinct fields.
    pub fn fits(&self, specs: &[AggSpec], tags: usize) -> bool {
        self.active_from <= self.events.len()
            && self.running.fits(specs)
            && self.events.iter().all(|e| e.tags.len() == tags)
    }

    /// Events held (for memory accounting).
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Adds `ev` and returns the aggregates of its window, and how many events left
    /// early because the key reached its event cap.
    pub fn observe(&mut self, spec: WindowSpec, specs: &[AggSpec], ev: Event) -> (AggValues, usize) {
        match spec {
            WindowSpec::Count { n } => (self.observe_count(n, specs, ev), 0),
            WindowSpec::Time {
                width_ms,
                lateness_ms,
                max_events,
            } => self.observe_time(width_ms, lateness_ms, max_events, specs, ev),
        }
    }

    /// Lets the oldest events go until at most `max` are held; returns how many went.
    fn cap(&mut self, max: usize, specs: &[AggSpec]) -> usize {
        let mut dropped = 0;
        while self.events.len() > max.max(1) {
            let old = self.events.pop_front().expect("over the cap, so not empty");
            if self.active_from == 0 {
                // It was in the active range: its aggregates leave with it.
                self.running.remove(specs, &old);
            } else {
                self.active_from -= 1;
            }
            dropped += 1;
        }
        dropped
    }

    fn observe_count(&mut self, n: usize, specs: &[AggSpec], ev: Event) -> AggValues {
        self.running.add(specs, &ev);
        self.events.push_back(ev);
        while self.events.len() > n {
            let old = self.events.pop_front().expect("non-empty");
            self.running.remove(specs, &old);
        }
        self.running.values(specs)
    }

    fn observe_time(
        &mut self,
        width: i64,
        lateness: i64,
        max: usize,
        specs: &[AggSpec],
        ev: Event,
    ) -> (AggValues, usize) {
        let ts = ev.ts;
        let capped;
        let values = if ts >= self.max_ts {
            // In order: the active range after advancing is exactly [ts − W, ts].
            self.events.push_back(ev.clone());
            self.max_ts = ts;
            self.running.add(specs, &ev);
            capped = self.cap(max, specs);
            let start = ts.saturating_sub(width);
            while self.active_from < self.events.len() && self.events[self.active_from].ts < start {
                let leaving = self.events[self.active_from].clone();
                self.running.remove(specs, &leaving);
                self.active_from += 1;
            }
            self.running.values(specs)
        } else {
            // Out of order: insert by (time, arrival); its own window is computed from
            // the retained events.
            let pos = self.events.partition_point(|e| (e.ts, e.seq) <= (ts, ev.seq));
            self.events.insert(pos, ev.clone());
            if ts >= self.max_ts.saturating_sub(width) {
                self.running.add(specs, &ev);
            } else if pos <= self.active_from {
                self.active_from += 1;
            }
            capped = self.cap(max, specs);
            let lo = self.events.partition_point(|e| e.ts < ts.saturating_sub(width));
            let hi = self.events.partition_point(|e| e.ts <= ts);
            let mut scratch = Running::new(specs);
            for e in self.events.range(lo..hi) {
                scratch.add(specs, e);
            }
            scratch.values(specs)
        };
        let keep_from = self.max_ts.saturating_sub(width).saturating_sub(lateness);
        while self.events.front().is_some_and(|e| e.ts < keep_from) {
            self.events.pop_front();
            self.active_from = self.active_from.saturating_sub(1);
        }
        (values, capped)
    }
}

#[cfg(test)]
mod tests;
