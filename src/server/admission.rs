//! Admission control in front of the gRPC service: a request is admitted only if its peer is
//! within its rate (when a per-peer limit is set) and fewer than `max_in_flight` requests are
//! already admitted. Otherwise it is answered `RESOURCE_EXHAUSTED` at once — before its body is
//! read, without any crypto — and Dapr's client retries it (its retry policy covers that code).
//!
//! A request counts as in flight from the moment its headers arrive until its response is
//! produced, so requests queued for a busy core count too: under overload the queue stays
//! bounded and clients learn quickly, instead of every request slowing down together.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use super::peer_rate::PeerLimiter;
use crate::config::Limits;
use crate::telemetry::Metrics;

/// The admission layer: shared by every connection.
#[derive(Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
    peers: Option<Arc<PeerLimiter>>,
    metrics: Arc<Metrics>,
}

impl Admission {
    /// Admission under `limits`, counting refusals in `metrics`.
    pub fn new(limits: &Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_in_flight)),
            peers: limits.peer_rate.map(|r| Arc::new(PeerLimiter::new(r))),
            metrics,
        }
    }
}

impl<S> Layer<S> for Admission {
    type Service = Admitted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admitted {
            inner,
            admission: self.clone(),
        }
    }
}

/// A service behind [`Admission`].
#[derive(Clone)]
pub struct Admitted<S> {
    inner: S,
    admission: Admission,
}

fn peer_ip<B>(req: &http::Request<B>) -> Option<IpAddr> {
    let ext = req.extensions();
    ext.get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.get_ref().remote_addr())
        .or_else(|| ext.get::<TcpConnectInfo>().and_then(|i| i.remote_addr()))
        .map(|a| a.ip())
}

fn refuse(message: &'static str) -> http::Response<tonic::body::Body> {
    tonic::Status::resource_exhausted(message).into_http()
}

/// An admitted request: holds its permit and counts in the in-flight gauge until dropped (also
/// when the client goes away mid-request and the future is dropped).
struct InFlight {
    _permit: OwnedSemaphorePermit,
    gauge: IntGauge,
}

impl InFlight {
    fn enter(permit: OwnedSemaphorePermit, metrics: &Metrics) -> Self {
        metrics.requests_in_flight.inc();
        Self {
            _permit: permit,
            gauge: metrics.requests_in_flight.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for Admitted<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let a = &self.admission;
        if let (Some(peers), Some(ip)) = (&a.peers, peer_ip(&req)) {
            if !peers.allow(ip, Instant::now()) {
                a.metrics
                    .requests_shed
                    .with_label_values(&["peer_rate"])
                    .inc();
                return Box::pin(std::future::ready(Ok(refuse(
                    "too many requests from this address; retry later",
                ))));
            }
        }
        let Ok(permit) = a.permits.clone().try_acquire_owned() else {
            a.metrics
                .requests_shed
                .with_label_values(&["in_flight"])
                .inc();
            return Box::pin(std::future::ready(Ok(refuse(
                "sentry is at capacity; retry later",
            ))));
        };
        // The clone is not yet polled ready; keep the one that is (tower's usual pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = inner.call(req);
        let in_flight = InFlight::enter(permit, &a.metrics);
        Box::pin(async move {
            let res = fut.await;
            drop(in_flight);
            res
        })
    }
}
