//! Deny lists: files of one value per line (`#` starts a comment).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A loaded deny list.
#[derive(Debug, Clone, Default)]
pub struct DenyList {
    /// Where it came from, for reasons and errors.
    pub path: PathBuf,
    values: HashSet<String>,
}

impl DenyList {
    /// Reads `path`.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Ok(Self::parse(path, &text))
    }

    /// Parses list text.
    pub fn parse(path: &Path, text: &str) -> Self {
        let values = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        DenyList {
            path: path.to_path_buf(),
            values,
        }
    }

    /// Whether `value` is listed.
    pub fn contains(&self, value: &str) -> bool {
        self.values.contains(value)
    }

    /// Every entry.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.iter().map(String::as_str)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The file name, for hit reasons.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}
