//! The bound on open gRPC connections: a connection holds a permit from before it is accepted
//! until it is closed, and the listener stops accepting while none is free (clients wait in the
//! kernel's backlog). The bound is kept below the process's file-descriptor limit, which is raised
//! to its hard maximum at start-up as Go does, so the health and metrics listeners and the bundle
//! files always have descriptors left even when the gRPC port is flooded.
//!
//! A connection that moves no byte in either direction for the idle timeout is ended (its reads
//! see end-of-file), so clients that finish the TLS handshake and then fall silent cannot hold
//! slots for ever. Dapr's clients dial, sign and hang up; a client that keeps a channel open just
//! reconnects on its next call.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rustix::process::{getrlimit, setrlimit, Resource};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
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

/// A connection that gives back its permit when it is dropped, and ends itself once idle.
#[derive(Debug)]
pub struct Limited<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
    idle_timeout: Duration,
    last_active: Instant,
    /// Fires at `last_active + idle_timeout` or earlier; re-armed lazily when it fires early, so
    /// the hot path only records the time of each transfer.
    idle_timer: Pin<Box<Sleep>>,
}

impl<T> Limited<T> {
    /// Ties `inner` to `permit`; ends it after `idle_timeout` without traffic.
    pub fn new(inner: T, permit: OwnedSemaphorePermit, idle_timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner,
            _permit: permit,
            idle_timeout,
            last_active: now,
            idle_timer: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
        }
    }

    /// True once the connection has been idle for the timeout; otherwise arms the timer to wake
    /// `cx` when it may be.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.idle_timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = self.last_active + self.idle_timeout;
            if due <= Instant::now() {
                return true;
            }
            self.idle_timer.as_mut().reset(due);
        }
    }

    fn transferred(&mut self, bytes: usize) {
        if bytes > 0 {
            self.last_active = Instant::now();
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
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                self.transferred(buf.filled().len() - before);
                Poll::Ready(Ok(()))
            }
            // Nothing read: end-of-file for the HTTP/2 server, which then closes the connection.
            Poll::Pending if self.idle_expired(cx) => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Limited<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.transferred(n);
        }
        res
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
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            self.transferred(n);
        }
        res
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

    #[tokio::test(start_paused = true)]
    async fn idle_connection_ends_after_the_timeout_since_its_last_byte() {
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::sync::Semaphore;

        let slots = Arc::new(Semaphore::new(1));
        let permit = slots.clone().try_acquire_owned().unwrap();
        let (server_end, mut client_end) = tokio::io::duplex(64);
        let mut conn = Limited::new(server_end, permit, Duration::from_secs(10));
        let start = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client_end.write_all(b"x").await.unwrap();
            // Held open, silent, until the server side gives up.
            let mut rest = Vec::new();
            let _ = client_end.read_to_end(&mut rest).await;
        });
        let mut buf = [0u8; 8];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 1);
        assert_eq!(start.elapsed(), Duration::from_secs(6));
        assert_eq!(conn.read(&mut buf).await.unwrap(), 0, "idle: end-of-file");
        assert_eq!(start.elapsed(), Duration::from_secs(16));
        assert_eq!(slots.available_permits(), 0);
        drop(conn);
        assert_eq!(slots.available_permits(), 1, "slot given back");
    }
}
