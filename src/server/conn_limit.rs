//! The bound on open gRPC connections: a connection holds a permit from before it is accepted
//! until it is closed, and the listener stops accepting while none is free (clients wait in the
//! kernel's backlog). The bound is kept below the process's file-descriptor limit, which is raised
//! to its hard maximum at start-up as Go does, so the health and metrics listeners and the bundle
//! files always have descriptors left even when the gRPC port is flooded.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustix::process::{getrlimit, setrlimit, Resource};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tonic::transport::server::Connected;

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

/// A connection that gives back its permit when it is dropped.
#[derive(Debug)]
pub struct Limited<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
}

impl<T> Limited<T> {
    /// Ties `inner` to `permit`.
    pub fn new(inner: T, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            _permit: permit,
        }
    }
}

impl<T: Connected> Connected for Limited<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Limited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Limited<T> {
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
