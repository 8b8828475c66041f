//! The engine's state in and out of snapshots (`rules/snapshot.rs`): each rule's keys
//! in least-recently-used order (so evictions after a restore are the ones the
//! uninterrupted run makes), each report's open windows as they are.

use super::{Engine, KeyHasher, RuleState};
use crate::rules::field::KeyId;
use crate::rules::report::ReportState;
use crate::rules::snapshot::{
    decode, encode, report_fingerprint, report_unit, rule_fingerprint, rule_unit, Restored, Snapshot, UnitSnapshot,
};
use crate::rules::window::KeyWindow;
use lru::LruCache;

impl RuleState {
    /// Keys, least recently used first.
    fn encode_keys(&self) -> Result<Vec<u8>, String> {
        let keys: Vec<(&KeyId, &KeyWindow)> = self.keys.iter().rev().collect();
        encode(&keys)
    }

    /// Takes the keys of `bytes` (least recently used first); false if unreadable.
    fn decode_keys(&mut self, bytes: &[u8]) -> bool {
        let Some(keys) = decode::<Vec<(KeyId, KeyWindow)>>(bytes) else {
            return false;
        };
        let mut cache = LruCache::with_hasher(self.keys.cap(), KeyHasher::default());
        for (key, window) in keys {
            cache.push(key, window);
        }
        self.keys = cache;
        true
    }
}

impl Engine {
    pub(super) fn snapshot_units(&self) -> Result<Vec<UnitSnapshot>, String> {
        let mut units = Vec::with_capacity(self.rules.len() + self.reports.len());
        for r in self.rules.iter().filter(|r| r.rule.window.is_some()) {
            units.push(UnitSnapshot {
                unit: rule_unit(&r.rule.id),
                fingerprint: rule_fingerprint(&r.rule, &self.deny_lists),
                state: r.encode_keys().map_err(|e| format!("rule {}: {e}", r.rule.id))?,
            });
        }
        for r in &self.reports {
            units.push(UnitSnapshot {
                unit: report_unit(&r.report.id),
                fingerprint: report_fingerprint(&r.report, &self.deny_lists),
                state: encode(&r.state).map_err(|e| format!("report {}: {e}", r.report.id))?,
            });
        }
        Ok(units)
    }

    pub(super) fn restore_units(&mut self, snapshot: &Snapshot) -> Restored {
        let mut outcome = Restored::default();
        let through = snapshot.through_seq;
        for r in self.rules.iter_mut().filter(|r| r.rule.window.is_some()) {
            let unit = rule_unit(&r.rule.id);
            let fingerprint = rule_fingerprint(&r.rule, &self.deny_lists);
            match snapshot.state_of(&unit, &fingerprint) {
                Some(bytes) if r.decode_keys(bytes) => {
                    r.covered_through = through;
                    outcome.restored.push(unit);
                }
                _ => {
                    r.keys.clear();
                    r.covered_through = 0;
                    outcome.rebuilt.push(unit);
                }
            }
        }
        for r in &mut self.reports {
            let unit = report_unit(&r.report.id);
            let fingerprint = report_fingerprint(&r.report, &self.deny_lists);
            match snapshot.state_of(&unit, &fingerprint).and_then(decode::<ReportState>) {
                Some(state) => {
                    r.state = state;
                    r.covered_through = through;
                    outcome.restored.push(unit);
                }
                None => {
                    r.state = ReportState::new(r.report.window, r.report.lateness_ms, r.report.max_keys);
                    r.covered_through = 0;
                    outcome.rebuilt.push(unit);
                }
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests;
