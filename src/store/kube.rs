//! The Kubernetes store: Secret `dapr-trust-bundle` (trust anchors, issuer chain, issuer key) and
//! ConfigMap `dapr-trust-bundle` (trust anchors only, for distribution) in Sentry's namespace.
//!
//! Every write is a compare-and-swap on `resourceVersion` (or a create that fails if someone else
//! created first), so replicas starting together end with exactly one bundle. Beyond Dapr: missing
//! objects are created; a ConfigMap whose `ca.crt` differs from the Secret's is repaired from the
//! Secret instead of triggering a new CA (dapr/dapr#9563); a valid bundle is never overwritten.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use time::OffsetDateTime;
use tracing::{info, warn};

use super::StoreError;
use crate::bundle::{self, Bundle, BundlePart};
use crate::k8s::{call, K8sError};

/// Name of the Secret and ConfigMap holding the bundle.
pub const TRUST_BUNDLE: &str = "dapr-trust-bundle";

/// How often a write that lost a race is retried before giving up.
const MAX_ATTEMPTS: usize = 10;

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

/// The bundle in a Secret and a ConfigMap.
#[derive(Clone)]
pub struct KubeStore {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    namespace: String,
    keys: Keys,
}

fn k8s_err(what: &str, e: K8sError) -> StoreError {
    StoreError::Kubernetes(format!("{what}: {e}"))
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

    fn describe(&self, kind: &str, key: &str) -> String {
        format!("{kind} {}/{TRUST_BUNDLE} key {key}", self.namespace)
    }

    /// Loads the bundle, or generates and stores one with `generate` when the Secret holds none.
    /// Returns the bundle and whether this process generated it.
    pub async fn load_or_generate(
        &self,
        generate: impl Fn() -> Result<Bundle, bundle::BundleError>,
    ) -> Result<(Bundle, bool), StoreError> {
        let mut generated = None::<Bundle>;
        for attempt in 0..MAX_ATTEMPTS {
            let secret = call(self.secrets.get_opt(TRUST_BUNDLE))
                .await
                .map_err(|e| k8s_err("reading Secret", e))?;
            let data = secret
                .as_ref()
                .and_then(|s| s.data.clone())
                .unwrap_or_default();
            let get = |k: &str| data.get(k).map(|b| b.0.clone());
            let parts = [
                get(&self.keys.anchors),
                get(&self.keys.issuer_cert),
                get(&self.keys.issuer_key),
            ];
            match parts {
                [Some(anchors), Some(chain), Some(key)] => {
                    let bundle = bundle::verify(&anchors, &chain, &key, OffsetDateTime::now_utc())
                        .map_err(|source| {
                            let key = match source.part {
                                BundlePart::Anchors => &self.keys.anchors,
                                BundlePart::IssuerChain => &self.keys.issuer_cert,
                                BundlePart::IssuerKey => &self.keys.issuer_key,
                            };
                            StoreError::Invalid {
                                path: self.describe("Secret", key).into(),
                                source,
                            }
                        })?;
                    match self.sync_config_map(&anchors).await {
                        Ok(()) => {}
                        Err(e) if e.is_conflict() => continue,
                        Err(e) => return Err(k8s_err("writing ConfigMap", e)),
                    }
                    let ours = generated
                        .as_ref()
                        .is_some_and(|g| g.anchors_pem.as_bytes() == anchors.as_slice());
                    return Ok((bundle, ours));
                }
                [None, None, None] => {
                    let fresh = match generated.take() {
                        Some(b) => b,
                        None => {
                            info!("Root and issuer certs not found in the Secret: generating self signed CA");
                            generate().map_err(|source| StoreError::Invalid {
                                path: self.describe("Secret", &self.keys.anchors).into(),
                                source,
                            })?
                        }
                    };
                    let result = self.write_secret(secret, &fresh).await;
                    generated = Some(fresh);
                    match result {
                        Ok(()) => continue, // read back what was stored, then sync the ConfigMap
                        Err(e) if e.is_conflict() => {
                            info!(attempt, "Another Sentry stored a bundle first; using it");
                            continue;
                        }
                        Err(e) => return Err(k8s_err("writing Secret", e)),
                    }
                }
                _ => {
                    let names = |present: bool| {
                        [
                            &self.keys.anchors,
                            &self.keys.issuer_cert,
                            &self.keys.issuer_key,
                        ]
                        .into_iter()
                        .zip(&parts)
                        .filter(|(_, p)| p.is_some() == present)
                        .map(|(k, _)| self.describe("Secret", k))
                        .collect::<Vec<_>>()
                        .join(", ")
                    };
                    return Err(StoreError::Partial {
                        present: names(true),
                        missing: names(false),
                    });
                }
            }
        }
        Err(StoreError::Kubernetes(format!(
            "Secret {}/{TRUST_BUNDLE}: gave up after {MAX_ATTEMPTS} conflicting writes",
            self.namespace
        )))
    }

    /// Stores the bundle in the Secret: create when missing, else replace at the read version.
    async fn write_secret(&self, current: Option<Secret>, bundle: &Bundle) -> Result<(), K8sError> {
        let mut data = current
            .as_ref()
            .and_then(|s| s.data.clone())
            .unwrap_or_default();
        data.insert(
            self.keys.anchors.clone(),
            ByteString(bundle.anchors_pem.clone().into_bytes()),
        );
        data.insert(
            self.keys.issuer_cert.clone(),
            ByteString(bundle.issuer_chain_pem.clone().into_bytes()),
        );
        data.insert(
            self.keys.issuer_key.clone(),
            ByteString(bundle.issuer_key_pem.clone().into_bytes()),
        );
        match current {
            Some(mut secret) => {
                secret.data = Some(data);
                call(
                    self.secrets
                        .replace(TRUST_BUNDLE, &PostParams::default(), &secret),
                )
                .await?;
            }
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(TRUST_BUNDLE.into()),
                        namespace: Some(self.namespace.clone()),
                        ..Default::default()
                    },
                    data: Some(data),
                    type_: Some("Opaque".into()),
                    ..Default::default()
                };
                call(self.secrets.create(&PostParams::default(), &secret)).await?;
            }
        }
        Ok(())
    }

    /// Makes the ConfigMap's `ca.crt` byte-identical to the Secret's, creating it if needed.
    async fn sync_config_map(&self, anchors: &[u8]) -> Result<(), K8sError> {
        let text = String::from_utf8_lossy(anchors).into_owned();
        let current = call(self.config_maps.get_opt(TRUST_BUNDLE)).await?;
        match current {
            Some(cm) if cm.data.as_ref().and_then(|d| d.get(&self.keys.anchors)) == Some(&text) => {
                Ok(())
            }
            Some(mut cm) => {
                warn!("ConfigMap {}/{TRUST_BUNDLE} trust anchors differ from the Secret's: repairing the ConfigMap from the Secret", self.namespace);
                cm.data
                    .get_or_insert_with(BTreeMap::new)
                    .insert(self.keys.anchors.clone(), text);
                call(
                    self.config_maps
                        .replace(TRUST_BUNDLE, &PostParams::default(), &cm),
                )
                .await?;
                Ok(())
            }
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(TRUST_BUNDLE.into()),
                        namespace: Some(self.namespace.clone()),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([(self.keys.anchors.clone(), text)])),
                    ..Default::default()
                };
                call(self.config_maps.create(&PostParams::default(), &cm)).await?;
                Ok(())
            }
        }
    }
}
