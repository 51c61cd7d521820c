//! The Kubernetes store: Secret `dapr-trust-bundle` (trust anchors, issuer chain, issuer key),
//! ConfigMap `dapr-trust-bundle` (trust anchors only, for distribution) and, for Sentry's own
//! custody, Secret `dapr-trust-bundle-root` (root key, rotation journal), in Sentry's namespace.
//! The JWT keys of the same Secret and ConfigMap belong to [`super::jwt_kube`], which goes
//! through the helpers here; bundle writes copy the Secret's data map, so they keep those keys.
//!
//! Every write is a compare-and-swap on the `resourceVersion` read before (or a create that
//! fails if someone else created first), so replicas acting together end with one bundle. Beyond
//! Dapr: missing objects are created, and the ConfigMap always follows the Secret (repaired from
//! it rather than triggering a new CA, dapr/dapr#9563).

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tracing::{info, warn};

use super::{Custody, Files, Snapshot, StoreError};
use crate::bundle::BundlePart;
use crate::k8s::{call, K8sError};

/// Name of the Secret and ConfigMap holding the bundle.
pub const TRUST_BUNDLE: &str = "dapr-trust-bundle";
/// Name of the Secret holding Sentry's custody data.
pub const ROOT_SECRET: &str = "dapr-trust-bundle-root";
/// Key of the root key in [`ROOT_SECRET`].
pub const ROOT_KEY: &str = "root.key";
/// Key of the rotation journal in [`ROOT_SECRET`].
pub const JOURNAL_KEY: &str = "rotation.json";

/// Attempts at making the ConfigMap follow the Secret when other writers keep winning.
const CONFIG_MAP_ATTEMPTS: usize = 5;

/// Data keys of the bundle (base names of the file-name flags).
#[derive(Debug, Clone)]
pub struct Keys {
    /// Trust anchors key (`ca.crt`).
    pub anchors: String,
    /// Issuer chain key (`issuer.crt`).
    pub issuer_cert: String,
    /// Issuer key key (`issuer.key`).
    pub issuer_key: String,
}

/// The objects as read (`resourceVersion`s), for compare-and-swap writes.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    secret: Option<Secret>,
    root: Option<Secret>,
}

/// The bundle in Secrets and a ConfigMap.
#[derive(Clone)]
pub struct KubeStore {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    namespace: String,
    keys: Keys,
}

fn api_err(what: String) -> impl FnOnce(K8sError) -> StoreError {
    move |e| {
        if e.is_conflict() {
            StoreError::Conflict(what)
        } else {
            StoreError::Kubernetes(format!("{what}: {e}"))
        }
    }
}

/// The data key of a bundle item: the base name of its configured path (Dapr §5.1).
pub fn base_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        ..Default::default()
    }
}

