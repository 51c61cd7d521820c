//! Sentry's listeners: the gRPC CA service over TLS ([`grpc`], [`tls`]), the plain-HTTP
//! health and metrics endpoints ([`http`]), each bound where a [`listen_addr`] says and OIDC discovery ([`oidc`], [`oidc_listener`]),
//! all three bounded by [`side_listener`];
//! capacity protection in front of them, within the bounds of [`limits`], and a lingering close
//! ([`linger`]): a bound on open connections ([`conn_limit`]) and
//! admission control with load shedding and fair shares ([`admission`], [`fair_share`],
//! [`peer_rate`]); the HTTP/2 connection guard ([`h2_guard`], [`h2_frames`]) and the bound on
//! unanswered streams it keeps ([`stream_budget`]); request bodies and
//! responses held to their bounds ([`request_body`], [`response_hold`]); freed heap returned after
//! a burst of connections closes ([`heap_trim`]); status codes and content-type answers as
//! gRPC-Go sends them ([`status`]); writes batched in front of TLS ([`write_batch`]).

pub mod admission;
pub mod conn_limit;
pub mod fair_share;
pub mod grpc;
pub mod h2_frames;
pub mod h2_guard;
pub mod heap_trim;
pub mod http;
pub mod limits;
pub mod linger;
pub mod listen_addr;
pub mod oidc;
pub mod oidc_listener;
pub mod peer_rate;
pub mod request_body;
pub mod response_hold;
pub mod side_listener;
pub mod status;
pub mod stream_budget;
pub mod tls;
pub mod write_batch;
