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
//! - **Unanswered streams**: each open stream counts in the process-wide
//!   [`super::stream_budget`]; while it is full, a connection with several streams open is not
//!   read until answers are written somewhere.
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
use super::stream_budget::{Reader, StreamBudget};
use super::write_batch::Drain;

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
    budget: Reader,
}

impl<T> H2Guard<T> {
    /// Guards `io` under `policy`, its open streams counted in `budget`.
    pub fn new(io: T, policy: Policy, budget: std::sync::Arc<StreamBudget>) -> Self {
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
            budget: Reader::new(budget),
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

    /// The wrapped stream, to read or shut below the guard.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
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
        if self.streams.remove(&id).is_some() {
            self.budget.budget().closed(1);
            if self.streams.is_empty() {
                self.idle_since = now;
            }
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
                    self.budget.budget().opened();
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

impl<T> Drop for H2Guard<T> {
    fn drop(&mut self) {
        self.budget.budget().closed(self.streams.len());
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

impl<T: AsyncRead + AsyncWrite + Drain + Unpin> AsyncRead for H2Guard<T> {
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
            if me.budget.poll_room(me.streams.len(), cx).is_pending() {
                // Not read until streams end somewhere; what h2 has written still goes out
                // (below us it waits for a dry read that will not come), the deadlines still run.
                if let Poll::Ready(Err(e)) = me.io.poll_drain(cx) {
                    return Poll::Ready(Err(e));
                }
                if me.poll_timer(cx) {
                    continue;
                }
                return Poll::Pending;
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The pipes of these tests hold nothing back.
    impl Drain for tokio::io::DuplexStream {
        fn poll_drain(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A pipe that counts the drains it is asked for.
    struct Draining {
        io: tokio::io::DuplexStream,
        drains: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Drain for Draining {
        fn poll_drain(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.drains
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Draining {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Draining {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.io).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    const IDLE: Duration = Duration::from_secs(600);
    const WRITE: Duration = Duration::from_secs(10);

    fn guard() -> H2Guard<()> {
        guard_with(IDLE, StreamBudget::new(usize::MAX))
    }

    fn guard_with(idle_timeout: Duration, budget: std::sync::Arc<StreamBudget>) -> H2Guard<()> {
        H2Guard::new(
            (),
            Policy {
                idle_timeout,
                write_timeout: WRITE,
            },
            budget,
        )
    }

    fn header(kind: u8, flags: u8, stream: u32) -> FrameHeader {
        FrameHeader {
            len: 0,
            kind,
            flags,
            stream,
        }
    }

    /// The frames in `bytes`: type, stream, payload.
    fn frames(bytes: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while rest.len() >= 9 {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            out.push((rest[3], stream, rest[9..9 + len].to_vec()));
            rest = &rest[9 + len..];
        }
        assert!(rest.is_empty(), "whole frames only");
        out
    }

    /// The GOAWAY queued for the peer: last stream, code, debug text.
    fn goaway_sent(g: &H2Guard<()>) -> Option<(u32, u32, String)> {
        frames(&g.to_peer)
            .into_iter()
            .find(|f| f.0 == f::GOAWAY)
            .map(|(_, _, p)| {
                (
                    u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
                    u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                    String::from_utf8_lossy(&p[8..]).into_owned(),
                )
            })
    }

    fn ping(g: &mut H2Guard<()>, at: Instant) {
        g.on_peer_frame(header(f::PING, 0, 0), at);
    }

    #[tokio::test(start_paused = true)]
    async fn streams_are_followed_in_both_directions() {
        let mut g = guard();
        let t0 = Instant::now();
        g.on_peer_frame(header(f::HEADERS, 0, 1), t0);
        g.on_peer_frame(header(f::HEADERS, 0, 3), t0);
        // The client's trailers (or a reused id) open nothing.
        g.on_peer_frame(header(f::HEADERS, f::END_STREAM, 1), t0);
        assert_eq!((g.streams.len(), g.last_stream), (2, 3));
        assert_eq!(g.streams[&1], None, "no response yet");

        let t1 = t0 + Duration::from_secs(1);
        g.on_h2_frame(header(f::HEADERS, 0, 1), t1);
        assert_eq!(g.streams[&1], Some(t1), "the response started");
        g.on_h2_frame(header(f::DATA, 0, 1), t1 + WRITE / 2);
        assert_eq!(g.streams[&1], Some(t1), "timed from its HEADERS");
        let t2 = t1 + Duration::from_secs(1);
        g.on_h2_frame(header(f::DATA, f::END_STREAM, 1), t2);
        assert!(!g.streams.contains_key(&1), "ended by the response");
        assert_eq!(g.idle_since, t0, "a stream is still open");

        let t3 = t2 + Duration::from_secs(1);
        g.on_peer_frame(header(f::RST_STREAM, 0, 3), t3);
        assert!(g.streams.is_empty());
        assert_eq!(g.idle_since, t3, "idle from the last stream's end");

        g.on_peer_frame(header(f::HEADERS, 0, 5), t3);
        g.on_h2_frame(header(f::RST_STREAM, 0, 5), t3);
        assert!(g.streams.is_empty(), "reset by h2");
        assert!(goaway_sent(&g).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn pings_are_not_activity_for_the_idle_timeout() {
        let mut g = guard();
        let t0 = Instant::now();
        // A PING just before the timeout, spaced as the policy allows for a connection without
        // streams, does not push the timeout back.
        ping(&mut g, t0 + IDLE - Duration::from_secs(1));
        g.on_peer_frame(
            header(f::PING, f::ACK, 0),
            t0 + IDLE - Duration::from_secs(1),
        );
        assert!(!g.expire(t0 + IDLE - Duration::from_millis(1)));
        assert!(g.expire(t0 + IDLE), "idle since it was opened");
        assert_eq!(goaway_sent(&g), Some((0, f::NO_ERROR, "max_idle".into())));
        assert!(g.closing.is_some());
        assert!(!g.expire(t0 + IDLE * 2), "closed once");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_stream_is_activity() {
        let mut g = guard();
        let t0 = Instant::now();
        g.on_peer_frame(header(f::HEADERS, 0, 1), t0 + IDLE / 2);
        assert!(!g.expire(t0 + IDLE * 3), "a request still being handled");
        let ended = t0 + IDLE * 3;
        g.on_h2_frame(header(f::HEADERS, f::END_STREAM, 1), ended);
        assert!(!g.expire(ended + IDLE - Duration::from_millis(1)));
        assert!(g.expire(ended + IDLE));
        assert_eq!(goaway_sent(&g), Some((1, f::NO_ERROR, "max_idle".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn too_frequent_pings_end_the_connection() {
        let mut g = guard();
        let t0 = Instant::now();
        g.on_peer_frame(header(f::HEADERS, 0, 1), t0);
        let mut at = t0;
        for n in 0..=MAX_PING_STRIKES {
            ping(&mut g, at);
            assert_eq!(g.pings.strikes, n, "the first PING is free");
            assert!(goaway_sent(&g).is_none(), "{n} strikes are tolerated");
            at += Duration::from_secs(1);
        }
        ping(&mut g, at);
        assert_eq!(
            goaway_sent(&g),
            Some((1, f::ENHANCE_YOUR_CALM, "too_many_pings".into()))
        );
        assert!(g.closing.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn pings_spaced_by_the_minimum_time_are_allowed() {
        let mut g = guard();
        let t0 = Instant::now();
        g.on_peer_frame(header(f::HEADERS, 0, 1), t0);
        for i in 0..10 {
            ping(&mut g, t0 + PING_MIN_TIME * i);
        }
        assert_eq!(g.pings.strikes, 0);
        assert!(goaway_sent(&g).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_stream_pings_need_the_longer_spacing() {
        let day = Duration::from_secs(24 * 3600);
        let mut g = guard_with(day, StreamBudget::new(usize::MAX));
        let t0 = Instant::now();
        for i in 0..=u32::from(MAX_PING_STRIKES) + 1 {
            ping(&mut g, t0 + PING_MIN_TIME * i);
        }
        assert_eq!(
            goaway_sent(&g).map(|(_, code, why)| (code, why)),
            Some((f::ENHANCE_YOUR_CALM, "too_many_pings".into()))
        );
        let mut g = guard_with(day, StreamBudget::new(usize::MAX));
        for i in 0..10 {
            ping(&mut g, t0 + PING_MIN_TIME_WITHOUT_STREAM * i);
        }
        assert!(goaway_sent(&g).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn sending_headers_or_data_forgives_the_strikes() {
        let mut g = guard();
        let t0 = Instant::now();
        g.on_peer_frame(header(f::HEADERS, 0, 1), t0);
        ping(&mut g, t0);
        ping(&mut g, t0);
        ping(&mut g, t0);
        assert_eq!(g.pings.strikes, MAX_PING_STRIKES);
        g.on_h2_frame(header(f::DATA, 0, 1), t0);
        ping(&mut g, t0);
        assert_eq!(g.pings.strikes, 0, "Sentry sent data since the last PING");
        ping(&mut g, t0);
        ping(&mut g, t0);
        assert!(goaway_sent(&g).is_none());
        ping(&mut g, t0);
        assert!(goaway_sent(&g).is_some(), "strikes count again from zero");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_response_is_reset_for_both_sides() {
        let mut g = guard();
        let t0 = Instant::now();
        g.on_peer_frame(header(f::HEADERS, 0, 1), t0);
        g.on_peer_frame(header(f::HEADERS, 0, 3), t0);
        // Stream 3's handler is still working: no response, so no write timeout.
        g.on_h2_frame(header(f::HEADERS, 0, 1), t0);
        assert_eq!(g.next_deadline(), t0 + WRITE);
        assert!(!g.expire(t0 + WRITE - Duration::from_millis(1)));
        assert!(g.expire(t0 + WRITE));
        let reset = vec![(f::RST_STREAM, 1, f::CANCEL.to_be_bytes().to_vec())];
        assert_eq!(frames(&g.to_peer), reset, "the peer is told");
        assert_eq!(frames(&g.to_h2), reset, "h2 drops the stream");
        assert_eq!(g.streams.keys().collect::<Vec<_>>(), [&3]);
        assert!(goaway_sent(&g).is_none(), "the connection stays");
    }

    /// A frame of `kind` on `stream` with a one-byte payload (the guard reads no payload).
    fn raw(kind: u8, flags: u8, stream: u32) -> Vec<u8> {
        let mut out = vec![0, 0, 1, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.push(0);
        out
    }

    /// A guard over a duplex pipe whose peer has sent the preface and opened `streams`.
    async fn opened(
        budget: &std::sync::Arc<StreamBudget>,
        streams: u32,
    ) -> (H2Guard<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (server, peer) = tokio::io::duplex(64 * 1024);
        opened_over(server, peer, budget, streams).await
    }

    /// A guard over `server` whose `peer` has sent the preface and opened `streams`.
    async fn opened_over<T: AsyncRead + AsyncWrite + Drain + Unpin>(
        server: T,
        mut peer: tokio::io::DuplexStream,
        budget: &std::sync::Arc<StreamBudget>,
        streams: u32,
    ) -> (H2Guard<T>, tokio::io::DuplexStream) {
        let policy = Policy {
            idle_timeout: IDLE,
            write_timeout: WRITE,
        };
        let mut g = H2Guard::new(server, policy, budget.clone());
        let mut sent = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for i in 0..streams {
            sent.extend(raw(f::HEADERS, f::END_STREAM, 2 * i + 1));
        }
        peer.write_all(&sent).await.unwrap();
        let mut got = vec![0; sent.len()];
        g.read_exact(&mut got).await.unwrap();
        (g, peer)
    }

    /// While the process-wide budget of open streams is full, a connection with several open is
    /// not read; it is once a stream ends on another connection. One with few is always read.
    #[tokio::test(start_paused = true)]
    async fn a_full_stream_budget_pauses_busy_connections() {
        use super::super::stream_budget::ALWAYS_READ_BELOW;
        let busy = ALWAYS_READ_BELOW as u32;
        let budget = StreamBudget::new(2 * ALWAYS_READ_BELOW);
        let (mut a, _peer_a) = opened(&budget, busy).await;
        let (mut b, mut peer_b) = opened(&budget, busy).await;
        assert_eq!(budget.open(), 2 * ALWAYS_READ_BELOW);

        let (mut c, mut peer_c) = opened(&budget, 1).await;
        peer_c.write_all(&raw(f::PING, 0, 0)).await.unwrap();
        let mut buf = [0u8; 64];
        let n = AsyncReadExt::read(&mut c, &mut buf).await.unwrap();
        assert_eq!(n, 10, "a connection with one stream is read");

        peer_b.write_all(&raw(f::PING, 0, 0)).await.unwrap();
        let paused = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let n = AsyncReadExt::read(&mut b, &mut buf).await.unwrap();
            (n, b)
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!paused.is_finished(), "not read while the budget is full");

        // h2 answers two of connection A's streams: below the budget, B is read again.
        let mut answers = raw(f::HEADERS, f::END_STREAM, 1);
        answers.extend(raw(f::HEADERS, f::END_STREAM, 3));
        a.write_all(&answers).await.unwrap();
        let (n, b) = tokio::time::timeout(Duration::from_secs(30), paused)
            .await
            .expect("read again once streams ended")
            .unwrap();
        assert_eq!(n, 10);
        drop((b, c));
        assert_eq!(
            budget.open(),
            ALWAYS_READ_BELOW - 2,
            "dropped connections give back"
        );
    }

    /// A connection paused by the full budget still hands what h2 wrote to the layer below:
    /// the write batch waits for a dry read, which a paused connection never reaches.
    #[tokio::test(start_paused = true)]
    async fn a_paused_connection_still_drains_what_h2_wrote() {
        use super::super::stream_budget::ALWAYS_READ_BELOW;
        let busy = ALWAYS_READ_BELOW as u32;
        let budget = StreamBudget::new(ALWAYS_READ_BELOW);
        let (server, peer) = tokio::io::duplex(64 * 1024);
        let drains = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let io = Draining {
            io: server,
            drains: drains.clone(),
        };
        let (mut g, mut peer) = opened_over(io, peer, &budget, busy).await;
        assert_eq!(budget.open(), ALWAYS_READ_BELOW, "the budget is full");

        peer.write_all(&raw(f::PING, 0, 0)).await.unwrap();
        let before = drains.load(std::sync::atomic::Ordering::Relaxed);
        let mut buf = [0u8; 64];
        let read =
            tokio::time::timeout(Duration::from_secs(1), AsyncReadExt::read(&mut g, &mut buf))
                .await;
        assert!(read.is_err(), "not read while the budget is full");
        assert!(
            drains.load(std::sync::atomic::Ordering::Relaxed) > before,
            "a paused read drains what is held below"
        );
    }

    /// Through the I/O path: the idle timer fires while h2 waits to read, the peer gets the
    /// GOAWAY, and h2 reads end-of-file.
    #[tokio::test(start_paused = true)]
    async fn idle_connection_gets_goaway_then_eof() {
        let (server, mut peer) = tokio::io::duplex(4096);
        let mut g = H2Guard::new(
            server,
            Policy {
                idle_timeout: IDLE,
                write_timeout: WRITE,
            },
            StreamBudget::new(usize::MAX),
        );
        peer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut ping_frame = vec![0, 0, 8, f::PING, 0, 0, 0, 0, 0];
        ping_frame.extend_from_slice(&[0; 8]);
        peer.write_all(&ping_frame).await.unwrap();
        let t0 = Instant::now();
        let mut seen = Vec::new();
        loop {
            let mut buf = [0u8; 256];
            let n = AsyncReadExt::read(&mut g, &mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        assert_eq!(seen.len(), 24 + ping_frame.len(), "h2 got the peer's bytes");
        assert_eq!(Instant::now() - t0, IDLE, "closed at the idle timeout");
        drop(g);
        let mut sent = Vec::new();
        peer.read_to_end(&mut sent).await.unwrap();
        assert_eq!(
            frames(&sent),
            [(f::GOAWAY, 0, [&[0u8; 8][..], b"max_idle"].concat())]
        );
    }
}
