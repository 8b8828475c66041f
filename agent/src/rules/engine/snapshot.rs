//! The engine's state in and out of snapshots (`rules/snapshot.rs`): each rule's keys
//! in least-recently-used order (so evictions after a restore are the ones the
//! uninterrupted run makes), each report's open windows as they are.

use super::{Engine, KeyTable, RuleState};
use crate::rules::field::KeyId;
use crate::rules::report::ReportState;
use crate::rules::snapshot::{decode, encode, report_unit, rule_unit, Restored, Snapshot, UnitSnapshot};
use crate::rules::window::KeyWindow;

impl RuleState {
    /// Keys, least recently used first.
    fn encode_keys(&self) -> Result<Vec<u8>, String> {
        let keys: Vec<(&KeyId, &KeyWindow)> = self.keys.oldest_first().collect();
        encode(&keys)
    }

    /// Takes the keys of `bytes` (least recently used first); false if unreadable, not
    /// shaped for this rule's aggregates, or more keys than it may hold.
    fn decode_keys(&mut self, bytes: &[u8]) -> bool {
        let Some(keys) = decode::<Vec<(KeyId, KeyWindow)>>(bytes) else {
            return false;
        };
        let (specs, tags) = (&self.rule.aggregates, self.rule.distinct.len());
        let Some(window) = self.rule.window else {
            return false;
        };
        if keys.len() > self.keys.cap().get() || !keys.iter().all(|(_, w)| w.fits(window, specs, tags)) {
            return false;
        }
        let mut cache = KeyTable::new(self.keys.cap());
        for (key, window) in keys {
            if cache.get_mut(&key).is_some() {
                // A key twice: not a snapshot this build wrote.
                return false;
            }
            cache.push(key, window);
        }
        self.keys = cache;
        true
    }
}

impl Engine {
    /// Rules with a window, then reports.
    pub(super) fn unit_names(&self) -> Vec<String> {
        let rules = self
            .rules
            .iter()
            .filter(|r| r.rule.window.is_some())
            .map(|r| rule_unit(&r.rule.id));
        rules
            .chain(self.reports.iter().map(|r| report_unit(&r.report.id)))
            .collect()
    }

    pub(super) fn encode_unit(&self, unit: &str, through_seq: u64) -> Result<Option<UnitSnapshot>, String> {
        if let Some(r) = self
            .rules
            .iter()
            .find(|r| r.rule.window.is_some() && rule_unit(&r.rule.id) == unit)
        {
            return Ok(Some(UnitSnapshot {
                unit: unit.to_string(),
                through_seq,
                fingerprint: r.fingerprint.clone(),
                state: r.encode_keys().map_err(|e| format!("rule {}: {e}", r.rule.id))?,
            }));
        }
        if let Some(r) = self.reports.iter().find(|r| report_unit(&r.report.id) == unit) {
            return Ok(Some(UnitSnapshot {
                unit: unit.to_string(),
                through_seq,
                fingerprint: r.fingerprint.clone(),
                state: encode(&r.state).map_err(|e| format!("report {}: {e}", r.report.id))?,
            }));
        }
        Ok(None)
    }

    pub(super) fn restore_units(&mut self, snapshot: &Snapshot) -> Restored {
        let mut outcome = Restored::default();
        for r in self.rules.iter_mut().filter(|r| r.rule.window.is_some()) {
            let unit = rule_unit(&r.rule.id);
            match snapshot.state_of(&unit, &r.fingerprint) {
                Some((bytes, through)) if r.decode_keys(bytes) => {
                    r.covered_through = through;
                    outcome.oldest = Some(outcome.oldest.map_or(through, |o| o.min(through)));
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
            let stored = snapshot.state_of(&unit, &r.fingerprint);
            let decoded = stored.and_then(|(bytes, through)| Some((decode::<ReportState>(bytes)?, through)));
            let report = &r.report;
            match decoded.filter(|(state, _)| {
                state.is_for(report.window, report.lateness_ms, report.max_keys) && state.fits(&report.aggregates)
            }) {
                Some((state, through)) => {
                    r.state = state;
                    r.covered_through = through;
                    outcome.oldest = Some(outcome.oldest.map_or(through, |o| o.min(through)));
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
