//! The Dapr `Configuration` custom resource (`configurations.dapr.io/v1alpha1`): Sentry's own
//! (`--config`, in its namespace) and the workloads' (`dapr.io/config`, for the trust domain).

use kube::api::{Api, ApiResource, DynamicObject};
use kube::Client;

use super::{call, K8sError};

/// The API resource of Dapr's `Configuration`.
pub fn api_resource() -> ApiResource {
    ApiResource {
        group: "dapr.io".into(),
        version: "v1alpha1".into(),
        api_version: "dapr.io/v1alpha1".into(),
        kind: "Configuration".into(),
        plural: "configurations".into(),
    }
}

/// Reads `namespace/name`; `Ok(None)` when it does not exist.
pub async fn get(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<DynamicObject>, K8sError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &api_resource());
    call(api.get_opt(name)).await
}

/// Sentry's own Configuration, parsed into `T` (the configuration's file form) like the
/// standalone YAML file.
pub async fn load<T: serde::de::DeserializeOwned>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<T>, String> {
    match get(client, namespace, name).await {
        Ok(Some(obj)) => serde_json::from_value(obj.data)
            .map(Some)
            .map_err(|e| format!("Configuration {namespace}/{name}: {e}")),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("Configuration {namespace}/{name}: {e}")),
    }
}

/// `spec.accessControl.trustDomain` of a Configuration object, if set and non-empty.
pub fn trust_domain(obj: &DynamicObject) -> Option<&str> {
    obj.data
        .get("spec")?
        .get("accessControl")?
        .get("trustDomain")?
        .as_str()
        .filter(|s| !s.is_empty())
}
