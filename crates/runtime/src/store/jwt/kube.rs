//! The Kubernetes store of the JWT part (Dapr ≥ 1.16): keys `jwt.key` and `jwks.json` (base names
//! of the configured paths) of Secret `dapr-trust-bundle`, and `jwks.json` of ConfigMap
//! `dapr-trust-bundle`, which is how other components get the JWKS. The objects are reached
//! through [`KubeStore`]'s helpers, so there is one owner of API calls and compare-and-swap.
//!
//! Writes touch only the two JWT keys: the Secret is replaced with the `resourceVersion` read
//! before (a conflict means another replica or a bundle write came first; the caller re-reads and
//! uses what is there), and the ConfigMap follows the Secret, repaired like `ca.crt` is.
//!
//! Deliberate difference from Dapr: without `--jwt-enabled` Sentry never touches these keys (Dapr
//! deletes the ConfigMap's `jwks.json` when it stores a newly generated CA without JWT). A replica
//! started without the flag during a roll-out must not withdraw a JWKS that verifiers rely on;
//! withdrawing it is an operator decision.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use tracing::info;

use super::{verify_pair, JwtStoreError};
use crate::store::kube::{KubeStore, TRUST_BUNDLE};
use sentry_core::bundle::jwt::{JwtBundle, JwtKeySettings, JwtPart};

/// The Secret as read, for the compare-and-swap write (`None`: it did not exist, or files).
#[derive(Debug, Clone, Default)]
pub struct SecretBase(Option<Secret>);

/// The JWT key and JWKS in the trust-bundle Secret, the JWKS published in the ConfigMap.
#[derive(Clone)]
pub struct JwtKubeStore {
    bundle: KubeStore,
    key: String,
    jwks: String,
}

impl JwtKubeStore {
    /// The JWT part under data keys `key` and `jwks`, through the bundle's own store.
    pub fn new(bundle: KubeStore, key: String, jwks: String) -> Self {
        Self { bundle, key, jwks }
    }

    fn locate(&self, part: JwtPart) -> String {
        self.bundle.describe_key(match part {
            JwtPart::Key => &self.key,
            JwtPart::Jwks => &self.jwks,
        })
    }

    /// Reads the Secret and verifies the pair; `None` when it holds neither key.
    pub async fn load(
        &self,
        settings: &JwtKeySettings,
    ) -> Result<(Option<JwtBundle>, SecretBase), JwtStoreError> {
        let secret = self.bundle.read_secret(TRUST_BUNDLE).await?;
        let data = secret.as_ref().and_then(|s| s.data.as_ref());
        let value = |key: &str| data.and_then(|d| d.get(key)).map(|b| b.0.clone());
        let bundle = verify_pair(value(&self.key), value(&self.jwks), settings, |part| {
            self.locate(part)
        })?;
        Ok((bundle, SecretBase(secret)))
    }

    /// Adds the pair to the Secret as read in `base`, every other key kept (the ConfigMap is
    /// [`publish`](Self::publish)ed after the pair is read back).
    pub async fn save(&self, base: &SecretBase, bundle: &JwtBundle) -> Result<(), JwtStoreError> {
        let current = base.0.clone();
        let mut data = current
            .as_ref()
            .and_then(|s| s.data.clone())
            .unwrap_or_default();
        data.insert(
            self.key.clone(),
            ByteString(bundle.key_pem.clone().into_bytes()),
        );
        data.insert(
            self.jwks.clone(),
            ByteString(bundle.jwks_json.clone().into_bytes()),
        );
        let what = format!("writing {} and {}", self.locate(JwtPart::Key), self.jwks);
        self.bundle
            .put_secret(TRUST_BUNDLE, current, data, what)
            .await?;
        info!(kid = %bundle.kid, "Stored the JWT signing key and JWKS in Secret {TRUST_BUNDLE}");
        Ok(())
    }

    /// Makes the ConfigMap's JWKS byte-identical to the stored one.
    pub async fn publish(&self, bundle: &JwtBundle) -> Result<(), JwtStoreError> {
        self.bundle
            .sync_config_map_key(&self.jwks, bundle.jwks_json.as_bytes())
            .await?;
        Ok(())
    }
}
