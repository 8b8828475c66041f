//! Read-only access for sink runners and status. Each reader has its own connection.

use super::schema;
use bytes::Bytes;
use rusqlite::OptionalExtension;
use rusqlite::{params, Connection};
use serde::Serialize;
use std::path::Path;
use tillgate_sdk::{Channel, Record};

/// A journaled sale, as a clip of it needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sale {
    /// When it reached the gateway (ms since the epoch): the clock that stamps video.
    pub received_ms: i64,
    pub terminal: String,
}

/// A read-only view of the journal.
#[derive(Debug)]
pub struct JournalReader {
    conn: Connection,
}

/// Records after a cursor, and how far the scan got.
#[derive(Debug)]
pub struct ReadBatch {
    pub records: Vec<Record>,
    /// Every row up to here was looked at: the cursor may move here once `records` are
    /// acknowledged, even past rows of channels the sink does not take.
    pub scanned_to: u64,
}

/// What a sink still has to ship.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Backlog {
    pub records: u64,
    /// `received_ms` of the oldest record not yet acknowledged.
    pub oldest_received_ms: Option<i64>,
}

/// One stored dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterRow {
    pub id: i64,
    pub received_ms: i64,
    pub source: String,
    pub reason: String,
    pub raw: String,
}

fn channel_list(channels: &[Channel]) -> String {
    channels
        .iter()
        .map(|c| c.code().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl JournalReader {
    /// Opens `path` read-only.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        Ok(JournalReader {
            conn: schema::open_reader(path)?,
        })
    }

    /// Up to `limit` records of `channels` after `cursor` and up to `upto` (the journal's
    /// `last_seq`: rows after it are committed but not yet confirmed by the disk, and
    /// must not leave before they are), in sequence order.
    pub fn read_after(
        &mut self,
        cursor: u64,
        upto: u64,
        channels: &[Channel],
        limit: usize,
    ) -> rusqlite::Result<ReadBatch> {
        let tx = self.conn.transaction()?;
        let sql = format!(
            "SELECT seq, channel, txn_id, partition_key, received_ms, body FROM records
             WHERE seq > ?1 AND seq <= ?3 AND channel IN ({}) ORDER BY seq LIMIT ?2",
            channel_list(channels)
        );
        let records: Vec<Record> = tx
            .prepare_cached(&sql)?
            .query_map(
                params![cursor as i64, limit as i64, upto.min(i64::MAX as u64) as i64],
                |r| {
                    Ok(Record {
                        seq: r.get::<_, i64>(0)? as u64,
                        channel: Channel::from_code(r.get(1)?).unwrap_or(Channel::Transactions),
                        txn_id: r.get(2)?,
                        partition_key: r.get(3)?,
                        received_ms: r.get(4)?,
                        body: Bytes::from(r.get::<_, Vec<u8>>(5)?),
                    })
                },
            )?
            .collect::<rusqlite::Result<_>>()?;
        let scanned_to = if records.len() == limit {
            records.last().map_or(cursor, |r| r.seq)
        } else {
            let max: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM records", [], |r| r.get(0))?;
            cursor.max((max as u64).min(upto))
        };
        tx.finish()?;
        Ok(ReadBatch { records, scanned_to })
    }

    /// How much of `channels` is after `cursor`.
    pub fn backlog(&mut self, cursor: u64, channels: &[Channel]) -> rusqlite::Result<Backlog> {
        let sql = format!(
            "SELECT COUNT(*), MIN(received_ms) FROM records WHERE seq > ?1 AND channel IN ({})",
            channel_list(channels)
        );
        self.conn.query_row(&sql, [cursor as i64], |r| {
            Ok(Backlog {
                records: r.get::<_, i64>(0)? as u64,
                oldest_received_ms: r.get(1)?,
            })
        })
    }

    /// Number of stored dead letters.
    pub fn dead_letter_count(&self) -> rusqlite::Result<u64> {
        self.conn
            .query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
    }

    /// The newest dead letters, newest first.
    pub fn recent_dead_letters(&self, limit: usize) -> rusqlite::Result<Vec<DeadLetterRow>> {
        self.conn
            .prepare("SELECT id, received_ms, source, reason, raw FROM dead_letters ORDER BY id DESC LIMIT ?1")?
            .query_map([limit as i64], |r| {
                Ok(DeadLetterRow {
                    id: r.get(0)?,
                    received_ms: r.get(1)?,
                    source: r.get(2)?,
                    reason: r.get(3)?,
                    raw: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(4)?).into_owned(),
                })
            })?
            .collect()
    }

    /// The journaled transaction `txn_id`: when it reached the gateway (ms) and its
    /// body. Found through the idempotency index (`journal.idempotency_window`, by
    /// default the journal's retention): one indexed lookup, never a scan, so an unknown
    /// id costs nothing.
    pub fn transaction(&self, txn_id: &str) -> rusqlite::Result<Option<(i64, Vec<u8>)>> {
        self.conn
            .query_row(
                "SELECT received_ms, body FROM records WHERE channel = ?2
                 AND seq = (SELECT seq FROM txn_ids WHERE txn_id = ?1)",
                params![txn_id, Channel::Transactions.code()],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()
    }

    /// The journaled sale `txn_id`: when it reached the gateway and on which terminal
    /// (what a clip of it needs).
    pub fn sale(&self, txn_id: &str) -> rusqlite::Result<Option<Sale>> {
        Ok(self.transaction(txn_id)?.map(|(received_ms, body)| Sale {
            received_ms,
            terminal: serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["terminal_id"].as_str().map(str::to_string))
                .unwrap_or_default(),
        }))
    }

    /// The newest `limit` records of `channel` among the newest `within` records of the
    /// journal (a bounded range of the primary key), newest first: (received_ms, body).
    pub fn newest(&self, channel: Channel, limit: usize, within: u64) -> rusqlite::Result<Vec<(i64, Vec<u8>)>> {
        let floor = self.last_seq()?.saturating_sub(within) as i64;
        self.conn
            .prepare_cached(
                "SELECT received_ms, body FROM records WHERE seq > ?3 AND channel = ?1 ORDER BY seq DESC LIMIT ?2",
            )?
            .query_map(params![channel.code(), limit as i64, floor], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect()
    }

    /// Records of `channel` that reached the gateway after `since_ms`: read back from the
    /// newest record and stopped at the first one older than that, or after `within`
    /// records, so the cost follows the traffic of that span, not the journal's size.
    pub fn count_since(&self, channel: Channel, since_ms: i64, within: usize) -> rusqlite::Result<u64> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT channel, received_ms FROM records ORDER BY seq DESC")?;
        let mut rows = statement.query([])?;
        let (mut count, mut read) = (0, 0);
        while let Some(row) = rows.next()? {
            if row.get::<_, i64>(1)? <= since_ms || read >= within {
                break;
            }
            read += 1;
            count += u64::from(row.get::<_, i64>(0)? == channel.code());
        }
        Ok(count)
    }

    /// Stored cursors by sink.
    pub fn cursors(&self) -> rusqlite::Result<Vec<(String, u64)>> {
        self.conn
            .prepare("SELECT sink, seq FROM cursors ORDER BY sink")?
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect()
    }

    /// The highest sequence number ever assigned.
    pub fn last_seq(&self) -> rusqlite::Result<u64> {
        let meta = schema::meta(&self.conn, "next_seq")?;
        let max: i64 = self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM records", [], |r| r.get(0))?;
        Ok(((meta - 1).max(max)).max(0) as u64)
    }

    /// Rows evicted unsent, ever.
    pub fn evicted(&self) -> rusqlite::Result<u64> {
        Ok(schema::meta(&self.conn, "evicted_records")? as u64)
    }

    /// Bytes in use.
    pub fn used_bytes(&self) -> rusqlite::Result<u64> {
        schema::used_bytes(&self.conn)
    }
}
