//! Readiness, decided here and nowhere else: `/healthz` answers 200 only when every named
//! condition ([`Target`]) holds. Each part of Sentry is handed the [`Condition`] of its target at
//! start-up and reports through it alone (a part that is not enabled reports it met at once);
//! this module combines them and never looks into the parts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One part whose readiness `/healthz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The trust bundle is loaded and a signer is active.
    Ca,
    /// Sentry holds its own serving certificate.
    SecurityProvider,
    /// The gRPC listener is accepting.
    GrpcServer,
    /// The metrics listener is up (or metrics are disabled).
    Metrics,
    /// The Kubernetes validator's caches are synced (or it is not enabled).
    KubernetesValidator,
    /// The `jwks` validator loaded its key set (or it is not enabled).
    JwksValidator,
    /// The OIDC listener is up (or OIDC is not enabled).
    OidcServer,
}

const TARGETS: usize = 7;

/// The combined readiness of every [`Target`]: what `/healthz` reads.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    flags: Arc<[AtomicBool; TARGETS]>,
}

impl Readiness {
    /// The handle through which the part behind `target` reports.
    pub fn condition(&self, target: Target) -> Condition {
        Condition {
            readiness: self.clone(),
            target,
        }
    }

    /// True when every condition is met.
    pub fn is_ready(&self) -> bool {
        self.flags.iter().all(|f| f.load(Ordering::Acquire))
    }

    fn set(&self, target: Target, ready: bool) {
        self.flags[target as usize].store(ready, Ordering::Release);
    }
}

/// One named condition of [`Readiness`], held by the part that decides it.
#[derive(Debug, Clone)]
pub struct Condition {
    readiness: Readiness,
    target: Target,
}

impl Condition {
    /// The part is ready (or not enabled).
    pub fn met(&self) {
        self.readiness.set(self.target, true);
    }

    /// The part stopped being ready.
    pub fn unmet(&self) {
        self.readiness.set(self.target, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_all_ready() {
        let r = Readiness::default();
        assert!(!r.is_ready());
        for t in [
            Target::Ca,
            Target::SecurityProvider,
            Target::GrpcServer,
            Target::KubernetesValidator,
        ] {
            r.condition(t).met();
        }
        assert!(!r.is_ready());
        r.condition(Target::Metrics).met();
        r.condition(Target::JwksValidator).met();
        assert!(!r.is_ready());
        r.condition(Target::OidcServer).met();
        assert!(r.is_ready());
        r.condition(Target::GrpcServer).unmet();
        assert!(!r.is_ready());
    }
}
