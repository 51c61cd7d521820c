//! Where the JWT part of the bundle (signing key + JWKS) lives, chosen by the bundle's own store:
//! two files in standalone mode ([`JwtFileStore`]), two keys of Secret `dapr-trust-bundle`
//! with the JWKS also published in ConfigMap `dapr-trust-bundle` in Kubernetes mode
//! ([`JwtKubeStore`]). Both load only a complete, verified pair: one text without the other is
//! refused (never overwritten), neither means "generate". Generating and retrying on a lost
//! compare-and-swap is the caller's business; this module never creates a key.

use std::path::Path;

mod file;
mod kube;

pub use file::JwtFileStore;
pub use kube::{JwtKubeStore, SecretBase};

use super::kube::base_name;
use super::{PartSet, Store, StoreError};
use sentry_core::bundle::jwt::{verify_jwt, JwtBundle, JwtBundleError, JwtKeySettings, JwtPart};

/// Why the JWT part could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum JwtStoreError {
    /// The stored pair failed verification.
    #[error("{location}: {source}")]
    Invalid {
        /// The file or Secret key holding the faulty part.
        location: String,
        /// What is wrong.
        source: JwtBundleError,
    },
    /// A file could not be read or written, only one of the two texts exists
    /// ([`StoreError::Partial`]), the API server refused or did not answer, or someone else
    /// wrote first.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl JwtStoreError {
    /// True when another writer changed the store since it was read: read again and retry.
    pub fn is_conflict(&self) -> bool {
        matches!(self, JwtStoreError::Store(StoreError::Conflict(_)))
    }
}

/// One read of the JWT part, with what a compare-and-swap write needs.
pub struct JwtSnapshot {
    /// The verified pair, or `None` when the store holds neither text.
    pub bundle: Option<JwtBundle>,
    base: SecretBase,
}

/// The JWT key and JWKS store.
#[derive(Clone)]
pub enum JwtStore {
    /// Two files.
    File(JwtFileStore),
    /// Two Secret keys, the JWKS also in the ConfigMap.
    Kube(Box<JwtKubeStore>),
}

impl JwtStore {
    /// The JWT store beside the bundle store `store`: the files `key` and `jwks`, or (Kubernetes)
    /// the Secret/ConfigMap keys named after their base names, through the same client.
    pub fn beside(store: &Store, key: &Path, jwks: &Path) -> Self {
        match store {
            Store::File(_) => {
                JwtStore::File(JwtFileStore::new(key.to_path_buf(), jwks.to_path_buf()))
            }
            Store::Kube(k) => JwtStore::Kube(Box::new(JwtKubeStore::new(
                (**k).clone(),
                base_name(key),
                base_name(jwks),
            ))),
        }
    }

    /// Reads and verifies the pair.
    pub async fn load(&self, settings: &JwtKeySettings) -> Result<JwtSnapshot, JwtStoreError> {
        match self {
            JwtStore::File(s) => Ok(JwtSnapshot {
                bundle: s.load(settings)?,
                base: SecretBase::default(),
            }),
            JwtStore::Kube(s) => {
                let (bundle, base) = s.load(settings).await?;
                Ok(JwtSnapshot { bundle, base })
            }
        }
    }

    /// Stores a new pair; conflicts if the store changed since `base`. Read it back and
    /// [`publish`](Self::publish) it next.
    pub async fn save(&self, base: &JwtSnapshot, bundle: &JwtBundle) -> Result<(), JwtStoreError> {
        match self {
            JwtStore::File(s) => s.save(bundle),
            JwtStore::Kube(s) => s.save(&base.base, bundle).await,
        }
    }

    /// Makes the distributed JWKS (the ConfigMap's, in Kubernetes) equal to the stored one.
    pub async fn publish(&self, bundle: &JwtBundle) -> Result<(), JwtStoreError> {
        match self {
            JwtStore::File(_) => Ok(()),
            JwtStore::Kube(s) => s.publish(bundle).await,
        }
    }
}

/// Turns the two stored texts into a verified pair: neither → `None`, both → verified, one →
/// [`StoreError::Partial`]. `locate` names where a part is stored, for messages.
pub(super) fn verify_pair(
    key: Option<Vec<u8>>,
    jwks: Option<Vec<u8>>,
    settings: &JwtKeySettings,
    locate: impl Fn(JwtPart) -> String,
) -> Result<Option<JwtBundle>, JwtStoreError> {
    let partial = |present, missing| {
        JwtStoreError::Store(StoreError::Partial {
            set: PartSet::JwtCredentials,
            present: locate(present),
            missing: locate(missing),
        })
    };
    match (key, jwks) {
        (None, None) => Ok(None),
        (Some(key), Some(jwks)) => verify_jwt(&key, &jwks, settings)
            .map(Some)
            .map_err(|source| JwtStoreError::Invalid {
                location: locate(source.part),
                source,
            }),
        (Some(_), None) => Err(partial(JwtPart::Key, JwtPart::Jwks)),
        (None, Some(_)) => Err(partial(JwtPart::Jwks, JwtPart::Key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentry_core::bundle::jwt::generate_jwt;
    use sentry_core::jose::Algorithm;

    #[test]
    fn a_pair_is_both_texts_or_neither() {
        let settings = JwtKeySettings {
            algorithm: Algorithm::ES256,
            key_id: None,
        };
        let b = generate_jwt(&settings).unwrap();
        let (key, jwks) = (
            Some(b.key_pem.clone().into_bytes()),
            Some(b.jwks_json.clone().into_bytes()),
        );
        let locate = |part: JwtPart| format!("<{part}>");
        let check = |k: &Option<Vec<u8>>, j: &Option<Vec<u8>>| {
            verify_pair(k.clone(), j.clone(), &settings, locate)
        };
        assert!(check(&None, &None).unwrap().is_none());
        assert_eq!(check(&key, &jwks).unwrap().unwrap().kid, b.kid);
        let err = check(&key, &None).unwrap_err().to_string();
        assert!(
            err.contains("<JWT signing key> present but <JWKS> missing"),
            "{err}"
        );
        let err = check(&None, &jwks).unwrap_err().to_string();
        assert!(
            err.contains("<JWKS> present but <JWT signing key> missing"),
            "{err}"
        );
        let err = check(&key, &Some(b"{}".to_vec())).unwrap_err();
        assert!(
            matches!(&err, JwtStoreError::Invalid { location, .. } if location == "<JWKS>"),
            "{err}"
        );
        assert!(!err.is_conflict());
    }
}
