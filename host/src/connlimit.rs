//! Connection limits: how many connections the host holds at once, how many one peer address
//! may hold, and (with the header-read timeout set on the HTTP builder in `server`) how long
//! a connection may sit without sending a complete request head.
//!
//! Why: each connection costs a file descriptor. Without limits, idle or half-sent
//! connections (slowloris) held by one peer exhaust the descriptors and every other client —
//! health checks included — waits for as long as they are held. A connection over a limit is
//! accepted and closed at once (freeing its descriptor and the listen backlog); one that
//! sends no complete request head within `api.header_read_timeout_ms` is closed by the HTTP
//! layer, whether it is new or idle between keep-alive requests. Requests in progress
//! (a long SSE stream, a WebSocket, a slow upload) are not cut by either.
//!
//! The effective global cap is the configured one, lowered to leave `FD_RESERVE` descriptors
//! for the database, plugins, PTY holders and children when the process's descriptor limit
//! is smaller.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// Descriptors kept free for everything but client connections.
pub const FD_RESERVE: u64 = 128;

/// Admits or refuses accepted connections; cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    /// How long a new connection may stay silent before its first byte.
    first_byte: Duration,
    global: Arc<Semaphore>,
    per_address: usize,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
    metrics: Arc<Metrics>,
}

impl Limiter {
    /// `max` connections in all (lowered to fit the descriptor limit), `per_address` per peer;
    /// a connection that sends nothing within `first_byte` is closed (the HTTP layer's
    /// header-read timeout only starts once it knows the protocol, i.e. after a first byte).
    pub fn new(
        max: usize,
        per_address: usize,
        first_byte: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let cap = effective_cap(max);
        if cap < max {
            tracing::warn!(
                configured = max,
                effective = cap,
                "api.max_connections lowered to fit the open-file limit (ulimit -n)"
            );
        }
        Self {
            first_byte,
            global: Arc::new(Semaphore::new(cap)),
            per_address: per_address.max(1),
            held: Arc::new(Mutex::new(HashMap::new())),
            metrics,
        }
    }

    /// A slot for a connection from `ip`, or `None` when a limit is reached.
    pub fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let permit = self.global.clone().try_acquire_owned().ok();
        let Some(permit) = permit else {
            Metrics::inc(&self.metrics.connections_refused);
            return None;
        };
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(ip).or_insert(0);
        if *n >= self.per_address {
            Metrics::inc(&self.metrics.connections_refused);
            return None;
        }
        *n += 1;
        Some(Slot {
            ip,
            held: self.held.clone(),
            _permit: permit,
        })
    }
}

/// `max`, lowered so that `max + FD_RESERVE` fits the soft open-file limit.
fn effective_cap(max: usize) -> usize {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft != nix::sys::resource::RLIM_INFINITY => {
            let room = soft.saturating_sub(FD_RESERVE).max(16);
            max.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        _ => max,
    }
}

/// A held connection slot; released when the connection ends.
pub struct Slot {
    ip: IpAddr,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// A connection that holds its slot for as long as it lives, and is closed if its first byte
/// does not come in time.
pub struct Limited<S> {
    inner: S,
    _slot: Slot,
    /// Until the first byte arrives: when the connection gives up waiting for it.
    first_byte: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.first_byte = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let expired = self
                    .first_byte
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the header-read timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S> axum_server::accept::Accept<TcpStream, S> for Limiter {
    type Stream = Limited<TcpStream>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let admitted = stream
            .peer_addr()
            .ok()
            .and_then(|peer| self.admit(peer.ip()));
        std::future::ready(match admitted {
            // Dropping the stream closes it: its descriptor is free at once.
            None => Err(io::Error::other("connection limit reached")),
            Some(slot) => {
                let _ = stream.set_nodelay(true);
                Ok((
                    Limited {
                        inner: stream,
                        _slot: slot,
                        first_byte: Some(Box::pin(tokio::time::sleep(self.first_byte))),
                    },
                    service,
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_and_global_caps_hold_at_their_edge_and_free_on_drop() {
        let l = Limiter::new(3, 2, Duration::from_secs(1), Arc::new(Metrics::default()));
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let b: IpAddr = "127.0.0.3".parse().expect("ip");
        let a1 = l.admit(a).expect("first of a");
        let a2 = l.admit(a).expect("second of a");
        assert!(l.admit(a).is_none(), "a third from one address");
        let b1 = l.admit(b).expect("b");
        assert!(
            l.admit("127.0.0.4".parse().expect("ip")).is_none(),
            "global cap"
        );
        drop(a1);
        let a3 = l.admit(a).expect("a slot freed by a closed connection");
        drop((a2, a3, b1));
        assert!(l.held.lock().expect("lock").is_empty());
    }
}
