//! The HTTP/2 connection guard: a thin I/O layer between TLS and hyper that follows the frame
//! headers in both directions ([`super::h2_frames`]) and enforces what h2 and hyper have no option
//! for:
//!
//! - **Idle**: a connection with no open stream for the idle timeout gets `GOAWAY(NO_ERROR,
//!   "max_idle")` and is closed, as gRPC-Go's `MaxConnectionIdle` does. PINGs, SETTINGS and
//!   WINDOW_UPDATEs are not activity: only streams are.
//! - **PING policy**: gRPC-Go's default keepalive `EnforcementPolicy` (`MinTime` 5 min,
//!   `PermitWithoutStream` false): a PING sooner than 5 min after the last one (2 h while no
//!   stream is open) is a strike unless Sentry sent HEADERS or DATA since; the third strike gets
//!   `GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings")` and the connection is closed.
//! - **Stalled responses**: a stream whose response started (HEADERS sent) but did not end within
//!   the write timeout — a peer that never opens its flow-control window — is reset: the peer
//!   gets `RST_STREAM(CANCEL)` and h2 is handed the same frame as if the peer had sent it, so h2
//!   and hyper drop the stream and its buffered response the supported way.
//!
//! Frames this layer writes are whole and go in only between two of h2's frames, in either
//! direction; everything else passes through untouched. Must not parse payloads or change h2's
//! frames.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tracing::debug;

use super::h2_frames::{self as f, FrameCursor, FrameHeader};

/// gRPC-Go's `keepalive.EnforcementPolicy.MinTime` default.
pub const PING_MIN_TIME: Duration = Duration::from_secs(5 * 60);
/// Least time between PINGs while no stream is open (gRPC-Go's `defaultPingTimeout`, applied
/// because `PermitWithoutStream` is false).
pub const PING_MIN_TIME_WITHOUT_STREAM: Duration = Duration::from_secs(2 * 60 * 60);
/// Strikes tolerated; one more ends the connection (gRPC-Go's `maxPingStrikes`).
pub const MAX_PING_STRIKES: u8 = 2;
/// How long a closing connection may take to write its GOAWAY before it is dropped anyway.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Streams followed at once; h2 refuses streams beyond `--max-streams-per-connection` (≤ this
/// in practice), and a stream not followed is simply not timed.
const MAX_TRACKED_STREAMS: usize = 4096;

/// The guard's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// No open stream for this long closes the connection.
    pub idle_timeout: Duration,
    /// A response not finished this long after its HEADERS is reset.
    pub write_timeout: Duration,
}

#[derive(Debug, Default)]
struct Pings {
    last: Option<Instant>,
    strikes: u8,
    /// Sentry sent HEADERS or DATA since the last PING (gRPC-Go's `resetPingStrikes`).
    forgiven: bool,
}

/// An HTTP/2 server connection under the guard.
#[derive(Debug)]
pub struct H2Guard<T> {
    io: T,
    policy: Policy,
    from_client: FrameCursor,
    to_client: FrameCursor,
    /// Open streams, with the time their response started once it has.
    streams: HashMap<u32, Option<Instant>>,
    last_stream: u32,
    idle_since: Instant,
    pings: Pings,
    /// Frames of ours for the peer, written at the next outbound boundary.
    to_peer: Vec<u8>,
    unflushed: bool,
    /// Frames of ours for h2 (as if from the peer), read at the next inbound boundary.
    to_h2: Vec<u8>,
    /// Bytes read from the peer and not yet handed to h2 (cut off to insert `to_h2`).
    held: Vec<u8>,
    /// Set once a GOAWAY is queued: reads end at this instant at the latest.
    closing: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

impl<T> H2Guard<T> {
    /// Guards `io` under `policy`.
    pub fn new(io: T, policy: Policy) -> Self {
        let now = Instant::now();
        Self {
            io,
            policy,
            from_client: FrameCursor::from_client(),
            to_client: FrameCursor::from_server(),
            streams: HashMap::new(),
            last_stream: 0,
            idle_since: now,
            pings: Pings::default(),
            to_peer: Vec::new(),
            unflushed: false,
            to_h2: Vec::new(),
            held: Vec::new(),
            closing: None,
            timer: Box::pin(tokio::time::sleep_until(now + policy.idle_timeout)),
        }
    }

