//! The checks every validator runs first (Dapr's `internal.Validate`): all problems are collected
//! and reported together as `invalid request: <e1>\n<e2>…`.

use sentry_core::spiffe::TrustDomain;
use sentry_proto::SignCertificateRequest;

use super::ValidationError;

/// Longest accepted app id, in bytes.
pub const MAX_APP_ID_LEN: usize = 64;

/// Checks id, CSR and namespace presence; returns the requested trust domain (default `public`).
pub fn validate(req: &SignCertificateRequest) -> Result<TrustDomain, ValidationError> {
    let mut problems = Vec::new();
    if req.id.is_empty() {
        problems.push("parameter app-id cannot be empty".to_owned());
    } else if req.id.contains('.') {
        problems.push("parameter app-id cannot contain dots".to_owned());
    }
    if req.id.len() > MAX_APP_ID_LEN {
        problems.push(format!(
            "app ID must be {MAX_APP_ID_LEN} characters or less"
        ));
    }
    if req.certificate_signing_request.is_empty() {
        problems.push("CSR is required".to_owned());
    }
    if req.namespace.is_empty() {
        problems.push("namespace is required".to_owned());
    }
    if !problems.is_empty() {
        return Err(ValidationError::Denied(format!(
            "invalid request: {}",
            problems.join("\n")
        )));
    }
    if req.trust_domain.is_empty() {
        return Ok(TrustDomain::public());
    }
    TrustDomain::parse(&req.trust_domain).map_err(|e| ValidationError::Denied(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str, ns: &str, csr: &[u8], td: &str) -> SignCertificateRequest {
        SignCertificateRequest {
            id: id.into(),
            namespace: ns.into(),
            certificate_signing_request: csr.to_vec(),
            trust_domain: td.into(),
            ..Default::default()
        }
    }

    #[test]
    fn joins_all_problems() {
        let err = validate(&req("", "", b"", "")).unwrap_err().to_string();
        assert!(err.starts_with("invalid request: "));
        for part in [
            "app-id cannot be empty",
            "CSR is required",
            "namespace is required",
        ] {
            assert!(err.contains(part), "{err}");
        }
        let err = validate(&req(&"a".repeat(65), "ns", b"x", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("64 characters or less"), "{err}");
        let err = validate(&req("a.b", "ns", b"x", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot contain dots"), "{err}");
    }

    #[test]
    fn trust_domain_default_and_parse() {
        assert_eq!(
            validate(&req("a", "ns", b"x", "")).unwrap().as_str(),
            "public"
        );
        assert_eq!(
            validate(&req("a", "ns", b"x", "example.org"))
                .unwrap()
                .as_str(),
            "example.org"
        );
        assert!(validate(&req("a", "ns", b"x", "Bad TD")).is_err());
        validate(&req(&"a".repeat(64), "ns", b"x", "")).unwrap();
    }
}
