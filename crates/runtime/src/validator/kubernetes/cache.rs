//! Watch-backed caches of Pods (all namespaces, trimmed to what validation reads) and Dapr
//! `Configuration` objects, so a request costs no API call beyond its TokenReview. A miss falls
//! back to one live GET (a just-created pod is not refused because the watch is behind). An API
//! server that cannot be watched (lists without a resourceVersion) is re-listed instead. A failing
//! watch or re-list is logged through `watch_errors`.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde::de::DeserializeOwned;

use super::watch_errors::{Failure, WatchErrors};
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

/// How often a cache is re-listed when the API server's lists carry no resourceVersion.
const RELIST_INTERVAL: Duration = Duration::from_secs(10);

/// Keeps `writer` filled from a watch of `api`. An API server whose lists carry no
/// `metadata.resourceVersion` (a minimal or fake one, which client-go tolerates) cannot be
/// watched by kube-rs's watcher, which drops the listing: this says so once and re-lists every
/// [`RELIST_INTERVAL`] instead. A real API server always sends the version, so it is watched.
async fn feed<K>(
    api: Api<K>,
    mut writer: reflector::store::Writer<K>,
    trim: fn(&mut K),
    mut errors: WatchErrors,
) where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + Hash,
{
    let events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .modify(trim);
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => writer.apply_watcher_event(&event),
            Err(watcher::Error::NoResourceVersion) => break,
            // The backoff paces the retries.
            Err(e) => {
                if let Some(failure) = Failure::of_watch(&e) {
                    errors.report(&failure);
                }
            }
        }
    }
    let url = api.resource_url().to_owned();
    tracing::warn!(
        url,
        interval_secs = RELIST_INTERVAL.as_secs(),
        "the API server lists these objects without a resourceVersion, so they cannot be watched; re-listing them periodically instead"
    );
    loop {
        match call(api.list(&ListParams::default())).await {
            Ok(list) => {
                writer.apply_watcher_event(&watcher::Event::Init);
                for mut obj in list.items {
                    trim(&mut obj);
                    writer.apply_watcher_event(&watcher::Event::InitApply(obj));
                }
                writer.apply_watcher_event(&watcher::Event::InitDone);
            }
            Err(e) => errors.report(&Failure::of_list(&e)),
        }
        tokio::time::sleep(RELIST_INTERVAL).await;
    }
}

impl Caches {
    /// Starts watching Pods and Configurations cluster-wide.
    pub fn start(client: Client) -> Self {
        let (pods, pod_writer) = reflector::store::<Pod>();
        tokio::spawn(feed(
            Api::<Pod>::all(client.clone()),
            pod_writer,
            trim_pod,
            WatchErrors::new("pods"),
        ));
        let ar = configuration::api_resource();
        let config_writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
        let configs = config_writer.as_reader();
        tokio::spawn(feed(
            Api::<DynamicObject>::all_with(client.clone(), &ar),
            config_writer,
            |_| {},
            WatchErrors::new("configurations.dapr.io"),
        ));
        Self {
            client,
            pods,
            configs,
        }
    }

    /// Resolves once both caches hold a complete initial listing.
    pub async fn synced(&self) {
        let _ = self.pods.wait_until_ready().await;
        let _ = self.configs.wait_until_ready().await;
    }

    /// Waits (at most `limit`) until both caches hold a complete initial listing.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.synced()).await.is_ok()
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
