//! Generation of a new self-signed root and an issuer under it (Dapr §4.2/§4.3 profiles).

use std::time::Duration;

use rcgen::Issuer;
use time::OffsetDateTime;

use super::{keys, verify, Bundle, BundleError, BundlePart, KeyType};
use crate::ca::profile;
use crate::spiffe::TrustDomain;

/// Lifetime of a generated root and issuer (Dapr's fixed 365 days).
pub const ROOT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Generates root + issuer for `trust_domain`; the issuer subject names Sentry in `namespace`.
/// The root key is not kept (as in Dapr).
pub fn generate(
    trust_domain: &TrustDomain,
    namespace: &str,
    key_type: KeyType,
    allowed_clock_skew: Duration,
    now: OffsetDateTime,
) -> Result<Bundle, BundleError> {
    let fail = |part, e: rcgen::Error| BundleError::new(part, format!("generation failed: {e}"));
    let root_key = key_type
        .generate()
        .map_err(|e| fail(BundlePart::Anchors, e))?;
    let issuer_key = key_type
        .generate()
        .map_err(|e| fail(BundlePart::IssuerKey, e))?;
    let not_before = now - allowed_clock_skew;
    let not_after = now + ROOT_TTL;

    let root_params = profile::root_params(trust_domain, not_before, not_after);
    let root = root_params
        .self_signed(&root_key)
        .map_err(|e| fail(BundlePart::Anchors, e))?;
    let issuer_params = profile::issuer_params(trust_domain, namespace, not_before, not_after);
    let signer = Issuer::new(root_params, &root_key);
    let issuer = issuer_params
        .signed_by(&issuer_key, &signer)
        .map_err(|e| fail(BundlePart::IssuerChain, e))?;

    // Run the generated bundle through the same checks as a supplied one.
    verify(
        root.pem().as_bytes(),
        issuer.pem().as_bytes(),
        keys::to_pkcs8_pem(&issuer_key).as_bytes(),
        now,
    )
}
