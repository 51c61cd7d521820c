//! The certificate authority's work on one request: CSR handling ([`csr`]), signing a leaf with
//! an issuer ([`issuer`], by the profiles of [`crate::profile`]) and JWT-SVIDs ([`jwt`]). Which
//! signer is current, and who follows it, is the runtime's (`sentry_runtime::authority`).

pub mod csr;
pub mod issuer;
pub mod jwt;

use std::time::Duration;

pub use csr::{parse_csr, CsrError, RequesterKey};
pub use issuer::{IssueError, Issued, Signer};

/// Lifetimes applied to every certificate Sentry issues.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Workload certificate lifetime (`workloadCertTTL`).
    pub ttl: Duration,
    /// NotBefore backdating (`allowedClockSkew`).
    pub allowed_clock_skew: Duration,
}
