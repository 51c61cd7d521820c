//! Plain-HTTP endpoints: `/healthz` (200 when ready, else 503) and Prometheus metrics (any path),
//! each on a listener bounded by [`super::side_listener`].

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use super::side_listener::{self, HEALTHZ, METRICS};
use crate::telemetry::{Metrics, Readiness};

/// Serves `/healthz` until `shutdown` resolves.
pub async fn serve_healthz(
    listener: TcpListener,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .with_state(readiness);
    side_listener::serve("healthz", listener, app, None, HEALTHZ, shutdown).await;
}

async fn healthz(State(readiness): State<Readiness>) -> StatusCode {
    if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Serves the Prometheus text exposition on every path until `shutdown` resolves.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new().fallback(get(render)).with_state(metrics);
    side_listener::serve("metrics", listener, app, None, METRICS, shutdown).await;
}

async fn render(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}
