//! The signer: the current issuer certificate and key, ready to sign workload certificates.
//!
//! A leaf never outlives its issuer: NotAfter is `min(now + ttl, issuer NotAfter)`, and an expired
//! issuer signs nothing (dapr/dapr#8557).

use std::time::Duration;

use rcgen::{Issuer, KeyPair, PublicKeyData};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::bundle::{self, Bundle};
use crate::profile;
use crate::spiffe::{SpiffeId, TrustDomain};

/// Why a certificate could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// The issuer certificate has expired.
    #[error("issuer certificate expired at {0}")]
    IssuerExpired(OffsetDateTime),
    /// The issuer cannot be used to sign (unsupported name or key).
    #[error("issuer unusable: {0}")]
    Unusable(String),
    /// Certificate construction failed.
    #[error("{0}")]
    Build(String),
}

/// A freshly signed certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf, DER.
    pub leaf_der: CertificateDer<'static>,
    /// The leaf followed by the issuer chain, PEM.
    pub chain_pem: String,
    /// The leaf's NotAfter (whole seconds).
    pub not_after: OffsetDateTime,
    /// The trust anchors of the signer that signed it, PEM (what a client verifies it with).
    pub anchors_pem: String,
}

/// The active issuer and the trust bundle it belongs to.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    bundle: Bundle,
}

impl Signer {
    /// Builds a signer from a verified bundle and proves it with one test signature: the issuer
    /// name must come out byte-identical (clients chain by exact name) and the signature must verify.
    pub fn new(bundle: Bundle) -> Result<Self, IssueError> {
        let key =
            bundle::parse_private_key(&bundle.issuer_key_pem).map_err(IssueError::Unusable)?;
        let issuer_der = bundle
            .issuer_chain
            .first()
            .ok_or_else(|| IssueError::Unusable("empty issuer chain".into()))?
            .clone();
        let (_, cert) = X509Certificate::from_der(issuer_der.as_ref())
            .map_err(|e| IssueError::Unusable(e.to_string()))?;
        if cert.subject().iter().any(|rdn| rdn.iter().count() != 1) {
            return Err(IssueError::Unusable(
                "issuer subject has an empty or multi-valued RDN, which is not supported".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&issuer_der, key)
            .map_err(|e| IssueError::Unusable(e.to_string()))?;
        let signer = Self { issuer, bundle };
        signer.self_test(&cert)?;
        Ok(signer)
    }

    fn self_test(&self, issuer_cert: &X509Certificate<'_>) -> Result<(), IssueError> {
        let probe_id = SpiffeId::new(TrustDomain::public(), "sentry-self-test", "probe")
            .map_err(|e| IssueError::Build(e.to_string()))?;
        let now = OffsetDateTime::now_utc();
        let not_after = now.min(self.bundle.issuer_not_after);
        let params = profile::leaf_params(
            &probe_id,
            &[],
            not_after - Duration::from_secs(1),
            not_after,
        )
        .map_err(|e| IssueError::Build(e.to_string()))?;
        let leaf = params
            .signed_by(self.issuer.key(), &self.issuer)
            .map_err(|e| IssueError::Unusable(e.to_string()))?;
        let (_, parsed) = X509Certificate::from_der(leaf.der().as_ref())
            .map_err(|e| IssueError::Unusable(e.to_string()))?;
        if parsed.issuer().as_raw() != issuer_cert.subject().as_raw() {
            return Err(IssueError::Unusable(
                "issuer subject cannot be reproduced byte for byte (unusual string types or duplicate attributes)".into(),
            ));
        }
        parsed
            .verify_signature(Some(issuer_cert.public_key()))
            .map_err(|_| {
                IssueError::Unusable(
                    "test signature does not verify with the issuer certificate".into(),
                )
            })
    }

    /// The bundle this signer belongs to.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// Signs a workload certificate for `key` with identity `id` (+ control-plane DNS names).
    pub fn sign(
        &self,
        key: &impl PublicKeyData,
        id: &SpiffeId,
        dns_names: &[String],
        ttl: Duration,
        allowed_clock_skew: Duration,
        now: OffsetDateTime,
    ) -> Result<Issued, IssueError> {
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let issuer_not_after = self.bundle.issuer_not_after;
        if issuer_not_after <= now {
            return Err(IssueError::IssuerExpired(issuer_not_after));
        }
        let not_after = (now + ttl).min(issuer_not_after);
        let not_before = now - allowed_clock_skew;
        let params = profile::leaf_params(id, dns_names, not_before, not_after)
            .map_err(|e| IssueError::Build(e.to_string()))?;
        let leaf = params
            .signed_by(key, &self.issuer)
            .map_err(|e| IssueError::Build(e.to_string()))?;
        let leaf_pem = bundle::pem_block("CERTIFICATE", leaf.der());
        let mut chain_pem =
            String::with_capacity(leaf_pem.len() + self.bundle.issuer_chain_pem.len());
        chain_pem.push_str(&leaf_pem);
        chain_pem.push_str(&self.bundle.issuer_chain_pem);
        Ok(Issued {
            leaf_der: leaf.der().clone(),
            chain_pem,
            not_after,
            anchors_pem: self.bundle.anchors_pem.clone(),
        })
    }
}
