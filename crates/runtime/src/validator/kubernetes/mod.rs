//! The `kubernetes` validator (Kubernetes mode default), Dapr §3.4 step by step: TokenReview with
//! both audiences, service-account username, the token's pod, namespace / service-account /
//! app-id / control-plane rules, and the trust domain from the pod's `dapr.io/config`.
//!
//! Beyond Dapr: a pod missing from the cache is fetched live once, and when the token names a pod
//! UID it must match the pod that exists now (a token of a deleted-and-recreated pod is refused).
//! A token costs one TokenReview: requests with it share the review in flight (`in_flight`) and
//! then its cached success for the token's life, at most ten minutes (`review_cache`).

mod cache;
mod in_flight;
mod review_cache;
pub mod token;
mod watch_errors;

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::Client;
use tracing::{error, warn};

use super::{common, ValidationError, Validator};
use crate::k8s::{call, configuration, API_TIMEOUT};
use sentry_core::spiffe::{SpiffeId, TrustDomain};
use sentry_proto::SignCertificateRequest;

pub use cache::Caches;

/// Legacy audience every Dapr client token carries.
pub const LEGACY_AUDIENCE: &str = "dapr.io/sentry";
/// Annotation naming a control-plane service.
pub const CONTROL_PLANE_ANNOTATION: &str = "dapr.io/control-plane";
/// Annotation naming the app id.
pub const APP_ID_ANNOTATION: &str = "dapr.io/app-id";
/// Annotation naming the workload's Configuration.
pub const CONFIG_ANNOTATION: &str = "dapr.io/config";
/// Control-plane services that may ask for `dapr-<name>` identities.
pub const CONTROL_PLANE_SERVICES: [&str; 5] =
    ["operator", "placement", "injector", "sentry", "scheduler"];

/// Validates Kubernetes service-account tokens.
pub struct KubernetesValidator {
    caches: Caches,
    reviews: in_flight::Reviews,
    control_plane_namespace: String,
    control_plane_trust_domain: TrustDomain,
}

fn deny(msg: impl Into<String>) -> ValidationError {
    ValidationError::Denied(msg.into())
}

/// One TokenReview of `token` for `audiences`: the service-account username it vouches for.
async fn token_review(client: Client, audiences: Vec<String>, token: String) -> in_flight::Outcome {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token),
            audiences: Some(audiences),
        },
        ..Default::default()
    };
    let api: Api<TokenReview> = Api::all(client);
    let answer = call(api.create(&PostParams::default(), &review))
        .await
        .map_err(|e| deny(format!("token review failed: {e}")))?;
    let status = answer.status.unwrap_or_default();
    if let Some(err) = status.error.as_deref().filter(|e| !e.is_empty()) {
        return Err(deny(format!("invalid token: {err}")));
    }
    if status.authenticated != Some(true) {
        return Err(deny("authentication failed"));
    }
    Ok(status.user.and_then(|u| u.username).unwrap_or_default())
}

impl KubernetesValidator {
    /// Starts the caches; `sentry_id` is Sentry's own SPIFFE ID (the second token audience).
    pub fn start(client: Client, sentry_id: &SpiffeId) -> Self {
        let caches = Caches::start(client);
        let client = caches.client().clone();
        let audiences = vec![LEGACY_AUDIENCE.to_owned(), sentry_id.to_string()];
        let reviewer = move |token| token_review(client.clone(), audiences.clone(), token).boxed();
        Self {
            caches,
            reviews: in_flight::Reviews::new(Box::new(reviewer)),
            control_plane_namespace: sentry_id.namespace().to_owned(),
            control_plane_trust_domain: sentry_id.trust_domain().clone(),
        }
    }

    /// The token's service-account username, from the review cache or a (shared) TokenReview.
    async fn review(&self, token: &str) -> Result<String, ValidationError> {
        if token.is_empty() {
            return Err(deny(
                "authentication failed: the request does not contain a token",
            ));
        }
        if token.len() > token::MAX_TOKEN_LEN {
            return Err(deny("invalid token: token too large"));
        }
        self.reviews.username(token).await
    }

    /// The pod named by the token, checked against the token's pod UID when it has one.
    async fn pod(
        &self,
        namespace: &str,
        claims: &token::PodClaims,
    ) -> Result<Arc<Pod>, ValidationError> {
        let uid_matches = |pod: &Pod| match &claims.uid {
            Some(uid) => pod.metadata.uid.as_deref() == Some(uid.as_str()),
            None => true,
        };
        if let Some(pod) = self.caches.cached_pod(namespace, &claims.name) {
            if uid_matches(&pod) {
                return Ok(pod);
            }
        }
        // Not cached yet, or the cache may be behind a delete-and-recreate: ask the API server.
        match self.caches.live_pod(namespace, &claims.name).await {
            Ok(Some(pod)) if uid_matches(&pod) => Ok(Arc::new(pod)),
            Ok(Some(_)) => Err(deny(
                "pod UID mismatch: the token belongs to an earlier pod of the same name",
            )),
            Ok(None) => {
                warn!(namespace, pod = %claims.name, "pod of identity not found");
                Err(deny("failed to get pod of identity"))
            }
            Err(e) => {
                error!(namespace, pod = %claims.name, error = %e, "failed to get pod of identity");
                Err(deny("failed to get pod of identity"))
            }
        }
    }

