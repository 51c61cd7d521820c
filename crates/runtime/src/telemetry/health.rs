//! Readiness: `/healthz` answers 200 only when every part Sentry registered is ready.

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

/// Shared readiness flags.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    flags: Arc<[AtomicBool; TARGETS]>,
}

impl Readiness {
    /// Marks `target` ready.
    pub fn set_ready(&self, target: Target) {
        self.flags[target as usize].store(true, Ordering::Release);
    }

    /// Marks `target` not ready.
    pub fn set_not_ready(&self, target: Target) {
        self.flags[target as usize].store(false, Ordering::Release);
    }

    /// True when every target is ready.
    pub fn is_ready(&self) -> bool {
        self.flags.iter().all(|f| f.load(Ordering::Acquire))
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
            r.set_ready(t);
        }
        assert!(!r.is_ready());
        r.set_ready(Target::Metrics);
        r.set_ready(Target::JwksValidator);
        assert!(!r.is_ready());
        r.set_ready(Target::OidcServer);
        assert!(r.is_ready());
        r.set_not_ready(Target::GrpcServer);
        assert!(!r.is_ready());
    }
}
