//! What the Kubernetes store may do under the RBAC it was given (Dapr's Helm chart grants
//! `get`/`update`/`delete` on Secret `dapr-trust-bundle`, `get`/`update`/`list`/`watch` on its
//! ConfigMap, nothing else in the namespace): access reviews before optional calls the chart does
//! not allow, so that they leave no 403 behind, and one log line per refused permission naming the
//! verb, the resource and the feature that is now off. Never makes a store call itself.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::Client;
use tracing::warn;

use super::StoreError;
use crate::k8s::{call, K8sError};

/// True when the API server refused the call for lack of a permission.
pub fn is_forbidden(e: &K8sError) -> bool {
    matches!(e, K8sError::Api(kube::Error::Api(s)) if s.code == 403)
}

/// True when `verb` on the core-group `resource` (`secrets`, `configmaps`) named `name` in
/// `namespace` is allowed. A review that fails counts as "not allowed": callers only use this to
/// skip an optional call.
pub async fn allows(
    client: &Client,
    namespace: &str,
    verb: &str,
    resource: &str,
    name: &str,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.into()),
                verb: Some(verb.into()),
                resource: Some(resource.into()),
                name: Some(name.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    call(api.create(&PostParams::default(), &review))
        .await
        .ok()
        .and_then(|r| r.status)
        .is_some_and(|s| s.allowed)
}

/// Logs, once per process for each `verb`, `resource` and `feature`, that the permission is
/// missing and which feature is off because of it.
pub fn report_refused(verb: &str, resource: &str, feature: &str) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let first = SEEN
        .get_or_init(Default::default)
        .lock()
        .map(|mut seen| seen.insert(format!("{verb} {resource} {feature}")))
        .unwrap_or(true);
    if first {
        warn!(
            "RBAC does not allow {verb} on {resource}: {feature} is off (Sentry keeps serving; grant {verb} on {resource} to turn it on)"
        );
    }
}

/// True (after logging it once) when `e` is RBAC refusing to update the bundle Secret: Sentry
/// serves what is stored, without renewals, rotations or migration.
pub fn refused_write(e: &StoreError) -> bool {
    match e {
        StoreError::Forbidden { verb, resource, .. } if *verb == "update" => {
            report_refused(
                verb,
                resource,
                "automatic issuer renewal, root rotation and migration of an earlier root key",
            );
            true
        }
        _ => false,
    }
}

/// True (after logging it once) when `e` says the ConfigMap cannot follow the Secret for lack of
/// a permission; other errors are for the caller.
pub fn refused_publish(e: &StoreError) -> bool {
    const FEATURE: &str = "publishing the trust anchors in ConfigMap dapr-trust-bundle (and with it the publish phase of a root rotation)";
    match e {
        StoreError::Forbidden { verb, resource, .. } => {
            report_refused(verb, resource, FEATURE);
            true
        }
        StoreError::Missing(object) if object.starts_with("ConfigMap") => {
            report_refused(
                "create",
                &format!("{object}, which does not exist,"),
                FEATURE,
            );
            true
        }
        _ => false,
    }
}
