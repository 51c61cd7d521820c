//! Unit tests of each phase of the rotator, driven by a hand-moved clock: no server, no sleeping. A file store in
//! a temporary directory holds the bundle and the journal; every test asserts on the stored files,
//! the journal and the signer the CA publishes to its followers. Phases: renew (the issuer renewed
//! before it expires), prepare, publish, activate, retire, resume after a crash (a journal left
//! mid-phase finished at start-up), and the CLI's one-call drive to completion.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::authority::Ca;
use crate::rotation::{self, Clock, Journal, Phase, RotationError, Rotator, Settings};
use crate::store::file::{CredentialPaths, FileStore};
use crate::store::{Custody, Store};
use crate::telemetry::Metrics;
use sentry_core::bundle::{CaParams, KeyType};
use sentry_core::ca::{Lifetimes, Signer};
use sentry_core::spiffe::TrustDomain;
use tempfile::TempDir;
use time::OffsetDateTime;
use tokio::sync::watch;

const DAY: time::Duration = time::Duration::days(1);
const SECOND: time::Duration = time::Duration::seconds(1);
const GRACE: Duration = Duration::from_secs(3600);
const RETIRE_AFTER: Duration = Duration::from_secs(7200);

/// A clock that moves only when told.
struct ManualClock(Mutex<OffsetDateTime>);

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

/// Where every test starts: a whole second, so certificate times (whole seconds) compare exactly.
fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap()
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

/// Root 90 days; issuer `issuer_days`; a third of the life left triggers renewal.
fn settings(issuer_days: u64, auto_root_rotation: bool) -> Settings {
    let mut params = CaParams::new(
        TrustDomain::public(),
        "default",
        KeyType::Ed25519,
        Duration::ZERO,
    );
    params.root_ttl = days(90);
    params.issuer_ttl = days(issuer_days);
    Settings {
        grace: GRACE,
        retire_after: RETIRE_AFTER,
        auto_root_rotation,
        ..Settings::new(params)
    }
}

fn ders(pem_bytes: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(pem_bytes)
        .unwrap()
        .into_iter()
        .map(|b| b.into_contents())
        .collect()
}

fn store_at(dir: &Path) -> Store {
    Store::File(FileStore::new(CredentialPaths::new(
        dir,
        "ca.crt",
        "issuer.crt",
        "issuer.key",
    )))
}

struct Harness {
    _tmp: TempDir,
    dir: PathBuf,
    store: Store,
    settings: Settings,
    clock: Arc<ManualClock>,
    rotator: Rotator,
    signers: watch::Receiver<Arc<Signer>>,
}

impl Harness {
    /// Generates a bundle at [`t0`] and starts a rotator (and a follower of the CA) on it.
    async fn start(settings: Settings) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("creds");
        let store = store_at(&dir);
        let clock = Arc::new(ManualClock(Mutex::new(t0())));
        let loaded = rotation::bootstrap(&store, &settings, clock.as_ref())
            .await
            .unwrap();
        assert!(loaded.generated);
        Self::on(tmp, dir, store, settings, clock, loaded)
    }

    fn on(
        tmp: TempDir,
        dir: PathBuf,
        store: Store,
        settings: Settings,
        clock: Arc<ManualClock>,
        loaded: rotation::Loaded,
    ) -> Self {
        let ca = Arc::new(Ca::new(
            Signer::new(loaded.bundle).unwrap(),
            Lifetimes {
                ttl: Duration::from_secs(3600),
                allowed_clock_skew: Duration::ZERO,
            },
        ));
        let signers = ca.subscribe();
        let rotator = Rotator::new(
            store.clone(),
            settings.clone(),
            ca,
            Arc::new(Metrics::new().unwrap()),
            loaded.files,
        )
        .with_clock(clock.clone());
        Self {
            _tmp: tmp,
            dir,
            store,
            settings,
            clock,
            rotator,
            signers,
        }
    }

    fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    fn set_time(&self, t: OffsetDateTime) {
        *self.clock.0.lock().unwrap() = t;
    }

    /// One rotator check; when it wants to look again.
    async fn step(&mut self) -> Option<OffsetDateTime> {
        self.rotator.step().await.unwrap()
    }

    fn read(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(name)).ok()
    }

    fn file(&self, name: &str) -> Vec<u8> {
        self.read(name).unwrap()
    }

    fn journal(&self) -> Option<Journal> {
        self.read("rotation.json")
            .map(|j| Journal::parse(&j).unwrap())
    }

    /// The signer the CA published since the last call, if any.
    fn published(&mut self) -> Option<Arc<Signer>> {
        self.signers
            .has_changed()
            .unwrap()
            .then(|| self.signers.borrow_and_update().clone())
    }

    /// The bundle files as they are now.
    fn files(&self) -> [Vec<u8>; 3] {
        ["ca.crt", "issuer.crt", "issuer.key"].map(|n| self.file(n))
    }
}

