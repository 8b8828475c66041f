//! What `GET /v1/status` and `tillgate status` report: per sink backlog and the age of
//! its oldest unsent record, dead letters, decisions and rule hits, journal size.

use crate::http::AppState;
use crate::journal::{DeadLetterRow, JournalReader};
use prometheus::core::Collector;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;

/// The report's own keys: no component's status section may take one.
pub const FIXED_KEYS: [&str; 10] = [
    "version",
    "state",
    "uptime_s",
    "journal",
    "sinks",
    "dead_letters",
    "decisions",
    "rule_hits",
    "active_rules",
    "active_reports",
];

/// The whole report.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub state: AgentState,
    pub uptime_s: u64,
    pub journal: JournalStatus,
    pub sinks: Vec<SinkReport>,
    pub dead_letters: DeadLetters,
    pub decisions: BTreeMap<String, u64>,
    pub rule_hits: BTreeMap<String, u64>,
    /// Rules and reports deciding now (empty when read from a stopped agent's journal).
    #[serde(default)]
    pub active_rules: Vec<String>,
    #[serde(default)]
    pub active_reports: Vec<String>,
    /// Each running component's section, by key (`mqtt`, `cameras`), as it reports it;
    /// `components::status_views` says how a person reads each.
    #[serde(flatten)]
    pub components: BTreeMap<String, serde_json::Value>,
}

/// Where the agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum AgentState {
    /// Taking transactions.
    Running,
    /// Stopping: intake closed, sinks shipping the backlog until the drain deadline.
    Draining,
    /// Not running: the report was read from the journal file alone.
    Stopped,
}

/// The journal's size and position.
#[derive(Debug, Serialize, Deserialize)]
pub struct JournalStatus {
    pub path: String,
    pub used_bytes: u64,
    pub max_bytes: Option<u64>,
    pub full: bool,
    pub last_seq: u64,
    /// Unsent rows deleted because the journal was full (`on_full = "evict_oldest"`).
    pub evicted_records: u64,
    /// Transactions replayed into the rules at start (state rebuilt), and how long it took.
    #[serde(default)]
    pub replayed_at_start: u64,
    #[serde(default)]
    pub replay_seconds: f64,
    /// The start restored the rules from the snapshot at this sequence first (0: none).
    #[serde(default)]
    pub restored_snapshot_seq: u64,
    /// The rules' state is being rebuilt now; transactions wait for it.
    #[serde(default)]
    pub rebuilding_rules: bool,
    /// The WAL's size (part of `used_bytes`).
    #[serde(default)]
    pub wal_bytes: u64,
    /// Stored dead letters (their own budget, not part of `used_bytes`).
    #[serde(default)]
    pub dead_letter_bytes: u64,
}

/// One sink.
#[derive(Debug, Serialize, Deserialize)]
pub struct SinkReport {
    pub name: String,
    pub channels: Vec<String>,
    pub cursor: u64,
    pub backlog_records: u64,
    pub oldest_unsent_age_s: Option<f64>,
    pub last_error: Option<String>,
    pub last_success_ms: Option<i64>,
}

/// Dead letters: how many, and the latest few.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeadLetters {
    pub count: u64,
    pub recent: Vec<DeadLetterSummary>,
}

/// A dead letter, without its raw bytes.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeadLetterSummary {
    pub id: i64,
    pub received_ms: i64,
    pub source: String,
    pub reason: String,
}

impl From<DeadLetterRow> for DeadLetterSummary {
    fn from(r: DeadLetterRow) -> Self {
        DeadLetterSummary {
            id: r.id,
            received_ms: r.received_ms,
            source: r.source,
            reason: r.reason,
        }
    }
}

fn age_s(received_ms: Option<i64>) -> Option<f64> {
    received_ms.map(|ms| ((chrono::Utc::now().timestamp_millis() - ms).max(0)) as f64 / 1000.0)
}

/// Sums a counter vector by one of its labels.
fn by_label(c: &prometheus::IntCounterVec, name: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for family in c.collect() {
        for m in family.get_metric() {
            let label = m
                .get_label()
                .iter()
                .find(|l| l.name() == name)
                .map(|l| l.value().to_string())
                .unwrap_or_default();
            *out.entry(label).or_insert(0) += m.get_counter().get_value() as u64;
        }
    }
    out
}