impl KubeStore {
    /// A store in `namespace`.
    pub fn new(client: Client, namespace: &str, keys: Keys) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            keys,
        }
    }

    fn key_of(&self, part: BundlePart) -> &str {
        match part {
            BundlePart::Anchors => &self.keys.anchors,
            BundlePart::IssuerChain => &self.keys.issuer_cert,
            BundlePart::IssuerKey => &self.keys.issuer_key,
        }
    }

    /// `Secret <ns>/dapr-trust-bundle key <key>`.
    pub fn describe(&self, part: BundlePart) -> String {
        self.describe_key(self.key_of(part))
    }

    /// `Secret <ns>/dapr-trust-bundle key <key>` for any data key.
    pub(super) fn describe_key(&self, key: &str) -> String {
        format!("Secret {}/{TRUST_BUNDLE} key {key}", self.namespace)
    }

    /// Reads Secret `name` (with its `resourceVersion`), `None` when it does not exist.
    pub(super) async fn read_secret(&self, name: &str) -> Result<Option<Secret>, StoreError> {
        call(self.secrets.get_opt(name))
            .await
            .map_err(api_err(format!("reading Secret {}/{name}", self.namespace)))
    }

    /// Reads both Secrets. A partial bundle is an error.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let secret = self.read_secret(TRUST_BUNDLE).await?;
        let root = self.read_secret(ROOT_SECRET).await?;
        let data = secret
            .as_ref()
            .and_then(|s| s.data.clone())
            .unwrap_or_default();
        let parts = BundlePart::ALL.map(|p| data.get(self.key_of(p)).map(|b| b.0.clone()));
        let files = Files::from_parts(parts, |p| self.describe(p))?;
        let root_data = root
            .as_ref()
            .and_then(|s| s.data.clone())
            .unwrap_or_default();
        let custody = Custody {
            root_key: root_data.get(ROOT_KEY).map(|b| b.0.clone()),
            journal: root_data.get(JOURNAL_KEY).map(|b| b.0.clone()),
        };
        Ok(Snapshot {
            files,
            custody,
            versions: Versions { secret, root },
        })
    }

    /// Writes the bundle into the Secret (CAS), then makes the ConfigMap follow it (best effort).
    pub async fn write_files(&self, base: &Versions, files: &Files) -> Result<(), StoreError> {
        let what = format!("writing Secret {}/{TRUST_BUNDLE}", self.namespace);
        let mut data = base
            .secret
            .as_ref()
            .and_then(|s| s.data.clone())
            .unwrap_or_default();
        data.insert(self.keys.anchors.clone(), ByteString(files.anchors.clone()));
        data.insert(
            self.keys.issuer_cert.clone(),
            ByteString(files.issuer_cert.clone()),
        );
        data.insert(
            self.keys.issuer_key.clone(),
            ByteString(files.issuer_key.clone()),
        );
        self.put_secret(TRUST_BUNDLE, base.secret.clone(), data, what)
            .await?;
        // The Secret is the truth and it is written: a ConfigMap that cannot follow now is
        // repaired by the next publish (start-up, the rotator), so the caller still goes on to
        // record what it won (a generated root key must not be lost to a ConfigMap error).
        if let Err(e) = self.sync_config_map(&files.anchors).await {
            warn!(error = %e, "Trust bundle written; the ConfigMap will follow on the next publish");
        }
        Ok(())
    }

    /// Writes the custody Secret (CAS); an empty custody keeps the Secret with no data.
    pub async fn write_custody(
        &self,
        base: &Versions,
        custody: &Custody,
    ) -> Result<(), StoreError> {
        let what = format!("writing Secret {}/{ROOT_SECRET}", self.namespace);
        let mut data = base
            .root
            .as_ref()
            .and_then(|s| s.data.clone())
            .unwrap_or_default();
        for (key, value) in [
            (ROOT_KEY, &custody.root_key),
            (JOURNAL_KEY, &custody.journal),
        ] {
            match value {
                Some(v) => data.insert(key.to_owned(), ByteString(v.clone())),
                None => data.remove(key),
            };
        }
        self.put_secret(ROOT_SECRET, base.root.clone(), data, what)
            .await
    }

    /// Writes `data` into Secret `name`: a compare-and-swap replace of `current` as read, or a
    /// create when it did not exist (which conflicts if someone else created it first).
    pub(super) async fn put_secret(
        &self,
        name: &str,
        current: Option<Secret>,
        data: BTreeMap<String, ByteString>,
        what: String,
    ) -> Result<(), StoreError> {
        match current {
            Some(mut secret) => {
                secret.data = Some(data);
                call(self.secrets.replace(name, &PostParams::default(), &secret))
                    .await
                    .map_err(api_err(what))?;
            }
            None => {
                let secret = Secret {
                    metadata: meta(name, &self.namespace),
                    data: Some(data),
                    type_: Some("Opaque".into()),
                    ..Default::default()
                };
                call(self.secrets.create(&PostParams::default(), &secret))
                    .await
                    .map_err(api_err(what))?;
            }
        }
        Ok(())
    }

    /// The ConfigMap's trust anchors.
    pub async fn published_anchors(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let cm = call(self.config_maps.get_opt(TRUST_BUNDLE))
            .await
            .map_err(api_err(format!(
                "reading ConfigMap {}/{TRUST_BUNDLE}",
                self.namespace
            )))?;
        Ok(cm
            .and_then(|c| c.data)
            .and_then(|d| d.get(&self.keys.anchors).map(|s| s.clone().into_bytes())))
    }

    /// Makes the ConfigMap's `ca.crt` byte-identical to `anchors`, creating it if needed.
    pub async fn sync_config_map(&self, anchors: &[u8]) -> Result<(), StoreError> {
        self.sync_config_map_key(&self.keys.anchors, anchors).await
    }

    /// Makes the ConfigMap's `key` byte-identical to `value` (the Secret's), creating the
    /// ConfigMap if needed and leaving its other keys alone. A write that loses to another
    /// writer (typically a replica publishing the same value) reads again and retries, so a
    /// caller that has just won the Secret's compare-and-swap is not told it lost.
    pub(super) async fn sync_config_map_key(
        &self,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let mut attempt = 1;
        loop {
            match self.try_sync_config_map_key(key, value).await {
                Err(StoreError::Conflict(_)) if attempt < CONFIG_MAP_ATTEMPTS => attempt += 1,
                other => return other,
            }
        }
    }

    async fn try_sync_config_map_key(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let what = format!("writing ConfigMap {}/{TRUST_BUNDLE}", self.namespace);
        let text = String::from_utf8_lossy(value).into_owned();
        let current = call(self.config_maps.get_opt(TRUST_BUNDLE))
            .await
            .map_err(api_err(what.clone()))?;
        match current {
            Some(cm) if cm.data.as_ref().and_then(|d| d.get(key)) == Some(&text) => Ok(()),
            Some(mut cm) => {
                if cm.data.as_ref().is_some_and(|d| d.contains_key(key)) {
                    warn!(
                        "ConfigMap {}/{TRUST_BUNDLE} key {key} differs from the Secret's: repairing the ConfigMap from the Secret",
                        self.namespace
                    );
                } else {
                    info!(
                        "Publishing {key} in ConfigMap {}/{TRUST_BUNDLE}",
                        self.namespace
                    );
                }
                cm.data
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key.to_owned(), text);
                call(
                    self.config_maps
                        .replace(TRUST_BUNDLE, &PostParams::default(), &cm),
                )
                .await
                .map_err(api_err(what))?;
                Ok(())
            }
            None => {
                let cm = ConfigMap {
                    metadata: meta(TRUST_BUNDLE, &self.namespace),
                    data: Some(BTreeMap::from([(key.to_owned(), text)])),
                    ..Default::default()
                };
                call(self.config_maps.create(&PostParams::default(), &cm))
                    .await
                    .map_err(api_err(what))?;
                Ok(())
            }
        }
    }
}
