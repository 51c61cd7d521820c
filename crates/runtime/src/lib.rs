//! The running parts of sentry-rs, on tokio: the live CA whose signer rotation replaces and
//! the serving certificate follows ([`authority`]), who is asking ([`validator`]: insecure, Kubernetes
//! tokens, JWKS), where the bundle lives ([`store`]: a directory or the `dapr-trust-bundle`
//! Secret and ConfigMap, with change notices), keeping it current ([`rotation`]), the listeners
//! and the request path ([`server`]: gRPC over TLS, health, metrics, OIDC, and the capacity
//! guards in front of them), logs, metrics and readiness ([`telemetry`]), the Kubernetes API
//! plumbing ([`k8s`]) and request errors mapped to gRPC codes in one place ([`error`]).
//!
//! Each module owns its settings type; the binary crate (`sentry`) resolves flags and the Dapr
//! `Configuration` into them and wires the parts together. Nothing here reads flags.

pub mod authority;
pub mod error;
pub mod k8s;
pub mod rotation;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod validator;
