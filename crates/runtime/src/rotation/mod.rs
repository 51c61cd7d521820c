//! Rotation: keeps the served bundle current without restarts. At start-up [`bootstrap`] finishes
//! any interrupted renewal or rotation, migrates custody data of an earlier version's layout, and
//! loads (or generates) the bundle. Then [`Rotator`] runs forever: it reloads a bundle changed in
//! the store (verified first; a bad one is refused and counted while the last good one keeps
//! serving), renews the issuer before it expires, rotates the root in phases (prepare → publish →
//! activate → retire, see [`journal`]), and warns when a CA it cannot renew itself is about to
//! expire. It reads the store only when told of a change ([`Changes`]) and at times computed from
//! the bundle and the journal (renewal due, end of a phase), never on a fixed short period.

pub mod journal;
mod policy;

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tracing::{error, info, warn};

pub use journal::{Journal, Phase};
pub use policy::{matching_root, prepare_rotation, Settings};

use crate::server::tls::ServingCert;
use crate::store::changes::Changes;
use crate::store::rbac::{refused_publish, refused_write};
use crate::store::{Custody, Files, Snapshot, Store, StoreError};
use crate::telemetry::Metrics;
use sentry_core::bundle::{self, Bundle, BundleError, BundlePart};
use sentry_core::ca::{Ca, Signer};

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
    // RBAC refused to update the bundle: serve what is stored.
    let mut read_only = false;
    for _ in 0..20 {
        let snap = store.snapshot().await?;
        let now = OffsetDateTime::now_utc();
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

/// What a renewal or rotation step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// It wrote to the store: read again at once.
    Wrote,
    /// Nothing to do before this time (`None`: until the store changes).
    WaitUntil(Option<OffsetDateTime>),
}

/// Retry after a failed check starts here and doubles up to the resync interval.
const RETRY_MIN: Duration = Duration::from_millis(500);

