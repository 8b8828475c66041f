//! Reporting windows: tumbling, hopping and session windows per key, half-open
//! `[start, end)`, epoch-aligned (plus an offset), emitted once when the watermark
//! (largest event time seen − allowed lateness) reaches their end. They feed the alerts
//! channel; they never change a decision.
//!
//! An event older than the watermark when it arrives is late: it is counted and left out
//! of reporting windows (the windows it belonged to may already be emitted).

use super::field::KeyId;
use super::window::{AggSpec, AggValues, Event, Running};
use std::collections::{BTreeMap, HashMap};

/// How a report cuts time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ReportWindow {
    /// Back-to-back windows of `size_ms`, starting at `offset_ms` (mod size) after the epoch.
    Tumbling { size_ms: i64, offset_ms: i64 },
    /// Windows of `size_ms` starting every `hop_ms`.
    Hopping { size_ms: i64, hop_ms: i64, offset_ms: i64 },
    /// Activity separated by at least `gap_ms`: `[first, last + gap)`.
    Session { gap_ms: i64 },
}

impl ReportWindow {
    /// How far back a restart must replay so open windows are rebuilt.
    pub fn replay_span_ms(&self) -> i64 {
        match self {
            ReportWindow::Tumbling { size_ms, .. } | ReportWindow::Hopping { size_ms, .. } => *size_ms,
            ReportWindow::Session { gap_ms } => *gap_ms,
        }
    }

    /// Starts of the fixed windows holding `ts`, oldest first.
    fn starts(&self, ts: i64) -> Vec<i64> {
        match *self {
            ReportWindow::Tumbling { size_ms, offset_ms } => {
                vec![(ts - offset_ms).div_euclid(size_ms) * size_ms + offset_ms]
            }
            ReportWindow::Hopping {
                size_ms,
                hop_ms,
                offset_ms,
            } => {
                let last = (ts - offset_ms).div_euclid(hop_ms) * hop_ms + offset_ms;
                let mut s = Vec::new();
                let mut start = last;
                while start > ts - size_ms {
                    s.push(start);
                    start -= hop_ms;
                }
                s.reverse();
                s
            }
            ReportWindow::Session { .. } => Vec::new(),
        }
    }
}

/// A window that reached its end.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedWindow {
    pub key: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub values: AggValues,
    /// Closed before the watermark reached its end, to make room (`max_keys`).
    pub early: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Open {
    end: i64,
    running: Running,
}

/// A key with open windows: its values as alerts show them, and how many windows.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct OpenKey {
    name: Box<str>,
    windows: usize,
}

/// The open windows of one report, over all keys (snapshotted as it is). Windows are
/// indexed by the key's id; its values joined by `/` are kept once per key, for the
/// alert.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ReportState {
    window: ReportWindow,
    lateness_ms: i64,
    max_ts: i64,
    /// (key, start) → open window, ordered so one key's windows are a range.
    open: BTreeMap<(KeyId, i64), Open>,
    /// end → (key, start), to close in end order without scanning.
    by_end: BTreeMap<(i64, KeyId, i64), ()>,
    /// Late events so far.
    pub late: u64,
    /// Keys with open windows: at most `max_keys`.
    keys: HashMap<KeyId, OpenKey>,
    max_keys: usize,
    /// Windows closed early to keep under `max_keys`, so far.
    pub closed_early: u64,
}

impl ReportState {
    /// No open window yet; at most `max_keys` keys with open windows.
    pub fn new(window: ReportWindow, lateness_ms: i64, max_keys: usize) -> Self {
        ReportState {
            window,
            lateness_ms,
            max_ts: i64::MIN,
            open: BTreeMap::new(),
            by_end: BTreeMap::new(),
            late: 0,
            keys: HashMap::new(),
            max_keys: max_keys.max(1),
            closed_early: 0,
        }
    }

    /// Whether a decoded state was made for this window, lateness and key cap (a
    /// report's definition, not the row, says how time is cut).
    pub fn is_for(&self, window: ReportWindow, lateness_ms: i64, max_keys: usize) -> bool {
        self.window == window && self.lateness_ms == lateness_ms && self.max_keys == max_keys.max(1)
    }

    /// Whether a decoded state fits aggregates `specs`: every open window indexed once
    /// by its end, and shaped as `Running::new(specs)`.
    pub fn fits(&self, specs: &[AggSpec]) -> bool {
        self.open.len() == self.by_end.len()
            && self.open.iter().all(|((key, start), o)| {
                o.running.fits(specs) && self.by_end.contains_key(&(o.end, *key, *start)) && self.keys.contains_key(key)
            })
            && self.keys.iter().all(|(key, k)| {
                k.windows > 0 && self.open.range((*key, i64::MIN)..=(*key, i64::MAX)).count() == k.windows
            })
    }

    /// Keys with open windows.
    pub fn open_keys(&self) -> usize {
        self.keys.len()
    }

    fn opened(&mut self, key: KeyId, name: &mut dyn FnMut() -> String) {
        self.keys
            .entry(key)
            .or_insert_with(|| OpenKey {
                name: name().into(),
                windows: 0,
            })
            .windows += 1;
    }

