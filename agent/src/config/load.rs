//! Reading a config file: TOML errors and semantic errors both name the key and line.

use super::Config;
use std::fmt;
use std::path::{Path, PathBuf};

/// A config problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, if the config came from one.
    pub file: Option<PathBuf>,
    /// 1-based line and column, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted key path, e.g. `journal.max_bytes`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(col) = self.column {
                    write!(f, ":{col}")?;
                }
            }
            f.write_str(": ")?;
        } else if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Loads and validates a config file. Relative `rules.paths` are resolved against the
/// file's directory.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: Some(path.to_path_buf()),
        line: None,
        column: None,
        key: None,
        message: format!("cannot read config: {e}"),
    })?;
    let mut config = load_str(&text).map_err(|mut e| {
        e.file = Some(path.to_path_buf());
        e
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in &mut config.rules.paths {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    Ok(config)
}

/// Parses and validates config text.
pub fn load_str(text: &str) -> Result<Config, ConfigError> {
    let config: Config = parse_toml(text)?;
    validate(&config).map_err(|(key, message)| {
        let (line, column) = key_position(text, &key).unzip();
        ConfigError {
            file: None,
            line,
            column,
            key: Some(key),
            message,
        }
    })?;
    Ok(config)
}

/// Deserializes TOML text; errors carry the key path, line and column.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| located(text, None, &e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = (key != ".").then_some(key);
        located(text, key, e.inner())
    })
}