    /// Sets the write timeout (applies to responses started from now on).
    pub fn set_write_timeout(&mut self, write_timeout: Duration) {
        self.policy.write_timeout = write_timeout;
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    fn close(&mut self, code: u32, why: &'static str, now: Instant) {
        if self.closing.is_some() {
            return;
        }
        debug!(reason = why, "Closing HTTP/2 connection");
        f::goaway(&mut self.to_peer, self.last_stream, code, why.as_bytes());
        self.closing = Some(now + CLOSE_GRACE);
        self.arm(now + CLOSE_GRACE);
    }

    fn arm(&mut self, at: Instant) {
        if at < self.timer.deadline() || self.timer.is_elapsed() {
            self.timer.as_mut().reset(at);
        }
    }

    fn stream_closed(&mut self, id: u32, now: Instant) {
        if self.streams.remove(&id).is_some() && self.streams.is_empty() {
            self.idle_since = now;
        }
    }

    fn on_ping(&mut self, now: Instant) {
        let last = self.pings.last.replace(now);
        if std::mem::take(&mut self.pings.forgiven) {
            self.pings.strikes = 0;
            return;
        }
        let min = if self.streams.is_empty() {
            PING_MIN_TIME_WITHOUT_STREAM
        } else {
            PING_MIN_TIME
        };
        if last.is_some_and(|l| l + min > now) {
            self.pings.strikes += 1;
        }
        if self.pings.strikes > MAX_PING_STRIKES {
            self.close(f::ENHANCE_YOUR_CALM, "too_many_pings", now);
        }
    }

    fn on_peer_frame(&mut self, h: FrameHeader, now: Instant) {
        match h.kind {
            f::HEADERS if h.stream > self.last_stream => {
                self.last_stream = h.stream;
                if self.streams.len() < MAX_TRACKED_STREAMS {
                    self.streams.insert(h.stream, None);
                }
            }
            f::RST_STREAM => self.stream_closed(h.stream, now),
            f::PING if !h.has(f::ACK) => self.on_ping(now),
            _ => {}
        }
    }

    fn on_h2_frame(&mut self, h: FrameHeader, now: Instant) {
        match h.kind {
            f::HEADERS | f::DATA => {
                self.pings.forgiven = true;
                if h.has(f::END_STREAM) {
                    self.stream_closed(h.stream, now);
                } else if let Some(started @ None) = self.streams.get_mut(&h.stream) {
                    *started = Some(now);
                    self.arm(now + self.policy.write_timeout);
                }
            }
            f::RST_STREAM => self.stream_closed(h.stream, now),
            _ => {}
        }
    }

    /// Follows bytes h2 wrote.
    fn wrote(&mut self, mut bytes: &[u8]) {
        let now = Instant::now();
        while !bytes.is_empty() {
            let (n, h) = self.to_client.advance(bytes);
            bytes = &bytes[n..];
            if let Some(h) = h {
                self.on_h2_frame(h, now);
            }
        }
    }

    /// Follows bytes read from the peer into `buf[from..]`; if a frame of ours waits for h2, cuts
    /// the read at the first boundary and keeps the rest for later.
    fn read(&mut self, buf: &mut ReadBuf<'_>, from: usize) {
        let now = Instant::now();
        let end = buf.filled().len();
        let mut pos = from;
        while pos < end {
            if !self.to_h2.is_empty() && self.from_client.at_boundary() {
                let rest = buf.filled()[pos..end].to_vec();
                self.held.splice(0..0, rest);
                buf.set_filled(pos);
                return;
            }
            let (n, h) = self.from_client.advance(&buf.filled()[pos..end]);
            pos += n;
            if let Some(h) = h {
                self.on_peer_frame(h, now);
            }
        }
    }

    /// Runs the deadlines that are due; true if that queued a frame or started closing.
    fn expire(&mut self, now: Instant) -> bool {
        let mut acted = false;
        let timeout = self.policy.write_timeout;
        let stalled: Vec<u32> = self
            .streams
            .iter()
            .filter_map(|(id, started)| started.filter(|t| *t + timeout <= now).map(|_| *id))
            .collect();
        if !stalled.is_empty() {
            debug!(
                streams = stalled.len(),
                "Resetting responses the peer did not read within the write timeout"
            );
        }
        for id in stalled {
            f::rst_stream(&mut self.to_h2, id, f::CANCEL);
            f::rst_stream(&mut self.to_peer, id, f::CANCEL);
            self.stream_closed(id, now);
            acted = true;
        }
        if self.streams.is_empty() && self.idle_since + self.policy.idle_timeout <= now {
            acted |= self.closing.is_none();
            self.close(f::NO_ERROR, "max_idle", now);
        }
        acted
    }

    fn next_deadline(&self) -> Instant {
        let stalls = self
            .streams
            .values()
            .flatten()
            .map(|t| *t + self.policy.write_timeout);
        let idle = (self.streams.is_empty() && self.closing.is_none())
            .then(|| self.idle_since + self.policy.idle_timeout);
        stalls
            .chain(idle)
            .chain(self.closing)
            .min()
            .unwrap_or_else(|| Instant::now() + self.policy.idle_timeout)
    }

    /// Polls the timer; true if a deadline acted. Leaves it armed for the next one.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let mut acted = false;
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            acted |= self.expire(now);
            let next = self.next_deadline();
            if next <= now {
                // Only a closing connection's grace can be past: reads end now.
                return true;
            }
            self.timer.as_mut().reset(next);
        }
        acted
    }

