//! Failed TLS handshakes, summarised: each failure is counted by kind (a fixed label, never the
//! peer's text), and one line per [`SUMMARY_INTERVAL`] reports the count and the kinds, however
//! many clients fail. rustls's own per-connection warnings (which quote the peer's SNI, alerts and
//! messages at any length) are filtered out of the log ([`LOG_DIRECTIVE`]) for the same reason.
//!
//! Owns only the counting and the summary line; the listeners call [`record`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::warn;

/// How often the summary line is written (when any handshake failed).
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// The log filter directive for rustls: off. Its warnings quote peer-chosen text (an SNI of up to
/// 64 KiB, alert and message names) once per connection; [`record`] reports the failures instead.
pub const LOG_DIRECTIVE: &str = "rustls=off";

/// Why a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Not finished within the handshake timeout.
    Timeout,
    /// The peer closed or reset the connection.
    Closed,
    /// A malformed or illegal message (a bad SNI, say).
    InvalidMessage,
    /// Nothing in common: versions, cipher suites, ALPN.
    Incompatible,
    /// A protocol violation, or an alert from the peer.
    Misbehaved,
    /// Anything else.
    Other,
}

const KINDS: [Kind; 6] = [
    Kind::Timeout,
    Kind::Closed,
    Kind::InvalidMessage,
    Kind::Incompatible,
    Kind::Misbehaved,
    Kind::Other,
];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Timeout => "timeout",
            Kind::Closed => "closed",
            Kind::InvalidMessage => "invalid_message",
            Kind::Incompatible => "incompatible",
            Kind::Misbehaved => "misbehaved",
            Kind::Other => "other",
        }
    }

    /// The kind of a failed `tokio_rustls` accept.
    pub fn of(err: &std::io::Error) -> Kind {
        use std::io::ErrorKind as E;
        if let Some(tls) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return match tls {
                rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                    Kind::InvalidMessage
                }
                rustls::Error::InappropriateHandshakeMessage { .. } => Kind::InvalidMessage,
                rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => {
                    Kind::Incompatible
                }
                rustls::Error::PeerMisbehaved(_) | rustls::Error::AlertReceived(_) => {
                    Kind::Misbehaved
                }
                _ => Kind::Other,
            };
        }
        match err.kind() {
            E::UnexpectedEof | E::ConnectionReset | E::ConnectionAborted | E::BrokenPipe => {
                Kind::Closed
            }
            E::InvalidData => Kind::InvalidMessage,
            E::TimedOut => Kind::Timeout,
            _ => Kind::Other,
        }
    }
}

static COUNTS: [AtomicU64; KINDS.len()] = [const { AtomicU64::new(0) }; KINDS.len()];

/// Counts one failed handshake.
pub fn record(kind: Kind) {
    COUNTS[kind as usize].fetch_add(1, Ordering::Relaxed);
}

/// Takes the counts since the last call: the total and `kind=count` for each kind seen.
fn take_summary() -> Option<(u64, String)> {
    let mut total = 0;
    let mut kinds = Vec::new();
    for kind in KINDS {
        let n = COUNTS[kind as usize].swap(0, Ordering::Relaxed);
        if n > 0 {
            total += n;
            kinds.push(format!("{}={n}", kind.label()));
        }
    }
    (total > 0).then(|| (total, kinds.join(" ")))
}

/// Writes the summary line every [`SUMMARY_INTERVAL`] in which a handshake failed; runs forever.
pub async fn report_forever() {
    let mut tick = tokio::time::interval(SUMMARY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some((count, kinds)) = take_summary() {
            warn!(
                count,
                kinds = %kinds,
                interval = ?SUMMARY_INTERVAL,
                "TLS handshakes failed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_kind_and_reset_by_the_summary() {
        let _ = take_summary();
        for _ in 0..3 {
            record(Kind::InvalidMessage);
        }
        record(Kind::Timeout);
        let (count, kinds) = take_summary().unwrap();
        assert_eq!(count, 4);
        assert!(
            kinds.contains("invalid_message=3") && kinds.contains("timeout=1"),
            "{kinds}"
        );
        assert_eq!(take_summary(), None);
    }

    #[test]
    fn kinds_of_accept_errors() {
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidServerName),
        );
        assert_eq!(Kind::of(&tls), Kind::InvalidMessage);
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(Kind::of(&eof), Kind::Closed);
        let alert = std::io::Error::other(rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure,
        ));
        assert_eq!(Kind::of(&alert), Kind::Misbehaved);
    }
}
