//! How a journal moves: [`advance`] takes one step of a renewal or root rotation (the bundle its
//! phase requires, then the next phase once that phase's wait has passed), and
//! [`run_to_completion`] takes steps until the journal is closed, for the CLI. Decides nothing
//! about *starting* a renewal or rotation; that is [`super::Rotator`].

use std::time::Duration;

use time::OffsetDateTime;
use tracing::info;

use super::{journal_of, verify, Clock, Journal, Phase, RotationError, Settings};
use crate::store::rbac::refused_publish;
use crate::store::{Custody, Files, Snapshot, Store, StoreError};

/// What a renewal or rotation step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    /// It wrote to the store: read again at once.
    Wrote,
    /// Nothing to do before this time (`None`: until the store changes).
    WaitUntil(Option<OffsetDateTime>),
}

/// Moves a renewal or rotation one step: first the bundle its phase requires, then the next
/// phase once its condition holds. Each call writes at most one thing.
pub(super) async fn advance(
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

/// The most writes one phase takes: its bundle, its journal fields, its next phase.
const STEPS_PER_PHASE: usize = 3;

/// Steps the stored journal until it is closed (the state machine's own "done"), as of `clock`'s
/// time; nothing stored is done already. A lost compare-and-swap (a running Sentry taking the same
/// step) re-reads and counts as a step. Fails with [`RotationError::Unfinished`] when a phase
/// waits (for time or a change) or the journal is still open after every phase had its steps.
pub async fn run_to_completion(
    store: &Store,
    settings: &Settings,
    clock: &dyn Clock,
) -> Result<(), RotationError> {
    for _ in 0..STEPS_PER_PHASE * Phase::ALL.len() {
        let snap = store.snapshot().await?;
        let Some(journal) = journal_of(&snap)? else {
            return Ok(());
        };
        let phase = journal.phase;
        let files = snap.files.clone().ok_or(RotationError::NoBundle)?;
        match advance(store, settings, &snap, &files, journal, clock.now()).await {
            Ok(Progress::Wrote) | Err(RotationError::Store(StoreError::Conflict(_))) => {}
            Ok(Progress::WaitUntil(_)) => return Err(RotationError::Unfinished(phase)),
            Err(e) => return Err(e),
        }
    }
    match journal_of(&store.snapshot().await?)? {
        None => Ok(()),
        Some(j) => Err(RotationError::Unfinished(j.phase)),
    }
}
