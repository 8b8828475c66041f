//! A listener for the kit's fake AWS endpoints that can play an outage: while `refuse`
//! says so, every accepted connection is dropped at once (the client sees a reset, as
//! when a store's uplink or a NAT drops it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Decides, per connection, whether the endpoint is "down" (and counts it, if it likes).
pub type Refuse = Arc<dyn Fn() -> bool + Send + Sync>;

pub struct OutageListener {
    inner: tokio::net::TcpListener,
    refuse: Refuse,
}

impl std::fmt::Debug for OutageListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutageListener")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl OutageListener {
    pub fn new(inner: tokio::net::TcpListener, refuse: Refuse) -> Self {
        OutageListener { inner, refuse }
    }
}

impl axum::serve::Listener for OutageListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((io, addr)) = self.inner.accept().await else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            if (self.refuse)() {
                drop(io);
                continue;
            }
            let _ = io.set_nodelay(true);
            return (io, addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
