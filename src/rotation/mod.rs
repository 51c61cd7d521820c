//! Rotation: keeps the served bundle current without restarts. At start-up [`bootstrap`] finishes
//! any interrupted renewal or rotation and loads (or generates) the bundle. Then [`Rotator`] runs
//! forever: it reloads a bundle changed in the store (verified first; a bad one is refused and
//! counted while the last good one keeps serving), renews the issuer before it expires, rotates
//! the root in phases (prepare → publish → activate → retire, see [`journal`]), and warns when a
//! CA it cannot renew itself is about to expire.

pub mod journal;
mod policy;

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tracing::{error, info, warn};

pub use journal::{Journal, Phase};
pub use policy::{matching_root, prepare_rotation, Settings};

use crate::bundle::{self, Bundle, BundleError, BundlePart};
use crate::ca::{Ca, Signer};
use crate::server::tls::ServingCert;
use crate::store::{Custody, Files, Snapshot, Store, StoreError};
use crate::telemetry::Metrics;

/// Why start-up or a rotation step failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored bundle is invalid.
    #[error("{location}: {source}")]
    Invalid {
        /// Where the faulty part is stored.
        location: String,
        /// What is wrong.
        source: BundleError,
    },
    /// The journal is unreadable.
    #[error("{0}")]
    Journal(String),
    /// Gave up after repeated concurrent writes.
    #[error("the trust bundle kept changing concurrently; giving up")]
    Contended,
}

/// The bundle Sentry starts with.
pub struct Loaded {
    /// The verified bundle.
    pub bundle: Bundle,
    /// Its stored form.
    pub files: Files,
    /// True when this process generated it.
    pub generated: bool,
}

fn verify(store: &Store, files: &Files, now: OffsetDateTime) -> Result<Bundle, RotationError> {
    bundle::verify(&files.anchors, &files.issuer_cert, &files.issuer_key, now).map_err(|source| {
        RotationError::Invalid {
            location: store.describe(source.part),
            source,
        }
    })
}

fn journal_of(snap: &Snapshot) -> Result<Option<Journal>, RotationError> {
    snap.custody
        .journal
        .as_deref()
        .map(Journal::parse)
        .transpose()
        .map_err(RotationError::Journal)
}

