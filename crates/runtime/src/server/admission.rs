//! Admission control in front of the gRPC service. A request that is not gRPC gets gRPC-Go's
//! HTTP 415 at once. Otherwise it is admitted only if its peer is within its rate (when a per-peer
//! limit is set), fewer than `max_in_flight` requests are already admitted, and its connection and
//! its source address are within their fair shares ([`super::fair_share`]). Otherwise it is
//! answered `RESOURCE_EXHAUSTED` at once — before its body is read, without any crypto — and
//! Dapr's client retries it (its retry policy covers that code).
//!
//! A request counts as in flight from the moment its headers arrive until its response has been
//! handed to HTTP/2 ([`super::response_hold`]), so requests queued for a busy core and responses
//! queued behind a closed flow-control window count too: under overload the queue stays bounded
//! and clients learn quickly. Its body must arrive within the body timeout and carry one message
//! ([`super::request_body`]).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use super::fair_share::{ConnInfo, Exhausted, Share, Shares};
use super::limits::Limits;
use super::peer_rate::PeerLimiter;
use super::request_body::UnaryBody;
use super::response_hold::{hold, unheld, Held, ResponseBudget};
use super::status;
use crate::telemetry::Metrics;

/// The admission layer: shared by every connection.
#[derive(Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
    peers: Option<Arc<PeerLimiter>>,
    shares: Arc<Shares>,
    budget: ResponseBudget,
    body_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Admission {
    /// Admission under `limits`, counting refusals in `metrics`.
    pub fn new(limits: &Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_in_flight)),
            peers: limits.peer_rate.map(|r| Arc::new(PeerLimiter::new(r))),
            shares: Arc::new(Shares::new(
                limits.max_in_flight_per_connection,
                limits.max_in_flight_per_peer,
            )),
            budget: ResponseBudget::new(limits.max_response_buffer),
            body_timeout: limits.request_body_timeout,
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

type Conn = ConnInfo<TlsConnectInfo<TcpConnectInfo>>;

fn peer_ip(conn: Option<&Conn>) -> Option<IpAddr> {
    conn.and_then(|c| c.inner.get_ref().remote_addr())
        .map(|a| a.ip())
}

fn refuse(message: &'static str) -> http::Response<Held<Holding>> {
    unheld(tonic::Status::resource_exhausted(message).into_http())
}

/// What an admitted request holds until its response is written.
pub type Holding = (InFlight, Share);

/// An admitted request: holds its permit and counts in the in-flight gauge until dropped (also
/// when the client goes away mid-request and the future is dropped).
pub struct InFlight {
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

impl<S> Service<http::Request<tonic::body::Body>> for Admitted<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Held<Holding>>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let a = &self.admission;
        if let Some(answer) = status::refuse_non_grpc(&req) {
            return Box::pin(std::future::ready(Ok(unheld(answer))));
        }
        let shed = |reason: &str, message: &'static str| -> Self::Future {
            a.metrics.requests_shed.with_label_values(&[reason]).inc();
            Box::pin(std::future::ready(Ok(refuse(message))))
        };
        let conn = req.extensions().get::<Conn>();
        let ip = peer_ip(conn);
        if let (Some(peers), Some(ip)) = (&a.peers, ip) {
            if !peers.allow(ip, Instant::now()) {
                return shed(
                    "peer_rate",
                    "too many requests from this address; retry later",
                );
            }
        }
        let Ok(permit) = a.permits.clone().try_acquire_owned() else {
            return shed("in_flight", "sentry is at capacity; retry later");
        };
        let share = match a.shares.take(conn.map(|c| &c.slots), ip) {
            Ok(share) => share,
            Err(Exhausted::Connection) => {
                return shed(
                    "connection_in_flight",
                    "too many requests in flight on this connection; retry later",
                )
            }
            Err(Exhausted::Peer) => {
                return shed(
                    "peer_in_flight",
                    "too many requests in flight from this address; retry later",
                )
            }
        };
        let in_flight = InFlight::enter(permit, &a.metrics);
        let timeout = a.body_timeout;
        let req = req.map(|body| tonic::body::Body::new(UnaryBody::new(body, timeout)));
        // The clone is not yet polled ready; keep the one that is (tower's usual pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = inner.call(req);
        let (budget, metrics) = (a.budget.clone(), a.metrics.clone());
        Box::pin(async move {
            let response = fut.await?;
            Ok(match hold(response, (in_flight, share), &budget).await {
                Some(held) => held,
                None => {
                    metrics
                        .requests_shed
                        .with_label_values(&["response_buffer"])
                        .inc();
                    refuse("sentry's response buffer is full; retry later")
                }
            })
        })
    }
}
