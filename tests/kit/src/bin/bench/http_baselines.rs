//! The foundation suite's baselines (`tillgate_testkit::benches::baseline`) under the
//! agent's loads, in the same run.

use super::sim;
use anyhow::Result;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tillgate::simulate;
use tillgate_testkit::benches::baseline::{self, Contention};

/// The do-nothing HTTP server and the durable floor under the same load as the agent:
/// 5,000 txn/s offered by 64 terminals, the closed loop of 32 connections, and the floor
/// at 5,000 txn/s beside the same background writer.
pub(crate) async fn measure(dir: &Path, secs: Duration) -> Result<Value> {
    eprintln!("[5/6] do-nothing HTTP server: 5,000 txn/s, closed loop of 32");
    let nothing = baseline::do_nothing().await?;
    let nothing_5k = simulate::run(sim(&nothing.url, 64, 5_000.0, secs, 1, 11), |_| {}).await;
    let nothing_closed = simulate::run(sim(&nothing.url, 32, 0.0, secs, 1, 12), |_| {}).await;
    drop(nothing);
    eprintln!("[6/6] durable floor (append + fdatasync, group commit): 5,000 txn/s, closed loop of 32, contended");
    let floor = baseline::durable_floor(dir).await?;
    let floor_5k = simulate::run(sim(&floor.url, 64, 5_000.0, secs, 1, 13), |_| {}).await;
    let floor_closed = simulate::run(sim(&floor.url, 32, 0.0, secs, 1, 14), |_| {}).await;
    let contention = Contention::start(dir)?;
    let floor_contended = simulate::run(sim(&floor.url, 64, 5_000.0, secs, 1, 15), |_| {}).await;
    drop(contention);
    Ok(json!({
        "do_nothing_at_5000_per_s": nothing_5k,
        "do_nothing_closed_loop_32": nothing_closed,
        "durable_floor_at_5000_per_s": floor_5k,
        "durable_floor_closed_loop_32": floor_closed,
        "durable_floor_at_5000_per_s_contended": floor_contended,
    }))
}
