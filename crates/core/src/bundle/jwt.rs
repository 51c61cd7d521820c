//! The JWT part of the trust bundle: the key that signs JWT-SVIDs (`jwt.key`) and the JWKS that
//! publishes its public half (`jwks.json`). Generates a new pair and verifies a supplied one
//! (Dapr §5.2 step 7 and §5.3 `verifyJWKS`). Pure data and crypto: the stores decide where the two
//! texts live (files, or Secret/ConfigMap keys named after the files' base names).

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::jose::{Algorithm, JwkSet, SigningKey};

/// How the JWT key is used: `--jwt-signing-algorithm` and `--jwt-key-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtKeySettings {
    /// Signature algorithm of issued tokens.
    pub algorithm: Algorithm,
    /// Key id the operator requires (must be in the JWKS and match the key).
    pub key_id: Option<String>,
}

/// Which of the two JWT texts a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtPart {
    /// The signing key (`jwt.key`).
    Key,
    /// The key set (`jwks.json`).
    Jwks,
}

impl fmt::Display for JwtPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JwtPart::Key => "JWT signing key",
            JwtPart::Jwks => "JWKS",
        })
    }
}

/// A problem with the JWT part, naming the text it is in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {problem}")]
pub struct JwtBundleError {
    /// The part at fault.
    pub part: JwtPart,
    /// What is wrong, in one line.
    pub problem: String,
}

impl JwtBundleError {
    fn new(part: JwtPart, problem: impl Into<String>) -> Self {
        Self {
            part,
            problem: problem.into(),
        }
    }
}

/// A verified JWT signing key and key set.
#[derive(Clone)]
pub struct JwtBundle {
    /// The signing key, PEM as supplied (PKCS#8 when generated): the `jwt.key` text.
    pub key_pem: String,
    /// The key set as supplied or generated: the `jwks.json` text.
    pub jwks_json: String,
    /// The parsed signing key.
    pub key: Arc<SigningKey>,
    /// The parsed key set (what the OIDC endpoint serves, re-serialised).
    pub jwks: JwkSet,
    /// Signature algorithm of issued tokens.
    pub algorithm: Algorithm,
    /// `kid` header of issued tokens.
    pub kid: String,
}

impl fmt::Debug for JwtBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtBundle")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("jwks_keys", &self.jwks.keys.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// `kid` of a generated key: standard base64 (with padding) of the RFC 7638 SHA-256 thumbprint.
pub fn thumbprint_kid(key: &SigningKey) -> String {
    STANDARD.encode(key.public_key().thumbprint())
}

/// Generates a key that fits `settings.algorithm` (RSA-2048 for RS*/PS*, the matching curve for
/// ES*, Ed25519 for EdDSA) and a JWKS with its public key.
pub fn generate_jwt(settings: &JwtKeySettings) -> Result<JwtBundle, JwtBundleError> {
    let key = SigningKey::generate(settings.algorithm)
        .map_err(|e| JwtBundleError::new(JwtPart::Key, e.to_string()))?;
    let kid = settings
        .key_id
        .clone()
        .unwrap_or_else(|| thumbprint_kid(&key));
    let jwks = JwkSet {
        keys: vec![key.public_key().to_jwk(&kid, settings.algorithm)],
        other: Default::default(),
    };
    let key_pem = key
        .to_pkcs8_pem()
        .map_err(|e| JwtBundleError::new(JwtPart::Key, e.to_string()))?;
    // Run the generated pair through the same checks as a supplied one.
    verify_jwt(key_pem.as_bytes(), jwks.to_json().as_bytes(), settings)
}

