//! Every component this build has, registered on one line each in [`registry!`]. From
//! that list come the component sections of [`Config`] (typed fields, so serde refuses
//! a misspelt key and every error has its line), [`enabled`] (what `agent::run` starts,
//! `config::validate` checks and `check-config` lists) and [`status_views`] (how
//! `tillgate status` prints each section) — so none of those names a plugin.

use crate::config::Config;
use std::sync::LazyLock;
use tillgate_archive::ArchiveConfig;
use tillgate_sdk::{ComponentConfig, StatusView};

/// The registry: `section: ConfigType,` for each component — its `tillgate.toml`
/// section and its [`ComponentConfig`], in the order the journal opens their sinks'
/// cursors (after the archive's). A component behind a cargo feature carries its
/// `#[cfg]`. Hands the list to `$build`, a macro that declares something from it.
macro_rules! registry {
    ($build:ident) => {
        $build! {
            kinesis: tillgate_kinesis::KinesisConfig,
            mqtt: tillgate_mqtt::MqttConfig,
            #[cfg(feature = "video")]
            video: tillgate_video::VideoConfig,
        }
    };
}
pub(crate) use registry;

/// `[sinks.archive]` when the config leaves it out: the archive is on by default.
static DEFAULT_ARCHIVE: LazyLock<ArchiveConfig> = LazyLock::new(ArchiveConfig::default);

/// Declares [`enabled`] and [`status_views`] over the registry.
macro_rules! over_components {
    ($($(#[cfg($on:meta)])? $section:ident: $config:ty,)*) => {
        /// The config's enabled components: the archive, then the registry's, in the
        /// order the journal keeps their sinks' cursors.
        pub fn enabled(config: &Config) -> Vec<&dyn ComponentConfig> {
            let mut all: Vec<&dyn ComponentConfig> = vec![config.sinks.archive.as_ref().unwrap_or(&DEFAULT_ARCHIVE)];
            $(
                $(#[cfg($on)])?
                all.extend(config.$section.as_ref().map(|c| c as &dyn ComponentConfig));
            )*
            all.retain(|c| c.enabled());
            all
        }

        /// How `tillgate status` and systemd's STATUS line read each component's
        /// section (those that report one).
        pub fn status_views() -> Vec<&'static dyn StatusView> {
            let mut all = Vec::new();
            $(
                $(#[cfg($on)])?
                all.extend(<$config as ComponentConfig>::status_view());
            )*
            all
        }
    };
}
registry!(over_components);

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

/// The cameras rule-hit alerts point at, over every component.
pub fn video_links(config: &Config) -> crate::journal::VideoLinks {
    crate::journal::VideoLinks::new(enabled(config).iter().flat_map(|c| c.video_coverage()).collect())
}

/// Every sink, in cursor order.
pub fn sink_names(config: &Config) -> Vec<String> {
    enabled(config).iter().flat_map(|c| c.sink_names()).collect()
}
