//! The archive sink: every record, as NDJSON, in rotating files on the gateway's disk.
//!
//! It is the embedded default destination (no cloud account needed) and a local audit
//! trail beside the cloud sinks. One file series per channel under
//! `{dir}/{channel}/`. The file being written is `….ndjson.partial`; it is renamed to
//! `….ndjson` (or `.ndjson.gz`) when rotated by size or age, so anything without
//! `.partial` is complete. A shipment is acknowledged only after `fsync`.
//!
//! Compression writes one gzip member per shipment: concatenated members are a valid gzip
//! file (`zcat` reads them all). A shipment that fails midway (a full disk, a failed
//! fsync) is cut back to the end of the last acknowledged one before it is retried, and
//! a crash can leave only bytes after the last acknowledged shipment, which start-up
//! repair cuts off (those records are re-shipped, since their cursor never advanced).
//!
//! The archive stays within `max_total_bytes` and `retention` (`budget.rs`): whole
//! complete files go, oldest first, counted.

mod budget;
mod component;
mod config;
mod file;
mod repair;

pub use component::NAME;
pub use config::{ArchiveConfig, Compression};

use async_trait::async_trait;
use file::SeriesFile;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tillgate_sdk::{Channel, Record, Sink, SinkError};

/// The archive sink. Built from [`ArchiveConfig`]; all file I/O runs on the blocking pool.
#[derive(Debug)]
pub struct ArchiveSink {
    name: String,
    channels: Vec<Channel>,
    metrics: Option<ArchiveMetrics>,
    // Shared with the blocking task that does the I/O; only one shipment runs at a time.
    files: Arc<Mutex<ArchiveFiles>>,
}

/// The open file series; owned by whichever blocking task is writing.
#[derive(Debug)]
struct ArchiveFiles {
    config: ArchiveConfig,
    open: BTreeMap<Channel, SeriesFile>,
    /// Files rotated during the shipment being written: finished (renamed) only once
    /// the whole shipment is durable, so a failed one can be cut back in every file.
    rotated: Vec<SeriesFile>,
    repaired: bool,
}

impl ArchiveSink {
    /// A sink named `name` writing below `config.dir`. Nothing touches the disk until the
    /// first shipment, so a missing or read-only directory surfaces as a retried error,
    /// not a failed start.
    pub fn new(name: impl Into<String>, config: ArchiveConfig) -> Self {
        ArchiveSink {
            name: name.into(),
            channels: config.channels.clone(),
            metrics: None,
            files: Arc::new(Mutex::new(ArchiveFiles {
                config,
                open: BTreeMap::new(),
                rotated: Vec::new(),
                repaired: false,
            })),
        }
    }

    /// Counts deletions by budget and the archive's size in `registry`.
    pub fn with_metrics(mut self, registry: &prometheus::Registry) -> prometheus::Result<Self> {
        self.metrics = Some(ArchiveMetrics::register(registry)?);
        Ok(self)
    }

    async fn blocking(
        &self,
        f: impl FnOnce(&mut ArchiveFiles) -> std::io::Result<()> + Send + 'static,
    ) -> Result<(), SinkError> {
        // File writes and fsync must not stall the async runtime's workers.
        let files = self.files.clone();
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || {
            let mut files = files.lock().unwrap_or_else(|p| p.into_inner());
            // The budget is kept even when the write failed: on a full disk, deleting what
            // retention no longer allows is how room comes back.
            let done = f(&mut files);
            let kept = files.enforce_budget(metrics.as_ref());
            done.and(kept)
                .map_err(|e| SinkError::Transient(format!("archive {}: {e}", files.config.dir.display())))
        })
        .await
        .map_err(|e| SinkError::Transient(format!("archive task failed: {e}")))?
    }
}

/// `tillgate_archive_*`.
#[derive(Debug, Clone)]
struct ArchiveMetrics {
    deleted: prometheus::IntCounterVec,
    bytes: prometheus::IntGauge,
}

impl ArchiveMetrics {
    fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let m = ArchiveMetrics {
            deleted: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "archive_files_deleted_total",
                    "Complete archive files deleted by max_total_bytes or retention",
                ),
                &["reason"],
            )?,
            bytes: prometheus::IntGauge::new("archive_bytes", "Bytes the archive holds on disk")?,
        };
        registry.register(Box::new(m.deleted.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        Ok(m)
    }
}

impl ArchiveFiles {
    fn channel_dir(&self, channel: Channel) -> PathBuf {
        self.config.dir.join(channel.name())
    }

