//! The test kit: the real `tillgate` binary started as a process on a loopback port,
//! with a config of the test's making, and readers for what it leaves behind (the
//! journal file, the archive). Tests assert on what a user would see.

pub mod benches;
pub mod checkers;
pub mod emulators;
pub mod fakes;
pub mod process;
pub mod small_fs;
pub mod terminal;
pub mod txns;

pub use checkers::archive::{archive_lines, archive_txn_ids, missing_from_archive};
pub use emulators::broker::{make_tls_files, Broker, BrokerOptions, TlsFiles};
pub use fakes::iot::FakeIot;
pub use fakes::kinesis::{FakeKinesis, Faults};
pub use fakes::tes::FakeTes;
pub use process::{run_cli, Agent, AgentOptions};
pub use small_fs::SmallFs;
pub use terminal::Terminal;
pub use txns::{basket, post, post_ndjson, txn};

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The repository root (for `config/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root exists")
}

/// The shipped rule pack.
pub fn rule_pack() -> PathBuf {
    repo_root().join("config/rules")
}

/// txn_ids of the transactions channel in a journal file.
pub fn journal_txn_ids(journal: &Path) -> HashSet<String> {
    let conn = open_journal(journal);
    let mut stmt = conn
        .prepare("SELECT txn_id FROM records WHERE channel = 0")
        .expect("query prepares");
    stmt.query_map([], |r| r.get(0))
        .expect("query runs")
        .map(|r| r.expect("row reads"))
        .collect()
}

/// The journaled body of every transaction, by txn_id (what sinks ship, byte for byte).
pub fn journal_bodies(journal: &Path) -> std::collections::HashMap<String, Vec<u8>> {
    let conn = open_journal(journal);
    let mut stmt = conn
        .prepare("SELECT txn_id, body FROM records WHERE channel = 0")
        .expect("query prepares");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query runs")
        .map(|r| r.expect("row reads"))
        .collect()
}

/// Rows in one channel of a journal (0 transactions, 1 decisions, 2 alerts).
pub fn journal_rows(journal: &Path, channel: i64) -> u64 {
    open_journal(journal)
        .query_row("SELECT COUNT(*) FROM records WHERE channel = ?1", [channel], |r| {
            r.get(0)
        })
        .expect("count runs")
}

/// Number of dead letters and their reasons and raw bytes.
pub fn dead_letters(journal: &Path) -> Vec<(String, String, Vec<u8>)> {
    let conn = open_journal(journal);
    let mut stmt = conn
        .prepare("SELECT source, reason, raw FROM dead_letters ORDER BY id")
        .expect("query prepares");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query runs")
        .map(|r| r.expect("row reads"))
        .collect()
}

/// Every dead letter as (class, reason, raw, size of the input).
pub fn dead_letter_rows(journal: &Path) -> Vec<(String, String, Vec<u8>, i64)> {
    let conn = open_journal(journal);
    let mut stmt = conn
        .prepare("SELECT class, reason, raw, raw_bytes FROM dead_letters ORDER BY id")
        .expect("query prepares");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query runs")
        .map(|r| r.expect("row reads"))
        .collect()
}

/// `PRAGMA integrity_check` of a journal.
pub fn integrity_check(journal: &Path) -> String {
    open_journal(journal)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("pragma runs")
}

fn open_journal(journal: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(journal, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("cannot open journal {}: {e}", journal.display()))
}

/// A fresh directory under the system temp dir, kept after the test for inspection
/// when it fails. Scratch directories older than two hours are removed here, so that
/// repeated runs do not fill the disk (journals and archives add up to gigabytes).
pub fn scratch_dir() -> PathBuf {
    prune_old_scratch_dirs(std::time::Duration::from_secs(2 * 3600));
    tempfile::Builder::new()
        .prefix("tillgate-test-")
        .tempdir()
        .expect("temp dir")
        .keep()
}

fn prune_old_scratch_dirs(older_than: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("tillgate-test-") {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > older_than);
        if old {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// An HTTP client on the agent's TLS stack (reqwest has no crypto provider of its own
/// here: see `tillgate_aws::https`).
pub fn http_client() -> reqwest::Client {
    http_client_builder().build().expect("HTTP client")
}

/// The builder behind [`http_client`], for tests that tune the pool.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    tillgate_aws::https::client_builder()
}
