//! Every component this build has: the one place a plugin is registered. `agent::run`
//! starts what [`enabled`] returns, `config::validate` checks it, `check-config` lists
//! its sources and sinks, and `tillgate status` renders its status through
//! [`status_views`] — so none of them names a plugin.

use crate::config::Config;
use std::sync::LazyLock;
use tillgate_archive::ArchiveConfig;
use tillgate_sdk::{ComponentConfig, StatusView};

/// `[sinks.archive]` when the config leaves it out: the archive is on by default.
static DEFAULT_ARCHIVE: LazyLock<ArchiveConfig> = LazyLock::new(ArchiveConfig::default);

/// The config's enabled components, in the order the journal keeps their sinks' cursors.
pub fn enabled(config: &Config) -> Vec<&dyn ComponentConfig> {
    let mut all: Vec<&dyn ComponentConfig> = vec![config.sinks.archive.as_ref().unwrap_or(&DEFAULT_ARCHIVE)];
    all.extend(config.kinesis.as_ref().map(|c| c as &dyn ComponentConfig));
    all.extend(config.mqtt.as_ref().map(|c| c as &dyn ComponentConfig));
    #[cfg(feature = "video")]
    all.extend(config.video.as_ref().map(|c| c as &dyn ComponentConfig));
    all.retain(|c| c.enabled());
    all
}

/// How `tillgate status` and systemd's STATUS line read each component's section.
pub fn status_views() -> Vec<&'static dyn StatusView> {
    vec![
        &tillgate_mqtt::STATUS_VIEW,
        #[cfg(feature = "video")]
        &tillgate_video::STATUS_VIEW,
    ]
}

/// The view for a status section, if this build has one.
pub fn status_view(key: &str) -> Option<&'static dyn StatusView> {
    status_views().into_iter().find(|v| v.key() == key)
}

/// Every source: HTTP always, then each component's.
pub fn sources(config: &Config) -> Vec<String> {
    let mut out = vec![format!("http {}", config.http.listen)];
    out.extend(enabled(config).iter().flat_map(|c| c.sources()));
    out
}

/// Every sink, in cursor order.
pub fn sink_names(config: &Config) -> Vec<String> {
    enabled(config).iter().flat_map(|c| c.sink_names()).collect()
}
