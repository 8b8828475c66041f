//! The rows of one transaction inside a group commit, with the group's statements
//! prepared once (not looked up per row) and one decision timestamp per group.

use super::records::{AlertRecord, DecisionRecord, ReportAlert};
use super::video_links::{FlaggedSale, VideoLinks};
use crate::rules::Decision;
use crate::txn::{rfc3339, Transaction};
use rusqlite::{params, CachedStatement, Connection, OptionalExtension};
use std::collections::HashMap;
use std::sync::Arc;
use tillgate_sdk::Channel;

/// Statements and state for one group commit.
pub struct Group<'c> {
    insert_record: CachedStatement<'c>,
    insert_txn_id: CachedStatement<'c>,
    find_txn_id: CachedStatement<'c>,
    /// Decisions made in this group, for repeats inside the same group.
    fresh: HashMap<String, Arc<DecisionRecord>>,
    /// Every decision of a group is made at the same moment, as far as a person can tell.
    decided_at: String,
}

impl<'c> Group<'c> {
    /// Prepares the statements on `conn` (inside its open transaction).
    pub fn new(conn: &'c Connection) -> rusqlite::Result<Self> {
        Ok(Group {
            insert_record: conn.prepare_cached(
                "INSERT INTO records(seq, channel, txn_id, partition_key, received_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?,
            insert_txn_id: conn
                .prepare_cached("INSERT INTO txn_ids(seq, txn_id, received_ms, decision) VALUES (?1, ?2, ?3, ?4)")?,
            find_txn_id: conn.prepare_cached("SELECT decision FROM txn_ids WHERE txn_id = ?1")?,
            fresh: HashMap::new(),
            decided_at: rfc3339(chrono::Utc::now()),
        })
    }

    /// The first decision for `txn_id`, if it was seen before (in this group or journaled).
    pub fn previous(&mut self, txn_id: &str) -> rusqlite::Result<Option<Arc<DecisionRecord>>> {
        if let Some(v) = self.fresh.get(txn_id) {
            return Ok(Some(v.clone()));
        }
        let stored: Option<Vec<u8>> = self.find_txn_id.query_row([txn_id], |r| r.get(0)).optional()?;
        Ok(stored.and_then(|b| serde_json::from_slice(&b).ok()).map(Arc::new))
    }

    /// Writes the transaction at `seq`, its decision and (when a rule fired) its alert.
    /// Returns the decision record and how many sequence numbers were used.
    pub fn journal(
        &mut self,
        txn: &Transaction,
        seq: u64,
        decision: &Decision,
        video: &VideoLinks,
    ) -> rusqlite::Result<(Arc<DecisionRecord>, u64)> {
        let record = Arc::new(DecisionRecord {
            txn_id: txn.txn_id.clone(),
            store_id: txn.store_id.clone(),
            terminal_id: txn.terminal_id.clone(),
            seq,
            decision: decision.action,
            rules: decision.hits.clone(),
            decided_at: self.decided_at.clone(),
        });
        let record_bytes = serde_json::to_vec(&*record).expect("a decision record serializes");
        let key = txn.partition_key();
        let received = txn.received_at.timestamp_millis();
        let mut insert = |seq: u64, channel: Channel, body: &[u8]| {
            self.insert_record
                .execute(params![seq as i64, channel.code(), txn.txn_id, key, received, body])
        };
        insert(seq, Channel::Transactions, &txn.journal_body(seq))?;
        insert(seq + 1, Channel::Decisions, &record_bytes)?;
        let mut used = 2;
        if !decision.hits.is_empty() {
            // How late the sale arrived, by a terminal clock the gateway trusts.
            let late = if txn.clock_skew {
                0
            } else {
                received - txn.occurred_at.timestamp_millis()
            };
            let located = video.locate(&FlaggedSale {
                terminal: &txn.terminal_id,
                received_ms: received,
                late_ms: late,
                decision: record.decision.name(),
                rules: record.rules.iter().map(|h| &*h.id).collect(),
            });
            let alert =
                serde_json::to_vec(&AlertRecord::rule_hit(txn, &record, located)).expect("an alert record serializes");
            insert(seq + used, Channel::Alerts, &alert)?;
            used += 1;
        }
        for hit in &decision.reports {
            let alert =
                serde_json::to_vec(&ReportAlert::new(hit, txn, &self.decided_at)).expect("a report alert serializes");
            insert(seq + used, Channel::Alerts, &alert)?;
            used += 1;
        }
        self.insert_txn_id
            .execute(params![seq as i64, txn.txn_id, received, record_bytes])?;
        self.fresh.insert(txn.txn_id.clone(), record.clone());
        Ok((record, used))
    }
}