/// Status of a running agent.
pub fn collect(state: &AppState) -> rusqlite::Result<StatusReport> {
    let active = state.active_rules.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut reader = state.journal.reader()?;
    let js = state.journal.state();
    let mut sinks = Vec::new();
    for s in &state.sinks {
        let cursor = state.journal.cursor(&s.name);
        let backlog = reader.backlog(cursor, &s.channels)?;
        let last = s.last_success_ms.load(Ordering::Relaxed);
        sinks.push(SinkReport {
            name: s.name.clone(),
            channels: s.channels.iter().map(|c| c.to_string()).collect(),
            cursor,
            backlog_records: backlog.records,
            oldest_unsent_age_s: age_s(backlog.oldest_received_ms),
            last_error: s.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            last_success_ms: (last > 0).then_some(last),
        });
    }
    Ok(StatusReport {
        version: env!("CARGO_PKG_VERSION").into(),
        state: if state.draining.load(Ordering::Acquire) {
            AgentState::Draining
        } else {
            AgentState::Running
        },
        uptime_s: state.started.elapsed().as_secs(),
        journal: JournalStatus {
            path: state.journal.path().display().to_string(),
            used_bytes: js.used_bytes.load(Ordering::Acquire),
            max_bytes: Some(state.metrics.journal_max_bytes.get() as u64),
            full: js.full.load(Ordering::Acquire),
            last_seq: js.last_seq.load(Ordering::Acquire),
            evicted_records: js.evicted.load(Ordering::Acquire),
            replayed_at_start: js.replayed.load(Ordering::Acquire),
            replay_seconds: js.replay_ms.load(Ordering::Acquire) as f64 / 1000.0,
            restored_snapshot_seq: js.restored_from_snapshot.load(Ordering::Acquire),
            rebuilding_rules: js.replaying.load(Ordering::Acquire),
            wal_bytes: js.wal_bytes.load(Ordering::Acquire),
            dead_letter_bytes: js.dead_letter_bytes.load(Ordering::Acquire),
        },
        sinks,
        dead_letters: dead_letters(&reader)?,
        decisions: by_label(&state.metrics.decisions, "decision"),
        rule_hits: by_label(&state.metrics.rule_hits, "rule"),
        active_rules: active.0,
        active_reports: active.1,
        components: state.components.iter().map(|c| (c.key.to_string(), c.read())).collect(),
    })
}

fn dead_letters(reader: &JournalReader) -> rusqlite::Result<DeadLetters> {
    Ok(DeadLetters {
        count: reader.dead_letter_count()?,
        recent: reader.recent_dead_letters(5)?.into_iter().map(Into::into).collect(),
    })
}

/// Status read from the journal file alone, when the agent is not running. Sinks are
/// those with a stored cursor; live counters (decisions, rule hits) are not available.
pub fn offline(path: &Path) -> rusqlite::Result<StatusReport> {
    let mut reader = JournalReader::open(path)?;
    let mut sinks = Vec::new();
    for (name, cursor) in reader.cursors()? {
        let backlog = reader.backlog(cursor, &tillgate_sdk::Channel::ALL)?;
        sinks.push(SinkReport {
            name,
            channels: vec!["(unknown while stopped: counted over all channels)".into()],
            cursor,
            backlog_records: backlog.records,
            oldest_unsent_age_s: age_s(backlog.oldest_received_ms),
            last_error: None,
            last_success_ms: None,
        });
    }
    Ok(StatusReport {
        version: env!("CARGO_PKG_VERSION").into(),
        state: AgentState::Stopped,
        uptime_s: 0,
        journal: JournalStatus {
            path: path.display().to_string(),
            used_bytes: reader.used_bytes()?,
            max_bytes: None,
            full: false,
            last_seq: reader.last_seq()?,
            evicted_records: reader.evicted()?,
            replayed_at_start: 0,
            replay_seconds: 0.0,
            restored_snapshot_seq: 0,
            rebuilding_rules: false,
            wal_bytes: 0,
            dead_letter_bytes: 0,
        },
        sinks,
        dead_letters: dead_letters(&reader)?,
        decisions: BTreeMap::new(),
        rule_hits: BTreeMap::new(),
        active_rules: Vec::new(),
        active_reports: Vec::new(),
        components: BTreeMap::new(),
    })
}

