//! The journal's tables. Sequence numbers are assigned by the writer, never by SQLite,
//! and the high-water mark is kept in `meta`, so pruning every row cannot make a number
//! be used twice (a sink's cursor would then skip new rows).

use rusqlite::Connection;

/// 2: dead letters carry their class and the input's full size.
pub const SCHEMA_VERSION: i64 = 2;

/// After a checkpoint the WAL is cut back to at most this size (it grows between
/// checkpoints); an eighth of the budget for small journals.
pub const WAL_SIZE_LIMIT: u64 = 16 * 1024 * 1024;

/// The WAL's limit for a journal of `max_bytes` (SQLite's `journal_size_limit`).
pub fn wal_limit(max_bytes: u64) -> u64 {
    WAL_SIZE_LIMIT.min(max_bytes / 8)
}

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS records (
    seq           INTEGER PRIMARY KEY,
    channel       INTEGER NOT NULL,
    txn_id        TEXT    NOT NULL,
    partition_key TEXT    NOT NULL,
    received_ms   INTEGER NOT NULL,
    body          BLOB    NOT NULL
);
-- txn_id -> the first decision, for idempotent repeats; pruned by idempotency_window.
CREATE TABLE IF NOT EXISTS txn_ids (
    seq         INTEGER PRIMARY KEY,
    txn_id      TEXT    NOT NULL UNIQUE,
    received_ms INTEGER NOT NULL,
    decision    BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    sink       TEXT    PRIMARY KEY,
    seq        INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY,
    received_ms INTEGER NOT NULL,
    source      TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    raw         BLOB    NOT NULL,
    class       TEXT    NOT NULL DEFAULT 'invalid',
    raw_bytes   INTEGER NOT NULL DEFAULT 0
);
";

/// The counters, in both the journal and the snapshot file beside it.
pub const META_TABLE: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// Where agents before the snapshot file (`snapshot_store.rs`) kept the rule state, in
/// the journal: kept so their rows can be moved at the first start, empty after that (an
/// older agent ignores it, so the schema version stays). The snapshot file's own table
/// has the same columns with the state last.
pub const JOURNAL_RULE_SNAPSHOTS: &str = "
CREATE TABLE IF NOT EXISTS rule_snapshots (
    unit        TEXT    PRIMARY KEY,
    fingerprint TEXT    NOT NULL,
    through_seq INTEGER NOT NULL,
    taken_ms    INTEGER NOT NULL,
    state       BLOB    NOT NULL,
    sha256      TEXT    NOT NULL
);
";

/// Opens (creating if needed) the journal for writing.
pub fn open_writer(path: &std::path::Path, max_bytes: u64) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // The sync thread (durable.rs) syncs the WAL: without one nothing is confirmed.
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!(
                "the journal stays in journal_mode={mode}, not WAL (a filesystem without shared memory \
                 or a read-only directory?): put journal.path on a local filesystem the agent can write"
            )),
        ));
    }
    // NORMAL whatever `journal.durability` says: with "fsync", the fdatasync that FULL
    // would make inside COMMIT is made by the sync thread before any answer (durable.rs),
    // so the writer goes on to the next group meanwhile. Checkpoints sync in both modes.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Checkpoints run on their own thread (see checkpoint.rs), not inside a COMMIT.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", wal_limit(max_bytes) as i64)?;
    conn.execute_batch(TABLES)?;
    conn.execute_batch(JOURNAL_RULE_SNAPSHOTS)?;
    conn.execute_batch(META_TABLE)?;
    let found = meta(&conn, "schema_version")?;
    if found > SCHEMA_VERSION {
        // A newer agent wrote this journal: an older one must not relabel it.
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "the journal has schema version {found}, newer than this agent's {SCHEMA_VERSION}: \
                 run the newer tillgate, or move the journal aside"
            )),
        ));
    }
    migrate(&conn)?;
    conn.execute(
        "INSERT INTO meta(key, value) VALUES ('schema_version', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [SCHEMA_VERSION],
    )?;
    // Names this journal, once, so the snapshot file beside it can tell it from another
    // one (a journal restored or swapped; snapshot_store.rs).
    conn.execute(
        "INSERT INTO meta(key, value) VALUES ('journal_id', ?1) ON CONFLICT(key) DO NOTHING",
        [rand::random::<i64>()],
    )?;
    Ok(conn)
}

/// Brings a journal of an earlier version up to this one (columns only ever added).
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('dead_letters')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if !columns.iter().any(|c| c == "class") {
        conn.execute_batch(
            "ALTER TABLE dead_letters ADD COLUMN class TEXT NOT NULL DEFAULT 'invalid';
             ALTER TABLE dead_letters ADD COLUMN raw_bytes INTEGER NOT NULL DEFAULT 0;",
        )?;
    }
    Ok(())
}

/// Opens the journal read-only (sinks, status). Requires the writer to have created it.
pub fn open_reader(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// A `meta` counter, 0 when unset.
pub fn meta(conn: &Connection, key: &str) -> rusqlite::Result<i64> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Bytes of the database in use (pages minus free pages).
pub fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}