    fn removed(&mut self, key: KeyId) {
        if let Some(k) = self.keys.get_mut(&key) {
            k.windows -= 1;
            if k.windows == 0 {
                self.keys.remove(&key);
            }
        }
    }

    fn name(&self, key: KeyId) -> String {
        self.keys.get(&key).map(|k| k.name.to_string()).unwrap_or_default()
    }

    /// Room for a new key: the key whose window closes first (among windows closing
    /// together, the smallest key id: a hash, not the values' order) has all its windows
    /// closed now, flagged as early (a flood of new keys must not grow memory).
    fn make_room(&mut self, specs: &[AggSpec]) -> Vec<ClosedWindow> {
        let Some((&(_, key, _), _)) = self.by_end.first_key_value() else {
            return Vec::new();
        };
        let name = self.name(key);
        let starts: Vec<i64> = self
            .open
            .range((key, i64::MIN)..=(key, i64::MAX))
            .map(|((_, start), _)| *start)
            .collect();
        let mut closed = Vec::new();
        for start in starts {
            if let Some(o) = self.open.remove(&(key, start)) {
                self.by_end.remove(&(o.end, key, start));
                self.removed(key);
                self.closed_early += 1;
                closed.push(ClosedWindow {
                    key: name.clone(),
                    start_ms: start,
                    end_ms: o.end,
                    values: o.running.values(specs),
                    early: true,
                });
            }
        }
        closed
    }

    /// The watermark: largest event time seen minus the allowed lateness.
    pub fn watermark(&self) -> i64 {
        self.max_ts.saturating_sub(self.lateness_ms)
    }

    /// Open windows, over all keys.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// Adds `ev` for `key` (unless late), advances the watermark and returns the windows
    /// it closed, in end order. `name` gives the key's values as alerts show them (asked
    /// once, when the key opens a window).
    pub fn observe(
        &mut self,
        key: KeyId,
        mut name: impl FnMut() -> String,
        specs: &[AggSpec],
        ev: &Event,
    ) -> Vec<ClosedWindow> {
        if ev.ts < self.watermark() {
            self.late += 1;
            return Vec::new();
        }
        let mut closed = Vec::new();
        if !self.keys.contains_key(&key) && self.keys.len() >= self.max_keys {
            closed = self.make_room(specs);
        }
        let name: &mut dyn FnMut() -> String = &mut name;
        match self.window {
            ReportWindow::Session { gap_ms } => self.add_to_session(key, name, specs, ev, gap_ms),
            fixed => {
                let size = match fixed {
                    ReportWindow::Tumbling { size_ms, .. } | ReportWindow::Hopping { size_ms, .. } => size_ms,
                    ReportWindow::Session { .. } => unreachable!("handled above"),
                };
                for start in fixed.starts(ev.ts) {
                    self.window_at(key, name, start, start + size, specs)
                        .running
                        .add(ev.entry());
                }
            }
        }
        self.max_ts = self.max_ts.max(ev.ts);
        closed.extend(self.close(specs));
        closed
    }

    fn window_at(
        &mut self,
        key: KeyId,
        name: &mut dyn FnMut() -> String,
        start: i64,
        end: i64,
        specs: &[AggSpec],
    ) -> &mut Open {
        if !self.open.contains_key(&(key, start)) {
            self.opened(key, name);
            self.by_end.insert((end, key, start), ());
            self.open.insert(
                (key, start),
                Open {
                    end,
                    running: Running::new(specs),
                },
            );
        }
        self.open.get_mut(&(key, start)).expect("inserted above")
    }

    /// Sessions: the event joins (and merges) every open session of the key it is within
    /// `gap` of; otherwise it starts one.
    fn add_to_session(
        &mut self,
        key: KeyId,
        name: &mut dyn FnMut() -> String,
        specs: &[AggSpec],
        ev: &Event,
        gap: i64,
    ) {
        // Open sessions of this key that touch [ts − gap, ts + gap).
        let range = (key, i64::MIN)..=(key, i64::MAX);
        let touching: Vec<(i64, i64)> = self
            .open
            .range(range)
            .filter(|((_, start), o)| ev.ts > *start - gap && ev.ts < o.end)
            .map(|((_, start), o)| (*start, o.end))
            .collect();
        let mut merged = Running::new(specs);
        let mut start = ev.ts;
        let mut end = ev.ts + gap;
        let mut parts = Vec::new();
        for (s, e) in touching {
            let o = self.open.remove(&(key, s)).expect("listed above");
            self.by_end.remove(&(e, key, s));
            self.removed(key);
            start = start.min(s);
            end = end.max(e);
            parts.push(o.running);
        }
        for p in parts {
            merged.merge(&p);
        }
        merged.add(ev.entry());
        self.opened(key, name);
        self.by_end.insert((end, key, start), ());
        self.open.insert((key, start), Open { end, running: merged });
    }

