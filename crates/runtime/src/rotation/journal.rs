//! The rotation journal: which phase a renewal or root rotation is in, and the material it needs.
//! Stored next to the bundle (`rotation.json` / Secret `dapr-trust-bundle-root`), written *before*
//! the bundle changes, so that a process killed at any point resumes where it stopped. Every
//! phase maps to the bundle it requires ([`Journal::desired_files`]), so resuming is idempotent.

use serde::{Deserialize, Serialize};

use crate::store::Files;

/// Where a renewal or rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// A new issuer under the same root is being installed.
    Renewing,
    /// A new root and issuer exist; nothing is published yet.
    Prepared,
    /// The new root is published beside the old one; the old issuer still signs.
    Published,
    /// The new issuer is being installed.
    Activating,
    /// The new issuer signs; the old root stays until no leaf can chain to it.
    Active,
    /// The old root is being removed from the anchors.
    Retiring,
}

impl Phase {
    /// Every phase, in the order a root rotation passes them (a renewal passes only
    /// [`Phase::Renewing`]).
    pub const ALL: [Phase; 6] = [
        Phase::Renewing,
        Phase::Prepared,
        Phase::Published,
        Phase::Activating,
        Phase::Active,
        Phase::Retiring,
    ];
}

/// The journal of one renewal or root rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Current phase.
    pub phase: Phase,
    /// The issuer certificate to install (PEM).
    pub next_issuer_cert: String,
    /// The issuer key to install (PEM).
    pub next_issuer_key: String,
    /// The new root certificate (root rotation only).
    #[serde(default)]
    pub next_root_cert: Option<String>,
    /// The new root key (root rotation only).
    #[serde(default)]
    pub next_root_key: Option<String>,
    /// When the new root was observed published (Unix seconds).
    #[serde(default)]
    pub published_at: Option<i64>,
    /// When the new issuer started signing (Unix seconds).
    #[serde(default)]
    pub activated_at: Option<i64>,
}

fn cert_ders(pem_bytes: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(pem_bytes)
        .map(|blocks| {
            blocks
                .into_iter()
                .filter(|b| b.tag() == "CERTIFICATE")
                .map(|b| b.into_contents())
                .collect()
        })
        .unwrap_or_default()
}

/// True when `anchors` holds every certificate of `root_pem`.
pub fn anchors_contain(anchors: &[u8], root_pem: &[u8]) -> bool {
    let have = cert_ders(anchors);
    let want = cert_ders(root_pem);
    !want.is_empty() && want.iter().all(|w| have.contains(w))
}

impl Journal {
    /// Parses a stored journal.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("invalid rotation journal: {e}"))
    }

    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// A journal installing a new issuer under the same root.
    pub fn renewing(next_issuer_cert: String, next_issuer_key: String) -> Self {
        Self {
            phase: Phase::Renewing,
            next_issuer_cert,
            next_issuer_key,
            next_root_cert: None,
            next_root_key: None,
            published_at: None,
            activated_at: None,
        }
    }

    /// The same journal in another phase.
    pub fn with_phase(&self, phase: Phase) -> Self {
        Self {
            phase,
            ..self.clone()
        }
    }

    /// The bundle this phase requires, given what is stored now.
    pub fn desired_files(&self, current: &Files) -> Files {
        let next_root = self
            .next_root_cert
            .as_deref()
            .unwrap_or_default()
            .as_bytes();
        let anchors = match self.phase {
            Phase::Renewing | Phase::Prepared => current.anchors.clone(),
            Phase::Published | Phase::Activating | Phase::Active => {
                if next_root.is_empty() || anchors_contain(&current.anchors, next_root) {
                    current.anchors.clone()
                } else {
                    let mut a = String::from_utf8_lossy(&current.anchors)
                        .trim_end()
                        .to_owned();
                    a.push('\n');
                    a.push_str(&String::from_utf8_lossy(next_root));
                    a.into_bytes()
                }
            }
            Phase::Retiring if !next_root.is_empty() => next_root.to_vec(),
            Phase::Retiring => current.anchors.clone(),
        };
        let (issuer_cert, issuer_key) = match self.phase {
            Phase::Prepared | Phase::Published => {
                (current.issuer_cert.clone(), current.issuer_key.clone())
            }
            Phase::Renewing | Phase::Activating | Phase::Active | Phase::Retiring => (
                self.next_issuer_cert.clone().into_bytes(),
                self.next_issuer_key.clone().into_bytes(),
            ),
        };
        Files {
            anchors,
            issuer_cert,
            issuer_key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentry_core::bundle::{generate, CaParams, KeyType};
    use sentry_core::spiffe::TrustDomain;
    use std::time::Duration;

    #[test]
    fn phases_map_to_bundles() {
        let now = time::OffsetDateTime::now_utc();
        let p = CaParams::new(
            TrustDomain::public(),
            "default",
            KeyType::Ed25519,
            Duration::ZERO,
        );
        let old = generate(&p, now).unwrap();
        let new = generate(&p, now).unwrap();
        let current = Files::of(&old.bundle);
        let j = Journal {
            phase: Phase::Prepared,
            next_issuer_cert: new.bundle.issuer_chain_pem.clone(),
            next_issuer_key: new.bundle.issuer_key_pem.clone(),
            next_root_cert: Some(new.bundle.anchors_pem.clone()),
            next_root_key: Some(new.root_key_pem.clone()),
            published_at: None,
            activated_at: None,
        };
        assert_eq!(j.desired_files(&current), current);
        let published = j.with_phase(Phase::Published).desired_files(&current);
        assert!(anchors_contain(
            &published.anchors,
            old.bundle.anchors_pem.as_bytes()
        ));
        assert!(anchors_contain(
            &published.anchors,
            new.bundle.anchors_pem.as_bytes()
        ));
        assert_eq!(published.issuer_key, current.issuer_key);
        assert_eq!(
            j.with_phase(Phase::Published).desired_files(&published),
            published,
            "idempotent"
        );
        let active = j.with_phase(Phase::Active).desired_files(&published);
        assert_eq!(active.anchors, published.anchors);
        assert_eq!(active.issuer_cert, new.bundle.issuer_chain_pem.as_bytes());
        let retired = j.with_phase(Phase::Retiring).desired_files(&active);
        assert_eq!(retired.anchors, new.bundle.anchors_pem.as_bytes());
        let round = Journal::parse(&j.to_bytes()).unwrap();
        assert_eq!(round, j);
    }
}
