//! Real programs nobody here wrote, run as processes for a test: mosquitto, the
//! Kinesis emulator, an RTSP test camera.

pub mod broker;
pub mod kinesis_local;
pub mod rtsp_camera;
