//! `sentry-load`'s command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use sentry_core::bundle::KeyType;
use sentry_core::go_text::parse_go_duration;

/// Key type of the simulated sidecars' CSRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CsrKey {
    /// Ed25519 (daprd ≥ 1.18).
    Ed25519,
    /// ECDSA P-256 (daprd ≤ 1.17).
    #[value(name = "p256", alias = "ecdsa-p256")]
    P256,
}

impl CsrKey {
    /// The key type to generate.
    pub fn key_type(self) -> KeyType {
        match self {
            CsrKey::Ed25519 => KeyType::Ed25519,
            CsrKey::P256 => KeyType::EcdsaP256,
        }
    }
}

/// Options of one load run.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sentry-load",
    version,
    about = "Load generator for Dapr Sentry: simulated sidecars calling SignCertificate"
)]
pub struct Options {
    /// Sentry's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50001")]
    pub addr: String,
    /// Trust anchors (Sentry's `ca.crt`).
    #[arg(long)]
    pub anchors: PathBuf,
    /// The SPIFFE ID the server must present.
    #[arg(long, default_value = "spiffe://localhost/ns/default/dapr-sentry")]
    pub server_id: String,
    /// Number of simulated sidecars (requests in flight at once).
    #[arg(long, short = 'c', default_value_t = 64)]
    pub concurrency: usize,
    /// Total number of requests (the default when neither this nor --duration is given: 1000).
    #[arg(long, short = 'n', conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Run for this long instead of a fixed count (Go duration, e.g. `10s`).
    #[arg(long, short = 'd', value_parser = parse_go_duration)]
    pub duration: Option<Duration>,
    /// CSR key type.
    #[arg(long, value_enum, default_value_t = CsrKey::Ed25519)]
    pub key_type: CsrKey,
    /// Keep one connection per sidecar instead of dialing for every request.
    #[arg(long)]
    pub reuse: bool,
    /// Open loop: start requests at this total rate (per second) instead of back to back;
    /// latency then counts from each request's scheduled start.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Distinct keys and CSRs generated before the run (cycled if fewer than requests).
    #[arg(long, default_value_t = 4096)]
    pub csr_pool: usize,
    /// Namespace sent in each request.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Trust domain sent in each request (empty: the server's default, `public`).
    #[arg(long, default_value = "")]
    pub trust_domain: String,
    /// Per-request time limit (Go duration).
    #[arg(long, value_parser = parse_go_duration, default_value = "10s")]
    pub timeout: Duration,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Options {
    /// Checks the options for values that make no sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if self.csr_pool == 0 {
            return Err("--csr-pool must be at least 1".into());
        }
        if self.requests == Some(0) {
            return Err("--requests must be at least 1".into());
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return Err("--duration must be positive".into());
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err("--rate must be a positive number".into());
            }
        }
        Ok(())
    }

    /// The request budget: `--requests`, or 1000 when no duration is given.
    pub fn request_limit(&self) -> Option<u64> {
        match (self.requests, self.duration) {
            (Some(n), _) => Some(n),
            (None, None) => Some(1000),
            (None, Some(_)) => None,
        }
    }

    /// The SPIFFE ID the server must put in sidecar `index`'s certificate.
    pub fn expected_id(&self, app_id: &str) -> String {
        let td = if self.trust_domain.is_empty() {
            "public"
        } else {
            self.trust_domain.as_str()
        };
        format!("spiffe://{td}/ns/{}/{app_id}", self.namespace)
    }
}
