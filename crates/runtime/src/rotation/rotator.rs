//! The long-lived rotation task: serves a bundle changed in the store (verified first; a bad one
//! is refused and counted while the last good one keeps serving) by replacing the CA's signer,
//! starts a renewal or root rotation when due, steps an open journal one step at a time, and
//! warns when a CA it cannot renew itself is about to expire. Every decision reads the time from
//! its [`Clock`]. Knows nothing of the servers: whoever follows the CA's signer
//! ([`Ca::subscribe`]) learns of a change from the CA.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tracing::{error, info, warn};

use super::advance::{advance, Progress};
use super::{journal_of, policy, publish_expiry, verify, Clock, Journal, RotationError, Settings};
use super::{SystemClock, PUBLISH_RETRY};
use crate::authority::Ca;
use crate::store::changes::Changes;
use crate::store::rbac::{refused_publish, refused_write};
use crate::store::{Custody, Files, Snapshot, Store, StoreError};
use crate::telemetry::Metrics;
use sentry_core::bundle::{self, Bundle, BundleError, BundlePart};
use sentry_core::ca::Signer;

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
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    last_seen: Files,
    unsettled: Option<Files>,
    /// The distributed anchors (the ConfigMap) could not be made to follow `last_seen` yet.
    unpublished: bool,
    last_warning: Option<OffsetDateTime>,
}

impl Rotator {
    /// A rotator on the system clock for the bundle `served` (as stored) that `ca` signs with now.
    pub fn new(
        store: Store,
        settings: Settings,
        ca: Arc<Ca>,
        metrics: Arc<Metrics>,
        served: Files,
    ) -> Self {
        Self {
            store,
            settings,
            ca,
            metrics,
            clock: Arc::new(SystemClock),
            last_seen: served,
            unsettled: None,
            unpublished: false,
            last_warning: None,
        }
    }

    /// The same rotator deciding by `clock`.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
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
                    at.map(|at| Duration::try_from(at - self.clock.now()).unwrap_or_default())
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
        let now = self.clock.now();
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
                // The CA publishes it: the serving certificate follows on its own.
                self.ca.replace(signer);
                info!("Trust bundle changed: now signing with it");
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
