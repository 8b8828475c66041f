//! Original sales for returns, read back from the journal.

use crate::rules::OriginalLookup;
use crate::txn::{from_journal, Transaction};
use rusqlite::{Connection, OptionalExtension};

/// Original sales, looked up by txn_id in the journal (committed or in this group).
pub struct JournalLookup<'c>(pub &'c Connection);

impl OriginalLookup for JournalLookup<'_> {
    fn original(&self, txn_id: &str) -> Option<Transaction> {
        let body: Option<Vec<u8>> = self
            .0
            .prepare_cached("SELECT r.body FROM txn_ids t JOIN records r ON r.seq = t.seq WHERE t.txn_id = ?1")
            .ok()?
            .query_row([txn_id], |r| r.get(0))
            .optional()
            .ok()?;
        body.and_then(|b| from_journal(&b))
    }
}