/// Finishes an interrupted step, then loads the bundle or generates (and stores) a new one.
pub async fn bootstrap(store: &Store, settings: &Settings) -> Result<Loaded, RotationError> {
    let mut generated = false;
    for _ in 0..20 {
        let snap = store.snapshot().await?;
        let now = OffsetDateTime::now_utc();
        match (&snap.files, journal_of(&snap)?) {
            (Some(files), Some(j)) if j.desired_files(files) != *files => {
                info!(phase = ?j.phase, "Resuming an interrupted CA rotation step");
                match store.write_files(&snap, &j.desired_files(files)).await {
                    Ok(()) | Err(StoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            (Some(files), _) => {
                let bundle = verify(store, files, now)?;
                match store.publish(files).await {
                    Ok(()) => {}
                    Err(StoreError::Conflict(_)) => continue,
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
                match store.write_files(&snap, &Files::of(&g.bundle)).await {
                    Ok(()) => {}
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
                // Only the writer that won keeps the root key.
                let custody = Custody {
                    root_key: Some(g.root_key_pem.into_bytes()),
                    journal: None,
                };
                match store.write_custody(&snap, &custody).await {
                    Ok(()) | Err(StoreError::Conflict(_)) => {}
                    Err(e) => {
                        warn!(error = %e, "could not store the root key; automatic renewal disabled")
                    }
                }
                generated = true;
            }
        }
    }
    Err(RotationError::Contended)
}

/// The background task that keeps the served bundle current.
pub struct Rotator {
    store: Store,
    settings: Settings,
    ca: Arc<Ca>,
    serving: Arc<ServingCert>,
    metrics: Arc<Metrics>,
    last_seen: Files,
    unsettled: Option<Files>,
    /// The distributed anchors (the ConfigMap) could not be made to follow `last_seen` yet.
    unpublished: bool,
    last_warning: Option<OffsetDateTime>,
}

impl Rotator {
    /// A rotator for the bundle `served` (as stored) that `ca` signs with now.
    pub fn new(
        store: Store,
        settings: Settings,
        ca: Arc<Ca>,
        serving: Arc<ServingCert>,
        metrics: Arc<Metrics>,
        served: Files,
    ) -> Self {
        Self {
            store,
            settings,
            ca,
            serving,
            metrics,
            last_seen: served,
            unsettled: None,
            unpublished: false,
            last_warning: None,
        }
    }

    /// Checks the store every interval, forever.
    pub async fn run(mut self) {
        loop {
            tokio::time::sleep(self.settings.interval).await;
            if let Err(e) = self.step().await {
                match e {
                    RotationError::Store(StoreError::Conflict(_)) => {}
                    e => warn!(error = %e, "CA rotation check failed; retrying"),
                }
            }
        }
    }

    /// One check: advance a journal, reload a changed bundle, start a renewal or rotation when due.
    pub async fn step(&mut self) -> Result<(), RotationError> {
        let snap = self.store.snapshot().await?;
        let Some(files) = snap.files.clone() else {
            return Ok(());
        };
        let now = OffsetDateTime::now_utc();
        if let Some(j) = journal_of(&snap)? {
            self.advance(&snap, &files, j, now).await?;
        }
        let snap = self.store.snapshot().await?;
        if let Some(files) = snap.files.as_ref().filter(|f| **f != self.last_seen) {
            self.reload(&files.clone(), now).await;
        } else if self.unpublished {
            self.publish().await;
        }
        if journal_of(&snap)?.is_none() {
            self.start_if_due(&snap, now).await?;
        }
        Ok(())
    }

    /// Makes the distributed anchors follow `last_seen`; on failure, tried again next check.
    async fn publish(&mut self) {
        match self.store.publish(&self.last_seen).await {
            Ok(()) => self.unpublished = false,
            Err(e) => {
                if !self.unpublished {
                    warn!(error = %e, "could not publish the changed trust anchors; retrying");
                }
                self.unpublished = true;
            }
        }
    }

    async fn reload(&mut self, files: &Files, now: OffsetDateTime) {
        let signer = verify(&self.store, files, now).and_then(|b| {
            Signer::new(b).map_err(|e| RotationError::Invalid {
                location: self.store.describe(BundlePart::IssuerChain),
                source: BundleError::new(BundlePart::IssuerChain, e.to_string()),
            })
        });
        if signer.is_err() && self.unsettled.as_ref() != Some(files) {
            // Files are often replaced one at a time: judge a bad bundle only once it has stayed
            // the same for a whole check interval.
            self.unsettled = Some(files.clone());
            return;
        }
        self.unsettled = None;
        self.last_seen = files.clone();
        self.metrics.issuercert_changed.inc();
        match signer {
            Ok(signer) => {
                self.publish().await;
                publish_expiry(&self.metrics, signer.bundle());
                self.ca.replace(signer);
                match self.serving.renew(&self.ca) {
                    Ok(_) => info!("Trust bundle changed: now signing with it"),
                    Err(e) => {
                        self.metrics
                            .servercert_issue_failed
                            .with_label_values(&["sign"])
                            .inc();
                        error!(error = %e, "Trust bundle changed but the serving certificate could not be re-issued");
                    }
                }
            }
            Err(e) => {
                self.metrics.bundle_reload_failed.inc();
                error!(error = %e, "Refusing the changed trust bundle; still serving the last good one");
            }
        }
    }

    async fn advance(
        &self,
        snap: &Snapshot,
        files: &Files,
        j: Journal,
        now: OffsetDateTime,
    ) -> Result<(), RotationError> {
        advance(&self.store, &self.settings, snap, files, j, now).await
    }

    async fn start_if_due(
        &mut self,
        snap: &Snapshot,
        now: OffsetDateTime,
    ) -> Result<(), RotationError> {
        let signer = self.ca.signer();
        let bundle = signer.bundle();
        let root_key = snap
            .custody
            .root_key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| policy::matching_root(bundle, k).map(|root| (root, k.to_owned())));
        let Some((root_pem, root_key)) = root_key else {
            self.warn_if_expiring(bundle, now);
            return Ok(());
        };
        self.metrics.ca_expiry_warning.set(0);
        let journal =
            if self.settings.auto_root_rotation && policy::root_due(bundle, &self.settings, now) {
                info!("Root certificate nearing expiry: starting a root rotation");
                Some(policy::prepare_rotation(&self.settings, now)?)
            } else if policy::issuer_due(bundle, &self.settings, now) {
                let (cert, key) =
                    bundle::new_issuer(&self.settings.params, root_pem.as_bytes(), &root_key, now)
                        .map_err(|source| RotationError::Invalid {
                            location: self.store.describe(BundlePart::IssuerChain),
                            source,
                        })?;
                if !policy::extends(&cert, bundle) {
                    return Ok(()); // capped by the root: only a root rotation helps
                }
                info!("Issuer certificate nearing expiry: renewing it under the same root");
                Some(Journal::renewing(cert, key))
            } else {
                None
            };
        if let Some(j) = journal {
            let custody = Custody {
                root_key: snap.custody.root_key.clone(),
                journal: Some(j.to_bytes()),
            };
            self.store.write_custody(snap, &custody).await?;
        }
        Ok(())
    }

    fn warn_if_expiring(&mut self, bundle: &Bundle, now: OffsetDateTime) {
        let first = bundle.issuer_not_after.min(bundle.anchors_not_after);
        if first - now > self.settings.expiry_warning {
            self.metrics.ca_expiry_warning.set(0);
            return;
        }
        self.metrics.ca_expiry_warning.set(1);
        if self
            .last_warning
            .is_none_or(|t| now - t >= time::Duration::hours(1))
        {
            self.last_warning = Some(now);
            warn!(
                issuer_expires = %bundle.issuer_not_after,
                root_expires = %bundle.anchors_not_after,
                "Dapr root or issuer certificate expires soon and Sentry holds no root key to renew it: rotate the CA (sentry ca renew)"
            );
        }
    }
}

/// Moves a renewal or rotation one step: first the bundle its phase requires, then the next
/// phase once its condition holds. Each call writes at most one thing.
pub async fn advance(
    store: &Store,
    settings: &Settings,
    snap: &Snapshot,
    files: &Files,
    j: Journal,
    now: OffsetDateTime,
) -> Result<(), RotationError> {
    let desired = j.desired_files(files);
    if desired != *files {
        verify(store, &desired, now)?;
        info!(phase = ?j.phase, "CA rotation: updating the trust bundle");
        return Ok(store.write_files(snap, &desired).await?);
    }
    let write = |journal: Option<Journal>, root_key: Option<Vec<u8>>| Custody {
        root_key: root_key.or_else(|| snap.custody.root_key.clone()),
        journal: journal.map(|j| j.to_bytes()),
    };
    let next = match j.phase {
        Phase::Renewing | Phase::Retiring => {
            info!(phase = ?j.phase, "CA rotation: step complete");
            write(None, None)
        }
        Phase::Prepared => write(Some(j.with_phase(Phase::Published)), None),
        Phase::Published => {
            match j.published_at {
                None => {
                    let published = store.published_anchors().await?;
                    let next_root = j.next_root_cert.as_deref().unwrap_or_default().as_bytes();
                    if !published.is_some_and(|a| journal::anchors_contain(&a, next_root)) {
                        return Ok(());
                    }
                    info!("CA rotation: new root observed published; activation after the grace period");
                    write(
                        Some(Journal {
                            published_at: Some(now.unix_timestamp()),
                            ..j
                        }),
                        None,
                    )
                }
                Some(at) if now.unix_timestamp() >= at + settings.grace.as_secs() as i64 => {
                    info!("CA rotation: activating the new issuer");
                    write(Some(j.with_phase(Phase::Activating)), None)
                }
                Some(_) => return Ok(()),
            }
        }
        Phase::Activating => {
            let root_key = j.next_root_key.clone().map(String::into_bytes);
            write(
                Some(Journal {
                    phase: Phase::Active,
                    activated_at: Some(now.unix_timestamp()),
                    ..j
                }),
                root_key,
            )
        }
        Phase::Active => match j.activated_at {
            Some(at) if now.unix_timestamp() >= at + settings.retire_after.as_secs() as i64 => {
                info!("CA rotation: retiring the old root");
                write(Some(j.with_phase(Phase::Retiring)), None)
            }
            _ => return Ok(()),
        },
    };
    Ok(store.write_custody(snap, &next).await?)
}

/// Sets the expiry gauges for `bundle`.
pub fn publish_expiry(metrics: &Metrics, bundle: &Bundle) {
    metrics
        .issuercert_expiry
        .set(bundle.issuer_not_after.unix_timestamp());
    metrics
        .rootcert_expiry
        .set(bundle.anchors_not_after.unix_timestamp());
}

/// How long to wait between store checks when nothing else is configured.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