    fn read_ends(&self) -> bool {
        self.closing
            .is_some_and(|at| (self.to_peer.is_empty() && !self.unflushed) || Instant::now() >= at)
    }
}

impl<T: AsyncWrite + Unpin> H2Guard<T> {
    /// Writes our queued frames if h2 is between frames; Pending from the socket leaves them
    /// queued (the task is woken when it can write).
    fn push_ours(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while !self.to_peer.is_empty() && self.to_client.at_boundary() {
            match Pin::new(&mut self.io).poll_write(cx, &self.to_peer) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.to_peer.drain(..n);
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(()),
            }
        }
        if self.unflushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    /// True while our frames wait at a boundary, so h2 must not write past them yet.
    fn ours_first(&self) -> bool {
        !self.to_peer.is_empty() && self.to_client.at_boundary()
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for H2Guard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        loop {
            me.push_ours(cx)?;
            if me.read_ends() {
                // End-of-file for h2, which then closes the connection.
                return Poll::Ready(Ok(()));
            }
            if !me.to_h2.is_empty() && me.from_client.at_boundary() {
                let n = me.to_h2.len().min(buf.remaining());
                buf.put_slice(&me.to_h2[..n]);
                me.to_h2.drain(..n);
                return Poll::Ready(Ok(()));
            }
            let from = buf.filled().len();
            if !me.held.is_empty() {
                let n = me.held.len().min(buf.remaining());
                buf.put_slice(&me.held[..n]);
                me.held.drain(..n);
                me.read(buf, from);
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut me.io).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {
                    me.read(buf, from);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if me.poll_timer(cx) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for H2Guard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        me.push_ours(cx)?;
        if me.ours_first() {
            return Poll::Pending;
        }
        let res = Pin::new(&mut me.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            me.wrote(&buf[..n]);
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        me.push_ours(cx)?;
        if me.ours_first() {
            return Poll::Pending;
        }
        let res = Pin::new(&mut me.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = res {
            for b in bufs {
                let take = n.min(b.len());
                me.wrote(&b[..take]);
                n -= take;
                if n == 0 {
                    break;
                }
            }
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        me.push_ours(cx)?;
        if me.ours_first() {
            return Poll::Pending;
        }
        Pin::new(&mut me.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
