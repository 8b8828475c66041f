//! The on-disk fragment ring of one camera: every closed fragment is a playable MKV file
//! (header + Tags + Cluster) named by its start and end timecodes, written to a
//! temporary name, fsynced and renamed (then the directory fsynced), so after a crash
//! a fragment is either whole or absent. A fragment leaves when KVS acknowledged it, when
//! the ring is over `max_bytes` or when it is older than `retention` (both counted and
//! logged: a loss by policy), or when KVS refused it (moved to `dead/` with the reason).
//!
//! The budget, `max_bytes`, holds everything the ring keeps: fragments waiting to be
//! sent and refused ones in `dead/` (with their reasons). Over it, refused fragments go
//! first (oldest first), then the oldest unsent ones; each is counted. The only bytes
//! outside it are the one fragment being written (`.tmp`, removed if its write fails,
//! and at start) and the 13-byte timecode floor ([`crate::timeline`]), written with each
//! fragment.

use crate::timeline;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// A refused fragment in `dead/` made room (the ring reached `max_bytes`).
    DeadFull,
    /// A refused fragment in `dead/` older than `retention`.
    DeadExpired,
}

impl Eviction {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Eviction::Full => "full",
            Eviction::Expired => "expired",
            Eviction::DeadFull => "dead_full",
            Eviction::DeadExpired => "dead_expired",
        }
    }
}