fn issuer_of(signer: &Signer) -> Vec<u8> {
    signer.bundle().issuer_chain[0].to_vec()
}

fn anchors_of(signer: &Signer) -> Vec<Vec<u8>> {
    signer.bundle().anchors.iter().map(|a| a.to_vec()).collect()
}

/// With a 90-day root and the renewal at a third of life left: the root is due at day 60.
fn root_due() -> OffsetDateTime {
    t0() + 60 * DAY
}

#[tokio::test]
async fn renew_replaces_the_issuer_before_it_expires() {
    let mut h = Harness::start(settings(30, false)).await;
    let old_issuer = ders(&h.file("issuer.crt"));
    let old_anchors = h.file("ca.crt");
    let old_not_after = t0() + 30 * DAY;

    // A 30-day issuer is due when 10 days are left: the rotator says when, and writes nothing.
    let due = t0() + 20 * DAY;
    assert_eq!(h.step().await, Some(due));
    h.set_time(due);
    assert_eq!(h.step().await, Some(due), "not before it is due");
    assert!(h.journal().is_none());

    // Due: the journal comes first, the bundle is untouched.
    h.set_time(due + SECOND);
    assert_eq!(h.step().await, Some(h.now()));
    let j = h.journal().expect("a renewal journal");
    assert_eq!(j.phase, Phase::Renewing);
    assert!(j.next_root_cert.is_none());
    assert_eq!(ders(&h.file("issuer.crt")), old_issuer);
    assert!(h.published().is_none());

    // Then the new issuer is stored, under the same root.
    assert_eq!(h.step().await, Some(h.now()));
    assert_eq!(h.file("issuer.crt"), j.next_issuer_cert.as_bytes());
    assert_eq!(h.file("issuer.key"), j.next_issuer_key.as_bytes());
    assert_eq!(h.file("ca.crt"), old_anchors);

    // The rotator serves it (the CA publishes the new signer) and closes the journal.
    assert_eq!(h.step().await, Some(h.now()));
    let signer = h.published().expect("the CA published the renewed signer");
    assert_eq!(issuer_of(&signer), ders(j.next_issuer_cert.as_bytes())[0]);
    assert!(h.journal().is_none(), "renewal complete");
    assert!(
        h.now() < old_not_after,
        "renewed before the old issuer expired"
    );
    assert_eq!(signer.bundle().issuer_not_after, due + SECOND + 30 * DAY);

    // Nothing more until the new issuer is due in turn.
    assert_eq!(h.step().await, Some(due + SECOND + 20 * DAY));
    assert!(h.published().is_none());
}

/// Moves `h` to the root's due time and lets the rotator prepare a rotation.
async fn prepared(h: &mut Harness) -> Journal {
    h.set_time(root_due() + SECOND);
    assert_eq!(h.step().await, Some(h.now()));
    h.journal().expect("a rotation journal")
}

#[tokio::test]
async fn prepare_writes_a_new_root_into_the_journal_only() {
    // An 89-day issuer is due (day 59.3) just before the 90-day root (day 60): past both, the root
    // rotation wins.
    let mut h = Harness::start(settings(89, true)).await;
    let before = h.files();
    let root_key = h.file("root.key");
    let j = prepared(&mut h).await;
    assert_eq!(j.phase, Phase::Prepared);
    let next_root = ders(j.next_root_cert.as_deref().unwrap().as_bytes());
    assert_eq!(next_root.len(), 1);
    assert!(!ders(&before[0]).contains(&next_root[0]), "a fresh root");
    assert!(j.next_root_key.is_some());
    assert_ne!(j.next_issuer_cert.as_bytes(), before[1]);
    assert_eq!((j.published_at, j.activated_at), (None, None));
    assert_eq!(h.files(), before, "nothing distributed yet");
    assert_eq!(h.file("root.key"), root_key);
    assert!(h.published().is_none());
}

/// Carries a prepared rotation through the publish phase.
async fn published(h: &mut Harness) -> Journal {
    let j = prepared(h).await;
    assert_eq!(h.step().await, Some(h.now()));
    assert_eq!(h.journal().unwrap().phase, Phase::Published);
    assert_eq!(h.step().await, Some(h.now())); // the anchors
    assert_eq!(h.step().await, Some(h.now())); // served, then observed published
    j
}