    /// A control-plane pod (annotated `dapr.io/control-plane: <service>`) may ask only for
    /// `dapr-<service>`, from Sentry's namespace, and carries no app id.
    fn check_control_plane(
        &self,
        service: &str,
        pod_name: &str,
        pod_namespace: &str,
        annotations: &Annotations,
        req: &SignCertificateRequest,
    ) -> Result<(), ValidationError> {
        if pod_namespace != self.control_plane_namespace {
            return Err(deny(format!(
                "control plane service in namespace '{pod_namespace}' is not allowed"
            )));
        }
        if !CONTROL_PLANE_SERVICES.contains(&service) {
            return Err(deny(format!("unknown control plane service '{pod_name}'")));
        }
        if annotations.contains_key(APP_ID_ANNOTATION) {
            return Err(deny(format!(
                "control plane service '{pod_name}' cannot have annotation '{APP_ID_ANNOTATION}'"
            )));
        }
        check_app_id(&format!("dapr-{service}"), req)
    }

    /// An application pod asks for its app id (annotation, else the pod name); its trust domain
    /// is its `dapr.io/config` Configuration's (default `public`).
    async fn app_trust_domain(
        &self,
        pod_name: &str,
        annotations: &Annotations,
        req: &SignCertificateRequest,
    ) -> Result<TrustDomain, ValidationError> {
        let expected = annotations
            .get(APP_ID_ANNOTATION)
            .map(String::as_str)
            .unwrap_or(pod_name);
        check_app_id(expected, req)?;
        let Some(config_name) = annotations.get(CONFIG_ANNOTATION) else {
            return Ok(TrustDomain::public());
        };
        let config = match self.caches.configuration(&req.namespace, config_name).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                warn!(namespace = %req.namespace, config = %config_name, "configuration not found");
                return Err(deny("failed to get configuration"));
            }
            Err(e) => {
                error!(namespace = %req.namespace, config = %config_name, error = %e, "failed to get configuration");
                return Err(deny("failed to get configuration"));
            }
        };
        match configuration::trust_domain(&config) {
            None => Ok(TrustDomain::public()),
            Some(td) => TrustDomain::parse(td)
                .map_err(|e| deny(format!("failed to parse trust domain \"{td}\": {e}"))),
        }
    }
}

impl Validator for KubernetesValidator {
    /// Validates a request; returns the trust domain of the identity to issue.
    async fn validate(&self, req: &SignCertificateRequest) -> Result<TrustDomain, ValidationError> {
        if !self.caches.wait_ready(API_TIMEOUT).await {
            return Err(deny("validator not ready"));
        }
        common::validate(req)?;
        let username = self.review(&req.token).await?;
        let (sa_namespace, sa_name) = service_account(&username)?;
        let claims = pod_claims(&req.token)?;
        let pod = self.pod(sa_namespace, &claims).await?;
        check_pod_runs_as(&pod, sa_namespace, sa_name, req)?;
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let pod_namespace = pod.metadata.namespace.as_deref().unwrap_or(sa_namespace);
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        match annotations.get(CONTROL_PLANE_ANNOTATION) {
            Some(service) => {
                self.check_control_plane(service, pod_name, pod_namespace, &annotations, req)?;
                Ok(self.control_plane_trust_domain.clone())
            }
            None => self.app_trust_domain(pod_name, &annotations, req).await,
        }
    }

    /// Resolves once the caches hold their first complete listing.
    fn ready(&self) -> impl Future<Output = ()> + Send + 'static {
        let caches = self.caches.clone();
        async move { caches.synced().await }
    }
}

/// A pod's annotations.
type Annotations = std::collections::BTreeMap<String, String>;

/// The namespace and name of a service-account username (`system:serviceaccount:<ns>:<name>`).
fn service_account(username: &str) -> Result<(&str, &str), ValidationError> {
    let parts: Vec<&str> = username.split(':').collect();
    match parts[..] {
        ["system", _, namespace, name] => Ok((namespace, name)),
        _ => Err(deny(
            "provided token is not a properly structured service account token",
        )),
    }
}

/// The pod claims of a reviewed token.
fn pod_claims(token: &str) -> Result<token::PodClaims, ValidationError> {
    match token::pod_claims(token) {
        Err(e) => Err(deny(format!("failed to parse Kubernetes token: {e}"))),
        Ok(None) => Err(deny(
            "kubernetes.io/pod/name claim is missing from Kubernetes token",
        )),
        Ok(Some(c)) => Ok(c),
    }
}

/// The request's namespace is the service account's, and the pod runs as that service account.
fn check_pod_runs_as(
    pod: &Pod,
    sa_namespace: &str,
    sa_name: &str,
    req: &SignCertificateRequest,
) -> Result<(), ValidationError> {
    if sa_namespace != req.namespace {
        return Err(deny(format!(
            "namespace mismatch; received namespace: {}",
            req.namespace
        )));
    }
    let pod_sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .unwrap_or("");
    if pod_sa != sa_name {
        return Err(deny("pod service account mismatch"));
    }
    Ok(())
}

/// The request asks for the `expected` app id.
fn check_app_id(expected: &str, req: &SignCertificateRequest) -> Result<(), ValidationError> {
    if expected != req.id {
        return Err(deny(format!(
            "app-id mismatch. expected: {expected}, received: {}",
            req.id
        )));
    }
    Ok(())
}
