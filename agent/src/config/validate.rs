//! Checks that need more than one field or the meaning of a value, by section. Each
//! returns the dotted key and a message that says what is allowed; `load` adds the line.

use super::{Config, HttpConfig, JournalConfig, SinksConfig};

type Problem = (String, String);

/// Section by section; the first problem found is returned.
pub(super) fn validate(c: &Config) -> Result<(), Problem> {
    validate_journal(&c.journal)?;
    let max_txn = validate_intake(c)?;
    validate_http(&c.http)?;
    validate_sinks(&c.sinks)?;
    let cx = tillgate_sdk::CheckContext { max_txn_bytes: max_txn };
    for component in crate::components::enabled(c) {
        component.check(&cx).map_err(|e| (e.key, e.message))?;
    }
    #[cfg(not(feature = "video"))]
    if c.video.is_some() {
        return Err((
            "video".into(),
            "this tillgate was built without cameras (cargo feature `video`); remove [video] or install a build with it".into(),
        ));
    }
    Ok(())
}

/// `[journal]`: batch sizes and delays in range, budgets that can hold something.
fn validate_journal(j: &JournalConfig) -> Result<(), Problem> {
    if j.max_batch_rows == 0 || j.max_batch_rows > 10_000 {
        return Err((
            "journal.max_batch_rows".into(),
            format!("{} is out of range; allowed: 1–10000", j.max_batch_rows),
        ));
    }
    if j.max_batch_delay.get() > std::time::Duration::from_millis(100) {
        return Err((
            "journal.max_batch_delay".into(),
            format!(
                "{} would hold every answer that long; allowed: 0ms–100ms",
                j.max_batch_delay
            ),
        ));
    }
    if j.max_bytes.get() < 64 * 1024 {
        return Err((
            "journal.max_bytes".into(),
            format!("{} is too small; allowed: at least 64KiB", j.max_bytes),
        ));
    }
    if j.dead_letter_max_bytes.get() < 1024 * 1024 {
        return Err((
            "journal.dead_letter_max_bytes".into(),
            format!(
                "{} is too small; allowed: at least 1MiB (a dead letter keeps up to 64 KiB)",
                j.dead_letter_max_bytes
            ),
        ));
    }
    if j.rule_snapshot_interval.get().is_zero() {
        return Err(("journal.rule_snapshot_interval".into(), "must be more than 0s".into()));
    }
    if j.prune_interval.get().is_zero() {
        return Err(("journal.prune_interval".into(), "must be more than 0s".into()));
    }
    Ok(())
}

/// `[intake]`: the one payload limit, and an HTTP body that can carry one payload.
/// Returns the limit, which the MQTT packet size depends on too.
fn validate_intake(c: &Config) -> Result<u64, Problem> {
    let max_txn = c.intake.max_txn_bytes.get();
    if !(1024..=8 * 1024 * 1024).contains(&max_txn) {
        return Err((
            "intake.max_txn_bytes".into(),
            format!("{} is out of range; allowed: 1KiB–8MiB", c.intake.max_txn_bytes),
        ));
    }
    if c.http.max_body_bytes.get() < max_txn {
        return Err((
            "http.max_body_bytes".into(),
            format!(
                "{} is smaller than intake.max_txn_bytes ({}); a batch must hold one transaction at least",
                c.http.max_body_bytes, c.intake.max_txn_bytes
            ),
        ));
    }
    Ok(max_txn)
}

/// `[http]`: every timeout above zero, caps in range, a token whenever the listener is
/// reachable from the network.
fn validate_http(h: &HttpConfig) -> Result<(), Problem> {
    for (key, d) in [
        ("http.header_timeout", h.header_timeout),
        ("http.body_timeout", h.body_timeout),
        ("http.idle_timeout", h.idle_timeout),
    ] {
        if d.get().is_zero() {
            return Err((key.into(), "must be more than 0s".into()));
        }
    }
    if h.max_connections == 0 || h.max_connections > 65_536 {
        return Err((
            "http.max_connections".into(),
            format!("{} is out of range; allowed: 1–65536", h.max_connections),
        ));
    }
    if h.max_batch_lines == 0 || h.max_batch_lines > 100_000 {
        return Err((
            "http.max_batch_lines".into(),
            format!("{} is out of range; allowed: 1–100000", h.max_batch_lines),
        ));
    }
    if h.max_concurrent_batches == 0 || h.max_concurrent_batches > h.max_connections {
        return Err((
            "http.max_concurrent_batches".into(),
            format!(
                "{} is out of range; allowed: 1–http.max_connections",
                h.max_concurrent_batches
            ),
        ));
    }
    if let Some(secret) = &h.token {
        if secret.file.is_some() == secret.env.is_some() {
            return Err(("http.token".into(), "give exactly one of `file` or `env`".into()));
        }
    }
    if !h.listen.ip().is_loopback() && h.token.is_none() {
        return Err((
            "http.listen".into(),
            format!(
                "{} is reachable from the network, so terminals must authenticate: set \
                 http.token = {{ file = \"/etc/tillgate/http-token\" }}",
                h.listen
            ),
        ));
    }
    Ok(())
}

/// `[sinks]`: batch size and retry timing (each sink checks its own section).
fn validate_sinks(s: &SinksConfig) -> Result<(), Problem> {
    if s.batch_records == 0 || s.batch_records > 100_000 {
        return Err((
            "sinks.batch_records".into(),
            format!("{} is out of range; allowed: 1–100000", s.batch_records),
        ));
    }
    if s.retry_initial_backoff.get().is_zero() || s.retry_initial_backoff > s.retry_max_backoff {
        return Err((
            "sinks.retry_initial_backoff".into(),
            "must be more than 0s and at most sinks.retry_max_backoff".into(),
        ));
    }
    Ok(())
}
