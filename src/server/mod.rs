//! Sentry's listeners: the gRPC CA service over TLS ([`grpc`], [`tls`]) and the plain-HTTP
//! health and metrics endpoints ([`http`]).

pub mod grpc;
pub mod http;
pub mod tls;
