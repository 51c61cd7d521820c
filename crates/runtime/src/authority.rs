//! The live certificate authority: the current [`Signer`] and the [`Lifetimes`] it applies.
//! The signer sits behind an atomic swap, so the request path reads it without a lock and a new
//! bundle takes effect for the next request without a restart. Each replacement is also published
//! on a `watch` channel ([`Ca::subscribe`]) for the tasks that follow the signer (the serving
//! certificate); the request path never touches that channel. Rotation replaces the signer; it
//! never reaches the tasks that follow it.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rcgen::PublicKeyData;
use sentry_core::ca::{IssueError, Issued, Lifetimes, Signer};
use sentry_core::spiffe::SpiffeId;
use time::OffsetDateTime;
use tokio::sync::watch;

/// The CA: the current signer plus the lifetimes it applies.
pub struct Ca {
    signer: ArcSwap<Signer>,
    /// The same signer, for followers: sent after `signer` is swapped, so a woken follower signs
    /// with the new one.
    published: watch::Sender<Arc<Signer>>,
    lifetimes: Lifetimes,
}

impl Ca {
    /// A CA that signs with `signer`.
    pub fn new(signer: Signer, lifetimes: Lifetimes) -> Self {
        let signer = Arc::new(signer);
        Self {
            signer: ArcSwap::new(signer.clone()),
            published: watch::Sender::new(signer),
            lifetimes,
        }
    }

    /// The signer in effect now.
    pub fn signer(&self) -> Arc<Signer> {
        self.signer.load_full()
    }

    /// Makes `signer` the one used for every following request, then tells every follower.
    pub fn replace(&self, signer: Signer) {
        let signer = Arc::new(signer);
        self.signer.store(signer.clone());
        self.published.send_replace(signer);
    }

    /// Follows the signer: the receiver has seen the current one and wakes at each replacement.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Signer>> {
        self.published.subscribe()
    }

    /// The lifetimes applied to issued certificates.
    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    /// Signs a certificate for `key` as `id` with the current signer, as of now.
    pub fn sign(
        &self,
        key: &impl PublicKeyData,
        id: &SpiffeId,
        dns_names: &[String],
    ) -> Result<Issued, IssueError> {
        self.sign_with(&self.signer.load(), key, id, dns_names)
    }

    /// Signs a certificate for `key` as `id` with `signer` (one taken from [`Ca::signer`], for a
    /// caller that also needs that signer's chain) under this CA's lifetimes, as of now.
    pub fn sign_with(
        &self,
        signer: &Signer,
        key: &impl PublicKeyData,
        id: &SpiffeId,
        dns_names: &[String],
    ) -> Result<Issued, IssueError> {
        signer.sign(
            key,
            id,
            dns_names,
            self.lifetimes.ttl,
            self.lifetimes.allowed_clock_skew,
            OffsetDateTime::now_utc(),
        )
    }
}
