//! Write batching between TLS and HTTP/2: what h2 writes and flushes during one turn of its
//! connection task goes to TLS as one record and to the socket as one `writev`, the way Go's
//! HTTP/2 server coalesces its frames. h2 flushes several times per turn (a response's HEADERS
//! and DATA, then its trailers; SETTINGS, then the SETTINGS ACK; GOAWAY, then TLS close_notify),
//! and every flush that reaches the socket costs a system call and, on loopback, the receiver's
//! TCP processing too.
//!
//! A flush only marks the bytes as due and wakes the task once more; they are written when the
//! connection has found nothing to read [`DRY_READS`] times in a row (h2 is then done with the
//! turn, and has had more polls to add what became ready meanwhile), before a shutdown, or as
//! soon as [`MAX_BATCH`] bytes wait. Owns only the timing of writes: never reorders, drops or
//! looks into the bytes.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Most bytes held before they are written regardless (one full TLS record).
pub const MAX_BATCH: usize = 16 * 1024;

/// Dry reads in a row, with bytes held, before they are written. grpc-go clients send a PING
/// (its bandwidth estimate) after each answer, so on a reused connection it comes in with the
/// next request; h2 answers it at once, while the answer to the request is made by the
/// request's own task. With two dry reads the PING ACK went out alone (2.04 writes per request
/// at 64 reused sidecars, `strace -c`), with three it leaves with the answer (1.04).
pub const DRY_READS: u8 = 3;

/// A stream whose writes are batched until the reader runs dry.
#[derive(Debug)]
pub struct Batched<T> {
    io: T,
    out: Vec<u8>,
    /// A flush was asked for since the last one that reached `io`.
    flush_due: bool,
    /// Dry reads so far with bytes held.
    dry_reads: u8,
}

