//! Guest stdout/stderr: captured per store in a bounded buffer, drained into the host log
//! after each call, so a chatty (or hostile) guest can neither flood the log nor fault on a
//! full pipe.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::async_trait;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of guest output kept per call; the rest is counted and dropped.
pub(crate) const CAPACITY: usize = 4096;

#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: usize,
}

#[derive(Debug, Default)]
struct Shared {
    /// Set by a write, cleared by the take that drains it: most calls write nothing, and a
    /// load is cheaper than the lock `take` would take after every call.
    written: AtomicBool,
    buffer: Mutex<Buffer>,
}

/// One store's guest output. The mutex is per store, never shared between threads at once.
#[derive(Debug, Clone, Default)]
pub(crate) struct GuestOutput(Arc<Shared>);

impl GuestOutput {
    fn append(&self, data: &[u8]) {
        let mut buf = self.0.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        self.0.written.store(true, Ordering::Release);
        let room = CAPACITY.saturating_sub(buf.bytes.len());
        let take = room.min(data.len());
        buf.bytes.extend_from_slice(&data[..take]);
        buf.dropped += data.len() - take;
    }

    /// Takes what was written since the last call: text (lossy UTF-8) and bytes dropped.
    pub fn take(&self) -> Option<(String, usize)> {
        if !self.0.written.load(Ordering::Acquire) {
            return None;
        }
        let mut buf = self.0.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        self.0.written.store(false, Ordering::Relaxed);
        if buf.bytes.is_empty() && buf.dropped == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&buf.bytes).into_owned();
        let dropped = buf.dropped;
        buf.bytes.clear();
        buf.dropped = 0;
        Some((text, dropped))
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept: excess is dropped, never an error the guest could trip over.
        Ok(64 * 1024)
    }
}

#[async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
