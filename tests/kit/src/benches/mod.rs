//! Load generators and measurements behind `tillgate-bench` (BENCHMARKS.md).

pub mod baseline;
pub mod kinesis;
pub mod mqtt;
