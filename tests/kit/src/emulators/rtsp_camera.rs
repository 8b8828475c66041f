//! A test RTSP camera: GStreamer's RTSP server (tests/kit/python/rtsp_camera.py, run with
//! Debian's python3-gi) serving live H.264 on a loopback port. It can be killed and
//! started again on the same port, like a camera losing power.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Picture and rate of the test camera.
#[derive(Debug, Clone, Copy)]
pub struct CameraMode {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Frames between key frames.
    pub key_int: u32,
    /// B-frames between reference frames (0: none, Baseline profile).
    pub b_frames: u32,
}

impl Default for CameraMode {
    /// 720p15 with a key frame every 2 s, like a store camera set up for KVS.
    fn default() -> Self {
        CameraMode {
            width: 1280,
            height: 720,
            fps: 15,
            key_int: 30,
            b_frames: 0,
        }
    }
}

/// The running camera.
#[derive(Debug)]
pub struct RtspCamera {
    pub port: u16,
    pub mode: CameraMode,
    child: Option<Child>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/rtsp_camera.py")
}

impl RtspCamera {
    pub fn start(mode: CameraMode) -> RtspCamera {
        let mut camera = RtspCamera {
            port: crate::process::free_port(),
            mode,
            child: None,
        };
        camera.power_on();
        camera
    }

    /// `rtsp://127.0.0.1:port/cam`
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    /// Starts the server (again) on the same port and waits until it accepts.
    pub fn power_on(&mut self) {
        let m = self.mode;
        let child = Command::new("/usr/bin/python3")
            .arg(script())
            .args([
                self.port.to_string(),
                "/cam".into(),
                m.width.to_string(),
                m.height.to_string(),
                m.fps.to_string(),
                m.key_int.to_string(),
                m.b_frames.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the RTSP test camera (needs python3-gi and gir1.2-gst-rtsp-server-1.0)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "RTSP test camera did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (like pulling the camera's cable).
    pub fn power_off(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RtspCamera {
    fn drop(&mut self) {
        self.power_off();
    }
}