/// Updates the per-sink backlog gauges (called on scrape).
pub fn refresh_backlog_metrics(state: &AppState) -> rusqlite::Result<()> {
    let mut reader = state.journal.reader()?;
    for s in &state.sinks {
        let backlog = reader.backlog(state.journal.cursor(&s.name), &s.channels)?;
        state
            .metrics
            .sink_backlog
            .with_label_values(&[&s.name])
            .set(backlog.records as i64);
        let age = age_s(backlog.oldest_received_ms).unwrap_or(0.0);
        state
            .metrics
            .sink_oldest_age
            .with_label_values(&[&s.name])
            .set(age as i64);
    }
    Ok(())
}

/// A person's view of the report.
pub fn render_text(r: &StatusReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "tillgate {} — {} (up {}s)", r.version, r.state, r.uptime_s);
    write_journal(&mut s, &r.journal);
    write_sinks(&mut s, &r.sinks);
    write_rules(&mut s, r);
    write_components(&mut s, &r.components);
    let _ = writeln!(s, "dead letters {}", r.dead_letters.count);
    for d in &r.dead_letters.recent {
        let _ = writeln!(s, "  #{} {}: {}", d.id, d.source, d.reason);
    }
    if !r.decisions.is_empty() {
        let parts: Vec<String> = r.decisions.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "decisions {}", parts.join(", "));
    }
    for (rule, n) in &r.rule_hits {
        let _ = writeln!(s, "rule     {rule:<28} {n} hits");
    }
    s
}

fn write_journal(s: &mut String, j: &JournalStatus) {
    use std::fmt::Write;
    let max = j
        .max_bytes
        .map(|m| format!(" of {}", tillgate_sdk::ByteSize(m)))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "journal  {}  {}{} (WAL {}; dead letters {} apart){}  last seq {}  evicted unsent {}",
        j.path,
        tillgate_sdk::ByteSize(j.used_bytes),
        max,
        tillgate_sdk::ByteSize(j.wal_bytes),
        tillgate_sdk::ByteSize(j.dead_letter_bytes),
        if j.full { "  FULL: refusing input" } else { "" },
        j.last_seq,
        j.evicted_records
    );
    if j.rebuilding_rules {
        let _ = writeln!(
            s,
            "rules    rebuilding state from the journal; transactions wait for it"
        );
    } else if j.restored_snapshot_seq > 0 {
        let _ = writeln!(
            s,
            "rules    state restored at start from the snapshot (oldest unit at seq {}), then {} journaled transactions replayed ({:.2}s in all)",
            j.restored_snapshot_seq, j.replayed_at_start, j.replay_seconds
        );
    } else if j.replayed_at_start > 0 {
        let _ = writeln!(
            s,
            "rules    state rebuilt at start from {} journaled transactions in {:.2}s",
            j.replayed_at_start, j.replay_seconds
        );
    }
}

fn write_sinks(s: &mut String, sinks: &[SinkReport]) {
    use std::fmt::Write;
    for k in sinks {
        let age = k
            .oldest_unsent_age_s
            .map(|a| format!("{a:.1}s"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "sink     {:<12} backlog {:>8}  oldest unsent {:>8}  cursor {}{}",
            k.name,
            k.backlog_records,
            age,
            k.cursor,
            k.last_error
                .as_ref()
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default()
        );
    }
}

fn write_rules(s: &mut String, r: &StatusReport) {
    use std::fmt::Write;
    if !r.active_rules.is_empty() || !r.active_reports.is_empty() {
        let _ = writeln!(
            s,
            "rules    {} active, {} reports: {}",
            r.active_rules.len(),
            r.active_reports.len(),
            r.active_rules
                .iter()
                .chain(&r.active_reports)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// Each component's section through its view; one this build cannot read, as it came.
fn write_components(s: &mut String, components: &BTreeMap<String, serde_json::Value>) {
    use std::fmt::Write;
    for (key, value) in components {
        let lines = crate::components::status_view(key)
            .map(|view| view.lines(value))
            .unwrap_or_default();
        let empty = value.is_null() || value.as_array().is_some_and(Vec::is_empty);
        if lines.is_empty() && !empty {
            // A section this build cannot read (another version's or build's): as it came.
            let _ = writeln!(s, "{key:<8} {value}");
        }
        for line in lines {
            let _ = writeln!(s, "{line}");
        }
    }
}