    /// Writes `records` as one shipment. On any failure every file it touched (rotated
    /// ones included) is cut back to where the shipment began, so the retry writes each
    /// record once; files rotated during a shipment are finished only once it is durable.
    fn ship(&mut self, records: &[Record]) -> std::io::Result<()> {
        for file in self.open.values_mut() {
            file.begin();
        }
        let written = self.write(records);
        if written.is_err() {
            for file in self.open.values_mut().chain(self.rotated.iter_mut()) {
                if let Err(e) = file.roll_back() {
                    tracing::error!(file = %file.path().display(), error = %e,
                        "archive: a failed shipment could not be cut back in this file");
                }
            }
        }
        // Rotated files now hold only acknowledged records (or nothing: removed).
        for file in std::mem::take(&mut self.rotated) {
            let path = file.path().to_path_buf();
            if let Err(e) = file.finish() {
                // Its records are on disk; the next start's repair renames it.
                tracing::warn!(file = %path.display(), error = %e, "archive: a full file could not be renamed yet");
            }
        }
        written
    }

    /// Deletes what `max_total_bytes` and `retention` no longer allow.
    fn enforce_budget(&mut self, metrics: Option<&ArchiveMetrics>) -> std::io::Result<()> {
        let dirs: Vec<PathBuf> = self.config.channels.iter().map(|c| self.channel_dir(*c)).collect();
        let done = budget::enforce(&dirs, self.config.max_total_bytes.get(), self.config.retention.get())?;
        for (reason, path, bytes) in &done.deleted {
            tracing::warn!(file = %path.display(), bytes, reason = reason.label(),
                "archive: deleted the oldest complete file to stay within its budget");
            if let Some(m) = metrics {
                m.deleted.with_label_values(&[reason.label()]).inc();
            }
        }
        if let Some(m) = metrics {
            m.bytes.set(done.total as i64);
        }
        Ok(())
    }

    fn write(&mut self, records: &[Record]) -> std::io::Result<()> {
        if !self.repaired {
            for channel in self.config.channels.clone() {
                let dir = self.channel_dir(channel);
                std::fs::create_dir_all(&dir)?;
                repair::finish_leftovers(&dir)?;
            }
            self.repaired = true;
        }
        let max = self.config.max_file_bytes.get();
        let mut by_channel: BTreeMap<Channel, Vec<&Record>> = BTreeMap::new();
        for r in records.iter().filter(|r| self.config.channels.contains(&r.channel)) {
            by_channel.entry(r.channel).or_default().push(r);
        }
        for (channel, recs) in by_channel {
            let mut start = 0;
            while start < recs.len() {
                let file = self.file_for(channel, recs[start].seq)?;
                start += file.append(&recs[start..], max)?;
                if file.is_full(max) || start < recs.len() {
                    self.rotate_later(channel);
                }
            }
        }
        for file in self.open.values_mut().chain(self.rotated.iter_mut()) {
            file.sync()?;
        }
        Ok(())
    }

    fn file_for(&mut self, channel: Channel, first_seq: u64) -> std::io::Result<&mut SeriesFile> {
        // Age counts while busy too, not only when idle: a steady trickle must not keep
        // one file open forever.
        if self
            .open
            .get(&channel)
            .is_some_and(|f| f.age() >= self.config.max_file_age.get())
        {
            self.rotate_later(channel);
        }
        if !self.open.contains_key(&channel) {
            let f = SeriesFile::create(&self.channel_dir(channel), channel, first_seq, self.config.compression)?;
            self.open.insert(channel, f);
        }
        Ok(self.open.get_mut(&channel).expect("inserted above"))
    }

    /// Rotates within a shipment: the file is finished when the shipment is durable.
    fn rotate_later(&mut self, channel: Channel) {
        if let Some(f) = self.open.remove(&channel) {
            self.rotated.push(f);
        }
    }

    fn rotate(&mut self, channel: Channel) -> std::io::Result<()> {
        match self.open.remove(&channel) {
            Some(f) => f.finish(),
            None => Ok(()),
        }
    }

    fn rotate_older_than(&mut self, max_age: Duration) -> std::io::Result<()> {
        let old: Vec<Channel> = self
            .open
            .iter()
            .filter(|(_, f)| f.age() >= max_age)
            .map(|(c, _)| *c)
            .collect();
        old.into_iter().try_for_each(|c| self.rotate(c))
    }
}

#[async_trait]
impl Sink for ArchiveSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn channels(&self) -> &[Channel] {
        &self.channels
    }

    async fn ship(&mut self, records: &[Record]) -> Result<(), SinkError> {
        let records = records.to_vec();
        self.blocking(move |files| files.ship(&records)).await
    }

    async fn idle(&mut self) -> Result<(), SinkError> {
        self.blocking(|files| {
            let max_age = files.config.max_file_age.get();
            files.rotate_older_than(max_age)
        })
        .await
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.blocking(|files| files.rotate_older_than(Duration::ZERO)).await
    }
}

#[cfg(test)]
mod tests;
