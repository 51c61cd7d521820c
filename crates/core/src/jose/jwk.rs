//! JSON Web Keys (RFC 7517) and key sets: parsing, re-serialising (unknown members are kept),
//! public-key extraction, RFC 7638 thumbprints, and signature verification with a public key.

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use super::{b64url, b64url_decode, Algorithm, KeyKind};

/// Why a JWK cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// The key type or curve is not supported.
    #[error("unsupported key type {0:?}")]
    Unsupported(String),
    /// A required member is missing or malformed.
    #[error("malformed {kty} key: {problem}")]
    Malformed {
        /// The key type.
        kty: String,
        /// What is wrong.
        problem: String,
    },
}

/// Members that only a private (or symmetric) key has; never published.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

/// One JSON Web Key. Members Sentry does not interpret (`x5c`, …) are kept as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `RSA`, `EC` or `OKP`.
    pub kty: String,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Intended use (`sig`).
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// Algorithm the key is meant for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Curve (`EC`, `OKP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// RSA modulus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// X coordinate (`EC`) or public key (`OKP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Y coordinate (`EC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Every other member.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl Jwk {
    /// True when the key carries private or symmetric key material.
    pub fn has_private_material(&self) -> bool {
        PRIVATE_MEMBERS.iter().any(|m| self.other.contains_key(*m))
    }

    /// The public key this JWK describes.
    pub fn public_key(&self) -> Result<PublicKey, JwkError> {
        let malformed = |problem: &str| JwkError::Malformed {
            kty: self.kty.clone(),
            problem: problem.to_owned(),
        };
        let member = |value: &Option<String>, name: &str| -> Result<Vec<u8>, JwkError> {
            let text = value
                .as_deref()
                .ok_or_else(|| malformed(&format!("missing \"{name}\"")))?;
            b64url_decode(text).map_err(|_| malformed(&format!("\"{name}\" is not base64url")))
        };
        match self.kty.as_str() {
            "RSA" => Ok(PublicKey::Rsa {
                n: strip_zeros(member(&self.n, "n")?),
                e: strip_zeros(member(&self.e, "e")?),
            }),
            "EC" => {
                let (kind, len) = match self.crv.as_deref() {
                    Some("P-256") => (KeyKind::EcP256, 32),
                    Some("P-384") => (KeyKind::EcP384, 48),
                    Some("P-521") => (KeyKind::EcP521, 66),
                    other => return Err(JwkError::Unsupported(format!("EC {other:?}"))),
                };
                let (x, y) = (member(&self.x, "x")?, member(&self.y, "y")?);
                if x.len() != len || y.len() != len {
                    return Err(malformed("coordinate length does not match the curve"));
                }
                Ok(PublicKey::Ec { kind, x, y })
            }
            "OKP" => match self.crv.as_deref() {
                Some("Ed25519") => {
                    let x = member(&self.x, "x")?;
                    if x.len() != 32 {
                        return Err(malformed("Ed25519 key must be 32 bytes"));
                    }
                    Ok(PublicKey::Ed25519(x))
                }
                other => Err(JwkError::Unsupported(format!("OKP {other:?}"))),
            },
            other => Err(JwkError::Unsupported(other.to_owned())),
        }
    }
}

/// A JSON Web Key Set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys, in the order the set lists them.
    pub keys: Vec<Jwk>,
    /// Every other member.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl JwkSet {
    /// Parses a JWKS document.
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(json)
            .map_err(|e| format!("invalid JWKS: {}", super::json_problem(&e)))
    }

    /// Compact JSON of the set.
    pub fn to_json(&self) -> String {
        // Serialising plain strings and JSON values cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A public key, reduced to what identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA: modulus and exponent, big-endian without leading zeros.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// ECDSA: curve and affine coordinates, fixed length.
    Ec {
        /// Curve.
        kind: KeyKind,
        /// X coordinate.
        x: Vec<u8>,
        /// Y coordinate.
        y: Vec<u8>,
    },
    /// Ed25519 public key (32 bytes).
    Ed25519(Vec<u8>),
}

