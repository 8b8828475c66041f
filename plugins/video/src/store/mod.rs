//! The on-disk fragment ring of one camera: every closed fragment is a playable MKV file
//! (header + Tags + Cluster) named by its start and end timecodes, written to a
//! temporary name, fsynced and renamed (then the directory fsynced), so after a crash
//! a fragment is either whole or absent. A fragment waits for upload at the ring's top,
//! or — for a camera that uploads only events, or nothing — sits in `local/` until an
//! upload window ([`windows`]) chooses it. It leaves the backlog when KVS acknowledged it
//! (moved to `sent/`, kept for local clips), or when KVS refused it (moved to `dead/`
//! with the reason); it leaves the disk when the ring is over `max_bytes` or older than
//! `retention`.
//!
//! The budget, `max_bytes`, holds everything the ring keeps: local-only fragments in
//! `local/`, acknowledged ones in `sent/`, fragments waiting to be sent, and refused ones
//! in `dead/` (with their reasons). Over it, local-only and acknowledged fragments go
//! first, the oldest of either (neither is a loss: nobody asked to upload them, or KVS
//! has them; counted as recycled), then refused ones, then the oldest unsent ones (a
//! loss by policy, counted and logged). The only bytes outside it are the one fragment
//! being written (`.tmp`, removed if its write fails, and at start), the 13-byte timecode floor
//! ([`crate::timeline`]), written when fragments leave the disk (each fragment's name
//! records its end while it is there), and the upload windows (at most 28 KB).

mod events;
pub mod windows;

pub use events::{Asked, WindowOutcome};

use crate::config::UploadMode;
use crate::timeline;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use windows::Windows;

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
    /// A fragment no upload window chose made room or aged out (not a loss: the camera
    /// uploads only events, or nothing).
    Local,
    /// An acknowledged fragment kept for clips made room or aged out (not a loss).
    Sent,
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
            Eviction::Local => "local",
            Eviction::Sent => "sent",
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
    /// Acknowledged fragments in `sent/`, kept for clips.
    sent: Mutex<BTreeMap<u64, Stored>>,
    /// Fragments no upload window chose, in `local/`.
    local: Mutex<BTreeMap<u64, Stored>>,
    /// Events mode: what to upload. Locked before the shelves.
    windows: Mutex<Windows>,
    mode: UploadMode,
    /// One past the newest start ever queued for upload (0: none): an older fragment
    /// would reach KVS out of order, so a window does not queue it.
    queue_floor: AtomicU64,
    /// The newest end of a fragment that left the disk (this run).
    evicted_through: AtomicU64,
    /// See [`FragmentStore::timecode_floor`].
    floor: AtomicU64,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// A fragment file's (start, end) timecodes from its name, `<start>-<end>.mkv`.
pub(crate) fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".mkv")?;
    let (start, end) = stem.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?))
}

