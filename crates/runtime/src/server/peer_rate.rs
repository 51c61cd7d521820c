//! Per-peer rate limiting: one token bucket per source IP address, refilled continuously.
//!
//! The table is bounded: when it reaches [`MAX_PEERS`] entries, buckets that have refilled to full
//! (peers that have been quiet) are dropped, since a full bucket is the same as no entry; if every
//! peer is still active, new peers are refused until some bucket fills, which keeps memory bounded
//! under a flood of source addresses. The sweep runs at most once per [`PRUNE_INTERVAL`], so such
//! a flood cannot make every request pay for a scan of the whole table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A per-peer token bucket: `per_second` tokens refill continuously up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerRate {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed back to back.
    pub burst: u32,
}

/// Peers tracked at most.
pub const MAX_PEERS: usize = 65_536;
/// Least time between two sweeps of a full table.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default)]
struct Table {
    buckets: HashMap<IpAddr, Bucket>,
    last_prune: Option<Instant>,
}

/// Token buckets keyed by source IP.
#[derive(Debug)]
pub struct PeerLimiter {
    rate: PeerRate,
    table: Mutex<Table>,
}

impl PeerLimiter {
    /// A limiter allowing each peer `rate`.
    pub fn new(rate: PeerRate) -> Self {
        Self {
            rate,
            table: Mutex::new(Table::default()),
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let burst = f64::from(self.rate.burst);
        (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.rate.per_second)
            .min(burst)
    }

    /// Takes one token for `peer` at `now`; `false` means the request must be refused.
    pub fn allow(&self, peer: IpAddr, now: Instant) -> bool {
        let Ok(mut table) = self.table.lock() else {
            return true;
        };
        let burst = f64::from(self.rate.burst);
        if table.buckets.len() >= MAX_PEERS && !table.buckets.contains_key(&peer) {
            let due = table
                .last_prune
                .is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_INTERVAL);
            if due {
                table.last_prune = Some(now);
                table.buckets.retain(|_, b| self.refilled(*b, now) < burst);
            }
            if table.buckets.len() >= MAX_PEERS {
                return false;
            }
        }
        let bucket = table.buckets.entry(peer).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let tokens = self.refilled(*bucket, now);
        let allowed = tokens >= 1.0;
        *bucket = Bucket {
            tokens: if allowed { tokens - 1.0 } else { tokens },
            at: now,
        };
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_per_peer() {
        let l = PeerLimiter::new(PeerRate {
            per_second: 2.0,
            burst: 3,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t = Instant::now();
        assert!(l.allow(a, t) && l.allow(a, t) && l.allow(a, t));
        assert!(!l.allow(a, t), "burst exhausted");
        assert!(l.allow(b, t), "other peers unaffected");
        assert!(!l.allow(a, t + Duration::from_millis(400)), "0.8 token");
        assert!(
            l.allow(a, t + Duration::from_millis(500)),
            "1 token after 0.5 s"
        );
        assert!(!l.allow(a, t + Duration::from_millis(500)));
    }

    #[test]
    fn table_stays_bounded() {
        let l = PeerLimiter::new(PeerRate {
            per_second: 1.0,
            burst: 1,
        });
        let t = Instant::now();
        for i in 0..MAX_PEERS as u32 {
            assert!(l.allow(IpAddr::from(i.to_be_bytes()), t));
        }
        let newcomer = IpAddr::from([255, 255, 255, 255]);
        assert!(!l.allow(newcomer, t), "table full of active peers");
        let half = t + Duration::from_millis(500);
        assert!(
            !l.allow(newcomer, half),
            "no second sweep within the interval"
        );
        // One second later every bucket is full again and can be forgotten.
        assert!(l.allow(newcomer, t + Duration::from_secs(1)));
        assert_eq!(l.table.lock().unwrap().buckets.len(), 1);
    }
}
