//! Sentry-rs: a drop-in Rust replacement for Dapr Sentry, the certificate authority of the Dapr
//! control plane. This crate is the edge: Dapr's flags and `Configuration` ([`config`]), the
//! operator commands ([`cli`]) and the composition root that starts every part ([`app`]).
//!
//! One request's path, by crate and folder: `sentry_runtime::server::grpc` receives
//! `SignCertificate`, a `sentry_runtime::validator` decides who is asking,
//! `sentry_core::ca::csr` extracts the requester's public key and `sentry_core::ca::issuer`
//! signs a SPIFFE workload certificate with the current issuer. Beside the request path,
//! `sentry_core::bundle` owns the trust bundle (generate, parse, verify), `sentry_runtime::store`
//! owns where it lives and `sentry_runtime::rotation` keeps it current. docs/ARCHITECTURE.md
//! draws the crates, the request path and the long-lived tasks.

pub mod app;
pub mod cli;
pub mod config;
