//! The `insecure` validator (standalone mode default): only the common checks; the token is
//! ignored and the requested trust domain (default `public`) is granted.

use std::future::{ready, Future};

use super::{common, ValidationError, Validator};
use sentry_core::spiffe::TrustDomain;
use sentry_proto::SignCertificateRequest;

/// Accepts any well-formed request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Insecure;

impl Validator for Insecure {
    /// Runs the common checks and returns the requested trust domain.
    fn validate(
        &self,
        req: &SignCertificateRequest,
    ) -> impl Future<Output = Result<TrustDomain, ValidationError>> + Send {
        ready(common::validate(req))
    }

    /// Always ready: nothing to load.
    fn ready(&self) -> impl Future<Output = ()> + Send + 'static {
        ready(())
    }
}
