//! The `jwks` validator (Dapr §3.5): the request's token must be a JWT signed by a key of the
//! configured JWKS, with `aud` containing Sentry's SPIFFE ID and `sub` equal to the requested
//! identity `spiffe://<td>/ns/<namespace>/<id>`, within 5 minutes of clock skew. Keys come from
//! a [`KeyCache`] (`source.rs`: URL, file or inline); this module only decides.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

mod source;

pub use source::{
    JwksOptions, JwksSetupError, KeyCache, DEFAULT_MIN_REFRESH_INTERVAL, DEFAULT_REQUEST_TIMEOUT,
};

use super::{common, ValidationError, Validator};
use sentry_core::jose::{decode_compact, Algorithm, JwkSet, PublicKey};
use sentry_core::spiffe::{SpiffeId, TrustDomain};
use sentry_proto::SignCertificateRequest;

/// Acceptable clock skew for `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: i64 = 300;
/// How long a request waits for the first key set before "jwks validator not ready".
pub const READY_WAIT: Duration = Duration::from_secs(2);
/// Largest token accepted.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// One usable verification key.
#[derive(Debug, Clone)]
struct Entry {
    kid: Option<String>,
    alg: Option<String>,
    key: PublicKey,
}

/// The keys a token may be signed with.
#[derive(Debug, Clone)]
pub struct KeySet {
    keys: Vec<Entry>,
}

impl KeySet {
    /// Parses a JWKS; keys that are malformed, of an unsupported type or not for signatures are
    /// skipped, and at least one usable key must remain.
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        let set = JwkSet::parse(json)?;
        let keys: Vec<Entry> = set
            .keys
            .iter()
            .filter(|k| k.key_use.as_deref().is_none_or(|u| u == "sig"))
            .filter_map(|k| {
                Some(Entry {
                    kid: k.kid.clone(),
                    alg: k.alg.clone(),
                    key: k.public_key().ok()?,
                })
            })
            .collect();
        if keys.is_empty() {
            return Err("JWKS contains no usable signature keys".into());
        }
        Ok(Self { keys })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are no keys (never, for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Why a token was refused; the messages name the failing claim as Dapr's tests expect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed JWS/JWT.
    #[error("failed to parse token: {0}")]
    Malformed(String),
    /// The token names a key the JWKS does not have (the kid, cut to 64 characters).
    #[error("could not verify message: no key with kid {0:?} in the key set")]
    UnknownKid(String),
    /// No key verified the signature (or the algorithm is not usable with the key).
    #[error("could not verify message using any of the signatures or keys")]
    BadSignature,
    /// A claim check failed.
    #[error("\"{claim}\" not satisfied: {problem}")]
    Claim {
        /// The claim name.
        claim: &'static str,
        /// What is wrong.
        problem: String,
    },
}

fn claim(claim: &'static str, problem: impl Into<String>) -> TokenError {
    TokenError::Claim {
        claim,
        problem: problem.into(),
    }
}

/// Verifies `token` against `keys`: signature, then `exp` (required), `nbf`, `iat`, `aud` ∋
/// `audience` and `sub` = `subject`, as of `now` (Unix seconds) with [`LEEWAY_SECS`].
pub fn verify_token(
    token: &str,
    keys: &KeySet,
    audience: &str,
    subject: &str,
    now: i64,
) -> Result<(), TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("token too large".into()));
    }
    let jws = decode_compact(token).map_err(TokenError::Malformed)?;
    if jws.header.crit.is_some() {
        return Err(TokenError::Malformed(
            "critical header parameters are not supported".into(),
        ));
    }
    let alg: Algorithm = jws
        .header
        .alg
        .parse()
        .map_err(|_| TokenError::BadSignature)?;
    let candidates: Vec<&Entry> = match &jws.header.kid {
        Some(kid) => {
            let found: Vec<_> = keys
                .keys
                .iter()
                .filter(|e| e.kid.as_deref() == Some(kid))
                .collect();
            if found.is_empty() {
                return Err(TokenError::UnknownKid(sentry_core::jose::quote_short(kid)));
            }
            found
        }
        None => keys.keys.iter().collect(),
    };
    let verified = candidates.iter().any(|e| {
        e.alg.as_deref().is_none_or(|a| a == alg.name())
            && e.key
                .verify(alg, jws.signing_input.as_bytes(), &jws.signature)
    });
    if !verified {
        return Err(TokenError::BadSignature);
    }
    let claims: serde_json::Map<String, Value> = serde_json::from_slice(&jws.payload)
        .map_err(|_| TokenError::Malformed("claims are not a JSON object".into()))?;
    let time_claim = |name: &'static str| -> Result<Option<i64>, TokenError> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_f64().map(|f| f.floor() as i64))
                .map(Some)
                .ok_or_else(|| claim(name, "not a number")),
        }
    };
    let exp = time_claim("exp")?.ok_or_else(|| claim("exp", "claim is required"))?;
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(claim("exp", "token is expired"));
    }
    if let Some(nbf) = time_claim("nbf")? {
        if now.saturating_add(LEEWAY_SECS) < nbf {
            return Err(claim("nbf", "token is not valid yet"));
        }
    }
    if let Some(iat) = time_claim("iat")? {
        if now.saturating_add(LEEWAY_SECS) < iat {
            return Err(claim("iat", "token was issued in the future"));
        }
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(claim("aud", format!("audience must include {audience}")));
    }
    if claims.get("sub").and_then(Value::as_str) != Some(subject) {
        return Err(claim("sub", format!("subject must be {subject}")));
    }
    Ok(())
}

