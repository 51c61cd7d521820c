//! Start-up: finishes a renewal or rotation step a killed process left half done, migrates custody
//! data of an earlier version's layout, and loads (or generates and stores) the bundle Sentry
//! starts with. Does not run afterwards; that is [`super::Rotator`].

use tracing::info;

use super::{journal_of, policy, verify, Clock, RotationError, Settings};
use crate::store::rbac::{refused_publish, refused_write};
use crate::store::{Custody, Files, Snapshot, Store, StoreError};
use sentry_core::bundle::{self, Bundle, BundlePart};

/// The bundle Sentry starts with.
pub struct Loaded {
    /// The verified bundle.
    pub bundle: Bundle,
    /// Its stored form.
    pub files: Files,
    /// True when this process generated it.
    pub generated: bool,
}

/// Finishes an interrupted step, then loads the bundle or generates (and stores) a new one, as of
/// `clock`'s time.
pub async fn bootstrap(
    store: &Store,
    settings: &Settings,
    clock: &dyn Clock,
) -> Result<Loaded, RotationError> {
    let mut generated = false;
    // RBAC refused to update the bundle: serve what is stored.
    let mut read_only = false;
    for _ in 0..20 {
        let snap = store.snapshot().await?;
        let now = clock.now();
        match (&snap.files, journal_of(&snap)?) {
            (Some(files), Some(j)) if !read_only && j.desired_files(files) != *files => {
                info!(phase = ?j.phase, "Resuming an interrupted CA rotation step");
                match store.write_files(&snap, &j.desired_files(files)).await {
                    Ok(()) | Err(StoreError::Conflict(_)) => {}
                    Err(e) if refused_write(&e) => read_only = true,
                    Err(e) => return Err(e.into()),
                }
            }
            (Some(files), journal) => {
                let bundle = verify(store, files, now)?;
                if !read_only && journal.is_none() && snap.custody.root_key.is_none() {
                    match migrate(store, &snap, &bundle).await {
                        Ok(false) => {}
                        Ok(true) | Err(StoreError::Conflict(_)) => continue,
                        Err(e) if refused_write(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                match store.publish(files).await {
                    Ok(()) => {}
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) if refused_publish(&e) => {}
                    Err(e) => return Err(e.into()),
                }
                return Ok(Loaded {
                    bundle,
                    files: files.clone(),
                    generated,
                });
            }
            (None, _) => {
                info!("Root and issuer certs not found: generating self signed CA");
                let g = bundle::generate(&settings.params, now).map_err(|source| {
                    RotationError::Invalid {
                        location: store.describe(BundlePart::Anchors),
                        source,
                    }
                })?;
                // Bundle and root key in one write: only the writer that won keeps a root key.
                let custody = Custody {
                    root_key: Some(g.root_key_pem.into_bytes()),
                    journal: None,
                };
                match store
                    .write_generated(&snap, &Files::of(&g.bundle), &custody)
                    .await
                {
                    Ok(()) => {}
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
                generated = true;
            }
        }
    }
    Err(RotationError::Contended)
}

/// Moves custody data of an earlier version's layout (Kubernetes: Secret
/// `dapr-trust-bundle-root`) into the store, when its root key matches the stored anchors.
/// True when something was written. The old object is left alone (Dapr's chart allows deleting
/// only `dapr-trust-bundle`): once the store holds a root key it is never read again.
async fn migrate(store: &Store, snap: &Snapshot, bundle: &Bundle) -> Result<bool, StoreError> {
    let Some(legacy) = store.legacy_custody().await else {
        return Ok(false);
    };
    let matches = legacy
        .root_key
        .as_deref()
        .and_then(|k| std::str::from_utf8(k).ok())
        .is_some_and(|k| policy::matching_root(bundle, k).is_some());
    if !matches {
        info!("Secret dapr-trust-bundle-root of an earlier version holds a root key of none of the trust anchors: not migrated");
        return Ok(false);
    }
    store.write_custody(snap, &legacy).await?;
    info!(
        journal = legacy.journal.is_some(),
        "Migrated the root key from Secret dapr-trust-bundle-root into Secret dapr-trust-bundle; the old Secret is no longer read and may be deleted"
    );
    Ok(true)
}
