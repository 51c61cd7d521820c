//! Generation of a new self-signed root and an issuer under it (Dapr §4.2/§4.3 profiles), and of
//! a fresh issuer under an existing root (automatic issuer renewal). The root key is returned so
//! that Sentry can keep it in custody and renew on its own.

use std::time::Duration;

use rcgen::Issuer;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use super::{keys, verify, Bundle, BundleError, BundlePart, KeyType};
use crate::profile;
use crate::spiffe::TrustDomain;

/// Default lifetime of a generated root and issuer (Dapr's fixed 365 days).
pub const ROOT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a generated CA looks like.
#[derive(Debug, Clone)]
pub struct CaParams {
    /// Trust domain: the root subject `O=<td>`.
    pub trust_domain: TrustDomain,
    /// Sentry's namespace: the issuer subject names Sentry's SPIFFE ID.
    pub namespace: String,
    /// Key algorithm of root and issuer.
    pub key_type: KeyType,
    /// NotBefore backdating.
    pub allowed_clock_skew: Duration,
    /// Root lifetime.
    pub root_ttl: Duration,
    /// Issuer lifetime (capped at the root's NotAfter).
    pub issuer_ttl: Duration,
}

impl CaParams {
    /// Parameters with Dapr's lifetimes (root and issuer 365 days).
    pub fn new(
        trust_domain: TrustDomain,
        namespace: &str,
        key_type: KeyType,
        allowed_clock_skew: Duration,
    ) -> Self {
        Self {
            trust_domain,
            namespace: namespace.to_owned(),
            key_type,
            allowed_clock_skew,
            root_ttl: ROOT_TTL,
            issuer_ttl: ROOT_TTL,
        }
    }
}

/// A generated bundle with the root key that signed it.
pub struct Generated {
    /// The bundle (anchors = the new root).
    pub bundle: Bundle,
    /// The root private key, PKCS#8 PEM.
    pub root_key_pem: String,
}

/// Generates a new root and an issuer under it.
pub fn generate(params: &CaParams, now: OffsetDateTime) -> Result<Generated, BundleError> {
    let fail = |part, e: rcgen::Error| BundleError::new(part, format!("generation failed: {e}"));
    let root_key = params
        .key_type
        .generate()
        .map_err(|e| fail(BundlePart::Anchors, e))?;
    let not_before = now - params.allowed_clock_skew;
    let root_params = profile::root_params(&params.trust_domain, not_before, now + params.root_ttl);
    let root = root_params
        .self_signed(&root_key)
        .map_err(|e| fail(BundlePart::Anchors, e))?;
    let root_pem = root.pem();
    let root_key_pem = keys::to_pkcs8_pem(&root_key);
    let (chain_pem, issuer_key_pem) = new_issuer(params, root_pem.as_bytes(), &root_key_pem, now)?;
    let bundle = verify(
        root_pem.as_bytes(),
        chain_pem.as_bytes(),
        issuer_key_pem.as_bytes(),
        now,
    )?;
    Ok(Generated {
        bundle,
        root_key_pem,
    })
}

/// Issues a new issuer certificate and key under the root `root_pem` / `root_key_pem`; NotAfter is
/// `min(now + issuer_ttl, root NotAfter)`. Returns (issuer PEM, issuer key PEM).
pub fn new_issuer(
    params: &CaParams,
    root_pem: &[u8],
    root_key_pem: &str,
    now: OffsetDateTime,
) -> Result<(String, String), BundleError> {
    let fail = |part, e: String| BundleError::new(part, format!("issuer generation failed: {e}"));
    let root_der = pem::parse(root_pem)
        .map_err(|e| fail(BundlePart::Anchors, e.to_string()))?
        .into_contents();
    let (_, root_cert) = x509_parser::certificate::X509Certificate::from_der(&root_der)
        .map_err(|e| fail(BundlePart::Anchors, e.to_string()))?;
    let root_not_after = root_cert.validity().not_after.to_datetime();
    let root_key =
        keys::parse_private_key(root_key_pem).map_err(|e| fail(BundlePart::Anchors, e))?;
    let signer = Issuer::from_ca_cert_der(&CertificateDer::from(root_der.as_slice()), root_key)
        .map_err(|e| fail(BundlePart::Anchors, e.to_string()))?;
    let issuer_key = params
        .key_type
        .generate()
        .map_err(|e| fail(BundlePart::IssuerKey, e.to_string()))?;
    let not_after = (now + params.issuer_ttl).min(root_not_after);
    let issuer_params = profile::issuer_params(
        &params.trust_domain,
        &params.namespace,
        now - params.allowed_clock_skew,
        not_after,
    );
    let issuer = issuer_params
        .signed_by(&issuer_key, &signer)
        .map_err(|e| fail(BundlePart::IssuerChain, e.to_string()))?;
    Ok((issuer.pem(), keys::to_pkcs8_pem(&issuer_key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(issuer_ttl: Duration) -> CaParams {
        CaParams {
            issuer_ttl,
            ..CaParams::new(
                TrustDomain::public(),
                "default",
                KeyType::Ed25519,
                Duration::from_secs(60),
            )
        }
    }

    #[test]
    fn renewed_issuer_chains_to_the_same_root_and_is_capped() {
        let now = OffsetDateTime::now_utc();
        let g = generate(&params(Duration::from_secs(3600)), now).unwrap();
        assert!(g.bundle.issuer_not_after <= now + Duration::from_secs(3601));
        let (chain, key) = new_issuer(
            &params(ROOT_TTL * 2),
            g.bundle.anchors_pem.as_bytes(),
            &g.root_key_pem,
            now,
        )
        .unwrap();
        let b = verify(
            g.bundle.anchors_pem.as_bytes(),
            chain.as_bytes(),
            key.as_bytes(),
            now,
        )
        .unwrap();
        assert_eq!(
            b.issuer_not_after, g.bundle.anchors_not_after,
            "capped at the root"
        );
    }
}
