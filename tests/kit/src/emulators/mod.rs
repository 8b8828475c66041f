//! Real programs nobody here wrote, run as processes for a test: mosquitto, the
//! Kinesis emulator, the AWS emulator moto, an RTSP test camera.

pub mod broker;
pub mod kinesis_local;
pub mod moto;
pub mod rtsp_camera;
