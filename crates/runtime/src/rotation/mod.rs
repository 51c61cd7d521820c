//! Rotation: keeps the served bundle current without restarts. At start-up [`bootstrap`] finishes
//! any interrupted renewal or rotation, migrates custody data of an earlier version's layout, and
//! loads (or generates) the bundle. Then [`Rotator`] runs forever: it reloads a bundle changed in
//! the store into the CA (which publishes its signer to whoever follows it), renews the issuer
//! before it expires, rotates the root in phases (prepare → publish → activate → retire, see
//! [`journal`], one step at a time), and warns when a CA it cannot renew itself is about to
//! expire. It reads the store only when told of a change ([`Changes`](crate::store::changes)) and
//! at times computed from the bundle and the journal (renewal due, end of a phase), never on a
//! fixed short period; every decision takes the time from a [`Clock`].
//!
//! Must not reach into the servers or the configuration: it updates the [`Ca`](crate::authority::Ca),
//! and takes its [`Settings`] from whoever builds them.

mod advance;
mod bootstrap;
mod clock;
pub mod journal;
#[cfg(test)]
mod phase_tests;
mod policy;
mod rotator;

use std::time::Duration;

use time::OffsetDateTime;

pub use advance::run_to_completion;
pub use bootstrap::{bootstrap, Loaded};
pub use clock::{Clock, SystemClock};
pub use journal::{Journal, Phase};
pub use policy::{matching_root, prepare_rotation, Settings};
pub use rotator::Rotator;

use crate::store::{Files, Snapshot, Store, StoreError};
use crate::telemetry::Metrics;
use sentry_core::bundle::{self, Bundle, BundleError};

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
    /// A journal is stored but the bundle it changes is not.
    #[error("bundle disappeared")]
    NoBundle,
    /// [`run_to_completion`] stopped with the journal still open in this phase.
    #[error("the CA rotation did not finish: it waits in phase {0:?}")]
    Unfinished(Phase),
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