/// One camera's ring.
#[derive(Debug)]
pub struct FragmentStore {
    dir: PathBuf,
    max_bytes: u64,
    retention: Duration,
    entries: Mutex<BTreeMap<u64, Stored>>,
    /// Refused fragments in `dead/` (bytes include their reason files).
    dead: Mutex<BTreeMap<u64, Stored>>,
    /// See [`FragmentStore::timecode_floor`].
    floor: AtomicU64,
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
        let dead = list_dead(&dir.join("dead"))?;
        let newest_end = entries.values().chain(dead.values()).map(|s| s.end_ms).max();
        let floor = timeline::read_floor(dir).max(newest_end.unwrap_or(0));
        Ok(FragmentStore {
            floor: AtomicU64::new(floor),
            dir: dir.to_path_buf(),
            max_bytes,
            retention,
            entries: Mutex::new(entries),
            dead: Mutex::new(dead),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Stored>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_dead(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Stored>> {
        self.dead.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The end of the newest fragment this ring ever stored (kept across restarts): no
    /// new fragment may start before it.
    pub fn timecode_floor(&self) -> u64 {
        self.floor.load(Ordering::Relaxed)
    }

    /// Bytes the ring holds: fragments waiting and refused ones.
    pub fn total_bytes(&self) -> u64 {
        let live: u64 = self.lock().values().map(|s| s.bytes).sum();
        live + self.lock_dead().values().map(|s| s.bytes).sum::<u64>()
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
        let write = || {
            let written = (|| {
                let mut file = fs::File::create(&tmp)?;
                file.write_all(header)?;
                file.write_all(body)?;
                file.sync_all()?;
                // The floor first: one ahead of a fragment that did not land is harmless.
                let floor = self.floor.fetch_max(end_ms, Ordering::Relaxed).max(end_ms);
                timeline::write_floor(&self.dir, floor)?;
                fs::rename(&tmp, &path)?;
                sync_dir(&self.dir)
            })();
            if written.is_err() {
                // What was written of it goes, so it holds no room.
                let _ = fs::remove_file(&tmp);
            }
            written
        };
        let mut evicted = Vec::new();
        if let Err(e) = write() {
            // The disk filled before the ring's budget did: the oldest refused or unsent
            // fragment makes room (counted), and the new one is tried once more.
            if e.raw_os_error() != Some(28) {
                return Err(e);
            }
            match self.evict_one() {
                Some(gone) => evicted.push(gone),
                None => return Err(e),
            }
            write()?;
        }
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
        let mut dead = self.lock_dead();
        let mut total: u64 =
            entries.values().map(|s| s.bytes).sum::<u64>() + dead.values().map(|s| s.bytes).sum::<u64>();
        while total > self.max_bytes {
            let (oldest, why) = if let Some((_, d)) = dead.pop_first() {
                (d, Eviction::DeadFull)
            } else if entries.len() > 1 {
                let (_, oldest) = entries.pop_first().expect("more than one");
                (oldest, Eviction::Full)
            } else {
                break;
            };
            total -= oldest.bytes;
            remove_fragment(&oldest.path);
            evicted.push((oldest, why));
        }
        Ok(evicted)
    }

    /// Deletes the oldest refused fragment, else the oldest unsent one.
    fn evict_one(&self) -> Option<(Stored, Eviction)> {
        if let Some((_, d)) = self.lock_dead().pop_first() {
            remove_fragment(&d.path);
            return Some((d, Eviction::DeadFull));
        }
        let (_, oldest) = self.lock().pop_first()?;
        remove_fragment(&oldest.path);
        Some((oldest, Eviction::Full))
    }

    /// Removes fragments older than `retention` (by their end timecode), refused ones
    /// in `dead/` included.
    pub fn expire(&self, now_ms: u64) -> Vec<(Stored, Eviction)> {
        let horizon = now_ms.saturating_sub(self.retention.as_millis() as u64);
        let mut out = Vec::new();
        for (map, why) in [
            (self.lock(), Eviction::Expired),
            (self.lock_dead(), Eviction::DeadExpired),
        ] {
            let mut map = map;
            let old: Vec<u64> = map
                .values()
                .filter(|s| s.end_ms < horizon)
                .map(|s| s.start_ms)
                .collect();
            for k in old {
                if let Some(s) = map.remove(&k) {
                    remove_fragment(&s.path);
                    out.push((s, why));
                }
            }
        }
        out
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
        let reason = format!("{reason}\n");
        fs::write(target.with_extension("reason.txt"), &reason)?;
        self.lock_dead().insert(
            s.start_ms,
            Stored {
                bytes: s.bytes + reason.len() as u64,
                path: target.clone(),
                ..s
            },
        );
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

/// Deletes a fragment file and, for a refused one, its reason.
fn remove_fragment(path: &Path) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("reason.txt"));
}

/// The refused fragments a previous run left in `dead/`.
fn list_dead(dead: &Path) -> std::io::Result<BTreeMap<u64, Stored>> {
    let mut out = BTreeMap::new();
    let entries = match fs::read_dir(dead) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((start_ms, end_ms)) = parse_name(&name) {
            let reason = fs::metadata(entry.path().with_extension("reason.txt")).map_or(0, |m| m.len());
            out.insert(
                start_ms,
                Stored {
                    start_ms,
                    end_ms,
                    bytes: entry.metadata()?.len() + reason,
                    path: entry.path(),
                },
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timecode_floor_is_the_newest_end_ever_stored_even_once_everything_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let open = || FragmentStore::open(dir.path(), 1 << 20, Duration::from_secs(3600)).unwrap();
        let store = open();
        assert_eq!(store.timecode_floor(), 0);
        store.put(1000, 3000, b"h", b"one").unwrap();
        store.put(3000, 5000, b"h", b"two").unwrap();
        assert_eq!(store.timecode_floor(), 5000);
        // Both acknowledged: the ring is empty, the floor stays, across a restart.
        store.remove(1000).unwrap();
        store.remove(3000).unwrap();
        drop(store);
        let store = open();
        assert_eq!((store.backlog().fragments, store.timecode_floor()), (0, 5000));
        // The floor file lost: the ring's own newest fragment still gives it.
        store.put(5000, 7000, b"h", b"three").unwrap();
        drop(store);
        fs::remove_file(dir.path().join(timeline::FLOOR_FILE)).unwrap();
        assert_eq!(open().timecode_floor(), 7000);
        // A refused fragment counts too (it was sent); still no floor file.
        let store = open();
        store.dead_letter(5000, "refused").unwrap();
        drop(store);
        assert_eq!(open().timecode_floor(), 7000);
    }

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

    #[test]
    fn refused_fragments_are_inside_the_budget_and_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = FragmentStore::open(dir.path(), 40, Duration::from_secs(3600)).unwrap();
        store.put(1000, 2000, b"", b"0123456789").unwrap();
        store.dead_letter(1000, "4006").unwrap().unwrap();
        store.put(2000, 3000, b"", b"0123456789").unwrap();
        store.put(3000, 4000, b"", b"0123456789").unwrap();
        assert_eq!(
            store.total_bytes(),
            35,
            "two fragments and a refused one with its reason"
        );
        let evicted = store.put(4000, 5000, b"", b"0123456789").unwrap();
        assert_eq!(
            evicted.iter().map(|(s, why)| (s.start_ms, *why)).collect::<Vec<_>>(),
            vec![(1000, Eviction::DeadFull)],
            "the refused fragment made room before any unsent one"
        );
        assert!(!dir
            .path()
            .join("dead")
            .join("0000000001000-0000000002000.reason.txt")
            .exists());
        assert!(
            store.put(5000, 6000, b"", b"0123456789").unwrap().is_empty(),
            "exactly full"
        );
        let evicted = store.put(6000, 7000, b"", b"0123456789").unwrap();
        assert_eq!(
            evicted.iter().map(|(s, why)| (s.start_ms, *why)).collect::<Vec<_>>(),
            vec![(2000, Eviction::Full)]
        );
        assert!(store.total_bytes() <= 40);
        // A reopened ring counts what dead/ holds.
        store.dead_letter(6000, "4006").unwrap();
        let before = store.total_bytes();
        drop(store);
        let store = FragmentStore::open(dir.path(), 40, Duration::from_secs(3600)).unwrap();
        assert_eq!(store.total_bytes(), before);
    }
}
