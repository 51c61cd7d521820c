//! Telemetry: logs ([`logging`], in Dapr's line format: [`log_format`]), Prometheus metrics with
//! Dapr's names ([`metrics`]) and the readiness that `/healthz` reports ([`health`]); failed TLS
//! handshakes summarised in one line per interval ([`handshakes`]); untrusted text bounded for a
//! log line ([`loggable`]).

pub mod handshakes;
pub mod health;
pub mod log_format;
pub mod loggable;
pub mod logging;
pub mod metrics;

pub use health::Readiness;
pub use metrics::Metrics;