impl<T> Batched<T> {
    /// Batches writes to `io`.
    pub fn new(io: T) -> Self {
        Self {
            io,
            out: Vec::new(),
            flush_due: false,
            dry_reads: 0,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    fn take(&mut self, buf: &[u8]) -> usize {
        let n = buf.len().min(MAX_BATCH - self.out.len());
        self.out.extend_from_slice(&buf[..n]);
        n
    }
}

/// A TLS stream that takes plaintext to send without writing to its socket yet: the batch and a
/// closing alert then leave in one system call.
pub trait Queue {
    /// Encrypts up to `buf.len()` bytes into the stream's send buffer; 0 when that is full.
    fn queue(&mut self, buf: &[u8]) -> io::Result<usize>;
}

impl<IO> Queue for tokio_rustls::server::TlsStream<IO> {
    fn queue(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.get_mut().1.writer().write(buf)
    }
}

impl<T: AsyncWrite + Queue + Unpin> Batched<T> {
    /// Hands every held byte to `io` and flushes it if a flush was asked for.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_queue(cx))?;
        if self.flush_due {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.flush_due = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Hands every held byte to `io`, writing to the socket only when its send buffer is full.
    fn poll_queue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            match self.io.queue(&self.out)? {
                0 => ready!(Pin::new(&mut self.io).poll_flush(cx))?,
                n => {
                    self.out.drain(..n);
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Room for at least one byte, writing the batch out first if it is full.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out.len() >= MAX_BATCH {
            self.flush_due = true;
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

/// A stream that may hold written bytes back: [`Drain::poll_drain`] sends them now. A layer
/// above that stops reading (and so never lets the batch see a dry read) calls it, so that what
/// h2 has already written is not held with the reads.
pub trait Drain {
    /// Writes out every held byte; Ready once nothing is held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl<T: AsyncWrite + Queue + Unpin> Drain for Batched<T> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Batched::poll_drain(self, cx)
    }
}

impl<T: Connected> Connected for Batched<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<T: AsyncRead + AsyncWrite + Queue + Unpin> AsyncRead for Batched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        match Pin::new(&mut me.io).poll_read(cx, buf) {
            Poll::Pending if !me.out.is_empty() && me.dry_reads + 1 < DRY_READS => {
                // Nothing more to read. Come back before writing, as Go's HTTP/2 writer yields
                // before it flushes: what else is ready by then joins the batch.
                me.dry_reads += 1;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Pending => {
                // Nothing more to read: h2 has written all it will this turn.
                me.dry_reads = 0;
                ready!(me.poll_drain(cx))?;
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl<T: AsyncWrite + Queue + Unpin> AsyncWrite for Batched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.poll_room(cx))?;
        Poll::Ready(Ok(self.take(buf)))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        ready!(self.poll_room(cx))?;
        let mut n = 0;
        for b in bufs {
            let took = self.take(b);
            n += took;
            if took < b.len() {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.out.is_empty() || self.flush_due {
            self.flush_due = true;
            // The turn may end without another read: come back once to write the batch.
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The batch goes out with the closing alert.
        ready!(self.poll_queue(cx))?;
        self.flush_due = false;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that records what reaches it: each `poll_write` and each flush of queued bytes
    /// is one "system call"; reads are never ready.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<Vec<u8>>,
        queued: Vec<u8>,
        shut: bool,
    }

    impl Queue for Recorder {
        fn queue(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.queued.extend_from_slice(buf);
            Ok(buf.len())
        }
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.calls.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            if !self.queued.is_empty() {
                let q = std::mem::take(&mut self.queued);
                self.calls.push(q);
            }
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            self.poll_flush(cx)
        }
    }

    fn cx() -> Context<'static> {
        Context::from_waker(std::task::Waker::noop())
    }

    fn write(b: &mut Batched<Recorder>, bytes: &[u8]) -> usize {
        match Pin::new(b).poll_write(&mut cx(), bytes) {
            Poll::Ready(Ok(n)) => n,
            other => panic!("write: {other:?}"),
        }
    }

    fn flush(b: &mut Batched<Recorder>) {
        assert!(matches!(
            Pin::new(b).poll_flush(&mut cx()),
            Poll::Ready(Ok(()))
        ));
    }

    #[test]
    fn flushes_of_one_turn_leave_in_one_write_when_reads_run_dry() {
        let mut b = Batched::new(Recorder::default());
        write(&mut b, b"headers+data");
        flush(&mut b);
        write(&mut b, b"trailers");
        flush(&mut b);
        assert!(b.get_ref().calls.is_empty(), "nothing written mid-turn");
        let mut space = [0u8; 16];
        let mut buf = ReadBuf::new(&mut space);
        for _ in 1..DRY_READS {
            assert!(Pin::new(&mut b).poll_read(&mut cx(), &mut buf).is_pending());
            assert!(b.get_ref().calls.is_empty(), "more polls before writing");
        }
        // What became ready in the meantime joins the batch.
        write(&mut b, b"+answer");
        flush(&mut b);
        assert!(Pin::new(&mut b).poll_read(&mut cx(), &mut buf).is_pending());
        assert_eq!(b.get_ref().calls, [b"headers+datatrailers+answer".to_vec()]);
        // Nothing more to write: another dry read writes nothing.
        assert!(Pin::new(&mut b).poll_read(&mut cx(), &mut buf).is_pending());
        assert_eq!(b.get_ref().calls.len(), 1);
    }

    #[test]
    fn the_batch_leaves_with_the_shutdown() {
        let mut b = Batched::new(Recorder::default());
        write(&mut b, b"ping-ack");
        flush(&mut b);
        assert!(matches!(
            Pin::new(&mut b).poll_shutdown(&mut cx()),
            Poll::Ready(Ok(()))
        ));
        assert!(b.get_ref().shut);
        assert_eq!(b.get_ref().calls, [b"ping-ack".to_vec()]);
    }

    #[test]
    fn holds_at_most_one_batch() {
        let mut b = Batched::new(Recorder::default());
        let big = vec![7u8; MAX_BATCH + 100];
        assert_eq!(write(&mut b, &big), MAX_BATCH);
        assert!(b.get_ref().calls.is_empty());
        // Full: the next write sends the batch first.
        assert_eq!(write(&mut b, &big[MAX_BATCH..]), 100);
        assert_eq!(b.get_ref().calls.len(), 1);
        assert_eq!(b.get_ref().calls[0].len(), MAX_BATCH);
    }
}