impl FragmentStore {
    /// Opens (creating) `dir`, drops unfinished temporary files, and lists what a
    /// previous run left. `mode` decides where new fragments go.
    pub fn open(dir: &Path, max_bytes: u64, retention: Duration, mode: UploadMode) -> std::io::Result<FragmentStore> {
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
        let dead = list_shelf(&dir.join("dead"))?;
        let sent = list_shelf(&dir.join("sent"))?;
        if mode != UploadMode::Continuous {
            // Here, not in put(): a full disk must not keep a fragment from being stored.
            fs::create_dir_all(dir.join("local"))?;
        }
        let local = list_shelf(&dir.join("local"))?;
        let newest_end = entries
            .values()
            .chain(dead.values())
            .chain(sent.values())
            .chain(local.values())
            .map(|s| s.end_ms)
            .max();
        let floor = timeline::read_floor(dir).max(newest_end.unwrap_or(0));
        let queue_floor = entries.keys().chain(sent.keys()).max().map_or(0, |s| s + 1);
        let mut windows = Windows::load(dir);
        if windows.end_before(newest_end.unwrap_or(0)) {
            let _ = windows.save();
        }
        Ok(FragmentStore {
            floor: AtomicU64::new(floor),
            dir: dir.to_path_buf(),
            max_bytes,
            retention,
            entries: Mutex::new(entries),
            dead: Mutex::new(dead),
            sent: Mutex::new(sent),
            local: Mutex::new(local),
            windows: Mutex::new(windows),
            mode,
            queue_floor: AtomicU64::new(queue_floor),
            evicted_through: AtomicU64::new(0),
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

    fn lock_sent(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Stored>> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_local(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Stored>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_windows(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn mode(&self) -> UploadMode {
        self.mode
    }

    /// The end of the newest fragment this ring ever stored (kept across restarts): no
    /// new fragment may start before it.
    pub fn timecode_floor(&self) -> u64 {
        self.floor.load(Ordering::Relaxed)
    }

    /// Writes the floor before fragments that record it leave the disk. A failure is
    /// logged: the ring's remaining files still give a floor at the next start.
    fn persist_floor(&self) {
        let floor = self.timecode_floor();
        if let Err(e) = timeline::write_floor(&self.dir, floor).and_then(|()| sync_dir(&self.dir)) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the timecode floor");
        }
    }

    /// Bytes the ring holds: fragments waiting, refused, acknowledged and local ones.
    pub fn total_bytes(&self) -> u64 {
        let live: u64 = self.lock().values().map(|s| s.bytes).sum();
        let sent: u64 = self.lock_sent().values().map(|s| s.bytes).sum();
        let local: u64 = self.lock_local().values().map(|s| s.bytes).sum();
        live + sent + local + self.lock_dead().values().map(|s| s.bytes).sum::<u64>()
    }

    /// Stores a fragment durably (`header` then `body`) — for upload, or in `local/`
    /// when the camera uploads only what a window chooses — then evicts the oldest
    /// fragments while the ring is over `max_bytes`. Returns what was evicted.
    pub fn put(
        &self,
        start_ms: u64,
        end_ms: u64,
        header: &[u8],
        body: &[u8],
    ) -> std::io::Result<Vec<(Stored, Eviction)>> {
        // Held until the fragment is listed, so a window asked for meanwhile sees it.
        let mut windows = self.lock_windows();
        let upload = match self.mode {
            UploadMode::Continuous => true,
            UploadMode::Off => false,
            UploadMode::Events => windows.chooses(start_ms, end_ms),
        };
        if windows.end_before(start_ms) {
            // Windows this fragment is past can choose nothing more.
            if let Err(e) = windows.save() {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the upload windows");
            }
        }
        let shelf = if upload {
            self.dir.clone()
        } else {
            self.dir.join("local")
        };
        let name = format!("{start_ms:013}-{end_ms:013}.mkv");
        let path = shelf.join(&name);
        let tmp = shelf.join(format!("{name}.tmp"));
        let write = || {
            let written = (|| {
                let mut file = fs::File::create(&tmp)?;
                file.write_all(header)?;
                file.write_all(body)?;
                file.sync_all()?;
                fs::rename(&tmp, &path)?;
                sync_dir(&shelf)
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
        // The fragment's name records its end: the floor file is only written when
        // fragments leave the disk (evict_one, expire).
        self.floor.fetch_max(end_ms, Ordering::Relaxed);
        let bytes = (header.len() + body.len()) as u64;
        let stored = Stored {
            start_ms,
            end_ms,
            bytes,
            path,
        };
        let mut entries = self.lock();
        let mut dead = self.lock_dead();
        let mut sent = self.lock_sent();
        let mut local = self.lock_local();
        if upload {
            entries.insert(start_ms, stored);
            self.queue_floor.fetch_max(start_ms + 1, Ordering::Relaxed);
        } else {
            local.insert(start_ms, stored);
        }
        drop(windows);
        let mut total: u64 = [&*entries, &*dead, &*sent, &*local]
            .iter()
            .map(|m| m.values().map(|s| s.bytes).sum::<u64>())
            .sum();
        while total > self.max_bytes {
            let (oldest, why) = if let Some(recycled) = pop_recyclable(&mut local, &mut sent) {
                recycled
            } else if let Some((_, d)) = dead.pop_first() {
                (d, Eviction::DeadFull)
            } else if entries.len() > 1 {
                let (_, oldest) = entries.pop_first().expect("more than one");
                (oldest, Eviction::Full)
            } else {
                break;
            };
            total -= oldest.bytes;
            remove_fragment(&oldest.path);
            self.evicted_through.fetch_max(oldest.end_ms, Ordering::Relaxed);
            evicted.push((oldest, why));
        }
        Ok(evicted)
    }

    /// Deletes the oldest local-only or acknowledged fragment, else the oldest refused
    /// one, else the oldest unsent one.
    fn evict_one(&self) -> Option<(Stored, Eviction)> {
        self.persist_floor();
        let gone = self.evict_one_shelf();
        if let Some((s, _)) = &gone {
            self.evicted_through.fetch_max(s.end_ms, Ordering::Relaxed);
        }
        gone
    }

    fn evict_one_shelf(&self) -> Option<(Stored, Eviction)> {
        let recycled = {
            let (mut sent, mut local) = (self.lock_sent(), self.lock_local());
            pop_recyclable(&mut local, &mut sent)
        };
        if let Some((s, why)) = recycled {
            remove_fragment(&s.path);
            return Some((s, why));
        }
        if let Some((_, d)) = self.lock_dead().pop_first() {
            remove_fragment(&d.path);
            return Some((d, Eviction::DeadFull));
        }
        let (_, oldest) = self.lock().pop_first()?;
        remove_fragment(&oldest.path);
        Some((oldest, Eviction::Full))
    }

    /// Removes fragments older than `retention` (by their end timecode), refused and
    /// acknowledged ones included.
    pub fn expire(&self, now_ms: u64) -> Vec<(Stored, Eviction)> {
        let horizon = now_ms.saturating_sub(self.retention.as_millis() as u64);
        let mut out = Vec::new();
        let newest_end = [self.lock(), self.lock_dead(), self.lock_sent(), self.lock_local()]
            .iter()
            .filter_map(|m| m.values().map(|s| s.end_ms).max())
            .max();
        if newest_end.is_some_and(|end| end < horizon) {
            // Everything goes: the floor must outlive the files that record it.
            self.persist_floor();
        }
        for (map, why) in [
            (self.lock(), Eviction::Expired),
            (self.lock_dead(), Eviction::DeadExpired),
            (self.lock_sent(), Eviction::Sent),
            (self.lock_local(), Eviction::Local),
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
                    self.evicted_through.fetch_max(s.end_ms, Ordering::Relaxed);
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

    /// An acknowledged fragment leaves the backlog; its file moves to `sent/`, kept for
    /// clips until room or retention takes it.
    pub fn remove(&self, start_ms: u64) -> std::io::Result<bool> {
        let Some(s) = self.lock().remove(&start_ms) else {
            return Ok(false);
        };
        let shelf = self.dir.join("sent");
        fs::create_dir_all(&shelf)?;
        let target = shelf.join(s.path.file_name().unwrap_or_default());
        if let Err(e) = fs::rename(&s.path, &target) {
            // Not kept for clips, but acknowledged all the same.
            let _ = fs::remove_file(&s.path);
            return Err(e);
        }
        self.lock_sent().insert(s.start_ms, Stored { path: target, ..s });
        Ok(true)
    }

    /// The fragments (acknowledged, waiting or local; not refused ones) that overlap
    /// `[from_ms, to_ms]`, in timecode order.
    pub fn covering(&self, from_ms: u64, to_ms: u64) -> Vec<Stored> {
        // Locked in the order put() takes them.
        let mut out: Vec<Stored> = [self.lock(), self.lock_sent(), self.lock_local()]
            .iter()
            .flat_map(|m| {
                m.values()
                    .filter(|s| s.end_ms > from_ms && s.start_ms <= to_ms)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by_key(|s| s.start_ms);
        out
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

/// The oldest fragment that can go without a loss: local-only (nobody asked to upload
/// it) or acknowledged (KVS has it), whichever is older — an events-mode ring keeps the
/// recent local video the next sale's window reaches back for, not days of sent video.
fn pop_recyclable(local: &mut BTreeMap<u64, Stored>, sent: &mut BTreeMap<u64, Stored>) -> Option<(Stored, Eviction)> {
    let local_first = match (local.keys().next(), sent.keys().next()) {
        (Some(l), Some(s)) => l < s,
        (l, _) => l.is_some(),
    };
    if local_first {
        local.pop_first().map(|(_, s)| (s, Eviction::Local))
    } else {
        sent.pop_first().map(|(_, s)| (s, Eviction::Sent))
    }
}

/// Deletes a fragment file and, for a refused one, its reason.
fn remove_fragment(path: &Path) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("reason.txt"));
}

/// The fragments a previous run left in `dead/` or `sent/`.
fn list_shelf(dead: &Path) -> std::io::Result<BTreeMap<u64, Stored>> {
    let mut out = BTreeMap::new();
    let entries = match fs::read_dir(dead) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            // A write a crash interrupted (put writes `local/` fragments in place).
            fs::remove_file(entry.path())?;
            continue;
        }
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
mod tests;