/// The `jwks` validator.
pub struct JwksValidator {
    audience: String,
    keys: KeyCache,
}

impl JwksValidator {
    /// Starts loading the key set; `audience` is Sentry's SPIFFE ID. [`Validator::ready`]
    /// resolves once a set is loaded.
    pub fn start(options: &JwksOptions, audience: &SpiffeId) -> Result<Self, JwksSetupError> {
        Ok(Self {
            audience: audience.to_string(),
            keys: KeyCache::start(options)?,
        })
    }
}

impl Validator for JwksValidator {
    /// Checks the request's token; returns the requested trust domain (default `public`).
    async fn validate(&self, req: &SignCertificateRequest) -> Result<TrustDomain, ValidationError> {
        let denied = |m: String| ValidationError::Denied(m);
        if req.token.is_empty() {
            return Err(denied("the request does not contain a token".into()));
        }
        let keys = self
            .keys
            .current(READY_WAIT)
            .await
            .ok_or_else(|| denied("jwks validator not ready".into()))?;
        let td = common::validate(req)?;
        let subject = SpiffeId::new(td.clone(), &req.namespace, &req.id)
            .map_err(|e| denied(format!("failed to construct SPIFFE ID for requestor: {e}")))?
            .to_string();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut result = verify_token(&req.token, &keys, &self.audience, &subject, now);
        if let Err(TokenError::UnknownKid(_)) = result {
            // The issuer may have rotated its keys: fetch again (rate-limited) and retry once.
            if let Some(fresh) = self.keys.refreshed().await {
                result = verify_token(&req.token, &fresh, &self.audience, &subject, now);
            }
        }
        result.map_err(|e| denied(format!("token validation failed: {e}")))?;
        Ok(td)
    }

    /// Resolves once a key set has loaded.
    fn ready(&self) -> impl Future<Output = ()> + Send + 'static {
        self.keys.loaded()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentry_core::bundle::jwt::{generate_jwt, JwtBundle, JwtKeySettings};
    use sentry_core::jose::b64url;

    const AUD: &str = "spiffe://localhost/ns/default/dapr-sentry";
    const SUB: &str = "spiffe://public/ns/default/myapp";
    const NOW: i64 = 1_700_000_000;

    fn bundle(alg: Algorithm, kid: &str) -> JwtBundle {
        generate_jwt(&JwtKeySettings {
            algorithm: alg,
            key_id: Some(kid.into()),
        })
        .unwrap()
    }

    fn mint(b: &JwtBundle, header: Value, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = b.key.sign(b.algorithm, input.as_bytes()).unwrap();
        format!("{input}.{}", b64url(&sig))
    }

    fn good_claims() -> Value {
        serde_json::json!({"aud": [AUD], "sub": SUB, "exp": NOW + 60, "nbf": NOW - 60, "iat": NOW})
    }

    fn check(b: &JwtBundle, keys: &KeySet, f: impl FnOnce(&mut Value)) -> Result<(), TokenError> {
        let mut claims = good_claims();
        f(&mut claims);
        let header = serde_json::json!({"alg": b.algorithm.name(), "kid": b.kid, "typ": "JWT"});
        verify_token(&mint(b, header, claims), keys, AUD, SUB, NOW)
    }

    fn msg(r: Result<(), TokenError>) -> String {
        r.unwrap_err().to_string()
    }