#[tokio::test]
async fn publish_adds_the_new_root_beside_the_old_and_records_when() {
    let mut h = Harness::start(settings(89, true)).await;
    let before = h.files();
    let j = prepared(&mut h).await;
    let new_root = ders(j.next_root_cert.as_deref().unwrap().as_bytes());

    assert_eq!(h.step().await, Some(h.now()));
    let p = h.journal().unwrap();
    assert_eq!((p.phase, p.published_at), (Phase::Published, None));
    assert_eq!(h.files(), before, "journal first");

    assert_eq!(h.step().await, Some(h.now()));
    let mut both = ders(&before[0]);
    both.extend(new_root);
    assert_eq!(ders(&h.file("ca.crt")), both);
    assert_eq!(
        h.file("issuer.crt"),
        before[1],
        "the old issuer still signs"
    );
    assert_eq!(h.file("issuer.key"), before[2]);

    assert_eq!(h.step().await, Some(h.now()));
    let signer = h.published().expect("the CA published the wider anchors");
    assert_eq!(anchors_of(&signer), both);
    assert_eq!(issuer_of(&signer), ders(&before[1])[0]);
    let p = h.journal().unwrap();
    assert_eq!(p.phase, Phase::Published);
    assert_eq!(p.published_at, Some(h.now().unix_timestamp()));
}

/// Carries a published rotation through activation; returns the journal as activated.
async fn activated(h: &mut Harness) -> Journal {
    published(h).await;
    h.set_time(h.now() + GRACE);
    assert_eq!(h.step().await, Some(h.now()));
    assert_eq!(h.step().await, Some(h.now())); // the new issuer
    assert_eq!(h.step().await, Some(h.now())); // served, then active
    h.journal().unwrap()
}

#[tokio::test]
async fn activate_installs_the_new_issuer_after_the_grace_period() {
    let mut h = Harness::start(settings(89, true)).await;
    let j = published(&mut h).await;
    let published_at = h.now();
    let anchors = h.file("ca.crt");
    h.published();

    // Within the grace period: nothing happens, and the rotator says when it ends.
    assert_eq!(h.step().await, Some(published_at + GRACE));
    h.set_time(published_at + GRACE - SECOND);
    assert_eq!(h.step().await, Some(published_at + GRACE));
    assert_eq!(h.journal().unwrap().phase, Phase::Published);

    h.set_time(published_at + GRACE);
    assert_eq!(h.step().await, Some(h.now()));
    assert_eq!(h.journal().unwrap().phase, Phase::Activating);
    assert!(h.published().is_none());

    assert_eq!(h.step().await, Some(h.now()));
    assert_eq!(h.file("issuer.crt"), j.next_issuer_cert.as_bytes());
    assert_eq!(h.file("issuer.key"), j.next_issuer_key.as_bytes());
    assert_eq!(h.file("ca.crt"), anchors, "both roots stay");

    assert_eq!(h.step().await, Some(h.now()));
    let signer = h.published().expect("the CA published the new issuer");
    assert_eq!(issuer_of(&signer), ders(j.next_issuer_cert.as_bytes())[0]);
    let a = h.journal().unwrap();
    assert_eq!(a.phase, Phase::Active);
    assert_eq!(a.activated_at, Some(h.now().unix_timestamp()));
    assert_eq!(
        h.file("root.key"),
        j.next_root_key.unwrap().as_bytes(),
        "Sentry now keeps the new root's key"
    );
}

#[tokio::test]
async fn retire_drops_the_old_root_after_the_wait_and_closes_the_journal() {
    let mut h = Harness::start(settings(89, true)).await;
    let j = activated(&mut h).await;
    let activated_at = h.now();
    let issuer = h.file("issuer.crt");
    h.published();

    assert_eq!(h.step().await, Some(activated_at + RETIRE_AFTER));
    h.set_time(activated_at + RETIRE_AFTER - SECOND);
    assert_eq!(h.step().await, Some(activated_at + RETIRE_AFTER));
    assert_eq!(h.journal().unwrap().phase, Phase::Active);

    h.set_time(activated_at + RETIRE_AFTER);
    assert_eq!(h.step().await, Some(h.now()));
    assert_eq!(h.journal().unwrap().phase, Phase::Retiring);

    assert_eq!(h.step().await, Some(h.now()));
    let new_root = j.next_root_cert.unwrap();
    assert_eq!(h.file("ca.crt"), new_root.as_bytes(), "only the new root");
    assert_eq!(h.file("issuer.crt"), issuer);

    assert_eq!(h.step().await, Some(h.now()));
    let signer = h
        .published()
        .expect("the CA published the narrowed anchors");
    assert_eq!(anchors_of(&signer), ders(new_root.as_bytes()));
    assert!(h.journal().is_none(), "rotation complete");
    // The next renewal is due on the new root's schedule (the new issuer, 89 days, first).
    let next = h.step().await.unwrap();
    assert!(next > h.now() + 50 * DAY, "{next}");
}