impl PublicKey {
    /// Family and curve of the key.
    pub fn kind(&self) -> KeyKind {
        match self {
            PublicKey::Rsa { .. } => KeyKind::Rsa,
            PublicKey::Ec { kind, .. } => *kind,
            PublicKey::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// The RFC 7638 JWK thumbprint (SHA-256).
    pub fn thumbprint(&self) -> [u8; 32] {
        // Required members only, in lexicographic order, no white space (RFC 7638 §3).
        let canonical = match self {
            PublicKey::Rsa { n, e } => {
                format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64url(e), b64url(n))
            }
            PublicKey::Ec { kind, x, y } => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                curve_name(*kind),
                b64url(x),
                b64url(y)
            ),
            PublicKey::Ed25519(x) => {
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64url(x))
            }
        };
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref());
        out
    }

    /// The JWK for this key with `kid`, `alg` and `use: sig`.
    pub fn to_jwk(&self, kid: &str, alg: Algorithm) -> Jwk {
        let mut jwk = Jwk {
            kty: String::new(),
            kid: Some(kid.to_owned()),
            key_use: Some("sig".to_owned()),
            alg: Some(alg.name().to_owned()),
            crv: None,
            n: None,
            e: None,
            x: None,
            y: None,
            other: BTreeMap::new(),
        };
        match self {
            PublicKey::Rsa { n, e } => {
                jwk.kty = "RSA".into();
                jwk.n = Some(b64url(n));
                jwk.e = Some(b64url(e));
            }
            PublicKey::Ec { kind, x, y } => {
                jwk.kty = "EC".into();
                jwk.crv = Some(curve_name(*kind).into());
                jwk.x = Some(b64url(x));
                jwk.y = Some(b64url(y));
            }
            PublicKey::Ed25519(x) => {
                jwk.kty = "OKP".into();
                jwk.crv = Some("Ed25519".into());
                jwk.x = Some(b64url(x));
            }
        }
        jwk
    }

    /// Verifies `signature` over `message` with `alg`; false when the key does not fit `alg`.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        if !alg.fits(self.kind()) {
            return false;
        }
        match self {
            PublicKey::Rsa { n, e } => {
                let params: &signature::RsaParameters = match alg {
                    Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, message, signature)
                    .is_ok()
            }
            PublicKey::Ec { kind, x, y } => {
                let params: &signature::EcdsaVerificationAlgorithm = match kind {
                    KeyKind::EcP256 => &signature::ECDSA_P256_SHA256_FIXED,
                    KeyKind::EcP384 => &signature::ECDSA_P384_SHA384_FIXED,
                    _ => &signature::ECDSA_P521_SHA512_FIXED,
                };
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(0x04);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                UnparsedPublicKey::new(params, point)
                    .verify(message, signature)
                    .is_ok()
            }
            PublicKey::Ed25519(x) => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, signature)
                .is_ok(),
        }
    }
}

fn curve_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::EcP384 => "P-384",
        KeyKind::EcP521 => "P-521",
        _ => "P-256",
    }
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let first = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    v.drain(..first);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example key of RFC 7638 §3.1 and its published thumbprint.
    const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    const RFC7638_THUMBPRINT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

    fn rfc_key() -> Jwk {
        serde_json::from_value(serde_json::json!({
            "kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"
        }))
        .unwrap()
    }

    #[test]
    fn rfc7638_thumbprint() {
        let key = rfc_key().public_key().unwrap();
        assert_eq!(b64url(&key.thumbprint()), RFC7638_THUMBPRINT);
    }

    #[test]
    fn unknown_members_survive_and_private_material_is_detected() {
        let mut v = serde_json::to_value(rfc_key()).unwrap();
        v["x5t"] = "abc".into();
        let jwk: Jwk = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&jwk).unwrap(), v);
        assert!(!jwk.has_private_material());
        v["d"] = "secret".into();
        let jwk: Jwk = serde_json::from_value(v).unwrap();
        assert!(jwk.has_private_material());
    }

    #[test]
    fn malformed_and_unsupported_keys() {
        let bad = |v: serde_json::Value| serde_json::from_value::<Jwk>(v).unwrap().public_key();
        assert!(matches!(
            bad(serde_json::json!({"kty": "oct", "k": "AA"})),
            Err(JwkError::Unsupported(_))
        ));
        assert!(matches!(
            bad(serde_json::json!({"kty": "RSA", "e": "AQAB"})),
            Err(JwkError::Malformed { .. })
        ));
        assert!(matches!(
            bad(serde_json::json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"})),
            Err(JwkError::Malformed { .. })
        ));
        assert!(matches!(
            bad(serde_json::json!({"kty": "OKP", "crv": "X25519", "x": "AA"})),
            Err(JwkError::Unsupported(_))
        ));
    }
}
