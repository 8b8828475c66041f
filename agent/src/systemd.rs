//! systemd integration (`Type=notify`): READY once the config is valid and the journal
//! is open — not when the cloud answers, stores are often offline —, a STATUS line with
//! the backlog and connection states, RELOADING on SIGHUP, STOPPING on shutdown, and
//! watchdog pings only while the main loops make progress.
//!
//! Everything here is a no-op without `NOTIFY_SOCKET` (run by hand, under Greengrass),
//! so the agent behaves the same without systemd.

use crate::http::AppState;
use crate::journal::Journal;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::AbortHandle;

/// What the agent tells systemd.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    enabled: bool,
    /// `WATCHDOG_USEC` when systemd set one for this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment systemd sets (`NOTIFY_SOCKET`, `WATCHDOG_USEC`/`WATCHDOG_PID`).
    pub fn from_env() -> Self {
        // As libsystemd's sd_watchdog_enabled(): WATCHDOG_USEC set, and WATCHDOG_PID
        // either absent or ours (sd-notify's own check demands WATCHDOG_PID).
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let ours = var("WATCHDOG_PID").is_none_or(|pid| pid == u64::from(std::process::id()));
        let watchdog = var("WATCHDOG_USEC")
            .filter(|usec| *usec > 0 && ours)
            .map(Duration::from_micros);
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog,
        }
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    /// Start-up is done: the config is valid and the journal is open.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A free-form line for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// SIGHUP received: reloading the rules (READY follows).
    pub fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading the rules")];
        // systemd ≥ 253 wants the monotonic time with RELOADING; older ones ignore it.
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        self.send(&states);
    }

    /// Shutting down: draining the sinks.
    pub fn stopping(&self) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: draining the sinks"),
        ]);
    }

    fn watchdog_ping(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}

/// What the watchdog checks before each ping.
#[derive(Debug)]
pub struct Liveness {
    pub journal: Journal,
    /// The sink runners and the components' tasks (the MQTT connection): one that ended
    /// before shutdown is stuck work.
    pub tasks: Vec<(String, AbortHandle)>,
}

impl Liveness {
    /// Why the agent is not making progress, if it is not.
    async fn problem(&self, within: Duration) -> Option<String> {
        let state = self.journal.state();
        let before = state.progress.load(std::sync::atomic::Ordering::Acquire);
        match tokio::time::timeout(within, self.journal.ping()).await {
            Ok(true) => {}
            Ok(false) => return Some("the journal writer has stopped".into()),
            Err(_) => {
                // A ping waits behind a long replay (start-up, reload): that is progress
                // as long as the replay moves.
                let replaying = state.replaying.load(std::sync::atomic::Ordering::Acquire);
                let moved = state.progress.load(std::sync::atomic::Ordering::Acquire) != before;
                if !(replaying && moved) {
                    return Some(format!("the journal writer did not answer within {within:?}"));
                }
            }
        }
        self.tasks
            .iter()
            .find(|(_, h)| h.is_finished())
            .map(|(name, _)| format!("the {name} task has stopped"))
    }
}

/// Sends STATUS every few seconds and, when systemd asked for a watchdog, pings it at
/// half its interval as long as [`Liveness`] finds no problem. Runs until aborted.
pub async fn supervise(notifier: Notifier, state: Arc<AppState>, liveness: Liveness) {
    let every = notifier
        .watchdog
        .map(|w| (w / 2).min(Duration::from_secs(5)))
        .unwrap_or(Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if notifier.watchdog.is_some() {
            match liveness.problem(every).await {
                None => notifier.watchdog_ping(),
                Some(problem) => {
                    tracing::error!(%problem, "not pinging the systemd watchdog");
                    notifier.status(&format!("stuck: {problem}"));
                    continue;
                }
            }
        }
        let state = state.clone();
        if let Ok(Some(line)) = tokio::task::spawn_blocking(move || status_line(&state)).await {
            notifier.status(&line);
        }
    }
}

/// One line for `systemctl status`: journal position, each sink's backlog and error, and
/// each component's summary (MQTT's state, each camera's backlog).
pub fn status_line(state: &AppState) -> Option<String> {
    let report = crate::status::collect(state).ok()?;
    let mut line = format!(
        "{}; journal seq {}, {} MB{}",
        report.state,
        report.journal.last_seq,
        report.journal.used_bytes / 1_000_000,
        if report.journal.full { " (FULL)" } else { "" }
    );
    if report.journal.rebuilding_rules {
        line.push_str("; rebuilding rule state");
    }
    for s in &report.sinks {
        line.push_str(&format!("; {} backlog {}", s.name, s.backlog_records));
        if let Some(e) = &s.last_error {
            let short: String = e.chars().take(80).collect();
            line.push_str(&format!(" (error: {short})"));
        }
    }
    for (key, value) in &report.components {
        for part in crate::components::status_view(key)
            .map(|v| v.summary(value))
            .unwrap_or_default()
        {
            line.push_str(&format!("; {part}"));
        }
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JournalConfig;
    use crate::metrics::Metrics;
    use crate::rules::{DecideContext, Decider, Decision};
    use crate::txn::Transaction;

    /// Rules whose replay is slow: 2 ms per transaction.
    #[derive(Debug)]
    struct SlowReplay;

    impl Decider for SlowReplay {
        fn decide(&mut self, _txn: &Transaction, cx: &DecideContext<'_>) -> Decision {
            if cx.replaying {
                std::thread::sleep(Duration::from_millis(2));
            }
            Decision::from_hits(Vec::new())
        }

        fn replay_span(&self) -> Option<Duration> {
            Some(Duration::from_secs(3600))
        }
    }

    fn txn(i: usize) -> Transaction {
        let raw = format!(
            r#"{{"txn_id":"r{i}","store_id":"s1","terminal_id":"p1","occurred_at":"{}","type":"sale","total_minor":100,"currency":"USD"}}"#,
            chrono::Utc::now().to_rfc3339()
        );
        crate::txn::parse(raw.as_bytes(), chrono::Utc::now()).unwrap()
    }

    /// A rule reload replays the journal on the writer thread; a watchdog ping waits
    /// behind it. That wait is progress, not a hang, as long as the replay moves.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_long_reload_replay_counts_as_progress_for_the_watchdog() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(
            &dir.path().join("j.db"),
            &JournalConfig::default(),
            vec![],
            Box::new(SlowReplay),
            crate::journal::VideoLinks::none(),
            Metrics::new(),
        )
        .unwrap();
        journal.submit_many((0..1_500).map(txn).collect()).await;
        let liveness = Liveness {
            journal: journal.clone(),
            tasks: Vec::new(),
        };
        assert_eq!(liveness.problem(Duration::from_millis(300)).await, None);
        let reloading = {
            let journal = journal.clone();
            tokio::spawn(async move { journal.reload(Box::new(SlowReplay)).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut checks = 0;
        while !reloading.is_finished() {
            assert_eq!(
                liveness.problem(Duration::from_millis(300)).await,
                None,
                "a replay in progress is reported as a hang"
            );
            checks += 1;
        }
        assert!(
            checks >= 3,
            "the replay was too short to test anything ({checks} checks)"
        );
        assert_eq!(reloading.await.unwrap(), Ok(1_500));
        journal.close().await;
        assert_eq!(
            liveness.problem(Duration::from_millis(300)).await,
            Some("the journal writer has stopped".into()),
            "a writer that is gone is never taken for alive"
        );
    }
}
