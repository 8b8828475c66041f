//! Readers of what the agent leaves behind, with tools nobody here wrote where there is
//! one: the archive, what landed in Kinesis (aws-kinesis-agg), MKV fragments (ffmpeg).

pub mod archive;
pub mod kinesis;
pub mod mkv;
pub mod video;
