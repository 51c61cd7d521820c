//! The `insecure` validator (standalone mode default): only the common checks; the token is
//! ignored and the requested trust domain (default `public`) is granted.

use super::{common, ValidationError};
use sentry_core::spiffe::TrustDomain;
use sentry_proto::SignCertificateRequest;

/// Accepts any well-formed request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Insecure;

impl Insecure {
    /// Runs the common checks and returns the requested trust domain.
    pub fn validate(&self, req: &SignCertificateRequest) -> Result<TrustDomain, ValidationError> {
        common::validate(req)
    }
}
