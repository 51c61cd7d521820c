//! The trust bundle: trust anchors, the issuer chain and the issuer key. Generates a new one
//! ([`generate`]) and parses and verifies a supplied one ([`verify`]). The JWT signing key and
//! JWKS form a separate part ([`jwt`]), present only with `--jwt-enabled`. Strict PEM and DER
//! framing for everything read is in [`crate::encoding`]. Pure data and crypto: no
//! file or network I/O (that belongs to `sentry_runtime::store`).

mod generate;
pub mod jwt;
mod keys;
mod verify;

use std::fmt;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

pub use generate::{generate, new_issuer, CaParams, Generated, ROOT_TTL};
pub use keys::{parse_private_key, public_key_bits, to_pkcs8_pem, KeyType};
pub use verify::verify;

pub use crate::encoding::pem_block;

/// Which part of the bundle a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundlePart {
    /// The trust anchors (`ca.crt`).
    Anchors,
    /// The issuer certificate chain (`issuer.crt`).
    IssuerChain,
    /// The issuer private key (`issuer.key`).
    IssuerKey,
}

impl BundlePart {
    /// Every part, in the order of the store's `Files` fields (`sentry_runtime::store`).
    pub const ALL: [BundlePart; 3] = [
        BundlePart::Anchors,
        BundlePart::IssuerChain,
        BundlePart::IssuerKey,
    ];
}

impl fmt::Display for BundlePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BundlePart::Anchors => "trust anchors",
            BundlePart::IssuerChain => "issuer certificate",
            BundlePart::IssuerKey => "issuer key",
        })
    }
}

/// A problem with a bundle, naming the part it is in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {problem}")]
pub struct BundleError {
    /// The part at fault.
    pub part: BundlePart,
    /// What is wrong, in one line.
    pub problem: String,
}

impl BundleError {
    /// A problem with `part` of the bundle.
    pub fn new(part: BundlePart, problem: impl Into<String>) -> Self {
        Self {
            part,
            problem: problem.into(),
        }
    }
}

/// A verified trust bundle, normalised (comments stripped, self-signed certificates removed from
/// the issuer chain).
#[derive(Clone)]
pub struct Bundle {
    /// All trust anchors as one PEM text.
    pub anchors_pem: String,
    /// The trust anchors, DER.
    pub anchors: Vec<CertificateDer<'static>>,
    /// Issuer chain PEM: the issuer first, then any intermediates (no root).
    pub issuer_chain_pem: String,
    /// The issuer chain, DER, issuer first.
    pub issuer_chain: Vec<CertificateDer<'static>>,
    /// The issuer private key, PEM as supplied (PKCS#8 when generated).
    pub issuer_key_pem: String,
    /// NotAfter of the issuer certificate.
    pub issuer_not_after: OffsetDateTime,
    /// Earliest NotAfter among the trust anchors.
    pub anchors_not_after: OffsetDateTime,
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("anchors", &self.anchors.len())
            .field("issuer_chain", &self.issuer_chain.len())
            .field("issuer_not_after", &self.issuer_not_after)
            .field("issuer_key", &"<redacted>")
            .finish()
    }
}

/// Encodes DER certificates as one PEM text.
pub fn certs_to_pem(certs: &[CertificateDer<'_>]) -> String {
    certs.iter().map(|c| pem_block("CERTIFICATE", c)).collect()
}
