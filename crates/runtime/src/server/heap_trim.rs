//! Gives freed heap memory back to the operating system once a burst of gRPC connections has
//! closed. glibc's malloc keeps what its threads free in per-thread arenas and returns only the
//! top of each heap, so after 1,000 connections' buffers and queued responses are freed the pages
//! stay resident; `malloc_trim(0)` hands every arena's free pages back. It runs at most once per
//! [`CHECK_INTERVAL`], and only when a burst has ended: the open connections have fallen by at
//! least [`TRIM_AFTER_CLOSED`] and to at most a [`BURST_ENDED_AT`] of their highest since the
//! last trim. So a steady load never trims, however many connections it churns (a connection per
//! request, as daprd dials; 1,000 sidecars in closed loop swing between ~500 and 1,000 open), and
//! no request waits behind the trim's arena locks while the load lasts.
//!
//! The static musl image allocates through mimalloc, set by the binary to return freed pages
//! itself: there the count is kept and the trim does nothing. Owns only the open-connection count
//! and the trim; what a connection holds is [`super::conn_limit`]'s.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tracing::debug;

/// How often the open-connection count is looked at.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Connections that must have closed (from the highest count since the last trim) for a trim.
pub const TRIM_AFTER_CLOSED: usize = 64;
/// The burst has ended when at most this fraction (1/N) of its highest count is still open.
pub const BURST_ENDED_AT: usize = 4;

static OPEN: AtomicUsize = AtomicUsize::new(0);
static HIGHEST: AtomicUsize = AtomicUsize::new(0);

/// One open gRPC connection, counted while it lives.
#[derive(Debug)]
pub struct Open(());

impl Open {
    /// Counts a connection as open until the value is dropped.
    pub fn count() -> Self {
        let now = OPEN.fetch_add(1, Ordering::Relaxed) + 1;
        HIGHEST.fetch_max(now, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When to trim: the highest open count since the last trim, kept between checks.
#[derive(Debug, Default)]
struct Burst {
    highest: usize,
}

impl Burst {
    /// Takes the highest count seen since the last check and the count now; true if a trim is
    /// due (and then counts from `open`).
    fn due(&mut self, highest: usize, open: usize) -> bool {
        self.highest = self.highest.max(highest);
        if self.highest.saturating_sub(open) >= TRIM_AFTER_CLOSED
            && open <= self.highest / BURST_ENDED_AT
        {
            self.highest = open;
            return true;
        }
        false
    }
}

/// Checks every [`CHECK_INTERVAL`] for the rest of the process's life and trims after a burst.
pub fn spawn() {
    tokio::spawn(async move {
        let mut burst = Burst::default();
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let open = OPEN.load(Ordering::Relaxed);
            let highest = HIGHEST.swap(open, Ordering::Relaxed);
            if burst.due(highest, open) {
                let started = std::time::Instant::now();
                let freed = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
                debug!(
                    open,
                    freed,
                    took_us = started.elapsed().as_micros() as u64,
                    "Returned freed heap memory after connections closed"
                );
            }
        }
    });
}

/// Returns free heap pages to the operating system; true if any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointers and may be called from any thread at any time; it
    // only releases pages malloc already holds free.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other C libraries return freed memory themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_after_a_burst_of_closes() {
        let mut b = Burst::default();
        assert!(!b.due(0, 0));
        assert!(!b.due(1000, 1000), "all still open");
        assert!(!b.due(1000, 1000 - TRIM_AFTER_CLOSED + 1), "too few closed");
        assert!(!b.due(900, 500), "half still open: the load goes on");
        assert!(b.due(900, 10), "highest since the last trim counts");
        assert!(!b.due(10, 10), "once");
        assert!(!b.due(10, 0), "a few more closed");
    }

    #[test]
    fn steady_churn_never_trims() {
        let mut b = Burst::default();
        for _ in 0..100 {
            // Many connections opened and closed between checks; about as many open each time.
            assert!(!b.due(40, 30));
        }
        for _ in 0..100 {
            // 1,000 sidecars in closed loop: the open count swings with the client's batches.
            assert!(!b.due(1000, 470));
        }
    }

    #[test]
    fn open_connections_are_counted() {
        let before = OPEN.load(Ordering::Relaxed);
        let conns: Vec<Open> = (0..3).map(|_| Open::count()).collect();
        assert!(OPEN.load(Ordering::Relaxed) >= before + 3);
        assert!(HIGHEST.load(Ordering::Relaxed) >= before + 3);
        drop(conns);
    }
}
