//! Snapshots of the rule state: each rule's and report's windows as of a journal
//! sequence (its own: units are taken one at a time), with a fingerprint of the
//! definition that built them.
//!
//! A start (or a reload, or a rebuild after a failed commit) takes a unit's state from
//! the snapshot only when its fingerprint is the one the running definition has; that
//! unit then replays only the journal after the snapshot. A unit whose definition
//! changed, a new one, or one whose stored state cannot be read is rebuilt from its own
//! horizon, as without a snapshot.
//!
//! The fingerprint covers what shapes the state (filter, key, window, aggregates and
//! their filters, distinct fields, key cap, the deny lists those expressions read, the
//! encoding and the hash of distinct values) and nothing else: a changed `when`,
//! action, severity or description keeps the state.

use super::denylist::DenyList;
use super::field::{key_id_probe, stable_hash};
use super::spec::{CompiledReport, CompiledRule};
use sha2::{Digest, Sha256};
use std::fmt::Write;
use std::sync::Arc;

/// Bumped whenever a snapshotted type changes shape: an older snapshot then rebuilds.
const FORMAT: u32 = 5;

/// One rule's or report's state, as the journal stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSnapshot {
    /// `rule:<id>` or `report:<id>`.
    pub unit: String,
    /// The state holds every transaction up to this journal sequence.
    pub through_seq: u64,
    /// Of the definition that built the state (hex SHA-256).
    pub fingerprint: String,
    /// The state, encoded with postcard.
    pub state: Vec<u8>,
}

/// The rule state, unit by unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub units: Vec<UnitSnapshot>,
}

impl Snapshot {
    /// The stored state of `unit` and the sequence it holds, if it was built by the
    /// definition `fingerprint`.
    pub fn state_of(&self, unit: &str, fingerprint: &str) -> Option<(&[u8], u64)> {
        self.units
            .iter()
            .find(|u| u.unit == unit && u.fingerprint == fingerprint)
            .map(|u| (u.state.as_slice(), u.through_seq))
    }

    /// The oldest unit's sequence: the journal after it is what a start replays.
    pub fn oldest_seq(&self) -> Option<u64> {
        self.units.iter().map(|u| u.through_seq).min()
    }

    /// Bytes of encoded state.
    pub fn bytes(&self) -> usize {
        self.units.iter().map(|u| u.state.len()).sum()
    }
}

/// What a restore took from a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// The oldest sequence among the restored units: the journal after it is replayed.
    pub oldest: Option<u64>,
    /// Units whose state came from the snapshot: they replay only the journal after it.
    pub restored: Vec<String>,
    /// Units that replay their whole horizon: definition changed, new, or unreadable.
    pub rebuilt: Vec<String>,
}

impl Restored {
    /// Every unit came from the snapshot: nothing before it needs replaying. A decider
    /// that restored nothing (one that does not snapshot) is never complete.
    pub fn complete(&self) -> bool {
        !self.restored.is_empty() && self.rebuilt.is_empty()
    }
}

/// The snapshot name of a rule's state.
pub fn rule_unit(id: &str) -> String {
    format!("rule:{id}")
}

/// The snapshot name of a report's state.
pub fn report_unit(id: &str) -> String {
    format!("report:{id}")
}

/// Encodes a unit's state.
pub fn encode<T: serde::Serialize + ?Sized>(state: &T) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(state).map_err(|e| e.to_string())
}

/// Decodes a unit's state; `None` (the unit is rebuilt) when it cannot be read or
/// bytes are left over (the encoding of some other shape).
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Some(value),
        _ => None,
    }
}

/// The SHA-256 of a unit's stored state (hex): the journal keeps it beside the state
/// and drops a row whose state no longer matches it (SQLite checks no page contents).
pub fn state_digest(state: &[u8]) -> String {
    hex(&Sha256::digest(state))
}

/// The fingerprint of what shapes a rule's state.
pub fn rule_fingerprint(rule: &CompiledRule, lists: &[(String, Arc<DenyList>)]) -> String {
    let mut text = common(rule.filter.as_ref().map(|f| f.source.as_str()), &rule.conditions);
    let _ = write!(
        text,
        "key={:?}\nwindow={:?}\naggregates={:?}\ndistinct={:?}\nmax_keys={}\n",
        rule.key, rule.window, rule.aggregates, rule.distinct, rule.max_keys
    );
    text.push_str(&lists_text(lists, rule.filter.iter().chain(&rule.conditions)));
    digest(&text)
}

/// The fingerprint of what shapes a report's state.
pub fn report_fingerprint(report: &CompiledReport, lists: &[(String, Arc<DenyList>)]) -> String {
    let mut text = common(report.filter.as_ref().map(|f| f.source.as_str()), &report.conditions);
    let _ = write!(
        text,
        "key={:?}\nwindow={:?}\nlateness={}\naggregates={:?}\ndistinct={:?}\nmax_keys={}\n",
        report.key, report.window, report.lateness_ms, report.aggregates, report.distinct, report.max_keys
    );
    text.push_str(&lists_text(lists, report.filter.iter().chain(&report.conditions)));
    digest(&text)
}

/// The format, the distinct-value hash and key ids of this build (a different hash
/// would count one value twice, or not find a key), the filter and the aggregates'
/// filters.
fn common(filter: Option<&str>, conditions: &[super::cel::Expr]) -> String {
    let conditions: Vec<&str> = conditions.iter().map(|c| c.source.as_str()).collect();
    format!(
        "format={FORMAT}\nhash_probe={}\nkey_probe={}\nfilter={filter:?}\nconditions={conditions:?}\n",
        stable_hash("tillgate snapshot probe"),
        key_id_probe()
    )
}

/// The name and sorted entries of each list that `exprs` name (`lists.<name>`,
/// `lists["<name>"]`): a list nothing here reads does not shape the state.
fn lists_text<'e>(lists: &[(String, Arc<DenyList>)], exprs: impl Iterator<Item = &'e super::cel::Expr>) -> String {
    let sources: Vec<&str> = exprs.filter(|e| e.reads("lists")).map(|e| e.source.as_str()).collect();
    let named = |name: &str| {
        let forms = [
            format!("lists.{name}"),
            format!("lists[\"{name}\"]"),
            format!("lists['{name}']"),
        ];
        sources.iter().any(|s| forms.iter().any(|f| s.contains(f.as_str())))
    };
    let mut text = String::new();
    for (name, list) in lists.iter().filter(|(name, _)| named(name)) {
        let mut values: Vec<&str> = list.values().collect();
        values.sort_unstable();
        let _ = writeln!(text, "list {name}={values:?}");
    }
    text
}

fn digest(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}
