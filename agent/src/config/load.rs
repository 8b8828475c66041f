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
    super::validate::validate(&config).map_err(|(key, message)| {
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
