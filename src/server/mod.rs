//! Sentry's listeners: the gRPC CA service over TLS ([`grpc`], [`tls`]), the plain-HTTP
//! health and metrics endpoints ([`http`]) and OIDC discovery ([`oidc`], [`oidc_listener`]),
//! all three bounded by [`side_listener`];
//! capacity protection in front of them: a bound on open connections ([`conn_limit`]) and
//! admission control with load shedding ([`admission`], [`peer_rate`]); status codes as
//! gRPC-Go sends them ([`status`]).

pub mod admission;
pub mod conn_limit;
pub mod grpc;
pub mod http;
pub mod oidc;
pub mod oidc_listener;
pub mod peer_rate;
pub mod side_listener;
pub mod status;
pub mod tls;
