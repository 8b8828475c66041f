//! Checks that need more than one field or the meaning of a value, by section. Each
//! returns the dotted key and a message that says what is allowed; `load` adds the line.

use super::{Config, HttpConfig, JournalConfig, SinksConfig};
use tillgate_archive::ArchiveConfig;
use tillgate_mqtt::MqttConfig;

type Problem = (String, String);

/// Section by section; the first problem found is returned.
pub(super) fn validate(c: &Config) -> Result<(), Problem> {
    validate_journal(&c.journal)?;
    let max_txn = validate_intake(c)?;
    validate_http(&c.http)?;
    validate_sinks(&c.sinks)?;
    if let Some(m) = c.mqtt() {
        validate_mqtt(m, max_txn)?;
    }
    if let Some(k) = c.kinesis() {
        tillgate_kinesis::check(k).map_err(|e| (e.key, e.message))?;
    }
    #[cfg(feature = "video")]
    if let Some(v) = &c.video {
        if v.enabled {
            tillgate_video::check(v).map_err(|e| (e.key, e.message))?;
        }
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

/// `[sinks]`: batch size and retry timing, then the archive.
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
    if let Some(a) = &s.archive {
        validate_archive(a)?;
    }
    Ok(())
}

/// `[sinks.archive]`: channels, and a total budget that holds the open files.
fn validate_archive(a: &ArchiveConfig) -> Result<(), Problem> {
    if a.channels.is_empty() {
        return Err((
            "sinks.archive.channels".into(),
            "is empty; allowed: transactions, decisions, alerts".into(),
        ));
    }
    if a.max_file_bytes.get() < 1024 {
        return Err(("sinks.archive.max_file_bytes".into(), "allowed: at least 1KiB".into()));
    }
    // The files being written (one per channel) are never deleted: the budget must
    // hold them and one complete file besides.
    let least = a.max_file_bytes.get().saturating_mul(a.channels.len() as u64 + 1);
    if a.max_total_bytes.get() < least {
        return Err((
            "sinks.archive.max_total_bytes".into(),
            format!(
                "{} cannot hold the {} files being written and one complete file; allowed: at least {} \
                 ((channels + 1) × max_file_bytes)",
                a.max_total_bytes,
                a.channels.len(),
                tillgate_sdk::ByteSize(least)
            ),
        ));
    }
    Ok(())
}

/// `[mqtt]`: the plugin's own checks, and packets large enough for a transaction.
fn validate_mqtt(m: &MqttConfig, max_txn: u64) -> Result<(), Problem> {
    // Templates, and the password and TLS files read now: a missing file is a config
    // error at start, not a reconnect loop.
    tillgate_mqtt::check(m).map_err(|e| (e.key, e.message))?;
    // A payload up to the limit, its topic and properties must fit in a packet the
    // broker may send us; larger ones arrive and are refused visibly.
    let least = max_txn + 64 * 1024;
    if m.max_packet_bytes.get() < least {
        return Err((
            "mqtt.max_packet_bytes".into(),
            format!(
                "{} cannot carry a transaction of intake.max_txn_bytes ({}) with its topic; allowed: at least {}",
                m.max_packet_bytes,
                tillgate_sdk::ByteSize(max_txn),
                tillgate_sdk::ByteSize(least)
            ),
        ));
    }
    Ok(())
}
