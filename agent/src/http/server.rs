//! The HTTP server loop: hyper's HTTP/1 connections with the limits `axum::serve` does
//! not have — a cap on open connections, header and idle timeouts (the body timeout is
//! the handler's, `body.rs`), and a graceful stop bounded by `http.shutdown_grace`.
//!
//! Hand-written around hyper rather than a crate: tower-http's timeouts start once a
//! request's headers are in, so they cannot see a client that trickles its headers,
//! and hyper's own header timer also runs while a kept-alive connection is idle, which
//! would make the two timeouts one.

use crate::metrics::Metrics;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The limits of `[http]` the server loop enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// How a connection ended, as counted in `tillgate_http_connections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The client closed it, or hyper did after a response with `Connection: close`.
    Closed,
    /// A request's headers did not arrive within `http.header_timeout`.
    HeaderTimeout,
    /// Nothing moved for `http.idle_timeout` with no request in progress.
    IdleTimeout,
    /// Still open when the graceful phase ended.
    Shutdown,
    /// A protocol or I/O error.
    Error,
}

impl Ending {
    fn label(self) -> &'static str {
        match self {
            Ending::Closed => "closed",
            Ending::HeaderTimeout => "header_timeout",
            Ending::IdleTimeout => "idle_timeout",
            Ending::Shutdown => "shutdown",
            Ending::Error => "error",
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets
/// requests in progress finish for at most `shutdown_grace`, and closes the rest.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // A slot first: above the cap, clients wait in the listen backlog, and the
        // header and idle timeouts free slots held by clients that send nothing useful.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(connection(
            stream,
            app.clone(),
            limits,
            metrics.clone(),
            stop_rx.clone(),
            slot,
        ));
    }
    drop(listener);
    stop_tx.send_replace(true);
    let finished = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        let open = connections.len();
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        metrics
            .http_connections
            .with_label_values(&[Ending::Shutdown.label()])
            .inc_by(open as u64);
        tracing::warn!(
            open,
            grace = ?limits.shutdown_grace,
            "HTTP connections still open at the end of http.shutdown_grace were closed"
        );
    }
}

/// One connection: hyper's HTTP/1 state machine, watched by the timeouts.
async fn connection(
    stream: TcpStream,
    app: Router,
    limits: Limits,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    metrics.http_open_connections.inc();
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = tracked.request_started();
        let call = tower::ServiceExt::oneshot(app.clone(), req);
        async move {
            let response = call.await;
            drop(guard);
            response
        }
    });
    // hyper's read buffer grows to ~400 KiB by default; headers of a few KiB and bodies
    // read in chunks need far less, and every connection may hold one.
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(64 * 1024)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    let ending = loop {
        let deadline = activity.deadline(limits);
        tokio::select! {
            done = conn.as_mut() => match done {
                Ok(()) => break Ending::Closed,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                    break Ending::Error;
                }
            },
            changed = stop.changed(), if !stopping => {
                if changed.is_err() || *stop.borrow() {
                    // Idle connections close now; one with a request in progress after
                    // its answer.
                    conn.as_mut().graceful_shutdown();
                    stopping = true;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                if let Some(ending) = activity.expired(limits) {
                    break ending;
                }
            }
        }
    };
    metrics.http_connections.with_label_values(&[ending.label()]).inc();
    metrics.http_open_connections.dec();
}

/// What a connection has been doing, in milliseconds since [`Activity::epoch`].
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    /// The last byte read or written.
    last_moved: AtomicU64,
    /// When the first byte of a request's head arrived with no request in progress;
    /// `u64::MAX` when no head is being read.
    head_started: AtomicU64,
    /// Requests whose handler is running (pipelining allows more than one).
    in_request: AtomicUsize,
}

/// Ends a request's "in progress" when the handler's future finishes.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.in_request.fetch_sub(1, Ordering::AcqRel);
        self.0.moved();
    }
}

impl Activity {
    fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            last_moved: AtomicU64::new(0),
            head_started: AtomicU64::new(u64::MAX),
            in_request: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn moved(&self) {
        self.last_moved.store(self.now(), Ordering::Release);
    }

    fn read_some(&self) {
        self.moved();
        if self.in_request.load(Ordering::Acquire) == 0 {
            let _ = self
                .head_started
                .compare_exchange(u64::MAX, self.now(), Ordering::AcqRel, Ordering::Acquire);
        }
    }

    fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_request.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(u64::MAX, Ordering::Release);
        RequestGuard(self.clone())
    }

    /// Why the connection must close now, if it must.
    fn expired(&self, limits: Limits) -> Option<Ending> {
        if self.in_request.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = self.now();
        let head = self.head_started.load(Ordering::Acquire);
        if head != u64::MAX && now.saturating_sub(head) >= limits.header_timeout.as_millis() as u64 {
            return Some(Ending::HeaderTimeout);
        }
        let idle = now.saturating_sub(self.last_moved.load(Ordering::Acquire));
        (head == u64::MAX && idle >= limits.idle_timeout.as_millis() as u64).then_some(Ending::IdleTimeout)
    }

    /// When to look again: the earliest moment a timeout could fire.
    fn deadline(&self, limits: Limits) -> Instant {
        if self.in_request.load(Ordering::Acquire) > 0 {
            // Re-checked after the request: its guard counts as movement.
            return Instant::now() + limits.idle_timeout.min(limits.header_timeout);
        }
        let head = self.head_started.load(Ordering::Acquire);
        let at = if head != u64::MAX {
            head + limits.header_timeout.as_millis() as u64
        } else {
            self.last_moved.load(Ordering::Acquire) + limits.idle_timeout.as_millis() as u64
        };
        self.epoch + Duration::from_millis(at) + Duration::from_millis(1)
    }
}

/// The socket, reporting every byte that moves to the connection's [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 1,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_trickled_past_the_header_timeout_ends_the_connection() {
        let a = Arc::new(Activity::new());
        a.read_some();
        tokio::time::advance(Duration::from_secs(9)).await;
        a.read_some();
        assert_eq!(a.expired(limits()), None, "still within the header timeout");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            a.expired(limits()),
            Some(Ending::HeaderTimeout),
            "bytes keep coming, but the head never ends"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_is_never_timed_out_and_idle_counts_from_its_end() {
        let a = Arc::new(Activity::new());
        a.read_some();
        let guard = a.request_started();
        tokio::time::advance(Duration::from_secs(120)).await;
        assert_eq!(a.expired(limits()), None, "waiting for the journal is not idling");
        drop(guard);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(a.expired(limits()), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(a.expired(limits()), Some(Ending::IdleTimeout));
    }
}
