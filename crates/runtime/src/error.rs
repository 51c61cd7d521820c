//! Request-level errors and their gRPC status codes, in one place (contract §3.6).

use tonic::{Code, Status};

use crate::validator::ValidationError;
use sentry_core::ca::jwt::JwtError;
use sentry_core::ca::{CsrError, IssueError};
use sentry_core::spiffe::SpiffeError;

/// Why a `SignCertificate` request failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Choosing or running the validator failed.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The CSR was refused.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// The requested namespace or app id is not a valid SPIFFE path segment.
    #[error("failed to sign certificate: invalid identity: {0}")]
    Identity(#[from] SpiffeError),
    /// Signing failed on the server side.
    #[error("failed to sign certificate")]
    Sign(#[from] IssueError),
    /// JWT-SVIDs could not be issued.
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

impl SignError {
    /// The gRPC code for this error.
    pub fn code(&self) -> Code {
        match self {
            SignError::Validation(ValidationError::NoValidator | ValidationError::NotEnabled) => {
                Code::InvalidArgument
            }
            SignError::Validation(ValidationError::Denied(_)) => Code::PermissionDenied,
            SignError::Csr(_) => Code::InvalidArgument,
            // Dapr answers Internal here; the fault is the caller's, so we say InvalidArgument.
            SignError::Identity(_) => Code::InvalidArgument,
            SignError::Sign(_) => Code::Internal,
            // Beyond Dapr: a cap on requested audiences (each costs a signature).
            SignError::Jwt(JwtError::TooManyAudiences(_) | JwtError::AudienceTooLong(_)) => {
                Code::InvalidArgument
            }
            SignError::Jwt(_) => Code::Internal,
        }
    }

    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            SignError::Validation(_) => "validation",
            SignError::Csr(_) => "csr",
            SignError::Identity(_) => "identity",
            SignError::Sign(_) => "sign",
            SignError::Jwt(_) => "jwt",
        }
    }
}

impl From<SignError> for Status {
    fn from(err: SignError) -> Self {
        Status::new(err.code(), err.to_string())
    }
}
