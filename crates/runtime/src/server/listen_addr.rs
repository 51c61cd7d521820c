//! Where a listener binds: a host (empty for all interfaces) and a port, as Dapr's
//! `--*-listen-address` and `--*-port` flag pairs give them.

/// Host and port of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    /// Host name or address; empty means all interfaces.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl ListenAddr {
    /// `host:port` in a form `tokio::net::lookup_host` accepts (empty host = all interfaces).
    pub fn to_bind_string(&self) -> String {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.host
        };
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}
