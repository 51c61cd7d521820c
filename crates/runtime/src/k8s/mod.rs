//! Kubernetes plumbing shared by the Kubernetes store and validator: the API client (kubeconfig,
//! `KUBECONFIG` or in-cluster, reading a 404 without a `Status` body as "not found"), the deadline
//! applied to every API call, the Dapr `Configuration` resource, and the cluster domain used in
//! control-plane DNS names.

pub mod configuration;
mod not_found;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

/// Deadline for one API-server call made on behalf of a request or at start-up. A stopped API
/// server makes requests fail within this bound instead of hanging.
pub const API_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the Kubernetes client could not be built or an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// Client configuration failed.
    #[error("kubernetes client configuration: {0}")]
    Config(String),
    /// The API server answered with an error.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// The API server did not answer within [`API_TIMEOUT`].
    #[error("the API server did not answer within {}s", API_TIMEOUT.as_secs())]
    Timeout,
}

impl K8sError {
    /// True when the API server said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, K8sError::Api(kube::Error::Api(s)) if s.code == 404)
    }

    /// True for an optimistic-concurrency conflict or a create that lost a race.
    pub fn is_conflict(&self) -> bool {
        matches!(self, K8sError::Api(kube::Error::Api(s)) if s.code == 409)
    }
}

/// Runs an API call with [`API_TIMEOUT`].
pub async fn call<T>(fut: impl Future<Output = Result<T, kube::Error>>) -> Result<T, K8sError> {
    match tokio::time::timeout(API_TIMEOUT, fut).await {
        Ok(r) => r.map_err(K8sError::Api),
        Err(_) => Err(K8sError::Timeout),
    }
}

/// Builds the client: `--kubeconfig` when given, else `KUBECONFIG`/`~/.kube/config`, else the
/// in-cluster service account. A 404 without a `Status` body reaches callers as `NotFound`
/// (so `get_opt` returns `None`), as client-go reads it.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, K8sError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| K8sError::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| K8sError::Config(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| K8sError::Config(e.to_string()))?,
    };
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| K8sError::Config(e.to_string()))?;
    Ok(builder
        .with_layer(&tower::util::AndThenLayer::new(not_found::classify))
        .build())
}

/// The cluster domain, from the pod's DNS search path (`<ns>.svc.<domain>`); `None` outside a pod.
pub fn cluster_domain(resolv_conf: &str, namespace: &str) -> Option<String> {
    let prefix = format!("{namespace}.svc.");
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("search"))
        .flat_map(|rest| rest.split_whitespace())
        .find_map(|d| {
            d.strip_prefix(&prefix)
                .map(|s| s.trim_end_matches('.').to_owned())
        })
        .filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_domain_from_search_path() {
        let rc = "nameserver 10.0.0.10\nsearch dapr-system.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n";
        assert_eq!(
            cluster_domain(rc, "dapr-system").as_deref(),
            Some("cluster.local")
        );
        assert_eq!(cluster_domain(rc, "other"), None);
        assert_eq!(cluster_domain("nameserver 1.1.1.1\n", "x"), None);
    }
}
