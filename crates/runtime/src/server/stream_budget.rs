//! The bound on HTTP/2 streams that peers have opened and Sentry has not yet answered, over all
//! gRPC connections. Every such stream costs memory before any handler sees it (its decoded
//! headers, h2's stream state, hyper's task): 1,000 connections × 128 streams arriving faster
//! than two cores can shed them held 100–300 MB. While the total is at the bound, the
//! HTTP/2 guard ([`super::h2_guard`]) stops reading from connections that already have
//! [`ALWAYS_READ_BELOW`] streams open, so their further frames wait in the kernel (and TCP pushes
//! back on the sender) instead of in Sentry's heap; a connection with fewer open streams (every
//! daprd: one request per connection) is always read. Reading resumes as answers are written.
//!
//! Owns only the count and the wake-ups; which streams are open is the guard's business.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

/// A connection with fewer open streams than this is read whatever the total.
pub const ALWAYS_READ_BELOW: usize = 8;

/// Open streams over all connections, and the connections waiting for room.
#[derive(Debug)]
pub struct StreamBudget {
    open: AtomicUsize,
    max: usize,
    waiting: AtomicUsize,
    room: Arc<Notify>,
}

impl StreamBudget {
    /// A budget of `max` open streams.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max,
            waiting: AtomicUsize::new(0),
            room: Arc::new(Notify::new()),
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A peer opened a stream.
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    /// `n` streams ended; wakes as many waiting connections.
    pub fn closed(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.open.fetch_sub(n, Ordering::AcqRel);
        if self.waiting.load(Ordering::Acquire) > 0 {
            for _ in 0..n {
                self.room.notify_one();
            }
        }
    }

    fn full(&self) -> bool {
        self.open() >= self.max
    }
}

/// One connection's view of the budget: whether it may read now.
#[derive(Debug)]
pub struct Reader {
    budget: Arc<StreamBudget>,
    wait: Option<Pin<Box<OwnedNotified>>>,
}

impl Reader {
    /// A reader under `budget`.
    pub fn new(budget: Arc<StreamBudget>) -> Self {
        Self { budget, wait: None }
    }

    /// The process-wide budget this connection's streams count against.
    pub fn budget(&self) -> &StreamBudget {
        &self.budget
    }

    /// Ready when a connection with `own_open` streams open may read; otherwise registers `cx`
    /// to be woken when a stream ends somewhere.
    pub fn poll_room(&mut self, own_open: usize, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if own_open < ALWAYS_READ_BELOW || !self.budget.full() {
                self.stop_waiting();
                return Poll::Ready(());
            }
            let budget = &self.budget;
            let wait = self.wait.get_or_insert_with(|| {
                budget.waiting.fetch_add(1, Ordering::AcqRel);
                Box::pin(budget.room.clone().notified_owned())
            });
            // Registered before the second look, so a stream ending in between still wakes us.
            wait.as_mut().enable();
            if !self.budget.full() {
                continue;
            }
            match wait.as_mut().poll(cx) {
                Poll::Ready(()) => self.stop_waiting(),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn stop_waiting(&mut self) {
        if self.wait.take().is_some() {
            self.budget.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop_waiting();
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    #[test]
    fn a_connection_with_few_streams_always_reads() {
        let budget = StreamBudget::new(2);
        for _ in 0..5 {
            budget.opened();
        }
        let mut r = Reader::new(budget.clone());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(r.poll_room(ALWAYS_READ_BELOW - 1, &mut cx).is_ready());
        assert!(r.poll_room(ALWAYS_READ_BELOW, &mut cx).is_pending());
    }

    #[tokio::test]
    async fn a_full_budget_waits_until_a_stream_ends() {
        let budget = StreamBudget::new(3);
        for _ in 0..3 {
            budget.opened();
        }
        let mut r = Reader::new(budget.clone());
        let many = ALWAYS_READ_BELOW;
        let waiting = tokio::spawn(async move {
            std::future::poll_fn(|cx| r.poll_room(many, cx)).await;
            r
        });
        tokio::task::yield_now().await;
        while budget.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished());
        budget.closed(1);
        let r = waiting.await.unwrap();
        assert_eq!(budget.open(), 2);
        assert_eq!(
            budget.waiting.load(Ordering::Acquire),
            0,
            "no longer waiting"
        );
        drop(r);
        budget.closed(2);
        assert_eq!(budget.open(), 0);
    }
}
