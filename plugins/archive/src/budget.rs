//! The archive's disk budget: `max_total_bytes` for everything it holds, `retention`
//! for complete files. Only whole complete files are deleted, oldest first (by the
//! first sequence number in their name, across channels); each deletion is counted
//! (`tillgate_archive_files_deleted_total{reason}`) and logged. A file being written is
//! never deleted: the configuration check keeps `max_total_bytes` above what the open
//! files can reach.

use crate::file::PARTIAL;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Why a file was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The archive was over `max_total_bytes`.
    MaxTotalBytes,
    /// The file was older than `retention`.
    Retention,
}

impl Reason {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::MaxTotalBytes => "max_total_bytes",
            Reason::Retention => "retention",
        }
    }
}

/// One file of the archive.
#[derive(Debug)]
struct Entry {
    path: PathBuf,
    bytes: u64,
    modified: SystemTime,
    /// The first sequence number, from `{channel}-{seq}-{stamp}.ndjson…`.
    first_seq: u64,
    complete: bool,
}

/// What enforcing the budget did.
#[derive(Debug, Default)]
pub struct Enforced {
    /// Deleted files: (reason, path, bytes).
    pub deleted: Vec<(Reason, PathBuf, u64)>,
    /// Bytes the archive holds afterwards.
    pub total: u64,
}

/// Deletes what `max_total` and `retention` (zero: none) no longer allow from the
/// channel directories `dirs`.
pub fn enforce(dirs: &[PathBuf], max_total: u64, retention: Duration) -> std::io::Result<Enforced> {
    let mut files = Vec::new();
    for dir in dirs {
        list(dir, &mut files)?;
    }
    files.sort_by_key(|f| (f.first_seq, f.modified));
    let mut out = Enforced {
        total: files.iter().map(|f| f.bytes).sum(),
        ..Enforced::default()
    };
    let now = SystemTime::now();
    for f in files.iter().filter(|f| f.complete) {
        let expired = !retention.is_zero() && now.duration_since(f.modified).is_ok_and(|age| age > retention);
        let reason = if expired {
            Reason::Retention
        } else if out.total > max_total {
            Reason::MaxTotalBytes
        } else {
            continue;
        };
        std::fs::remove_file(&f.path)?;
        out.total -= f.bytes;
        out.deleted.push((reason, f.path.clone(), f.bytes));
    }
    Ok(out)
}

fn list(dir: &Path, out: &mut Vec<Entry>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let path = entry.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let first_seq = name.split('-').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        out.push(Entry {
            complete: !name.ends_with(PARTIAL),
            bytes: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            first_seq,
            path,
        });
    }
    Ok(())
}
