//! Validators decide who is asking. Each ([`insecure`], [`kubernetes`], [`jwks`]) implements
//! [`Validator`]: it takes a `SignCertificate` request and either refuses it (→
//! `PermissionDenied` with the validator's message) or returns the trust domain of the identity
//! to issue, and it says when it is ready to answer. [`Validators`] picks the one a request asks
//! for and combines their readiness. The common checks every validator runs live in [`common`].
//! Must not sign, store or read flags: the request path (`server::grpc`) does the rest.

pub mod common;
pub mod insecure;
pub mod jwks;
pub mod kubernetes;

pub use jwks::JwksOptions;

use std::future::Future;

use tracing::info;

use crate::telemetry::health::Condition;
use sentry_core::spiffe::TrustDomain;
use sentry_proto::sign_certificate_request::TokenValidator;
use sentry_proto::SignCertificateRequest;

/// Which validators are enabled and which one answers requests that name none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorSet {
    /// Enabled validators.
    pub enabled: Vec<ValidatorKind>,
    /// Validator used for `UNKNOWN`; `None` means the request must name one.
    pub default: Option<ValidatorKind>,
    /// Options of the `jwks` validator, when it is enabled.
    pub jwks: Option<JwksOptions>,
}

/// The validators Sentry knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValidatorKind {
    /// No credential check (standalone mode).
    Insecure,
    /// Kubernetes service-account token.
    Kubernetes,
    /// JWT checked against a JWKS.
    Jwks,
}

/// Why a request's validator could not be chosen or refused the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The request named no validator and there is no default.
    #[error("a validator name must be specified in this environment")]
    NoValidator,
    /// The named validator is unknown or not enabled.
    #[error("the requested validator is not enabled")]
    NotEnabled,
    /// The validator refused the request.
    #[error("{0}")]
    Denied(String),
}

/// One way of deciding who is asking. Every validator answers the same two questions, so the
/// request path and readiness treat them alike.
pub trait Validator: Send + Sync {
    /// Checks `req` and its credential: the trust domain of the identity to issue, or why not
    /// (the message the requester gets with `PermissionDenied`).
    fn validate(
        &self,
        req: &SignCertificateRequest,
    ) -> impl Future<Output = Result<TrustDomain, ValidationError>> + Send;

    /// Resolves once the validator can answer: at once, or when what it answers from (caches,
    /// keys) has first loaded. Never fails: a validator that cannot load keeps its part of
    /// `/healthz` unready.
    fn ready(&self) -> impl Future<Output = ()> + Send + 'static;
}

/// The enabled validators.
pub struct Validators {
    set: ValidatorSet,
    insecure: insecure::Insecure,
    kubernetes: Option<kubernetes::KubernetesValidator>,
    jwks: Option<jwks::JwksValidator>,
}

impl Validators {
    /// The validators named in `set`; `kubernetes` must be given when `set` enables it.
    pub fn new(set: ValidatorSet, kubernetes: Option<kubernetes::KubernetesValidator>) -> Self {
        Self {
            set,
            insecure: insecure::Insecure,
            kubernetes,
            jwks: None,
        }
    }

    /// Meets each validator's condition once it is [`Validator::ready`] (at once for one that
    /// is not enabled; `insecure` is always ready), then logs that all are.
    pub fn report_ready(&self, kubernetes: Condition, jwks: Condition) {
        let kubernetes_ready = self.kubernetes.as_ref().map(Validator::ready);
        let jwks_ready = self.jwks.as_ref().map(Validator::ready);
        tokio::spawn(async move {
            futures::join!(
                meet_when(kubernetes_ready, kubernetes),
                meet_when(jwks_ready, jwks)
            );
            info!("Validators ready");
        });
    }

    /// Adds the started `jwks` validator (enabled through `set`).
    pub fn with_jwks(mut self, validator: jwks::JwksValidator) -> Self {
        self.jwks = Some(validator);
        self
    }

    /// Picks the validator for a request: its own choice, else the default.
    pub fn choose(&self, requested: i32) -> Result<ValidatorKind, ValidationError> {
        let kind = match TokenValidator::try_from(requested) {
            Ok(TokenValidator::Unknown) => self.set.default.ok_or(ValidationError::NoValidator)?,
            Ok(TokenValidator::Insecure) => ValidatorKind::Insecure,
            Ok(TokenValidator::Kubernetes) => ValidatorKind::Kubernetes,
            Ok(TokenValidator::Jwks) => ValidatorKind::Jwks,
            Err(_) => return Err(ValidationError::NotEnabled),
        };
        if self.set.enabled.contains(&kind) {
            Ok(kind)
        } else {
            Err(ValidationError::NotEnabled)
        }
    }

    /// Runs the chosen validator; returns the trust domain of the identity to issue.
    pub async fn validate(
        &self,
        kind: ValidatorKind,
        req: &SignCertificateRequest,
    ) -> Result<TrustDomain, ValidationError> {
        match (kind, &self.kubernetes) {
            (ValidatorKind::Insecure, _) => self.insecure.validate(req).await,
            (ValidatorKind::Kubernetes, Some(k)) => k.validate(req).await,
            (ValidatorKind::Jwks, _) => match &self.jwks {
                Some(v) => v.validate(req).await,
                None => Err(ValidationError::NotEnabled),
            },
            (ValidatorKind::Kubernetes, None) => Err(ValidationError::NotEnabled),
        }
    }
}

/// Meets `condition` once `ready` resolves, or at once without a validator.
async fn meet_when(ready: Option<impl Future<Output = ()>>, condition: Condition) {
    if let Some(ready) = ready {
        ready.await;
    }
    condition.met();
}