/// Parses and verifies a supplied key and JWKS: the JWKS has at least one key and no private
/// material, publishes the signing key (under `settings.key_id` when given), and the key fits the
/// algorithm. Extra keys are allowed (rotation).
pub fn verify_jwt(
    key_pem: &[u8],
    jwks_json: &[u8],
    settings: &JwtKeySettings,
) -> Result<JwtBundle, JwtBundleError> {
    use JwtPart::*;
    let key_text =
        std::str::from_utf8(key_pem).map_err(|_| JwtBundleError::new(Key, "not a PEM text"))?;
    let key = SigningKey::from_pem(key_pem).map_err(|e| JwtBundleError::new(Key, e.to_string()))?;
    let jwks_text =
        std::str::from_utf8(jwks_json).map_err(|_| JwtBundleError::new(Jwks, "not UTF-8 text"))?;
    let jwks = JwkSet::parse(jwks_json).map_err(|e| JwtBundleError::new(Jwks, e))?;
    if jwks.keys.is_empty() {
        return Err(JwtBundleError::new(Jwks, "JWKS contains no keys"));
    }
    if let Some(k) = jwks.keys.iter().find(|k| k.has_private_material()) {
        return Err(JwtBundleError::new(
            Jwks,
            format!(
                "JWKS key {:?} contains private key material; publish public keys only",
                k.kid.as_deref().unwrap_or("")
            ),
        ));
    }
    let public = key.public_key();
    let matching = match &settings.key_id {
        Some(id) => {
            let jwk = jwks
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(id))
                .ok_or_else(|| {
                    JwtBundleError::new(
                        Jwks,
                        format!("JWKS doesn't contain a key with user-provided key ID {id:?}"),
                    )
                })?;
            if jwk.public_key().ok().as_ref() != Some(public) {
                return Err(JwtBundleError::new(
                    Jwks,
                    format!("JWKS contains a key with user-provided key ID {id:?} but the key content doesn't match the signing key"),
                ));
            }
            jwk
        }
        None => jwks
            .keys
            .iter()
            .filter(|k| k.key_use.as_deref().is_none_or(|u| u == "sig"))
            .find(|k| k.public_key().ok().as_ref() == Some(public))
            .ok_or_else(|| {
                JwtBundleError::new(Jwks, "JWKS doesn't contain a key matching the signing key")
            })?,
    };
    let alg = settings.algorithm;
    if !alg.fits(key.kind()) {
        return Err(JwtBundleError::new(
            Key,
            format!(
                "key type {} is not compatible with signature algorithm {alg}",
                key.kind()
            ),
        ));
    }
    if let Some(jwk_alg) = matching.alg.as_deref().filter(|a| *a != alg.name()) {
        return Err(JwtBundleError::new(
            Jwks,
            format!("the JWKS publishes the signing key for algorithm {jwk_alg}, but the signing algorithm is {alg}"),
        ));
    }
    let kid = settings
        .key_id
        .clone()
        .or_else(|| matching.kid.clone())
        .unwrap_or_else(|| thumbprint_kid(&key));
    Ok(JwtBundle {
        key_pem: key_text.to_owned(),
        jwks_json: jwks_text.to_owned(),
        key: Arc::new(key),
        jwks,
        algorithm: alg,
        kid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::ALGORITHMS;

    fn settings(alg: Algorithm, key_id: Option<&str>) -> JwtKeySettings {
        JwtKeySettings {
            algorithm: alg,
            key_id: key_id.map(str::to_owned),
        }
    }

    fn jwks_with(keys: &[&JwtBundle]) -> String {
        let all: Vec<_> = keys.iter().flat_map(|b| b.jwks.keys.clone()).collect();
        JwkSet {
            keys: all,
            other: Default::default(),
        }
        .to_json()
    }

    #[test]
    fn generated_rs256_is_dapr_shaped() {
        let b = generate_jwt(&settings(Algorithm::RS256, None)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&b.jwks_json).unwrap();
        let keys = v["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let k = &keys[0];
        assert_eq!(k["kty"], "RSA");
        assert_eq!(k["alg"], "RS256");
        assert_eq!(k["use"], "sig");
        assert_eq!(k["e"], "AQAB");
        let kid = k["kid"].as_str().unwrap();
        assert_eq!(kid, b.kid);
        assert_eq!(
            STANDARD.decode(kid).unwrap(),
            b.key.public_key().thumbprint()
        );
        assert!(kid.ends_with('='), "std base64 with padding: {kid}");
        assert!(b.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        if let crate::jose::PublicKey::Rsa { n, .. } = b.key.public_key() {
            assert_eq!(n.len(), 256, "RSA-2048");
        } else {
            panic!("not RSA");
        }
    }

    #[test]
    fn every_algorithm_generates_a_fitting_key() {
        for alg in ALGORITHMS {
            let b = generate_jwt(&settings(alg, Some("mine"))).unwrap();
            assert!(alg.fits(b.key.kind()), "{alg}");
            assert_eq!(b.kid, "mine");
            assert_eq!(b.jwks.keys[0].kid.as_deref(), Some("mine"));
        }
    }

    #[test]
    fn verify_jwks_cases() {
        let a = generate_jwt(&settings(Algorithm::RS256, None)).unwrap();
        let b = generate_jwt(&settings(Algorithm::RS256, Some("b-key"))).unwrap();
        let s = settings(Algorithm::RS256, None);
        // Matching key, alone and among others.
        verify_jwt(a.key_pem.as_bytes(), a.jwks_json.as_bytes(), &s).unwrap();
        let both = jwks_with(&[&b, &a]);
        let ok = verify_jwt(a.key_pem.as_bytes(), both.as_bytes(), &s).unwrap();
        assert_eq!(ok.kid, a.kid, "kid of the matching JWKS entry");
        // No matching key, empty set, invalid JSON, invalid key.
        let err = verify_jwt(a.key_pem.as_bytes(), b.jwks_json.as_bytes(), &s).unwrap_err();
        assert!(err.problem.contains("matching the signing key"), "{err}");
        let err = verify_jwt(a.key_pem.as_bytes(), br#"{"keys":[]}"#, &s).unwrap_err();
        assert!(err.problem.contains("no keys"), "{err}");
        assert_eq!(
            verify_jwt(a.key_pem.as_bytes(), b"{", &s).unwrap_err().part,
            JwtPart::Jwks
        );
        assert_eq!(
            verify_jwt(b"nope", a.jwks_json.as_bytes(), &s)
                .unwrap_err()
                .part,
            JwtPart::Key
        );
        // A malformed key in the set is skipped.
        let mut v: serde_json::Value = serde_json::from_str(&a.jwks_json).unwrap();
        v["keys"]
            .as_array_mut()
            .unwrap()
            .insert(0, serde_json::json!({"kty": "RSA", "kid": "broken"}));
        verify_jwt(a.key_pem.as_bytes(), v.to_string().as_bytes(), &s).unwrap();
        // Private material is refused.
        v["keys"][0]["d"] = "secret".into();
        let err = verify_jwt(a.key_pem.as_bytes(), v.to_string().as_bytes(), &s).unwrap_err();
        assert!(err.problem.contains("private key material"), "{err}");
    }

    #[test]
    fn user_key_id_rules() {
        let a = generate_jwt(&settings(Algorithm::ES256, Some("a-key"))).unwrap();
        let b = generate_jwt(&settings(Algorithm::ES256, Some("b-key"))).unwrap();
        let both = jwks_with(&[&a, &b]);
        let ok = verify_jwt(
            a.key_pem.as_bytes(),
            both.as_bytes(),
            &settings(Algorithm::ES256, Some("a-key")),
        )
        .unwrap();
        assert_eq!(ok.kid, "a-key");
        let err = verify_jwt(
            a.key_pem.as_bytes(),
            both.as_bytes(),
            &settings(Algorithm::ES256, Some("c-key")),
        )
        .unwrap_err();
        assert!(err.problem.contains("user-provided key ID"), "{err}");
        let err = verify_jwt(
            a.key_pem.as_bytes(),
            both.as_bytes(),
            &settings(Algorithm::ES256, Some("b-key")),
        )
        .unwrap_err();
        assert!(err.problem.contains("doesn't match"), "{err}");
    }

    #[test]
    fn key_algorithm_compatibility() {
        let rsa = generate_jwt(&settings(Algorithm::PS256, None)).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&rsa.jwks_json).unwrap();
        v["keys"][0].as_object_mut().unwrap().remove("alg");
        let jwks = v.to_string();
        for (alg, ok) in [
            (Algorithm::RS256, true),
            (Algorithm::PS512, true),
            (Algorithm::ES256, false),
            (Algorithm::EdDSA, false),
        ] {
            let r = verify_jwt(
                rsa.key_pem.as_bytes(),
                jwks.as_bytes(),
                &settings(alg, None),
            );
            assert_eq!(r.is_ok(), ok, "{alg}: {r:?}");
        }
        let p256 = generate_jwt(&settings(Algorithm::ES256, None)).unwrap();
        let err = verify_jwt(
            p256.key_pem.as_bytes(),
            p256.jwks_json.as_bytes(),
            &settings(Algorithm::ES384, None),
        )
        .unwrap_err();
        assert!(err.problem.contains("not compatible"), "{err}");
        // A JWKS that publishes the key for another algorithm is refused.
        let err = verify_jwt(
            rsa.key_pem.as_bytes(),
            rsa.jwks_json.as_bytes(),
            &settings(Algorithm::RS256, None),
        )
        .unwrap_err();
        assert!(err.problem.contains("for algorithm PS256"), "{err}");
    }
}
