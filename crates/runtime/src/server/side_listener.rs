//! The accept loop and per-connection bounds shared by the HTTP/1.1 side listeners (healthz,
//! metrics, OIDC discovery), so that no client of theirs can hold file descriptors Sentry needs
//! for gRPC, the bundle files and the rotation loop:
//!
//! - at most [`SideLimits::max_connections`] open at once (the listener stops accepting until one
//!   closes; these descriptors are counted in the process's budget, see [`fd_budget`]);
//! - at most [`SideLimits::per_peer`] from one source address (more are closed at once), so one
//!   host cannot take every slot from the kubelet's probes or Prometheus;
//! - the request headers within [`SideLimits::header_read_timeout`] (also the keep-alive idle
//!   bound, as hyper starts that timer whenever it waits for a request);
//! - the whole connection, TLS handshake, requests and responses, within
//!   [`SideLimits::lifetime`], so a client that never reads a response cannot hold its slot;
//! - on an accept error (EMFILE, ENFILE, ENOBUFS) the loop backs off exponentially up to 1 s
//!   instead of spinning, with one warning per run of failures.
//!
//! Knows nothing about what is served: the router and the optional TLS acceptor are the caller's.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::telemetry::handshakes::{self, Kind};

/// Bounds on one side listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SideLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one source address at most.
    pub per_peer: usize,
    /// Time to receive a request's headers (and to wait for the next one on a kept-alive
    /// connection); for OIDC over TLS also the handshake's bound.
    pub header_read_timeout: Duration,
    /// Time a connection may stay open in total.
    pub lifetime: Duration,
}

/// `/healthz`: probes from the kubelet, one short request per connection.
pub const HEALTHZ: SideLimits = SideLimits {
    max_connections: 64,
    per_peer: 8,
    header_read_timeout: Duration::from_secs(5),
    lifetime: Duration::from_secs(30),
};

/// Metrics: a few Prometheus scrapers.
pub const METRICS: SideLimits = HEALTHZ;

/// OIDC discovery: token verifiers fetching two small documents.
pub const OIDC: SideLimits = SideLimits {
    max_connections: 256,
    per_peer: 16,
    header_read_timeout: Duration::from_secs(10),
    lifetime: Duration::from_secs(60),
};

/// Descriptors all side listeners together may hold: subtracted from the gRPC connection bound
/// so that the sum of every listener's connections stays below `RLIMIT_NOFILE` with the gRPC
/// reserve ([`super::conn_limit::FD_RESERVE`]) left for files and the rotation loop.
pub fn fd_budget() -> usize {
    HEALTHZ.max_connections + METRICS.max_connections + OIDC.max_connections
}

/// Longest pause between accept attempts after repeated errors.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(5);

/// Serves `router` on `listener` (over TLS when `tls` is set) within `limits` until `shutdown`
/// resolves; `name` labels the log lines.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: SideLimits,
    shutdown: impl Future<Output = ()>,
) {
    let service = TowerToHyperService::new(router);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let peers = Peers::default();
    let mut backoff = FIRST_BACKOFF;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            res = accept_with_slot(&listener, &slots) => res,
        };
        let (tcp, peer, permit) = match accepted {
            Ok(conn) => {
                backoff = FIRST_BACKOFF;
                conn
            }
            Err(e) => {
                if backoff == FIRST_BACKOFF {
                    warn!(listener = name, error = %e, "accept failed; backing off until it succeeds");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let Some(peer_slot) = peers.take(peer, limits.per_peer) else {
            debug!(listener = name, %peer, "too many connections from one address; closed");
            continue;
        };
        let service = service.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _held = (permit, peer_slot);
            let conn = async {
                match tls {
                    None => serve_conn(tcp, service, limits).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(stream)) => serve_conn(stream, service, limits).await,
                            Ok(Err(e)) => handshakes::record(Kind::of(&e)),
                            Err(_) => handshakes::record(Kind::Timeout),
                        }
                    }
                }
            };
            if tokio::time::timeout(limits.lifetime, conn).await.is_err() {
                debug!(listener = name, "connection closed at its lifetime bound");
            }
        });
    }
}

async fn accept_with_slot(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> std::io::Result<(
    tokio::net::TcpStream,
    IpAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    let permit = slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| std::io::Error::other("listener closed"))?;
    let (tcp, peer) = listener.accept().await?;
    Ok((tcp, peer.ip(), permit))
}

async fn serve_conn<S>(stream: S, service: TowerToHyperService<Router>, limits: SideLimits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Largest request head buffered (hyper's default is about 400 KiB); the side listeners serve
/// only bodiless GETs.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Open connections per source address.
#[derive(Debug, Clone, Default)]
struct Peers(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection's share of its peer's count, given back on drop.
#[derive(Debug)]
struct PeerSlot {
    peers: Peers,
    ip: IpAddr,
}

impl Peers {
    fn take(&self, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.peers.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_peer_slots_are_bounded_and_given_back() {
        let peers = Peers::default();
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 1].into();
        let held: Vec<_> = (0..2).map(|_| peers.take(a, 2).unwrap()).collect();
        assert!(peers.take(a, 2).is_none(), "third from one address");
        let other = peers.take(b, 2).expect("another address is not affected");
        drop(held);
        assert!(peers.take(a, 2).is_some(), "slots given back");
        drop(other);
        assert!(peers.0.lock().unwrap().is_empty(), "no address left behind");
    }
}