    /// Caller-chosen text is never quoted at length: a long kid, a header member of the wrong
    /// type holding a long string, and (found by the `jwks_token` fuzz target) a JWKS that is a
    /// long JSON string.
    #[test]
    fn refusals_quote_nothing_long() {
        let b = bundle(Algorithm::EdDSA, "k1");
        let keys = KeySet::from_json(b.jwks_json.as_bytes()).unwrap();
        let long = "k".repeat(10_000);
        let header = serde_json::json!({"alg": "EdDSA", "kid": long});
        let err = msg(verify_token(
            &mint(&b, header, good_claims()),
            &keys,
            AUD,
            SUB,
            NOW,
        ));
        assert!(
            err.starts_with("could not verify message: no key with kid"),
            "{err}"
        );
        assert!(err.len() < 200, "{} bytes", err.len());
        let header = serde_json::json!({"alg": "EdDSA", "crit": long});
        let err = msg(verify_token(
            &mint(&b, header, good_claims()),
            &keys,
            AUD,
            SUB,
            NOW,
        ));
        assert!(err.len() < 200, "{err}");
        let jwks = include_bytes!("../../../../../testdata/fuzz/jwks_token-quoted-jwks-string");
        let err = KeySet::from_json(&jwks[1..]).unwrap_err();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn good_tokens_for_every_key_type() {
        for alg in [
            Algorithm::EdDSA,
            Algorithm::ES256,
            Algorithm::RS256,
            Algorithm::PS384,
        ] {
            let b = bundle(alg, "k1");
            let keys = KeySet::from_json(b.jwks_json.as_bytes()).unwrap();
            check(&b, &keys, |_| {}).unwrap();
            check(&b, &keys, |c| c["aud"] = AUD.into()).unwrap();
            check(&b, &keys, |c| c["exp"] = (NOW - LEEWAY_SECS).into()).unwrap();
        }
    }

    #[test]
    fn claim_failures_name_the_claim() {
        let b = bundle(Algorithm::EdDSA, "k1");
        let keys = KeySet::from_json(b.jwks_json.as_bytes()).unwrap();
        assert!(
            msg(check(&b, &keys, |c| c["aud"] = serde_json::json!(["other"]))).contains("\"aud\"")
        );
        assert!(msg(check(&b, &keys, |c| c["sub"] =
            "spiffe://public/ns/default/other".into()))
        .contains("\"sub\""));
        assert!(
            msg(check(&b, &keys, |c| c["exp"] = (NOW - LEEWAY_SECS - 1).into()))
                .contains("\"exp\"")
        );
        assert!(msg(check(&b, &keys, |c| {
            c.as_object_mut().unwrap().remove("exp");
        }))
        .contains("\"exp\""));
        assert!(
            msg(check(&b, &keys, |c| c["nbf"] = (NOW + LEEWAY_SECS + 1).into()))
                .contains("\"nbf\"")
        );
        assert!(
            msg(check(&b, &keys, |c| c["iat"] = (NOW + LEEWAY_SECS + 10).into()))
                .contains("\"iat\"")
        );
    }

    #[test]
    fn signature_and_key_failures() {
        let b = bundle(Algorithm::EdDSA, "k1");
        let other = bundle(Algorithm::EdDSA, "k1");
        let keys = KeySet::from_json(b.jwks_json.as_bytes()).unwrap();
        // Same kid, different key: bad signature.
        assert!(msg(check(&other, &keys, |_| {})).contains("could not verify message"));
        // Unknown kid.
        let stranger = bundle(Algorithm::EdDSA, "k2");
        assert!(matches!(
            check(&stranger, &keys, |_| {}),
            Err(TokenError::UnknownKid(_))
        ));
        // Tampered payload.
        let good = mint(
            &b,
            serde_json::json!({"alg": "EdDSA", "kid": "k1"}),
            good_claims(),
        );
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = b64url(serde_json::json!({"aud": [AUD], "sub": "spiffe://public/ns/default/admin", "exp": NOW + 60}).to_string().as_bytes());
        parts[1] = &forged;
        assert_eq!(
            verify_token(&parts.join("."), &keys, AUD, SUB, NOW),
            Err(TokenError::BadSignature)
        );
        // alg "none" and algorithm/key mismatch.
        let none = format!("{}.{}.", b64url(br#"{"alg":"none","kid":"k1"}"#), parts[1]);
        assert_eq!(
            verify_token(&none, &keys, AUD, SUB, NOW),
            Err(TokenError::BadSignature)
        );
        let rsa = bundle(Algorithm::RS256, "k1");
        let wrong_alg = mint(
            &rsa,
            serde_json::json!({"alg": "RS256", "kid": "k1"}),
            good_claims(),
        );
        assert_eq!(
            verify_token(&wrong_alg, &keys, AUD, SUB, NOW),
            Err(TokenError::BadSignature)
        );
        // No kid: any key of the set may verify.
        let no_kid = mint(&b, serde_json::json!({"alg": "EdDSA"}), good_claims());
        verify_token(&no_kid, &keys, AUD, SUB, NOW).unwrap();
        assert!(matches!(
            verify_token("a.b", &keys, AUD, SUB, NOW),
            Err(TokenError::Malformed(_))
        ));
        let crit = mint(
            &b,
            serde_json::json!({"alg": "EdDSA", "kid": "k1", "crit": ["x"]}),
            good_claims(),
        );
        assert!(matches!(
            verify_token(&crit, &keys, AUD, SUB, NOW),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn key_set_parsing() {
        assert!(KeySet::from_json(br#"{"keys":[]}"#).is_err());
        assert!(KeySet::from_json(br#"{"keys":[{"kty":"RSA"}]}"#).is_err());
        let b = bundle(Algorithm::ES256, "k");
        let mut v: Value = serde_json::from_str(&b.jwks_json).unwrap();
        v["keys"][0]["use"] = "enc".into();
        assert!(KeySet::from_json(v.to_string().as_bytes()).is_err());
    }
}