#[tokio::test]
async fn a_journal_left_mid_phase_is_finished_at_start_up_and_then_stepped_on() {
    // A process wrote an Activating journal and was killed before installing the new issuer.
    let settings = settings(89, true);
    let first = Harness::start(settings.clone()).await;
    first.set_time(root_due() + SECOND);
    let crash_time = first.now();
    let j = Journal {
        published_at: Some(crash_time.unix_timestamp()),
        ..rotation::prepare_rotation(&settings, crash_time)
            .unwrap()
            .with_phase(Phase::Activating)
    };
    let snap = first.store.snapshot().await.unwrap();
    first
        .store
        .write_custody(
            &snap,
            &Custody {
                root_key: snap.custody.root_key.clone(),
                journal: Some(j.to_bytes()),
            },
        )
        .await
        .unwrap();
    let old = first.files();
    let Harness {
        _tmp, dir, store, ..
    } = first;

    // Start-up installs what the phase requires: both roots, the new issuer.
    let clock = Arc::new(ManualClock(Mutex::new(crash_time + SECOND)));
    let loaded = rotation::bootstrap(&store, &settings, clock.as_ref())
        .await
        .unwrap();
    assert!(!loaded.generated);
    assert_eq!(
        issuer_of(&Signer::new(loaded.bundle.clone()).unwrap()),
        ders(j.next_issuer_cert.as_bytes())[0]
    );
    let mut h = Harness::on(_tmp, dir, store, settings, clock, loaded);
    let mut both = ders(&old[0]);
    both.extend(ders(j.next_root_cert.as_deref().unwrap().as_bytes()));
    assert_eq!(ders(&h.file("ca.crt")), both);
    assert_eq!(h.file("issuer.crt"), j.next_issuer_cert.as_bytes());
    assert_eq!(h.journal().unwrap().phase, Phase::Activating);

    // The first check takes the phase's own next step: active, the new root key kept.
    assert_eq!(h.step().await, Some(h.now()));
    let a = h.journal().unwrap();
    assert_eq!(a.phase, Phase::Active);
    assert_eq!(a.activated_at, Some(h.now().unix_timestamp()));
    assert_eq!(h.file("root.key"), j.next_root_key.unwrap().as_bytes());
    assert!(h.published().is_none(), "started on the resumed bundle");
}

#[tokio::test]
async fn run_to_completion_closes_a_renewal_and_refuses_to_wait() {
    let settings = settings(30, false);
    let h = Harness::start(settings.clone()).await;
    let clock = ManualClock(Mutex::new(t0() + DAY));
    let write_journal = |j: Journal| {
        let store = h.store.clone();
        async move {
            let snap = store.snapshot().await.unwrap();
            let custody = Custody {
                root_key: snap.custody.root_key.clone(),
                journal: Some(j.to_bytes()),
            };
            store.write_custody(&snap, &custody).await.unwrap();
        }
    };

    // Nothing open: done at once.
    rotation::run_to_completion(&h.store, &h.settings, &clock)
        .await
        .unwrap();

    let root = h.file("ca.crt");
    let root_key = String::from_utf8(h.file("root.key")).unwrap();
    let (cert, key) =
        sentry_core::bundle::new_issuer(&settings.params, &root, &root_key, clock.now()).unwrap();
    write_journal(Journal::renewing(cert.clone(), key)).await;
    rotation::run_to_completion(&h.store, &h.settings, &clock)
        .await
        .unwrap();
    assert!(h.journal().is_none());
    assert_eq!(h.file("issuer.crt"), cert.as_bytes());

    // A phase that waits (the grace period) cannot finish in one call: an error, not a loop.
    write_journal(Journal {
        published_at: Some(clock.now().unix_timestamp()),
        ..rotation::prepare_rotation(&settings, clock.now())
            .unwrap()
            .with_phase(Phase::Published)
    })
    .await;
    let err = rotation::run_to_completion(&h.store, &h.settings, &clock)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RotationError::Unfinished(Phase::Published)),
        "{err}"
    );
}
