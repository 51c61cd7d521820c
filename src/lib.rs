//! Sentry-rs: a drop-in Rust replacement for Dapr Sentry, the certificate authority of the Dapr
//! control plane.
//!
//! One request's path, by folder: [`server::grpc`] receives `SignCertificate`, a
//! [`validator`] decides who is asking, [`ca::csr`] extracts the requester's public key and
//! [`ca::issuer`] signs a SPIFFE workload certificate with the current issuer. Beside the
//! request path, [`bundle`] owns the trust bundle (generate, parse, verify) and [`store`] owns
//! where it lives. [`config`] resolves flags and the Dapr `Configuration` once; [`telemetry`]
//! owns logs, metrics and readiness; [`app`] wires everything together. [`load`] is the
//! client-side load generator behind the `sentry-load` binary.

pub mod app;
pub mod bundle;
pub mod ca;
pub mod cli;
pub mod client;
pub mod config;
pub mod encoding;
pub mod error;
pub mod jose;
pub mod k8s;
pub mod load;
pub mod profile;
pub mod rotation;
pub mod server;
pub mod spiffe;
pub mod store;
pub mod telemetry;
pub mod validator;

/// Generated protobuf/gRPC code for `dapr.proto.sentry.v1` (build.rs, with protox: no protoc).
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("dapr.proto.sentry.v1");
}
