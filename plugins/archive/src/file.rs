//! One archive file being written: `{channel}-{first_seq}-{utc}.ndjson[.gz].partial`.

use crate::config::Compression;
use flate2::write::GzEncoder;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tillgate_sdk::{Channel, Record};

/// Suffix of a file still being written.
pub const PARTIAL: &str = ".partial";

#[derive(Debug)]
pub struct SeriesFile {
    path: PathBuf,
    file: File,
    bytes: u64,
    /// Where the shipment being written began: what a failed one is cut back to.
    mark: u64,
    opened: Instant,
    compression: Compression,
    dirty: bool,
}

impl SeriesFile {
    pub fn create(dir: &Path, channel: Channel, first_seq: u64, compression: Compression) -> std::io::Result<Self> {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let ext = match compression {
            Compression::None => "ndjson",
            Compression::Gzip => "ndjson.gz",
        };
        let path = dir.join(format!("{}-{first_seq:020}-{stamp}.{ext}{PARTIAL}", channel.name()));
        let file = OpenOptions::new().create_new(true).write(true).open(&path)?;
        sync_dir(dir)?;
        Ok(SeriesFile {
            path,
            file,
            bytes: 0,
            mark: 0,
            opened: Instant::now(),
            compression,
            dirty: false,
        })
    }

    /// Appends as many of `records` as fit under `max_bytes` (at least one, so a record
    /// larger than the limit still gets a file of its own). Returns how many were taken.
    pub fn append(&mut self, records: &[&Record], max_bytes: u64) -> std::io::Result<usize> {
        let mut plain = Vec::new();
        let mut taken = 0;
        for r in records {
            let line = r.body.len() as u64 + 1;
            if taken > 0 && self.bytes + plain.len() as u64 + line > max_bytes {
                break;
            }
            plain.extend_from_slice(&r.body);
            plain.push(b'\n');
            taken += 1;
        }
        let out = match self.compression {
            Compression::None => plain,
            Compression::Gzip => {
                let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(&plain)?;
                enc.finish()?
            }
        };
        self.dirty = true;
        self.file.write_all(&out)?;
        self.bytes += out.len() as u64;
        Ok(taken)
    }

    pub fn is_full(&self, max_bytes: u64) -> bool {
        self.bytes >= max_bytes
    }

    pub fn age(&self) -> Duration {
        self.opened.elapsed()
    }

    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// A shipment begins: what it writes can be cut back to here.
    pub fn begin(&mut self) {
        self.mark = self.bytes;
    }

    /// After a failed shipment (a full disk mid-write, a failed fsync): cuts the file
    /// back to where the shipment began, so the retry appends after complete records,
    /// not after torn bytes or records it will write again.
    pub fn roll_back(&mut self) -> std::io::Result<()> {
        if self.bytes == self.mark && !self.dirty {
            return Ok(());
        }
        self.file.set_len(self.mark)?;
        self.file.seek(SeekFrom::Start(self.mark))?;
        self.file.sync_data()?;
        self.bytes = self.mark;
        self.dirty = false;
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// fsync, drop the `.partial` suffix, fsync the directory. An empty file is removed.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.sync()?;
        let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        if self.bytes == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            std::fs::rename(&self.path, final_name(&self.path))?;
        }
        sync_dir(&dir)
    }
}

/// The name a `.partial` file gets once complete: the same without `.partial`, or with a
/// `-N` before the extension if a file of that name exists (a restart within the same
/// second re-shipping from the same sequence number), so no complete file is replaced.
pub fn final_name(partial: &Path) -> PathBuf {
    let s = partial.to_string_lossy();
    let base = s.strip_suffix(PARTIAL).unwrap_or(&s).to_string();
    let candidate = PathBuf::from(&base);
    if !candidate.exists() {
        return candidate;
    }
    let (stem, ext) = base.split_once(".ndjson").map_or((base.as_str(), ""), |(a, b)| (a, b));
    (1..)
        .map(|n| PathBuf::from(format!("{stem}-{n}.ndjson{ext}")))
        .find(|p| !p.exists())
        .expect("some suffix is free")
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
