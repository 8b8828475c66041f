//! WAL checkpoints off the commit path.
//!
//! With SQLite's automatic checkpoint, the COMMIT that crosses 1000 WAL pages copies the
//! WAL into the database file and fsyncs it, inside the writer: a terminal waiting on
//! that group sees a latency spike of several milliseconds. The writer therefore runs
//! with `wal_autocheckpoint = 0`, and this thread checkpoints from its own connection
//! (PASSIVE: it never blocks the writer or readers).

use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// How often the WAL is folded back into the database.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// Runs until `stop` is signalled or dropped, then makes a last checkpoint.
pub fn run(path: &Path, durability_full: bool, stop: Receiver<()>) {
    let conn = match Connection::open(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "journal checkpointer cannot open the journal; the WAL will grow until restart");
            return;
        }
    };
    let _ = conn.pragma_update(None, "synchronous", if durability_full { "FULL" } else { "NORMAL" });
    let _ = conn.busy_timeout(Duration::from_secs(5));
    loop {
        let last = matches!(
            stop.recv_timeout(INTERVAL),
            Ok(()) | Err(RecvTimeoutError::Disconnected)
        );
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "journal checkpoint failed; will retry");
        }
        if last {
            return;
        }
    }
}
