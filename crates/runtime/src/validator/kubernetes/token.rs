//! Reading the pod claims of a Kubernetes service-account token *without* verifying it (the
//! API server's TokenReview has already vouched for the token). Accepts a JWS compact token or
//! a bare JSON claims object (as Dapr's tests send).

use base64::Engine;
use serde::Deserialize;

/// The pod a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodClaims {
    /// `kubernetes.io.pod.name`.
    pub name: String,
    /// `kubernetes.io.pod.uid`, when present.
    pub uid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaims>,
    exp: Option<i64>,
}

#[derive(Deserialize)]
struct KubernetesClaims {
    pod: Option<PodClaim>,
}

#[derive(Deserialize)]
struct PodClaim {
    name: Option<String>,
    uid: Option<String>,
}

/// Largest token accepted for parsing (bytes).
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Time left before the token's `exp` claim, if it has one (zero when already expired).
pub fn remaining_life(token: &str) -> Option<std::time::Duration> {
    let exp = decode(token).ok()?.exp?;
    let left = exp.saturating_sub(time::OffsetDateTime::now_utc().unix_timestamp());
    Some(std::time::Duration::from_secs(left.max(0) as u64))
}

fn decode(token: &str) -> Result<Claims, String> {
    if token.len() > MAX_TOKEN_LEN {
        return Err("token too large".into());
    }
    let trimmed = token.trim();
    let json: Vec<u8> = if trimmed.starts_with('{') {
        trimmed.as_bytes().to_vec()
    } else {
        let mut parts = trimmed.split('.');
        let (Some(_header), Some(payload), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("token is not a JWS compact serialization".into());
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|e| format!("invalid payload encoding: {e}"))?
    };
    serde_json::from_slice(&json)
        .map_err(|e| format!("invalid claims: {}", sentry_core::jose::json_problem(&e)))
}

/// Extracts the pod claims. `Err` is the parse problem; `Ok(None)` means no pod name claim.
pub fn pod_claims(token: &str) -> Result<Option<PodClaims>, String> {
    let claims = decode(token)?;
    Ok(claims
        .kubernetes
        .and_then(|k| k.pod)
        .and_then(|p| match p.name {
            Some(name) if !name.is_empty() => Some(PodClaims {
                name,
                uid: p.uid.filter(|u| !u.is_empty()),
            }),
            _ => None,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn hostile_claims_give_short_errors_and_no_overflow() {
        // A claim of the wrong type must not be quoted back whole (it ends up in the status).
        let long = "x".repeat(60 * 1024);
        let err = pod_claims(&format!(r#"{{"kubernetes.io":"{long}"}}"#)).unwrap_err();
        assert!(err.len() < 200, "{} bytes", err.len());
        let err = pod_claims(&format!(
            r#"{{"kubernetes.io":{{"pod":{{"name":7}}}},"{long}":1}}"#
        ))
        .unwrap_err();
        assert!(err.len() < 200, "{} bytes", err.len());
        // An `exp` far in the past or future neither panics nor wraps.
        assert_eq!(
            remaining_life(&format!(r#"{{"exp":{}}}"#, i64::MIN)),
            Some(std::time::Duration::ZERO)
        );
        assert!(remaining_life(&format!(r#"{{"exp":{}}}"#, i64::MAX)).is_some());
    }

    /// Found by the `k8s_token` fuzz target: a claim of the wrong type was quoted back whole.
    #[test]
    fn fuzz_regression_long_claim_message() {
        let input = include_bytes!("../../../../../testdata/fuzz/k8s_token-long-claim-message");
        let err = pod_claims(&String::from_utf8_lossy(input)).unwrap_err();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn bare_json_and_jws() {
        let c = pod_claims(r#"{"kubernetes.io":{"pod":{"name":"mypod"}}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            c,
            PodClaims {
                name: "mypod".into(),
                uid: None
            }
        );
        let jws = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"kubernetes.io":{"pod":{"name":"p","uid":"u-1"}}}"#)
        );
        assert_eq!(
            pod_claims(&jws).unwrap().unwrap(),
            PodClaims {
                name: "p".into(),
                uid: Some("u-1".into())
            }
        );
    }

    #[test]
    fn missing_and_malformed() {
        assert_eq!(pod_claims(r#"{"sub":"x"}"#).unwrap(), None);
        assert_eq!(
            pod_claims(r#"{"kubernetes.io":{"pod":{"name":""}}}"#).unwrap(),
            None
        );
        assert!(pod_claims("a.b").is_err());
        assert!(pod_claims("a.!!.c").is_err());
        assert!(pod_claims("{not json").is_err());
        assert!(pod_claims(&"a".repeat(MAX_TOKEN_LEN + 1)).is_err());
    }
}
