//! Load generators and measurements behind `tillgate-bench` (BENCHMARKS.md).

pub mod kinesis;
pub mod mqtt;