    fn close(&mut self, specs: &[AggSpec]) -> Vec<ClosedWindow> {
        let wm = self.watermark();
        let mut closed = Vec::new();
        while let Some((&(end, key, start), _)) = self.by_end.first_key_value() {
            if end > wm {
                break;
            }
            self.by_end.pop_first();
            if let Some(o) = self.open.remove(&(key, start)) {
                let name = self.name(key);
                self.removed(key);
                closed.push(ClosedWindow {
                    key: name,
                    start_ms: start,
                    end_ms: end,
                    values: o.running.values(specs),
                    early: false,
                });
            }
        }
        // Windows ending together in the order of their keys' values (ids are hashes).
        closed.sort_by(|a, b| (a.end_ms, &a.key, a.start_ms).cmp(&(b.end_ms, &b.key, b.start_ms)));
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::window::AggKind;

    fn specs() -> Vec<AggSpec> {
        vec![AggSpec {
            name: "n".into(),
            kind: AggKind::Count,
            group: 0,
        }]
    }
    fn ev(ts: i64) -> Event {
        Event {
            ts,
            amount: 1,
            tags: Default::default(),
            mask: 0,
        }
    }
    /// Observes `ev` for the key named `key`.
    fn obs(r: &mut ReportState, key: &str, ev: &Event) -> Vec<ClosedWindow> {
        let id = KeyId::from(crate::rules::field::stable_hash(key));
        r.observe(id, || key.to_string(), &specs(), ev)
    }
    fn count(c: &ClosedWindow) -> i64 {
        match c.values.0[0] {
            crate::rules::window::aggregate::AggValue::Int(n) => n,
            _ => -1,
        }
    }

    #[test]
    fn tumbling_windows_are_half_open_and_emitted_once_past_the_watermark() {
        let mut r = ReportState::new(
            ReportWindow::Tumbling {
                size_ms: 100,
                offset_ms: 0,
            },
            10,
            100,
        );
        assert!(obs(&mut r, "k", &ev(0)).is_empty());
        assert!(obs(&mut r, "k", &ev(99)).is_empty());
        assert!(obs(&mut r, "k", &ev(100)).is_empty(), "100 starts the next window");
        assert!(obs(&mut r, "k", &ev(109)).is_empty(), "watermark 99 < end 100");
        let closed = obs(&mut r, "k", &ev(110));
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].start_ms, closed[0].end_ms, count(&closed[0])), (0, 100, 2));
        assert!(obs(&mut r, "k", &ev(50)).is_empty());
        assert_eq!(r.late, 1, "older than the watermark: late, not re-emitted");
    }

    #[test]
    fn hopping_windows_overlap() {
        let mut r = ReportState::new(
            ReportWindow::Hopping {
                size_ms: 100,
                hop_ms: 50,
                offset_ms: 0,
            },
            0,
            100,
        );
        obs(&mut r, "k", &ev(60));
        let closed = obs(&mut r, "k", &ev(1000));
        let spans: Vec<(i64, i64, i64)> = closed.iter().map(|c| (c.start_ms, c.end_ms, count(c))).collect();
        assert_eq!(spans, vec![(0, 100, 1), (50, 150, 1)]);
    }

    #[test]
    fn sessions_merge_when_a_gap_is_bridged() {
        let mut r = ReportState::new(ReportWindow::Session { gap_ms: 30 }, 100, 100);
        obs(&mut r, "k", &ev(0));
        obs(&mut r, "k", &ev(50));
        obs(&mut r, "k", &ev(25));
        let closed = obs(&mut r, "k", &ev(1000));
        let spans: Vec<(i64, i64, i64)> = closed.iter().map(|c| (c.start_ms, c.end_ms, count(c))).collect();
        assert_eq!(spans, vec![(0, 80, 3)]);
    }

    #[test]
    fn a_decoded_state_is_taken_only_for_the_window_lateness_and_cap_it_was_made_with() {
        let w = ReportWindow::Tumbling {
            size_ms: 100,
            offset_ms: 0,
        };
        let r = ReportState::new(w, 10, 5);
        assert!(r.is_for(w, 10, 5));
        let zero = ReportWindow::Tumbling {
            size_ms: 0,
            offset_ms: 0,
        };
        assert!(!r.is_for(zero, 10, 5), "a row's window would divide by its size");
        assert!(!r.is_for(w, 11, 5));
        assert!(!r.is_for(w, 10, 6));
    }

    #[test]
    fn a_flood_of_new_keys_closes_the_earliest_windows_early_and_counts_them() {
        let mut r = ReportState::new(
            ReportWindow::Tumbling {
                size_ms: 100,
                offset_ms: 0,
            },
            1_000,
            3,
        );
        let mut early = Vec::new();
        for (i, key) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            early.extend(obs(&mut r, key, &ev(10 + i as i64 * 100)));
        }
        assert_eq!(r.open_keys(), 3, "never more keys than max_keys");
        let keys: Vec<(&str, bool)> = early.iter().map(|c| (c.key.as_str(), c.early)).collect();
        assert_eq!(
            keys,
            vec![("a", true), ("b", true)],
            "the windows closing first went first"
        );
        assert_eq!(r.closed_early, 2);
        assert_eq!(r.open_windows(), 3);
    }
}
