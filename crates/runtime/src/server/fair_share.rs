//! Fair shares of the in-flight bound: one connection may hold at most
//! `--max-in-flight-per-connection` of the `--max-in-flight-requests` slots and one source address
//! at most `--max-in-flight-per-peer`, so a few connections or one address cannot take them all.
//!
//! A connection's count lives in [`ConnSlots`], which the connection wrapper hands to every
//! request through tonic's connect info ([`ConnInfo`]); the per-address counts live in a table
//! that holds only addresses with a request in flight (so it is bounded by the in-flight bound).
//! Owns only the counting; [`super::admission`] decides what to answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Requests in flight on one connection.
#[derive(Debug, Default)]
pub struct ConnSlots(AtomicUsize);

/// What tonic attaches to every request of a connection: the inner stream's connect info and the
/// connection's slot count.
#[derive(Debug, Clone)]
pub struct ConnInfo<I> {
    /// The wrapped stream's connect info (TLS and TCP).
    pub inner: I,
    /// This connection's in-flight count.
    pub slots: Arc<ConnSlots>,
}

/// Which share is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// The connection's.
    Connection,
    /// The source address's.
    Peer,
}

/// The per-connection and per-address bounds, and the per-address counts.
#[derive(Debug)]
pub struct Shares {
    per_connection: usize,
    per_peer: usize,
    peers: Mutex<HashMap<IpAddr, usize>>,
}

/// A request's place in its connection's and its address's share; given back on drop.
#[derive(Debug)]
pub struct Share {
    shares: Arc<Shares>,
    conn: Option<Arc<ConnSlots>>,
    peer: Option<IpAddr>,
}

impl Shares {
    /// At most `per_connection` requests per connection and `per_peer` per address.
    pub fn new(per_connection: usize, per_peer: usize) -> Self {
        Self {
            per_connection,
            per_peer,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a place for a request on `conn` from `peer`, if both have room.
    pub fn take(
        self: &Arc<Self>,
        conn: Option<&Arc<ConnSlots>>,
        peer: Option<IpAddr>,
    ) -> Result<Share, Exhausted> {
        if let Some(c) = conn {
            let taken =
                c.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < self.per_connection).then_some(n + 1)
                })
                .is_ok();
            if !taken {
                return Err(Exhausted::Connection);
            }
        }
        let mut share = Share {
            shares: self.clone(),
            conn: conn.cloned(),
            peer: None,
        };
        if let Some(ip) = peer {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let n = peers.entry(ip).or_insert(0);
            if *n >= self.per_peer {
                if *n == 0 {
                    peers.remove(&ip);
                }
                return Err(Exhausted::Peer);
            }
            *n += 1;
        }
        share.peer = peer;
        Ok(share)
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        if let Some(c) = &self.conn {
            c.0.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(ip) = self.peer {
            let mut peers = self.shares.peers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = peers.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    peers.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_each_connection_and_address_and_gives_back() {
        let shares = Arc::new(Shares::new(2, 3));
        let (a, b) = (
            Arc::new(ConnSlots::default()),
            Arc::new(ConnSlots::default()),
        );
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = shares.take(Some(&a), Some(ip)).unwrap();
        let _a2 = shares.take(Some(&a), Some(ip)).unwrap();
        assert_eq!(
            shares.take(Some(&a), Some(ip)).unwrap_err(),
            Exhausted::Connection
        );
        let _b1 = shares.take(Some(&b), Some(ip)).unwrap();
        assert_eq!(
            shares.take(Some(&b), Some(ip)).unwrap_err(),
            Exhausted::Peer
        );
        assert_eq!(b.0.load(Ordering::Acquire), 1, "refused place given back");
        let _o = shares.take(Some(&b), Some(other)).unwrap();
        drop(a1);
        let _a3 = shares.take(Some(&a), Some(ip)).unwrap();
        drop((_a2, _a3, _b1, _o));
        assert!(shares.peers.lock().unwrap().is_empty(), "table emptied");
        assert_eq!(a.0.load(Ordering::Acquire), 0);
    }
}
