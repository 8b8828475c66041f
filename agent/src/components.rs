//! What a config turns on, by name: the sources that take transactions and the sinks
//! that ship them, in the order the journal keeps their cursors. `agent::run` opens the
//! cursors from this list and `check-config` prints it, so the two cannot disagree.

use crate::config::Config;
use tillgate_sdk::Sink;

/// Every source: HTTP always, then MQTT and each camera when configured.
pub fn sources(config: &Config) -> Vec<String> {
    let mut out = vec![format!("http {}", config.http.listen)];
    if let Some(m) = config.mqtt() {
        out.push(format!("mqtt {}", m.broker_url()));
    }
    #[cfg(feature = "video")]
    if let Some(v) = config.video() {
        out.extend(v.cameras.iter().map(|c| format!("camera {}", c.name)));
    }
    out
}

/// Every sink: those `sinks::build` made, then those plugins bring once started (MQTT
/// alerts publish over the MQTT connection, camera tags go to the camera tasks).
pub fn sink_names(config: &Config, built: &[Box<dyn Sink>]) -> Vec<String> {
    let mut names: Vec<String> = built.iter().map(|s| s.name().to_string()).collect();
    if config.mqtt().is_some_and(|m| m.alerts) {
        names.push(tillgate_mqtt::AlertSink::NAME.to_string());
    }
    #[cfg(feature = "video")]
    if config.video().is_some() {
        names.push(tillgate_video::tags::TagSink::NAME.to_string());
    }
    names
}
