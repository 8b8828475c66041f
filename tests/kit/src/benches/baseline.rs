//! The baselines the agent's HTTP figures sit beside, driven by the same load generator
//! (`tillgate::simulate`) in the same run, on the same machine and disk:
//!
//! - **do-nothing**: an HTTP server that reads the request and answers a fixed 200 with
//!   a decision of the agent's shape — the cost of HTTP and the load generator alone;
//! - **durable floor**: the same server answering only after the request body was
//!   appended to a file and covered by an `fdatasync`, group commit on one writer
//!   thread — what any durable answer costs on this disk, with nothing else done;
//! - **contention**: a background writer doing 64 KiB writes and an `fdatasync` after
//!   each, on the same disk, as the archive sink and SQLite checkpoints do beside the
//!   journal.
//!
//! Both servers answer `POST /v1/transactions` only (single transactions); they are not
//! tillgate and check nothing.

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A running baseline server.
#[derive(Debug)]
pub struct Baseline {
    pub url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Baseline {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A body and where to answer once it is durable.
type Pending = (Bytes, oneshot::Sender<()>);

#[derive(Clone)]
struct Floor {
    /// `None`: answer at once (do-nothing).
    writer: Option<mpsc::Sender<Pending>>,
}

/// 200 once durable (at once for do-nothing); 500 when the floor's writer failed, so a
/// floor that lost its disk never passes for a fast one.
async fn answer(State(floor): State<Floor>, body: Bytes) -> Result<Json<Value>, StatusCode> {
    let started = Instant::now();
    if let Some(writer) = &floor.writer {
        let (tx, rx) = oneshot::channel();
        writer.send((body, tx)).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        rx.await.map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    }
    Ok(Json(json!({
        "txn_id": "baseline",
        "decision": "allow",
        "rules": [],
        "seq": 0,
        "decided_in_us": started.elapsed().as_micros() as u64,
    })))
}

async fn serve(floor: Floor) -> Result<Baseline> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = Router::new().route("/v1/transactions", post(answer)).with_state(floor);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Baseline { url, server })
}

/// The do-nothing server.
pub async fn do_nothing() -> Result<Baseline> {
    serve(Floor { writer: None }).await
}

/// The durable floor, appending to `dir/floor.log`.
pub async fn durable_floor(dir: &Path) -> Result<Baseline> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("floor.log"))
        .context("the durable floor's file")?;
    let (tx, rx) = mpsc::channel::<Pending>();
    std::thread::Builder::new()
        .name("durable-floor".into())
        .spawn(move || {
            // Group commit: everything that arrived while the last fdatasync ran goes
            // into the next one.
            while let Ok(first) = rx.recv() {
                let mut group = vec![first];
                group.extend(rx.try_iter());
                let written = group
                    .iter()
                    .try_for_each(|(body, _)| file.write_all(body).and_then(|()| file.write_all(b"\n")))
                    .and_then(|()| file.sync_data());
                if let Err(e) = written {
                    eprintln!("durable floor: {e}");
                    return;
                }
                for (_, done) in group {
                    let _ = done.send(());
                }
            }
        })?;
    serve(Floor { writer: Some(tx) }).await
}

/// A background writer competing for the disk until dropped: 64 KiB writes to
/// `dir/contention.bin`, each followed by an `fdatasync`, the file restarted every 64 MiB.
#[derive(Debug)]
pub struct Contention {
    stop: Arc<AtomicBool>,
    syncs: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Contention {
    pub fn start(dir: &Path) -> Result<Contention> {
        let path = dir.join("contention.bin");
        let stop = Arc::new(AtomicBool::new(false));
        let syncs = Arc::new(AtomicU64::new(0));
        let (stop2, syncs2) = (stop.clone(), syncs.clone());
        let block = vec![0x5au8; 64 * 1024];
        let thread = std::thread::Builder::new().name("contention".into()).spawn(move || {
            let mut file = None::<File>;
            let mut written = 0usize;
            while !stop2.load(Ordering::Relaxed) {
                if file.is_none() || written >= 64 << 20 {
                    file = File::create(&path).ok();
                    written = 0;
                }
                let Some(f) = file.as_mut() else {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                if f.write_all(&block).and_then(|()| f.sync_data()).is_ok() {
                    written += block.len();
                    syncs2.fetch_add(1, Ordering::Relaxed);
                }
            }
        })?;
        Ok(Contention {
            stop,
            syncs,
            thread: Some(thread),
        })
    }

    /// fdatasyncs done so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

impl Drop for Contention {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
