//! The bound on open gRPC connections: a connection holds a permit from before it is accepted
//! until it is closed, and the listener stops accepting while none is free (clients wait in the
//! kernel's backlog). The bound is kept below the process's file-descriptor limit, which is raised
//! to its hard maximum at start-up as Go does, so the health and metrics listeners and the bundle
//! files always have descriptors left even when the gRPC port is flooded.
//!
//! Each connection is also run under the HTTP/2 guard ([`super::h2_guard`]: idle, PING policy,
//! stalled responses), carries its own in-flight count ([`super::fair_share`]) to every
//! request through tonic's connect info, and is counted while open for [`super::heap_trim`].
//! Its close lingers ([`super::linger`]) so that a client still sending gets a FIN, not a reset
//! that would discard the last answers.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustix::process::{getrlimit, setrlimit, Resource};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tonic::transport::server::Connected;

use super::fair_share::{ConnInfo, ConnSlots};
use super::h2_guard::{H2Guard, Policy};
use super::heap_trim;
use super::linger::{poll_shutdown_lingering, Linger};
use super::stream_budget::StreamBudget;
use super::write_batch::Drain;

/// Descriptors kept free for everything that is not a gRPC connection.
pub const FD_RESERVE: u64 = 256;

/// Raises the soft open-files limit to the hard limit and returns the connection bound that fits
/// under it: `wanted`, or fewer if the limit is lower than `wanted + FD_RESERVE`.
pub fn fit_to_fd_limit(wanted: usize) -> usize {
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    match limit.current {
        Some(fds) => {
            let room = fds.saturating_sub(FD_RESERVE).max(1);
            wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => wanted,
    }
}

/// A connection that gives back its permit when it is dropped, under the HTTP/2 guard.
#[derive(Debug)]
pub struct Limited<T> {
    inner: H2Guard<T>,
    _permit: OwnedSemaphorePermit,
    _open: heap_trim::Open,
    slots: Arc<ConnSlots>,
    /// Set once the write side is shut: the lingering close ([`super::linger`]).
    linger: Option<Linger>,
}

impl<T> Limited<T> {
    /// Ties `inner` to `permit`; closes it after `idle_timeout` without an open stream; counts
    /// its open streams in `streams`.
    pub fn new(
        inner: T,
        permit: OwnedSemaphorePermit,
        idle_timeout: Duration,
        streams: Arc<StreamBudget>,
    ) -> Self {
        let policy = Policy {
            idle_timeout,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        };
        Self {
            inner: H2Guard::new(inner, policy, streams),
            _permit: permit,
            _open: heap_trim::Open::count(),
            slots: Arc::default(),
            linger: None,
        }
    }

    /// Resets responses not written within `write_timeout` (default [`DEFAULT_WRITE_TIMEOUT`]).
    pub fn with_write_timeout(mut self, write_timeout: Duration) -> Self {
        self.inner.set_write_timeout(write_timeout);
        self
    }
}

/// The response write timeout when none is set.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

impl<T: Connected> Connected for Limited<T> {
    type ConnectInfo = ConnInfo<T::ConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnInfo {
            inner: self.inner.get_ref().connect_info(),
            slots: self.slots.clone(),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Drain + Unpin> AsyncRead for Limited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Limited<T> {
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
        let me = &mut *self;
        // Read below the HTTP/2 guard: what the client still sends is discarded unparsed.
        poll_shutdown_lingering(&mut me.linger, me.inner.get_mut(), cx, |io, cx| {
            Pin::new(io).poll_shutdown(cx)
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_fits_under_the_fd_limit() {
        let got = fit_to_fd_limit(usize::MAX);
        let now = getrlimit(Resource::Nofile);
        assert_eq!(
            now.current, now.maximum,
            "soft limit raised to the hard limit"
        );
        if let Some(fds) = now.current {
            assert!((got as u64) + FD_RESERVE <= fds.max(FD_RESERVE + 1));
        }
        assert_eq!(fit_to_fd_limit(10), 10);
    }
}
