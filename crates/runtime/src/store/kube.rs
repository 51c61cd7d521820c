//! The Kubernetes store: Secret `dapr-trust-bundle` (trust anchors, issuer chain, issuer key, and
//! Sentry's custody data as two extra keys: `root.key` and `rotation.json`) and ConfigMap
//! `dapr-trust-bundle` (trust anchors only, for distribution), in Sentry's namespace. The JWT
//! keys of the same Secret and ConfigMap belong to [`super::jwt::JwtKubeStore`], which goes through the
//! helpers here; every write copies the Secret's data map, so it keeps every key it does not own
//! (Dapr's sentry does the same and ignores keys it does not know).
//!
//! Everything stays within the RBAC of Dapr's Helm chart: one Secret and one ConfigMap, named,
//! read with `get` and written with `update`. Every write is a compare-and-swap on the
//! `resourceVersion` read before, so replicas acting together end with one bundle. A missing
//! object is created only where RBAC allows it (the chart creates both empty); the ConfigMap
//! always follows the Secret (repaired from it rather than triggering a new CA, dapr/dapr#9563).
//! Custody data of earlier versions, in Secret `dapr-trust-bundle-root`, is read for migration
//! only when RBAC allows it ([`KubeStore::legacy_custody`]).

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tracing::{info, warn};

use super::rbac::{self, is_forbidden};
use super::{Custody, Files, Snapshot, StoreError};
use crate::k8s::{call, K8sError};
use sentry_core::bundle::BundlePart;

/// Name of the Secret and ConfigMap holding the bundle.
pub const TRUST_BUNDLE: &str = "dapr-trust-bundle";
/// Name of the Secret that held Sentry's custody data before it moved into [`TRUST_BUNDLE`].
pub const LEGACY_ROOT_SECRET: &str = "dapr-trust-bundle-root";
/// Key of the root key in Secret [`TRUST_BUNDLE`].
pub const ROOT_KEY: &str = "root.key";
/// Key of the rotation journal in Secret [`TRUST_BUNDLE`].
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

/// The Secret as read (with its `resourceVersion`), for compare-and-swap writes.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    secret: Option<Secret>,
}

/// The bundle in a Secret and a ConfigMap.
#[derive(Clone)]
pub struct KubeStore {
    client: Client,
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    namespace: String,
    keys: Keys,
}

/// `secrets/dapr-trust-bundle` or `configmaps/dapr-trust-bundle`, as RBAC names them.
pub fn resource(kind: &str) -> String {
    format!("{kind}/{TRUST_BUNDLE}")
}

fn api_err(what: String, verb: &'static str, kind: &str) -> impl FnOnce(K8sError) -> StoreError {
    let resource = resource(kind);
    move |e| {
        if e.is_conflict() {
            StoreError::Conflict(what)
        } else if is_forbidden(&e) {
            StoreError::Forbidden {
                what,
                verb,
                resource,
            }
        } else {
            StoreError::Kubernetes(format!("{what}: {e}"))
        }
    }
}

