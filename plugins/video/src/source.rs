//! One camera's GStreamer pipeline, ending in an appsink that yields H.264 access units
//! in AVC form (length-prefixed NAL units, codec data in the caps). H.264 sources are
//! never transcoded; raw sources (V4L2, the test pattern) are encoded with x264.

use crate::config::{CameraConfig, SourceKind};
use crate::fragmenter::Stamp;
use crate::mkv::TrackInfo;
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::mpsc;

/// What the pipeline hands the camera task.
#[derive(Debug)]
pub enum SourceEvent {
    Frame {
        /// Presentation and decode times (decode order: frames come as they decode).
        stamp: Stamp,
        key: bool,
        data: Bytes,
        track: TrackInfo,
    },
    /// The pipeline failed or ended; it must be rebuilt.
    Stopped(String),
}

/// The caps every source ends with.
const AVC_CAPS: &str = "video/x-h264,stream-format=avc,alignment=au";

/// The pipeline description (credentials and the URL are set as properties, not here).
pub fn describe(camera: &CameraConfig, fragment_secs: u32) -> String {
    let encode = |raw: &str| {
        // A key frame every fragment: fragments then last exactly the target.
        let gop = camera.fps * fragment_secs.max(1);
        format!(
            "{raw} ! videoconvert ! videoscale ! video/x-raw,format=I420,width={w},height={h},framerate={f}/1 ! \
             x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={b} ! \
             h264parse config-interval=-1 ! {AVC_CAPS} ! appsink name=sink sync=false",
            w = camera.width,
            h = camera.height,
            f = camera.fps,
            b = camera.bitrate_kbps,
        )
    };
    match camera.source {
        // buffer-mode=none: frames keep the camera's own RTP times (exact, B-frames in
        // their presentation order); the default slaves them to arrival times, which
        // adds tens of ms of jitter to every frame. The camera's drift from the gateway
        // clock is taken up by the fragmenter's re-anchoring.
        SourceKind::Rtsp => format!(
            "rtspsrc name=src protocols=tcp latency={} buffer-mode=none ! rtph264depay ! h264parse config-interval=-1 ! {AVC_CAPS} ! appsink name=sink sync=false",
            camera.latency.get().as_millis()
        ),
        SourceKind::V4l2 => encode("v4l2src name=src"),
        SourceKind::Test => encode("videotestsrc name=src is-live=true pattern=smpte"),
    }
}

/// Track info from the appsink's caps.
fn track_of(caps: &gst::CapsRef) -> Option<TrackInfo> {
    let s = caps.structure(0)?;
    let codec_data = s.get::<gst::Buffer>("codec_data").ok()?;
    let map = codec_data.map_readable().ok()?;
    Some(TrackInfo {
        codec_private: map.as_slice().to_vec(),
        width: s.get::<i32>("width").ok()?.max(0) as u32,
        height: s.get::<i32>("height").ok()?.max(0) as u32,
        frame_ns: s
            .get::<gst::Fraction>("framerate")
            .ok()
            .filter(|f| f.numer() > 0 && f.denom() > 0)
            .map(|f| 1_000_000_000 * f.denom() as u64 / f.numer() as u64),
    })
}

/// A running pipeline; dropping it stops it.
#[derive(Debug)]
pub struct Source {
    pipeline: gst::Pipeline,
}

impl Drop for Source {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Source {
    /// Builds and starts the pipeline; samples and failures arrive on `events`.
    pub fn start(
        camera: &CameraConfig,
        fragment_secs: u32,
        events: mpsc::Sender<SourceEvent>,
    ) -> Result<Source, String> {
        gst::init().map_err(|e| format!("GStreamer: {e}"))?;
        let description = describe(camera, fragment_secs);
        let pipeline = gst::parse::launch(&description)
            .map_err(|e| format!("pipeline `{description}`: {e}"))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| "not a pipeline".to_string())?;
        let src = pipeline.by_name("src").ok_or("pipeline has no source")?;
        configure_source(&src, camera)?;
        let sink = pipeline
            .by_name("sink")
            .ok_or("pipeline has no appsink")?
            .downcast::<gst_app::AppSink>()
            .map_err(|_| "sink is not an appsink".to_string())?;
        sink.set_max_buffers(64);
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(frame_sender(events.clone()))
                .build(),
        );
        let bus = pipeline.bus().ok_or("pipeline has no bus")?;
        let stopped = events;
        bus.set_sync_handler(move |_, message| {
            use gst::MessageView;
            let why = match message.view() {
                MessageView::Error(e) => Some(format!(
                    "{}: {}",
                    e.src().map(|s| s.path_string().to_string()).unwrap_or_default(),
                    e.error()
                )),
                MessageView::Eos(_) => Some("end of stream".to_string()),
                _ => None,
            };
            if let Some(why) = why {
                let _ = stopped.try_send(SourceEvent::Stopped(why));
            }
            gst::BusSyncReply::Drop
        });
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("cannot start the pipeline: {e}"))?;
        Ok(Source { pipeline })
    }
}

/// Sets what the description leaves out: the RTSP URL and credentials (read from their
/// file now, never logged), the V4L2 device.
fn configure_source(src: &gst::Element, camera: &CameraConfig) -> Result<(), String> {
    match camera.source {
        SourceKind::Rtsp => {
            src.set_property("location", camera.url.as_deref().unwrap_or_default());
            if let Some(file) = &camera.credentials_file {
                let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
                let (user, password) = text
                    .trim()
                    .split_once(':')
                    .ok_or("credentials_file must hold user:password")?;
                src.set_property("user-id", user);
                src.set_property("user-pw", password);
            }
        }
        SourceKind::V4l2 => {
            let device = camera.device.clone().unwrap_or_default();
            if !device.exists() {
                // The packaged unit hides devices (PrivateDevices=yes) unless its
                // drop-in for V4L2 cameras is installed.
                return Err(format!(
                    "{} does not exist (under systemd, install the drop-in \
                     /usr/share/tillgate/systemd/v4l2-cameras.conf into \
                     /etc/systemd/system/tillgate.service.d/: the unit hides devices otherwise)",
                    device.display()
                ));
            }
            src.set_property("device", device.display().to_string());
        }
        SourceKind::Test => {}
    }
    Ok(())
}

/// The appsink's callback: each access unit, with its caps' track, to the camera task.
fn frame_sender(
    frames: mpsc::Sender<SourceEvent>,
) -> impl FnMut(&gst_app::AppSink) -> Result<gst::FlowSuccess, gst::FlowError> + Send + 'static {
    move |sink| {
        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
        let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
            return Ok(gst::FlowSuccess::Ok);
        };
        let Some(track) = track_of(caps) else {
            return Ok(gst::FlowSuccess::Ok);
        };
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        let event = SourceEvent::Frame {
            stamp: Stamp {
                pts_ns: buffer.pts().map(|t| t.nseconds()),
                dts_ns: buffer.dts().map(|t| t.nseconds()),
            },
            key: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
            data: Bytes::copy_from_slice(map.as_slice()),
            track,
        };
        // Back-pressure on the streaming thread if the camera task lags; the task only
        // appends to memory, so this does not happen in practice.
        frames.blocking_send(event).map_err(|_| gst::FlowError::Flushing)?;
        Ok(gst::FlowSuccess::Ok)
    }
}
