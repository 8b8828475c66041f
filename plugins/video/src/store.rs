//! The on-disk fragment ring of one camera: every closed fragment is a playable MKV file
//! (header + Tags + Cluster) named by its start and end timecodes, written to a
//! temporary name, fsynced and renamed (then the directory fsynced), so after a crash
//! a fragment is either whole or absent. A fragment leaves when KVS acknowledged it, when
//! the ring is over `max_bytes` or when it is older than `retention` (both counted and
//! logged: a loss by policy), or when KVS refused it (moved to `dead/` with the reason).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// A stored fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub start_ms: u64,
    pub end_ms: u64,
    pub bytes: u64,
    pub path: PathBuf,
}

/// What is waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    pub fragments: u64,
    pub bytes: u64,
    /// Seconds of video (sum of fragment durations).
    pub seconds: f64,
    pub oldest_ms: Option<u64>,
}

/// Why a fragment left without being acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// The ring reached `max_bytes`.
    Full,
    /// Older than `retention`.
    Expired,
}

/// One camera's ring.
#[derive(Debug)]
pub struct FragmentStore {
    dir: PathBuf,
    max_bytes: u64,
    retention: Duration,
    entries: Mutex<BTreeMap<u64, Stored>>,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".mkv")?;
    let (start, end) = stem.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?))
}

