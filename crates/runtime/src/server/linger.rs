//! The lingering close of a gRPC connection. When Sentry ends a connection (after GOAWAY in a
//! graceful shutdown, or for idleness) the client may still be sending: new streams it opened
//! before it read the GOAWAY. Closing a socket whose receive queue holds unread bytes makes the
//! kernel answer with a TCP reset instead of a FIN, and a reset discards what the client has not
//! yet read, so responses already written (the last answers, the GOAWAY, TLS close_notify) are
//! lost and the client sees "connection reset" for requests that were processed. So after the
//! write side is shut (close_notify and FIN sent), the connection keeps reading and discarding
//! until the client closes too, for at most [`LINGER_TIME`] and [`LINGER_BYTES`], as web servers
//! do ("lingering close"). Owns only that wait; what is shut and when is the caller's.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;

/// Longest wait for the client to close after Sentry has.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes read and discarded while waiting.
pub const LINGER_BYTES: usize = 1 << 20;

/// The wait after the write side is shut.
#[derive(Debug)]
pub struct Linger {
    deadline: Pin<Box<Sleep>>,
    read: usize,
}

impl Linger {
    /// Starts the wait now.
    pub fn start() -> Self {
        Self {
            deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
            read: 0,
        }
    }

    /// Reads and discards from `io` until it ends, fails, or the time or byte bound is reached.
    pub fn poll<T: AsyncRead + Unpin>(&mut self, io: &mut T, cx: &mut Context<'_>) -> Poll<()> {
        let mut scratch = [0u8; 4096];
        loop {
            if self.read >= LINGER_BYTES || self.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut *io).poll_read(cx, &mut buf)) {
                Ok(()) if buf.filled().is_empty() => return Poll::Ready(()),
                Ok(()) => self.read += buf.filled().len(),
                Err(_) => return Poll::Ready(()),
            }
        }
    }
}

/// Runs `shutdown` once, then lingers on `io` (see the module docs).
pub fn poll_shutdown_lingering<T: AsyncRead + Unpin>(
    linger: &mut Option<Linger>,
    io: &mut T,
    cx: &mut Context<'_>,
    shutdown: impl FnOnce(&mut T, &mut Context<'_>) -> Poll<io::Result<()>>,
) -> Poll<io::Result<()>> {
    if linger.is_none() {
        ready!(shutdown(io, cx))?;
        *linger = Some(Linger::start());
    }
    if let Some(l) = linger.as_mut() {
        ready!(l.poll(io, cx));
    }
    Poll::Ready(Ok(()))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn waits_for_the_peer_to_close_after_reading_what_it_still_sends() {
        let (mut ours, mut theirs) = tokio::io::duplex(64);
        let waiting = tokio::spawn(async move {
            let mut linger = None;
            std::future::poll_fn(|cx| {
                poll_shutdown_lingering(&mut linger, &mut ours, cx, |io, cx| {
                    Pin::new(io).poll_shutdown(cx)
                })
            })
            .await
            .unwrap();
            ours
        });
        // Our side has shut: the peer reads EOF, and may still write.
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());
        theirs.write_all(&[7; 1000]).await.unwrap();
        assert!(!waiting.is_finished(), "must wait while the peer is open");
        drop(theirs);
        waiting.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_linger_time() {
        let (mut ours, _theirs) = tokio::io::duplex(64);
        let mut linger = None;
        let started = tokio::time::Instant::now();
        std::future::poll_fn(|cx| {
            poll_shutdown_lingering(&mut linger, &mut ours, cx, |io, cx| {
                Pin::new(io).poll_shutdown(cx)
            })
        })
        .await
        .unwrap();
        assert_eq!(started.elapsed(), LINGER_TIME);
    }
}
