//! The bounds every listener and request is held to: connections, admission, per-peer rate,
//! streams, request bodies and response writes. Only the numbers; each layer that enforces one
//! lives in its own module of [`super`].

use std::time::Duration;

use super::peer_rate::PeerRate;

/// Bounds on connections and requests (resolved from the flags by the binary).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Open gRPC connections (handshaking or established); the listener stops accepting at this
    /// many. Further capped at start-up by the process's file-descriptor limit.
    pub max_connections: usize,
    /// `SignCertificate` requests admitted at once (running or waiting for a core); one more is
    /// answered `RESOURCE_EXHAUSTED` at once so the client retries later.
    pub max_in_flight: usize,
    /// Time from accepting a connection to the end of its TLS handshake; silent or slow clients
    /// are dropped after it so they cannot hold connection slots.
    pub handshake_timeout: Duration,
    /// Time an established connection may move no byte before it is closed, so clients that
    /// finish the handshake and fall silent cannot hold connection slots either.
    pub idle_timeout: Duration,
    /// Concurrent requests on one HTTP/2 connection.
    pub max_streams_per_connection: u32,
    /// Per source IP: sustained requests per second, and burst; `None` = no per-peer limit.
    pub peer_rate: Option<PeerRate>,
    /// Of `max_in_flight`, the most one connection may hold.
    pub max_in_flight_per_connection: usize,
    /// Of `max_in_flight`, the most one source address may hold.
    pub max_in_flight_per_peer: usize,
    /// Time from admission to the end of a request's body.
    pub request_body_timeout: Duration,
    /// Time from a response's headers to its end.
    pub response_write_timeout: Duration,
    /// Unwritten response bytes at most.
    pub max_response_buffer: usize,
}
