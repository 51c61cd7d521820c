//! Sentry's listeners: the gRPC CA service over TLS ([`grpc`], [`tls`]), the plain-HTTP
//! health and metrics endpoints ([`http`]) and OIDC discovery ([`oidc`], [`oidc_listener`]).

pub mod grpc;
pub mod http;
pub mod oidc;
pub mod oidc_listener;
pub mod tls;
