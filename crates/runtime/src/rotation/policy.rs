//! When to renew and rotate, and what a new rotation starts with.

use std::time::Duration;

use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use super::{Journal, Phase, RotationError};
use sentry_core::bundle::{self, Bundle, BundlePart, CaParams};

/// Rotation settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What a generated root and issuer look like.
    pub params: CaParams,
    /// Renew when less than this fraction of a certificate's life remains.
    pub renew_fraction: f64,
    /// Wait after the new root is observed published before activating the new issuer.
    pub grace: Duration,
    /// Wait after activation before the old root is retired.
    pub retire_after: Duration,
    /// Rotate the root automatically before it expires (when Sentry holds the root key).
    pub auto_root_rotation: bool,
    /// How often a directory store is checked (and a bad bundle re-judged).
    pub interval: Duration,
    /// How often the Kubernetes store is re-read without a change notification.
    pub resync: Duration,
    /// Warn this long before expiry when Sentry cannot renew by itself.
    pub expiry_warning: time::Duration,
}

impl Settings {
    /// Settings for `params` with nothing to wait for: renew at a third of the life left, no grace
    /// before activation, no wait before retirement, no automatic root rotation, the default check
    /// intervals, a warning 30 days before an expiry Sentry cannot renew. What a one-shot step
    /// outside a running Sentry (the CLI) uses; a server overrides the fields it is configured for.
    pub fn new(params: CaParams) -> Self {
        Self {
            params,
            renew_fraction: 1.0 / 3.0,
            grace: Duration::ZERO,
            retire_after: Duration::ZERO,
            auto_root_rotation: false,
            interval: super::DEFAULT_INTERVAL,
            resync: super::DEFAULT_RESYNC,
            expiry_warning: time::Duration::days(30),
        }
    }
}

/// The moment less than `fraction` of the life from `not_before` to `not_after` remains.
fn due_at(not_before: OffsetDateTime, not_after: OffsetDateTime, fraction: f64) -> OffsetDateTime {
    let life = not_after - not_before;
    if life <= time::Duration::ZERO {
        return not_before;
    }
    not_after - life * fraction
}

fn validity(der: &[u8]) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    Some((
        c.validity().not_before.to_datetime(),
        c.validity().not_after.to_datetime(),
    ))
}

/// When the issuer has less than the renewal fraction of its life left.
pub(super) fn issuer_due_at(bundle: &Bundle, s: &Settings) -> Option<OffsetDateTime> {
    let (nb, na) = bundle.issuer_chain.first().and_then(|c| validity(c))?;
    Some(due_at(nb, na, s.renew_fraction))
}

/// When the first anchor to expire has less than the renewal fraction of its life left.
pub(super) fn root_due_at(bundle: &Bundle, s: &Settings) -> Option<OffsetDateTime> {
    bundle
        .anchors
        .iter()
        .filter_map(|c| validity(c))
        .map(|(nb, na)| due_at(nb, na, s.renew_fraction))
        .min()
}

/// True when the issuer `cert_pem` lives meaningfully longer than the current one.
pub(super) fn extends(cert_pem: &str, bundle: &Bundle) -> bool {
    pem::parse(cert_pem)
        .ok()
        .and_then(|p| validity(p.contents()))
        .is_some_and(|(_, na)| na > bundle.issuer_not_after + time::Duration::seconds(1))
}

/// The anchor (PEM) whose public key matches `root_key_pem`, if any.
pub fn matching_root(bundle: &Bundle, root_key_pem: &str) -> Option<String> {
    let key = bundle::parse_private_key(root_key_pem).ok()?;
    let bits = bundle::public_key_bits(&key);
    bundle.anchors.iter().find_map(|der| {
        let (_, c) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
        (c.public_key().subject_public_key.data.as_ref() == bits)
            .then(|| bundle::pem_block("CERTIFICATE", der))
    })
}

/// A journal for a new root rotation: a fresh root and issuer, nothing published yet.
pub fn prepare_rotation(s: &Settings, now: OffsetDateTime) -> Result<Journal, RotationError> {
    let g = bundle::generate(&s.params, now).map_err(|source| RotationError::Invalid {
        location: "new root".into(),
        source: bundle::BundleError::new(BundlePart::Anchors, source.to_string()),
    })?;
    Ok(Journal {
        phase: Phase::Prepared,
        next_issuer_cert: g.bundle.issuer_chain_pem,
        next_issuer_key: g.bundle.issuer_key_pem,
        next_root_cert: Some(g.bundle.anchors_pem),
        next_root_key: Some(g.root_key_pem),
        published_at: None,
        activated_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_when_the_fraction_of_life_is_left() {
        let nb = OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        let na = OffsetDateTime::from_unix_timestamp(1_400).unwrap();
        assert_eq!(due_at(nb, na, 0.25).unix_timestamp(), 1_300);
        assert_eq!(due_at(nb, na, 0.0), na);
        assert_eq!(due_at(na, nb, 0.5), na, "no life: due from the start");
    }
}
