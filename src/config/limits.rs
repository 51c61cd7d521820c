//! Capacity limits: how much work Sentry takes on at once before it sheds load (flags beyond
//! Dapr's, whose sentry has none).

use std::time::Duration;

use super::Flags;
use sentry_runtime::server::limits::Limits;
use sentry_runtime::server::peer_rate::PeerRate;

/// Flags for the HTTP/2 stream bounds (beyond Dapr, whose sentry relies on gRPC-Go's).
#[derive(Debug, Clone, clap::Args)]
pub struct StreamFlags {
    /// Requests one connection may have in flight (default: 1/32 of --max-in-flight-requests,
    /// at least 1).
    #[arg(long)]
    pub max_in_flight_per_connection: Option<usize>,
    /// Requests one source address may have in flight (default: 1/4 of
    /// --max-in-flight-requests, at least 1).
    #[arg(long)]
    pub max_in_flight_per_peer: Option<usize>,
    /// Time an admitted request's body has to arrive in full.
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    pub request_body_timeout: Duration,
    /// Time a response has to be written once its headers are sent; a stream whose peer does not
    /// open its flow-control window in time is reset.
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    pub response_write_timeout: Duration,
    /// Bytes of responses not yet written, at most, over all connections.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_response_buffer: usize,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    super::parse_go_duration(s)
}

/// Limits from the flags; a rate of zero (the default) disables the per-peer limit.
pub fn limits_from_flags(flags: &Flags) -> Result<Limits, String> {
    if flags.tls_handshake_timeout.is_zero() || flags.connection_idle_timeout.is_zero() {
        return Err(
            "--tls-handshake-timeout and --connection-idle-timeout must be positive".into(),
        );
    }
    if flags.max_connections == 0 || flags.max_in_flight_requests == 0 {
        return Err("--max-connections and --max-in-flight-requests must be at least 1".into());
    }
    let st = &flags.streams;
    if st.request_body_timeout.is_zero() || st.response_write_timeout.is_zero() {
        return Err("--request-body-timeout and --response-write-timeout must be positive".into());
    }
    if st.max_in_flight_per_connection == Some(0)
        || st.max_in_flight_per_peer == Some(0)
        || st.max_response_buffer == 0
    {
        return Err("--max-in-flight-per-connection, --max-in-flight-per-peer and --max-response-buffer must be at least 1".into());
    }
    let share = |explicit: Option<usize>, divisor: usize| {
        explicit.unwrap_or((flags.max_in_flight_requests / divisor).max(1))
    };
    let rate = flags.peer_rate_limit;
    if !(rate.is_finite() && rate >= 0.0) {
        return Err(format!("--peer-rate-limit {rate}: must be a number ≥ 0"));
    }
    let peer_rate = (rate > 0.0).then(|| PeerRate {
        per_second: rate,
        burst: flags
            .peer_rate_burst
            .unwrap_or_else(|| rate.ceil().min(f64::from(u32::MAX)) as u32)
            .max(1),
    });
    Ok(Limits {
        max_connections: flags.max_connections,
        max_in_flight: flags.max_in_flight_requests,
        handshake_timeout: flags.tls_handshake_timeout,
        idle_timeout: flags.connection_idle_timeout,
        max_streams_per_connection: flags.max_streams_per_connection.max(1),
        peer_rate,
        max_in_flight_per_connection: share(st.max_in_flight_per_connection, 32),
        max_in_flight_per_peer: share(st.max_in_flight_per_peer, 4),
        request_body_timeout: st.request_body_timeout,
        response_write_timeout: st.response_write_timeout,
        max_response_buffer: st.max_response_buffer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_and_peer_rate() {
        let l = limits_from_flags(&Flags::try_parse_from(["sentry"]).unwrap()).unwrap();
        assert_eq!(l.peer_rate, None);
        assert_eq!(
            (l.max_in_flight_per_connection, l.max_in_flight_per_peer),
            (32, 256)
        );
        assert_eq!(l.request_body_timeout, Duration::from_secs(10));
        assert_eq!(l.response_write_timeout, Duration::from_secs(10));
        assert_eq!(l.max_response_buffer, 64 << 20);
        let f = Flags::try_parse_from(["sentry", "--max-in-flight-requests", "2"]).unwrap();
        let l = limits_from_flags(&f).unwrap();
        assert_eq!(
            (l.max_in_flight_per_connection, l.max_in_flight_per_peer),
            (1, 1)
        );
        let f = Flags::try_parse_from(["sentry", "--max-in-flight-per-peer", "0"]).unwrap();
        assert!(limits_from_flags(&f).is_err());
        assert!(l.max_in_flight > 0 && l.max_connections > 0);
        let f = Flags::try_parse_from(["sentry", "--peer-rate-limit", "2.5"]).unwrap();
        let l = limits_from_flags(&f).unwrap();
        assert_eq!(
            l.peer_rate,
            Some(PeerRate {
                per_second: 2.5,
                burst: 3
            })
        );
        let f = Flags::try_parse_from(["sentry", "--peer-rate-limit=-1"]).unwrap();
        assert!(limits_from_flags(&f).is_err());
        let f = Flags::try_parse_from(["sentry", "--max-in-flight-requests", "0"]).unwrap();
        assert!(limits_from_flags(&f).is_err());
    }
}