/// A create refused by RBAC is [`StoreError::Missing`]: the object does not exist.
fn create_err(what: String, object: String, kind: &str) -> impl FnOnce(K8sError) -> StoreError {
    let other = api_err(what, "create", kind);
    move |e| {
        if is_forbidden(&e) {
            StoreError::Missing(object)
        } else {
            other(e)
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
            config_maps: Api::namespaced(client.clone(), namespace),
            client,
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
        call(self.secrets.get_opt(name)).await.map_err(api_err(
            format!("reading Secret {}/{name}", self.namespace),
            "get",
            "secrets",
        ))
    }

    /// The API client, the namespace and the Secret/ConfigMap APIs, for watching them.
    pub(super) fn watch_parts(&self) -> (&Client, &str, &Api<Secret>, &Api<ConfigMap>) {
        (
            &self.client,
            &self.namespace,
            &self.secrets,
            &self.config_maps,
        )
    }

    /// Reads the Secret (one GET). A partial bundle is an error.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let secret = self.read_secret(TRUST_BUNDLE).await?;
        let data = secret
            .as_ref()
            .and_then(|s| s.data.clone())
            .unwrap_or_default();
        let parts = BundlePart::ALL.map(|p| data.get(self.key_of(p)).map(|b| b.0.clone()));
        let files = Files::from_parts(parts, |p| self.describe(p))?;
        Ok(Snapshot {
            files,
            custody: custody_of(&data),
            versions: Versions { secret },
        })
    }

    /// The custody data an earlier version kept in Secret `dapr-trust-bundle-root`, when RBAC
    /// allows reading it (asked first, so that a chart install sees no 403) and it exists.
    pub async fn legacy_custody(&self) -> Option<Custody> {
        if !rbac::allows(
            &self.client,
            &self.namespace,
            "get",
            "secrets",
            LEGACY_ROOT_SECRET,
        )
        .await
        {
            return None;
        }
        match self.read_secret(LEGACY_ROOT_SECRET).await {
            Ok(secret) => secret
                .and_then(|s| s.data)
                .map(|d| custody_of(&d))
                .filter(|c| c.root_key.is_some()),
            Err(e) => {
                warn!(error = %e, "could not read Secret {LEGACY_ROOT_SECRET} of an earlier version; nothing migrated");
                None
            }
        }
    }

    /// Writes the bundle and/or the custody data into the Secret in one compare-and-swap on
    /// `base`, then (when the bundle was written) makes the ConfigMap follow it (best effort).
    pub async fn write(
        &self,
        base: &Versions,
        files: Option<&Files>,
        custody: Option<&Custody>,
    ) -> Result<(), StoreError> {
        let what = format!("writing Secret {}/{TRUST_BUNDLE}", self.namespace);
        let mut data = base
            .secret
            .as_ref()
            .and_then(|s| s.data.clone())
            .unwrap_or_default();
        if let Some(files) = files {
            for (key, value) in [
                (&self.keys.anchors, &files.anchors),
                (&self.keys.issuer_cert, &files.issuer_cert),
                (&self.keys.issuer_key, &files.issuer_key),
            ] {
                data.insert(key.clone(), ByteString(value.clone()));
            }
        }
        if let Some(custody) = custody {
            for (key, value) in [
                (ROOT_KEY, &custody.root_key),
                (JOURNAL_KEY, &custody.journal),
            ] {
                match value {
                    Some(v) => data.insert(key.to_owned(), ByteString(v.clone())),
                    None => data.remove(key),
                };
            }
        }
        self.put_secret(TRUST_BUNDLE, base.secret.clone(), data, what)
            .await?;
        // The Secret is the truth and it is written: a ConfigMap that cannot follow now is
        // repaired by the next publish (start-up, the rotator).
        if let Some(files) = files {
            if let Err(e) = self.sync_config_map(&files.anchors).await {
                if !rbac::refused_publish(&e) {
                    warn!(error = %e, "Trust bundle written; the ConfigMap will follow on the next publish");
                }
            }
        }
        Ok(())
    }

    /// Writes `data` into Secret `name`: a compare-and-swap replace of `current` as read, or a
    /// create when it did not exist (which conflicts if someone else created it first, and is
    /// [`StoreError::Missing`] where RBAC allows no create, as under Dapr's chart).
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
                    .map_err(api_err(what, "update", "secrets"))?;
            }
            None => {
                let secret = Secret {
                    metadata: meta(name, &self.namespace),
                    data: Some(data),
                    type_: Some("Opaque".into()),
                    ..Default::default()
                };
                let object = format!("Secret {}/{name}", self.namespace);
                call(self.secrets.create(&PostParams::default(), &secret))
                    .await
                    .map_err(create_err(what, object, "secrets"))?;
            }
        }
        Ok(())
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
            .map_err(api_err(what.clone(), "get", "configmaps"))?;
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
                .map_err(api_err(what, "update", "configmaps"))?;
                Ok(())
            }
            None => {
                let cm = ConfigMap {
                    metadata: meta(TRUST_BUNDLE, &self.namespace),
                    data: Some(BTreeMap::from([(key.to_owned(), text)])),
                    ..Default::default()
                };
                let object = format!("ConfigMap {}/{TRUST_BUNDLE}", self.namespace);
                call(self.config_maps.create(&PostParams::default(), &cm))
                    .await
                    .map_err(create_err(what, object, "configmaps"))?;
                Ok(())
            }
        }
    }
}

fn custody_of(data: &BTreeMap<String, ByteString>) -> Custody {
    Custody {
        root_key: data.get(ROOT_KEY).map(|b| b.0.clone()),
        journal: data.get(JOURNAL_KEY).map(|b| b.0.clone()),
    }
}
