//! Watch-backed caches of Pods (all namespaces, trimmed to what validation reads) and Dapr
//! `Configuration` objects, so a request costs no API call beyond its TokenReview. A miss falls
//! back to one live GET (a just-created pod is not refused because the watch is behind).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;

use crate::k8s::{call, configuration, K8sError};

/// The caches and the client for live fallbacks.
#[derive(Clone)]
pub struct Caches {
    client: Client,
    pods: Store<Pod>,
    configs: Store<DynamicObject>,
}

/// Keeps only what validation reads: name, namespace, uid, `dapr.io/*` annotations, service account.
fn trim_pod(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.finalizers = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.retain(|k, _| k.starts_with("dapr.io/"));
    }
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone());
    pod.spec = Some(PodSpec {
        service_account_name: sa,
        containers: Vec::new(),
        ..Default::default()
    });
    pod.status = None;
}

impl Caches {
    /// Starts watching Pods and Configurations cluster-wide.
    pub fn start(client: Client) -> Self {
        let (pods, pod_writer) = reflector::store::<Pod>();
        let pod_stream = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(trim_pod)
            .reflect(pod_writer)
            .applied_objects();
        tokio::spawn(async move {
            let mut s = std::pin::pin!(pod_stream);
            while s.next().await.is_some() {}
        });
        let ar = configuration::api_resource();
        let config_writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
        let configs = config_writer.as_reader();
        let config_stream = watcher(
            Api::<DynamicObject>::all_with(client.clone(), &ar),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(config_writer)
        .applied_objects();
        tokio::spawn(async move {
            let mut s = std::pin::pin!(config_stream);
            while s.next().await.is_some() {}
        });
        Self {
            client,
            pods,
            configs,
        }
    }

    /// Waits (at most `limit`) until both caches hold a complete initial listing.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            let _ = self.pods.wait_until_ready().await;
            let _ = self.configs.wait_until_ready().await;
        })
        .await
        .is_ok()
    }

    /// The pod from the cache.
    pub fn cached_pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(&ObjectRef::new(name).within(namespace))
    }

    /// The pod from the API server.
    pub async fn live_pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, K8sError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        call(api.get_opt(name)).await
    }

    /// The Configuration from the cache, else from the API server.
    pub async fn configuration(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<DynamicObject>>, K8sError> {
        let key = ObjectRef::new_with(name, configuration::api_resource()).within(namespace);
        if let Some(obj) = self.configs.get(&key) {
            return Ok(Some(obj));
        }
        Ok(configuration::get(&self.client, namespace, name)
            .await?
            .map(Arc::new))
    }

    /// The client, for TokenReviews.
    pub fn client(&self) -> &Client {
        &self.client
    }
}