/// The earlier of two optional times.
fn earliest(a: Option<OffsetDateTime>, b: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
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

    /// Checks the store when `changes` says so and when a renewal or rotation step is due, forever.
    pub async fn run(mut self, changes: Changes) {
        let mut retry = RETRY_MIN;
        // Start-up has just read the store: the first check comes after a check interval.
        let mut wake = Some(self.settings.interval);
        loop {
            match wake {
                Some(d) if d.is_zero() => {}
                Some(d) => tokio::select! {
                    () = changes.next() => {}
                    () = tokio::time::sleep(d) => {}
                },
                None => changes.next().await,
            }
            wake = match self.step().await {
                Ok(at) => {
                    retry = RETRY_MIN;
                    at.map(|at| {
                        Duration::try_from(at - OffsetDateTime::now_utc()).unwrap_or_default()
                    })
                }
                Err(RotationError::Store(StoreError::Conflict(_))) => Some(RETRY_MIN),
                Err(e) => {
                    warn!(error = %e, "CA rotation check failed; retrying");
                    let wait = retry;
                    retry = (retry * 2).min(self.settings.resync.max(RETRY_MIN));
                    Some(wait)
                }
            };
        }
    }

    /// One check: serve a changed bundle, advance a journal, start a renewal or rotation when
    /// due. Returns when to check again without a change notification (`None`: not before one).
    pub async fn step(&mut self) -> Result<Option<OffsetDateTime>, RotationError> {
        let snap = self.store.snapshot().await?;
        let Some(files) = snap.files.clone() else {
            return Ok(None);
        };
        let now = OffsetDateTime::now_utc();
        // Serve what is stored first (a step of a renewal or rotation included), then go on.
        if files != self.last_seen {
            if self.reload(&files, now).await {
                // Judge a bad bundle again once it has stayed the same for a check interval.
                return Ok(Some(now + self.settings.interval));
            }
        } else if self.unpublished {
            self.publish().await;
        }
        let journal = journal_of(&snap)?;
        let mut wake = None;
        if let Some(j) = journal.clone() {
            match advance(&self.store, &self.settings, &snap, &files, j, now).await {
                Ok(Progress::Wrote) => return Ok(Some(now)),
                Ok(Progress::WaitUntil(at)) => wake = at,
                Err(RotationError::Store(e)) if refused_write(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if self.unpublished {
            wake = earliest(wake, Some(now + PUBLISH_RETRY));
        }
        if journal.is_none() {
            match self.start_if_due(&snap, now).await {
                Ok(at) => wake = earliest(wake, at),
                Err(RotationError::Store(e)) if refused_write(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(wake)
    }

    /// Makes the distributed anchors follow `last_seen`; on failure, tried again after
    /// [`PUBLISH_RETRY`] (a refused permission: after the next change).
    async fn publish(&mut self) {
        match self.store.publish(&self.last_seen).await {
            Ok(()) => self.unpublished = false,
            Err(e) if refused_publish(&e) => self.unpublished = false,
            Err(e) => {
                if !self.unpublished {
                    warn!(error = %e, "could not publish the changed trust anchors; retrying");
                }
                self.unpublished = true;
            }
        }
    }

    /// Loads a changed bundle; true when it is bad and seen for the first time (judged later).
    async fn reload(&mut self, files: &Files, now: OffsetDateTime) -> bool {
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
            return true;
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
        false
    }

    /// Starts a renewal or rotation when due; returns when the next one is due.
    async fn start_if_due(
        &mut self,
        snap: &Snapshot,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, RotationError> {
        let signer = self.ca.signer();
        let bundle = signer.bundle();
        let root_key = snap
            .custody
            .root_key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| policy::matching_root(bundle, k).map(|root| (root, k.to_owned())));
        let Some((root_pem, root_key)) = root_key else {
            return Ok(Some(self.warn_if_expiring(bundle, now)));
        };
        self.metrics.ca_expiry_warning.set(0);
        let root_due = policy::root_due_at(bundle, &self.settings)
            .filter(|_| self.settings.auto_root_rotation);
        let issuer_due = policy::issuer_due_at(bundle, &self.settings);
        let journal = if root_due.is_some_and(|t| now > t) {
            info!("Root certificate nearing expiry: starting a root rotation");
            Some(policy::prepare_rotation(&self.settings, now)?)
        } else if issuer_due.is_some_and(|t| now > t) {
            let (cert, key) =
                bundle::new_issuer(&self.settings.params, root_pem.as_bytes(), &root_key, now)
                    .map_err(|source| RotationError::Invalid {
                        location: self.store.describe(BundlePart::IssuerChain),
                        source,
                    })?;
            if !policy::extends(&cert, bundle) {
                return Ok(root_due); // capped by the root: only a root rotation helps
            }
            info!("Issuer certificate nearing expiry: renewing it under the same root");
            Some(Journal::renewing(cert, key))
        } else {
            None
        };
        let Some(j) = journal else {
            return Ok(earliest(root_due, issuer_due));
        };
        let custody = Custody {
            root_key: snap.custody.root_key.clone(),
            journal: Some(j.to_bytes()),
        };
        self.store.write_custody(snap, &custody).await?;
        Ok(Some(now))
    }

    /// Warns (at most hourly) when a CA Sentry cannot renew expires soon; returns when to look
    /// again.
    fn warn_if_expiring(&mut self, bundle: &Bundle, now: OffsetDateTime) -> OffsetDateTime {
        let first = bundle.issuer_not_after.min(bundle.anchors_not_after);
        if first - now > self.settings.expiry_warning {
            self.metrics.ca_expiry_warning.set(0);
            return first - self.settings.expiry_warning;
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
        now + time::Duration::hours(1)
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
) -> Result<Progress, RotationError> {
    let desired = j.desired_files(files);
    if desired != *files {
        verify(store, &desired, now)?;
        info!(phase = ?j.phase, "CA rotation: updating the trust bundle");
        store.write_files(snap, &desired).await?;
        return Ok(Progress::Wrote);
    }
    let at = |t: i64, wait: Duration| {
        OffsetDateTime::from_unix_timestamp(t + wait.as_secs() as i64).ok()
    };
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
                    // The stored anchors hold the new root (`desired`); publishing them (a no-op
                    // when the ConfigMap already follows) is what this phase waits for.
                    match store.publish(files).await {
                        Ok(()) => {}
                        Err(e) if refused_publish(&e) => return Ok(Progress::WaitUntil(None)),
                        Err(e) => return Err(e.into()),
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
                Some(t) if now.unix_timestamp() >= t + settings.grace.as_secs() as i64 => {
                    info!("CA rotation: activating the new issuer");
                    write(Some(j.with_phase(Phase::Activating)), None)
                }
                Some(t) => return Ok(Progress::WaitUntil(at(t, settings.grace))),
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
            Some(t) if now.unix_timestamp() >= t + settings.retire_after.as_secs() as i64 => {
                info!("CA rotation: retiring the old root");
                write(Some(j.with_phase(Phase::Retiring)), None)
            }
            Some(t) => return Ok(Progress::WaitUntil(at(t, settings.retire_after))),
            None => return Ok(Progress::WaitUntil(None)),
        },
    };
    store.write_custody(snap, &next).await?;
    Ok(Progress::Wrote)
}

/// How soon the rotator tries again to make the ConfigMap follow the Secret after a failure.
const PUBLISH_RETRY: Duration = Duration::from_secs(5);

/// Sets the expiry gauges for `bundle`.
pub fn publish_expiry(metrics: &Metrics, bundle: &Bundle) {
    metrics
        .issuercert_expiry
        .set(bundle.issuer_not_after.unix_timestamp());
    metrics
        .rootcert_expiry
        .set(bundle.anchors_not_after.unix_timestamp());
}

/// How long to wait between checks of a directory store when nothing else is configured.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// How often the Kubernetes store is re-read without a change when nothing else is configured.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);
