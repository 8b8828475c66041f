//! `[video]` as a component: each camera is a source, the `video-tags` sink takes
//! alerts, and the cameras' status is the `cameras` section.

use crate::config::UploadMode;
use crate::status::CamerasView;
use crate::tags::TagSink;
use crate::{Cameras, VideoConfig};
use async_trait::async_trait;
use tillgate_sdk::{
    CheckContext, Component, ComponentConfig, ConfigError, Sink, StartContext, StatusSection, StatusView,
    VideoCoverage, VideoEvents,
};

/// How `tillgate status` shows cameras.
pub static STATUS_VIEW: CamerasView = CamerasView;

impl ComponentConfig for VideoConfig {
    fn section(&self) -> &'static str {
        "video"
    }

    fn status_view() -> Option<&'static dyn StatusView> {
        Some(&STATUS_VIEW)
    }

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn check(&self, _cx: &CheckContext) -> Result<(), ConfigError> {
        crate::check(self)
    }

    fn sources(&self) -> Vec<String> {
        self.cameras.iter().map(|c| format!("camera {}", c.name)).collect()
    }

    fn video_coverage(&self) -> Vec<VideoCoverage> {
        let events = VideoEvents {
            decisions: self.events.decisions.clone(),
            rules: self.events.rules.clone(),
        };
        self.cameras
            .iter()
            .filter_map(|c| {
                let only = match c.mode(self) {
                    UploadMode::Off => return None,
                    UploadMode::Continuous => None,
                    UploadMode::Events => Some(events.clone()),
                };
                Some(VideoCoverage {
                    camera: c.name.clone(),
                    stream: c.stream_name().to_string(),
                    terminals: c.terminals.clone(),
                    before: self.clip_before.get(),
                    after: self.clip_after.get(),
                    only,
                })
            })
            .collect()
    }

    fn sink_names(&self) -> Vec<String> {
        if self.cameras.is_empty() {
            return Vec::new();
        }
        vec![TagSink::NAME.to_string()]
    }

    fn start(&self, cx: StartContext<'_>) -> Result<Box<dyn Component>, String> {
        if self.cameras.is_empty() {
            return Ok(Box::new(Cameras::none()));
        }
        let cameras = Cameras::start(self, &cx.data_path(&self.dir), cx.registry).map_err(|e| e.to_string())?;
        Ok(Box::new(cameras))
    }
}

#[async_trait]
impl Component for Cameras {
    fn take_sinks(&mut self) -> Vec<Box<dyn Sink>> {
        self.take_tag_sink()
            .map(|s| Box::new(s) as Box<dyn Sink>)
            .into_iter()
            .collect()
    }

    fn clips(&self) -> Option<std::sync::Arc<dyn tillgate_sdk::ClipMaker>> {
        Cameras::clips(self).map(|c| c as std::sync::Arc<dyn tillgate_sdk::ClipMaker>)
    }

    fn status(&self) -> Option<StatusSection> {
        let handles = self.status_handles();
        if handles.is_empty() {
            return None;
        }
        Some(StatusSection::new("cameras", move || {
            let cameras: Vec<_> = handles.iter().map(|h| h.get()).collect();
            serde_json::to_value(cameras).unwrap_or_default()
        }))
    }

    /// Each pipeline stores its open fragment; unsent fragments wait on disk.
    async fn stop(self: Box<Self>) {
        Cameras::stop(*self).await;
    }
}