fn located(text: &str, key: Option<String>, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e.span().map(|s| line_col(text, s.start)).unzip();
    ConfigError {
        file: None,
        line,
        column,
        key,
        message: e.message().trim().to_string(),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Where `a.b[0].c` is set, from the parser's spans: the start of its key, however it
/// is written (inline table, quoted or dotted key). A key the file does not set (an
/// error about a default) is located at the deepest table on its path that it does.
pub fn key_position(text: &str, dotted: &str) -> Option<(usize, usize)> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut here: &DeValue<'_> = &DeValue::Table(root.into_inner());
    let mut found = None;
    for segment in key_path(dotted) {
        let next = match (here, segment) {
            (DeValue::Table(t), Segment::Key(name)) => t.iter().find(|(k, _)| k.get_ref() == name).map(|(k, v)| {
                // An explicit `[a.b]` header has the table's span; a key its own.
                (k.span().start, v.get_ref())
            }),
            (DeValue::Array(a), Segment::Index(i)) => a.get(i).map(|v| (v.span().start, v.get_ref())),
            _ => None,
        };
        let Some((start, value)) = next else { break };
        found = Some(start);
        here = value;
    }
    found.map(|offset| line_col(text, offset))
}

/// One step of a key path: `name` or `[index]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `a.b[0].c` → `a`, `b`, `[0]`, `c` (as `serde_path_to_error` and `validate` write them).
fn key_path(dotted: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in dotted.split('.') {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            out.push(Segment::Key(name));
        }
        while let Some((index, after)) = rest.split_once(']') {
            if let Ok(i) = index.parse() {
                out.push(Segment::Index(i));
            }
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    out
}

/// `[http]` limits: every timeout above zero, caps in range.
fn validate_http(h: &super::HttpConfig) -> Result<(), (String, String)> {
    for (key, d) in [
        ("http.header_timeout", h.header_timeout),
        ("http.body_timeout", h.body_timeout),
        ("http.idle_timeout", h.idle_timeout),
    ] {
        if d.get().is_zero() {
            return Err((key.into(), "must be more than 0s".into()));
        }
    }
    if h.max_connections == 0 || h.max_connections > 65_536 {
        return Err((
            "http.max_connections".into(),
            format!("{} is out of range; allowed: 1–65536", h.max_connections),
        ));
    }
    if h.max_batch_lines == 0 || h.max_batch_lines > 100_000 {
        return Err((
            "http.max_batch_lines".into(),
            format!("{} is out of range; allowed: 1–100000", h.max_batch_lines),
        ));
    }
    if h.max_concurrent_batches == 0 || h.max_concurrent_batches > h.max_connections {
        return Err((
            "http.max_concurrent_batches".into(),
            format!(
                "{} is out of range; allowed: 1–http.max_connections",
                h.max_concurrent_batches
            ),
        ));
    }
    Ok(())
}

/// Checks that need more than one field or the meaning of a value.
fn validate(c: &Config) -> Result<(), (String, String)> {
    let j = &c.journal;
    if j.max_batch_rows == 0 || j.max_batch_rows > 10_000 {
        return Err((
            "journal.max_batch_rows".into(),
            format!("{} is out of range; allowed: 1–10000", j.max_batch_rows),
        ));
    }
    if j.max_batch_delay.get() > std::time::Duration::from_millis(100) {
        return Err((
            "journal.max_batch_delay".into(),
            format!(
                "{} would hold every answer that long; allowed: 0ms–100ms",
                j.max_batch_delay
            ),
        ));
    }
    if j.max_bytes.get() < 64 * 1024 {
        return Err((
            "journal.max_bytes".into(),
            format!("{} is too small; allowed: at least 64KiB", j.max_bytes),
        ));
    }
    if j.dead_letter_max_bytes.get() < 1024 * 1024 {
        return Err((
            "journal.dead_letter_max_bytes".into(),
            format!(
                "{} is too small; allowed: at least 1MiB (a dead letter keeps up to 64 KiB)",
                j.dead_letter_max_bytes
            ),
        ));
    }
    let max_txn = c.intake.max_txn_bytes.get();
    if !(1024..=8 * 1024 * 1024).contains(&max_txn) {
        return Err((
            "intake.max_txn_bytes".into(),
            format!("{} is out of range; allowed: 1KiB–8MiB", c.intake.max_txn_bytes),
        ));
    }
    if c.http.max_body_bytes.get() < max_txn {
        return Err((
            "http.max_body_bytes".into(),
            format!(
                "{} is smaller than intake.max_txn_bytes ({}); a batch must hold one transaction at least",
                c.http.max_body_bytes, c.intake.max_txn_bytes
            ),
        ));
    }
    validate_http(&c.http)?;
    if j.prune_interval.get().is_zero() {
        return Err(("journal.prune_interval".into(), "must be more than 0s".into()));
    }
    let s = &c.sinks;
    if s.batch_records == 0 || s.batch_records > 100_000 {
        return Err((
            "sinks.batch_records".into(),
            format!("{} is out of range; allowed: 1–100000", s.batch_records),
        ));
    }
    if s.retry_initial_backoff.get().is_zero() || s.retry_initial_backoff > s.retry_max_backoff {
        return Err((
            "sinks.retry_initial_backoff".into(),
            "must be more than 0s and at most sinks.retry_max_backoff".into(),
        ));
    }
    if let Some(a) = &s.archive {
        if a.channels.is_empty() {
            return Err((
                "sinks.archive.channels".into(),
                "is empty; allowed: transactions, decisions, alerts".into(),
            ));
        }
        if a.max_file_bytes.get() < 1024 {
            return Err(("sinks.archive.max_file_bytes".into(), "allowed: at least 1KiB".into()));
        }
        // The files being written (one per channel) are never deleted: the budget must
        // hold them and one complete file besides.
        let least = a.max_file_bytes.get().saturating_mul(a.channels.len() as u64 + 1);
        if a.max_total_bytes.get() < least {
            return Err((
                "sinks.archive.max_total_bytes".into(),
                format!(
                    "{} cannot hold the {} files being written and one complete file; allowed: at least {} \
                     ((channels + 1) × max_file_bytes)",
                    a.max_total_bytes,
                    a.channels.len(),
                    tillgate_sdk::ByteSize(least)
                ),
            ));
        }
    }
    if let Some(m) = c.mqtt() {
        // Templates, and the password and TLS files read now: a missing file is a config
        // error at start, not a reconnect loop.
        tillgate_mqtt::check(m).map_err(|e| (e.key, e.message))?;
        // A payload up to the limit, its topic and properties must fit in a packet the
        // broker may send us; larger ones arrive and are refused visibly.
        let least = max_txn + 64 * 1024;
        if m.max_packet_bytes.get() < least {
            return Err((
                "mqtt.max_packet_bytes".into(),
                format!(
                    "{} cannot carry a transaction of intake.max_txn_bytes ({}) with its topic; allowed: at least {}",
                    m.max_packet_bytes,
                    c.intake.max_txn_bytes,
                    tillgate_sdk::ByteSize(least)
                ),
            ));
        }
    }
    if let Some(k) = c.kinesis() {
        tillgate_kinesis::check(k).map_err(|e| (e.key, e.message))?;
    }
    #[cfg(feature = "video")]
    if let Some(v) = &c.video {
        if v.enabled {
            tillgate_video::check(v).map_err(|e| (e.key, e.message))?;
        }
    }
    #[cfg(not(feature = "video"))]
    if c.video.is_some() {
        return Err((
            "video".into(),
            "this tillgate was built without cameras (cargo feature `video`); remove [video] or install a build with it".into(),
        ));
    }
    if let Some(secret) = &c.http.token {
        if secret.file.is_some() == secret.env.is_some() {
            return Err(("http.token".into(), "give exactly one of `file` or `env`".into()));
        }
    }
    if !c.http.listen.ip().is_loopback() && c.http.token.is_none() {
        return Err((
            "http.listen".into(),
            format!(
                "{} is reachable from the network, so terminals must authenticate: set \
                 http.token = {{ file = \"/etc/tillgate/http-token\" }}",
                c.http.listen
            ),
        ));
    }
    Ok(())
}
