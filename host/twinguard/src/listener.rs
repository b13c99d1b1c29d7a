//! What every HTTP listener of the process (the admin API, the telemetry endpoint) does
//! against a flood of connections, authenticated or not.
//!
//! - A cap on open connections: past it, `accept` is not called, so new connections wait in the
//!   kernel's backlog (and time out there) instead of using up the process's descriptors, which
//!   the MQTT gateway and the quarantine store need too.
//! - When `accept` fails anyway (descriptors exhausted by something else), an exponential
//!   backoff up to about a second, and one log line per streak of failures instead of one per
//!   attempt: a tight loop of warnings filled 1.35 GB of log in 40 s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A listener with a connection cap.
pub(crate) struct Guarded {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    /// Names the listener in log lines.
    what: &'static str,
    /// Failed accepts in the current streak.
    failed: u32,
}

impl Guarded {
    /// At most `max_connections` (at least 1) open at once.
    pub(crate) fn new(listener: TcpListener, max_connections: usize, what: &'static str) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            what,
            failed: 0,
        }
    }

    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection, once a slot is free; the slot is held until the permit drops (with
    /// the connection's task).
    pub(crate) async fn accept(&mut self) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
        let permit = match Arc::clone(&self.slots).acquire_owned().await {
            Ok(permit) => permit,
            // The semaphore is never closed; if it were, accept nothing rather than panic.
            Err(_) => std::future::pending().await,
        };
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    if self.failed > 0 {
                        tracing::info!(
                            "{}: accepting again after {} failed attempts",
                            self.what,
                            self.failed
                        );
                        self.failed = 0;
                    }
                    return (stream, peer, permit);
                }
                Err(e) => {
                    if self.failed == 0 {
                        tracing::warn!("{}: accept failed: {e}; backing off", self.what);
                    }
                    self.failed = self.failed.saturating_add(1);
                    let pause = 10_u64 << self.failed.min(7);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
        }
    }
}
