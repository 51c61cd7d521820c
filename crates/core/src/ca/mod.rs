//! The certificate authority proper: CSR handling ([`csr`]), certificate profiles ([`crate::profile`]),
//! signing with the current issuer ([`issuer`]) and JWT-SVIDs ([`jwt`]).
//!
//! [`Ca`] publishes the current [`Signer`] through an atomic swap, so the request path reads it
//! without a lock and a new bundle takes effect for the next request without a restart.

pub mod csr;
pub mod issuer;
pub mod jwt;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rcgen::PublicKeyData;
use time::OffsetDateTime;

pub use csr::{parse_csr, CsrError, RequesterKey};
pub use issuer::{IssueError, Issued, Signer};

use crate::spiffe::SpiffeId;

/// Lifetimes applied to every certificate Sentry issues.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Workload certificate lifetime (`workloadCertTTL`).
    pub ttl: Duration,
    /// NotBefore backdating (`allowedClockSkew`).
    pub allowed_clock_skew: Duration,
}

/// The CA: the current signer plus the lifetimes it applies.
pub struct Ca {
    signer: ArcSwap<Signer>,
    lifetimes: Lifetimes,
}

impl Ca {
    /// A CA that signs with `signer`.
    pub fn new(signer: Signer, lifetimes: Lifetimes) -> Self {
        Self {
            signer: ArcSwap::from_pointee(signer),
            lifetimes,
        }
    }

    /// The signer in effect now.
    pub fn signer(&self) -> Arc<Signer> {
        self.signer.load_full()
    }

    /// Makes `signer` the one used for every following request.
    pub fn replace(&self, signer: Signer) {
        self.signer.store(Arc::new(signer));
    }

    /// The lifetimes applied to issued certificates.
    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    /// Signs a certificate for `key` as `id` with the current signer, as of now.
    pub fn sign(
        &self,
        key: &impl PublicKeyData,
        id: &SpiffeId,
        dns_names: &[String],
    ) -> Result<Issued, IssueError> {
        self.signer.load().sign(
            key,
            id,
            dns_names,
            self.lifetimes.ttl,
            self.lifetimes.allowed_clock_skew,
            OffsetDateTime::now_utc(),
        )
    }
}
