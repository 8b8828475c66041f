//! Readers of what the agent leaves behind, with tools nobody here wrote where there is
//! one: the archive, what landed in Kinesis (aws-kinesis-agg), MKV fragments (ffmpeg),
//! the status page (headless Chromium).

pub mod archive;
pub mod kinesis;
pub mod mkv;
pub mod page;
pub mod video;