impl FragmentStore {
    /// Opens (creating) `dir`, drops unfinished temporary files, and lists what a
    /// previous run left.
    pub fn open(dir: &Path, max_bytes: u64, retention: Duration) -> std::io::Result<FragmentStore> {
        fs::create_dir_all(dir)?;
        let mut entries = BTreeMap::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                fs::remove_file(entry.path())?;
                continue;
            }
            if let Some((start_ms, end_ms)) = parse_name(&name) {
                let bytes = entry.metadata()?.len();
                entries.insert(
                    start_ms,
                    Stored {
                        start_ms,
                        end_ms,
                        bytes,
                        path: entry.path(),
                    },
                );
            }
        }
        Ok(FragmentStore {
            dir: dir.to_path_buf(),
            max_bytes,
            retention,
            entries: Mutex::new(entries),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Stored>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a fragment durably (`header` then `body`), then evicts the oldest
    /// fragments while the ring is over `max_bytes`. Returns what was evicted.
    pub fn put(
        &self,
        start_ms: u64,
        end_ms: u64,
        header: &[u8],
        body: &[u8],
    ) -> std::io::Result<Vec<(Stored, Eviction)>> {
        let name = format!("{start_ms:013}-{end_ms:013}.mkv");
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(header)?;
            file.write_all(body)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        let bytes = (header.len() + body.len()) as u64;
        let mut entries = self.lock();
        entries.insert(
            start_ms,
            Stored {
                start_ms,
                end_ms,
                bytes,
                path,
            },
        );
        let mut evicted = Vec::new();
        let mut total: u64 = entries.values().map(|s| s.bytes).sum();
        while total > self.max_bytes && entries.len() > 1 {
            let Some((_, oldest)) = entries.pop_first() else { break };
            total -= oldest.bytes;
            let _ = fs::remove_file(&oldest.path);
            evicted.push((oldest, Eviction::Full));
        }
        Ok(evicted)
    }

    /// Removes fragments older than `retention` (by their end timecode).
    pub fn expire(&self, now_ms: u64) -> Vec<(Stored, Eviction)> {
        let horizon = now_ms.saturating_sub(self.retention.as_millis() as u64);
        let mut entries = self.lock();
        let old: Vec<u64> = entries
            .values()
            .filter(|s| s.end_ms < horizon)
            .map(|s| s.start_ms)
            .collect();
        old.into_iter()
            .filter_map(|k| entries.remove(&k))
            .map(|s| {
                let _ = fs::remove_file(&s.path);
                (s, Eviction::Expired)
            })
            .collect()
    }

    /// The first fragment starting after `after_ms` (or the oldest).
    pub fn next_after(&self, after_ms: Option<u64>) -> Option<Stored> {
        let entries = self.lock();
        match after_ms {
            Some(a) => entries.range(a + 1..).next().map(|(_, s)| s.clone()),
            None => entries.values().next().cloned(),
        }
    }

    /// Is the fragment starting at `start_ms` still stored?
    pub fn contains(&self, start_ms: u64) -> bool {
        self.lock().contains_key(&start_ms)
    }

    /// Removes an acknowledged fragment.
    pub fn remove(&self, start_ms: u64) -> std::io::Result<bool> {
        let removed = self.lock().remove(&start_ms);
        match removed {
            Some(s) => fs::remove_file(&s.path).map(|_| true),
            None => Ok(false),
        }
    }

    /// Moves a fragment KVS refused to `dead/`, with the reason beside it.
    pub fn dead_letter(&self, start_ms: u64, reason: &str) -> std::io::Result<Option<PathBuf>> {
        let Some(s) = self.lock().remove(&start_ms) else {
            return Ok(None);
        };
        let dead = self.dir.join("dead");
        fs::create_dir_all(&dead)?;
        let name = s.path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        let target = dead.join(&name);
        fs::rename(&s.path, &target)?;
        fs::write(target.with_extension("reason.txt"), format!("{reason}\n"))?;
        Ok(Some(target))
    }

    pub fn backlog(&self) -> Backlog {
        let entries = self.lock();
        Backlog {
            fragments: entries.len() as u64,
            bytes: entries.values().map(|s| s.bytes).sum(),
            seconds: entries
                .values()
                .map(|s| (s.end_ms - s.start_ms) as f64 / 1000.0)
                .sum::<f64>()
                .max(0.0),
            oldest_ms: entries.keys().next().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_survive_reopen_and_half_written_ones_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let store = FragmentStore::open(dir.path(), 1 << 20, Duration::from_secs(3600)).unwrap();
        store.put(1000, 3000, b"h", b"one").unwrap();
        store.put(3000, 5000, b"h", b"two").unwrap();
        fs::write(dir.path().join("0000000005000-0000000007000.mkv.tmp"), b"partial").unwrap();
        drop(store);
        let store = FragmentStore::open(dir.path(), 1 << 20, Duration::from_secs(3600)).unwrap();
        assert_eq!(store.backlog().fragments, 2);
        assert_eq!(store.backlog().seconds, 4.0);
        assert_eq!(store.next_after(None).unwrap().start_ms, 1000);
        assert_eq!(store.next_after(Some(1000)).unwrap().start_ms, 3000);
        assert!(store.next_after(Some(3000)).is_none());
        assert_eq!(fs::read(&store.next_after(None).unwrap().path).unwrap(), b"hone");
        assert!(!dir.path().join("0000000005000-0000000007000.mkv.tmp").exists());
        assert!(store.remove(1000).unwrap());
        assert!(!store.contains(1000));
    }

    #[test]
    fn the_ring_evicts_oldest_first_when_full_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = FragmentStore::open(dir.path(), 10, Duration::from_secs(10)).unwrap();
        assert!(store.put(1000, 2000, b"", b"aaaa").unwrap().is_empty());
        assert!(store.put(2000, 3000, b"", b"bbbb").unwrap().is_empty());
        let evicted = store.put(3000, 4000, b"", b"cccc").unwrap();
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].0.start_ms, 1000);
        assert_eq!(evicted[0].1, Eviction::Full);
        let expired = store.expire(13_500);
        assert_eq!(expired.iter().map(|e| e.0.start_ms).collect::<Vec<_>>(), vec![2000]);
        assert_eq!(store.backlog().fragments, 1);
    }

    #[test]
    fn refused_fragments_move_to_dead_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = FragmentStore::open(dir.path(), 1 << 20, Duration::from_secs(60)).unwrap();
        store.put(1000, 2000, b"", b"x").unwrap();
        let path = store.dead_letter(1000, "4006 invalid MKV").unwrap().unwrap();
        assert!(path.exists());
        assert!(fs::read_to_string(path.with_extension("reason.txt"))
            .unwrap()
            .contains("4006"));
        assert_eq!(store.backlog().fragments, 0);
        // Reopening does not pick up dead fragments.
        let store = FragmentStore::open(dir.path(), 1 << 20, Duration::from_secs(60)).unwrap();
        assert_eq!(store.backlog().fragments, 0);
    }
}
