//! `tillgate cloud`: what a chain's cloud team runs against the stack in `cloud/`
//! (docs/cloud.md): a gateway's `[kinesis]` and `[video]` sections from the stack's
//! outputs, and the shard count for an expected rate.
//!
//! The sections are written by the binary that reads them, from the outputs the template
//! declares, so the names in a gateway's config cannot drift from the stack's.

mod gateway_config;
mod outputs;
mod shards;

use gateway_config::render;
pub use gateway_config::{Camera, Credentials, Gateway};
use outputs::StackOutputs;
use shards::shards_for;

use std::path::PathBuf;

/// Exit code for bad arguments or an unusable outputs file (sysexits EX_DATAERR).
const EXIT_DATA: i32 = 65;

/// `tillgate cloud gateway-config`: prints the sections; returns the exit code.
pub fn gateway_config(outputs_file: &PathBuf, gateway: &Gateway) -> i32 {
    let text = match std::fs::read_to_string(outputs_file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tillgate: cannot read {}: {e}", outputs_file.display());
            return 66;
        }
    };
    let rendered = StackOutputs::parse(&text).and_then(|outputs| render(&outputs, gateway));
    match rendered {
        Ok(toml) => {
            print!("{toml}");
            0
        }
        Err(e) => {
            eprintln!("tillgate: {}: {e}", outputs_file.display());
            EXIT_DATA
        }
    }
}

/// `tillgate cloud shards`: prints the estimate; returns the exit code.
pub fn shards(mib_per_second: f64, records_per_second: f64) -> i32 {
    match shards_for(mib_per_second, records_per_second) {
        Ok(estimate) => {
            println!("{estimate}");
            0
        }
        Err(e) => {
            eprintln!("tillgate: {e}");
            EXIT_DATA
        }
    }
}

/// `NAME=rtsp://host/path`, as `--camera` takes it.
pub fn parse_camera(arg: &str) -> Result<Camera, String> {
    let (name, url) = arg
        .split_once('=')
        .ok_or_else(|| format!("--camera {arg:?}: expected NAME=rtsp://host/path"))?;
    Ok(Camera {
        name: name.trim().to_string(),
        url: url.trim().to_string(),
    })
}
