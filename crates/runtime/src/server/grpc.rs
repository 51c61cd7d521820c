//! The `dapr.proto.sentry.v1.CA/SignCertificate` handler: the request path from a decoded request
//! to a signed chain, in Dapr's order (validator, CSR, control-plane names, sign, respond).

use std::sync::Arc;

use tracing::{debug, error};

use crate::authority::Ca;
use crate::error::SignError;
use crate::telemetry::loggable::loggable;
use crate::telemetry::Metrics;
use crate::validator::Validators;
use sentry_core::ca::jwt::JwtIssuer;
use sentry_core::ca::parse_csr;
use sentry_core::spiffe::SpiffeId;
use sentry_proto::ca_server::Ca as CaRpc;
use sentry_proto::{SignCertificateRequest, SignCertificateResponse};

/// Sentry's own namespace and the cluster domain used in control-plane DNS names.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// Sentry's namespace (`NAMESPACE`).
    pub namespace: String,
    /// Cluster domain for the scheduler's DNS names.
    pub cluster_domain: String,
}

impl ControlPlane {
    /// DNS SANs for a control-plane service requesting in Sentry's namespace (§3.1 step 5).
    pub fn dns_names(&self, namespace: &str, app_id: &str) -> Vec<String> {
        if namespace != self.namespace {
            return Vec::new();
        }
        let ns = namespace;
        match app_id {
            "dapr-injector" => vec![format!("dapr-sidecar-injector.{ns}.svc")],
            "dapr-operator" => vec![format!("dapr-webhook.{ns}.svc")],
            "dapr-scheduler" => (0..3)
                .map(|i| {
                    format!(
                        "dapr-scheduler-server-{i}.dapr-scheduler-server.{ns}.svc.{}",
                        self.cluster_domain
                    )
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The gRPC CA service.
pub struct CaService {
    ca: Arc<Ca>,
    validators: Arc<Validators>,
    metrics: Arc<Metrics>,
    control_plane: ControlPlane,
    jwt: Option<Arc<JwtIssuer>>,
}

impl CaService {
    /// A service signing with `ca` after `validators` approve.
    pub fn new(
        ca: Arc<Ca>,
        validators: Arc<Validators>,
        metrics: Arc<Metrics>,
        control_plane: ControlPlane,
    ) -> Self {
        Self {
            ca,
            validators,
            metrics,
            control_plane,
            jwt: None,
        }
    }

    /// Also issues JWT-SVIDs with `issuer` (`--jwt-enabled`).
    pub fn with_jwt(mut self, issuer: Arc<JwtIssuer>) -> Self {
        self.jwt = Some(issuer);
        self
    }
}

/// Handles one decoded `SignCertificate` request in Dapr's order (validator, CSR, control-plane
/// names, sign, JWT-SVIDs when `jwt` is given). No network I/O of its own: the server calls it
/// for every request, and the fuzz targets call it directly.
pub async fn sign_certificate(
    ca: &Ca,
    validators: &Validators,
    control_plane: &ControlPlane,
    jwt: Option<&JwtIssuer>,
    req: SignCertificateRequest,
) -> Result<SignCertificateResponse, SignError> {
    let kind = validators.choose(req.token_validator)?;
    debug!(namespace = %loggable(&req.namespace), id = %loggable(&req.id), validator = ?kind, "Processing SignCertificate request");
    let trust_domain = validators.validate(kind, &req).await?;
    let key = parse_csr(&req.certificate_signing_request)?;
    let dns_names = control_plane.dns_names(&req.namespace, &req.id);
    let id = SpiffeId::new(trust_domain, &req.namespace, &req.id)?;
    let issued = ca
        .sign(&key, &id, &dns_names)
        .inspect_err(|e| error!(error = %e, "failed to sign certificate"))?;
    let now = time::OffsetDateTime::now_utc();
    let (jwt, per_audience_jwts) = match jwt {
        Some(issuer) => {
            let svids = issuer.issue(&id, &req.jwt_audiences, now)?;
            (Some(svids.jwt), svids.per_audience)
        }
        None => (None, Default::default()),
    };
    Ok(SignCertificateResponse {
        workload_certificate: issued.chain_pem.into_bytes(),
        trust_chain_certificates: vec![issued.anchors_pem.into_bytes()],
        valid_until: Some(prost_types::Timestamp {
            seconds: issued.not_after.unix_timestamp(),
            nanos: 0,
        }),
        jwt,
        per_audience_jwts,
    })
}

#[tonic::async_trait]
impl CaRpc for CaService {
    async fn sign_certificate(
        &self,
        request: tonic::Request<SignCertificateRequest>,
    ) -> Result<tonic::Response<SignCertificateResponse>, tonic::Status> {
        self.metrics.sign_requests.inc();
        match sign_certificate(
            &self.ca,
            &self.validators,
            &self.control_plane,
            self.jwt.as_deref(),
            request.into_inner(),
        )
        .await
        {
            Ok(resp) => {
                self.metrics.sign_success.inc();
                Ok(tonic::Response::new(resp))
            }
            Err(err) => {
                self.metrics
                    .sign_failure
                    .with_label_values(&[err.reason()])
                    .inc();
                debug!(error = %err.to_string().escape_debug(), "SignCertificate refused");
                Err(err.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_plane_dns_names() {
        let cp = ControlPlane {
            namespace: "dapr-system".into(),
            cluster_domain: "cluster.local".into(),
        };
        assert_eq!(
            cp.dns_names("dapr-system", "dapr-injector"),
            ["dapr-sidecar-injector.dapr-system.svc"]
        );
        assert_eq!(
            cp.dns_names("dapr-system", "dapr-operator"),
            ["dapr-webhook.dapr-system.svc"]
        );
        let s = cp.dns_names("dapr-system", "dapr-scheduler");
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[2],
            "dapr-scheduler-server-2.dapr-scheduler-server.dapr-system.svc.cluster.local"
        );
        assert!(cp.dns_names("other", "dapr-injector").is_empty());
        assert!(cp.dns_names("dapr-system", "myapp").is_empty());
    }
}
