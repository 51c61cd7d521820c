//! Compact JWS: a parsed private key that signs (kept for the process lifetime, so the hot path
//! never re-parses it), and the decoding of a compact token into header, payload and signature.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde::Deserialize;

use super::{b64url_decode, Algorithm, KeyKind, PublicKey};

/// Why a private key could not be loaded, generated or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a PEM private key Sentry understands.
    #[error("{0}")]
    Parse(String),
    /// The key cannot sign with the requested algorithm.
    #[error("key type {kind} is not compatible with signature algorithm {alg}")]
    Incompatible {
        /// The key's type.
        kind: KeyKind,
        /// The algorithm asked for.
        alg: Algorithm,
    },
    /// The crypto library failed.
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}

enum Inner {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A private key ready to sign JWS, with its public half.
pub struct SigningKey {
    inner: Inner,
    public: PublicKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

const EC_ALGS: [(&signature::EcdsaSigningAlgorithm, KeyKind); 3] = [
    (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, KeyKind::EcP256),
    (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, KeyKind::EcP384),
    (&signature::ECDSA_P521_SHA512_FIXED_SIGNING, KeyKind::EcP521),
];

impl SigningKey {
    /// Parses the private key that is the one PEM block of a text: PKCS#8 `PRIVATE KEY`, SEC1
    /// `EC PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY` (RSA, ECDSA P-256/P-384/P-521, Ed25519).
    pub fn from_pem(pem_text: &[u8]) -> Result<Self, KeyError> {
        let block = crate::encoding::pem_single(pem_text).map_err(KeyError::Parse)?;
        if !block.tag().ends_with("PRIVATE KEY") {
            return Err(KeyError::Parse("no PRIVATE KEY PEM block found".into()));
        }
        let der = block.contents();
        let unsupported = || {
            KeyError::Parse(format!(
                "unsupported or malformed private key ({})",
                block.tag()
            ))
        };
        let inner = match block.tag() {
            "PRIVATE KEY" => {
                if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
                    Inner::Rsa(k)
                } else if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                    Inner::Ed25519(k)
                } else {
                    EC_ALGS
                        .iter()
                        .find_map(|(alg, _)| EcdsaKeyPair::from_pkcs8(alg, der).ok())
                        .map(Inner::Ec)
                        .ok_or_else(unsupported)?
                }
            }
            "RSA PRIVATE KEY" => Inner::Rsa(RsaKeyPair::from_der(der).map_err(|_| unsupported())?),
            "EC PRIVATE KEY" => EC_ALGS
                .iter()
                .find_map(|(alg, _)| EcdsaKeyPair::from_private_key_der(alg, der).ok())
                .map(Inner::Ec)
                .ok_or_else(unsupported)?,
            _ => return Err(unsupported()),
        };
        Ok(Self::from_inner(inner))
    }

    /// Generates a fresh key that fits `alg` (RSA-2048, P-256, P-384, P-521 or Ed25519).
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let failed = |_| KeyError::Crypto("key generation failed");
        let inner = match alg {
            Algorithm::EdDSA => Inner::Ed25519(Ed25519KeyPair::generate().map_err(failed)?),
            Algorithm::ES256 | Algorithm::ES384 | Algorithm::ES512 => {
                let (sig_alg, _) = EC_ALGS
                    .iter()
                    .find(|(_, kind)| alg.fits(*kind))
                    .ok_or(KeyError::Crypto("no curve for algorithm"))?;
                Inner::Ec(EcdsaKeyPair::generate(sig_alg).map_err(failed)?)
            }
            _ => Inner::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).map_err(failed)?),
        };
        Ok(Self::from_inner(inner))
    }

    fn from_inner(inner: Inner) -> Self {
        let public = match &inner {
            Inner::Rsa(k) => PublicKey::Rsa {
                n: k.public_key()
                    .modulus()
                    .big_endian_without_leading_zero()
                    .to_vec(),
                e: k.public_key()
                    .exponent()
                    .big_endian_without_leading_zero()
                    .to_vec(),
            },
            Inner::Ec(k) => {
                let point = k.public_key().as_ref();
                let len = (point.len().saturating_sub(1)) / 2;
                let kind = match len {
                    48 => KeyKind::EcP384,
                    66 => KeyKind::EcP521,
                    _ => KeyKind::EcP256,
                };
                PublicKey::Ec {
                    kind,
                    x: point[1..1 + len].to_vec(),
                    y: point[1 + len..].to_vec(),
                }
            }
            Inner::Ed25519(k) => PublicKey::Ed25519(k.public_key().as_ref().to_vec()),
        };
        Self {
            inner,
            public,
            rng: SystemRandom::new(),
        }
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Family and curve.
    pub fn kind(&self) -> KeyKind {
        self.public.kind()
    }

    /// The key as PKCS#8 `PRIVATE KEY` PEM (what Sentry writes for keys it generates).
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let failed = |_| KeyError::Crypto("key serialisation failed");
        let der: Vec<u8> = match &self.inner {
            Inner::Rsa(k) => AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(k)
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            Inner::Ec(k) => k.to_pkcs8v1().map_err(failed)?.as_ref().to_vec(),
            Inner::Ed25519(k) => k.to_pkcs8v1().map_err(failed)?.as_ref().to_vec(),
        };
        Ok(crate::encoding::pem_block("PRIVATE KEY", &der))
    }

    /// Signs `message` with `alg` (JWS signature encoding: raw r‖s for ECDSA).
    pub fn sign(&self, alg: Algorithm, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        if !alg.fits(self.kind()) {
            return Err(KeyError::Incompatible {
                kind: self.kind(),
                alg,
            });
        }
        let failed = |_| KeyError::Crypto("signing failed");
        match &self.inner {
            Inner::Rsa(k) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_SHA256,
                    Algorithm::PS384 => &signature::RSA_PSS_SHA384,
                    Algorithm::PS512 => &signature::RSA_PSS_SHA512,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(padding, &self.rng, message, &mut sig)
                    .map_err(failed)?;
                Ok(sig)
            }
            Inner::Ec(k) => Ok(k
                .sign(&self.rng, message)
                .map_err(failed)?
                .as_ref()
                .to_vec()),
            Inner::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
        }
    }
}

/// The protected header members Sentry reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    /// Algorithm name.
    pub alg: String,
    /// Key id.
    #[serde(default)]
    pub kid: Option<String>,
    /// Critical extensions (none is understood, so any makes the token invalid).
    #[serde(default)]
    pub crit: Option<serde_json::Value>,
}

/// A decoded compact JWS (signature not yet checked).
#[derive(Debug, Clone)]
pub struct Compact<'a> {
    /// The protected header.
    pub header: Header,
    /// `base64url(header) "." base64url(payload)`: the signed bytes.
    pub signing_input: &'a str,
    /// The decoded payload.
    pub payload: Vec<u8>,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWS `header.payload.signature`.
pub fn decode_compact(token: &str) -> Result<Compact<'_>, String> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("token is not a compact JWS (three dot-separated parts)".into());
    };
    let header_json = b64url_decode(h).map_err(|_| "header is not base64url".to_owned())?;
    let header: Header = serde_json::from_slice(&header_json)
        .map_err(|e| format!("invalid header: {}", super::json_problem(&e)))?;
    let payload = b64url_decode(p).map_err(|_| "payload is not base64url".to_owned())?;
    let signature = b64url_decode(s).map_err(|_| "signature is not base64url".to_owned())?;
    Ok(Compact {
        header,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::ALGORITHMS;

    #[test]
    fn every_algorithm_signs_and_verifies_and_pem_round_trips() {
        for alg in ALGORITHMS {
            let key = SigningKey::generate(alg).unwrap();
            assert!(alg.fits(key.kind()), "{alg}");
            let sig = key.sign(alg, b"message").unwrap();
            assert!(key.public_key().verify(alg, b"message", &sig), "{alg}");
            assert!(!key.public_key().verify(alg, b"messagE", &sig), "{alg}");
            let back = SigningKey::from_pem(key.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
            assert_eq!(back.public_key(), key.public_key(), "{alg}");
        }
    }

    #[test]
    fn incompatible_algorithm_refused() {
        let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
        assert!(matches!(
            key.sign(Algorithm::RS256, b"m"),
            Err(KeyError::Incompatible { .. })
        ));
    }

    #[test]
    fn sec1_and_pkcs1_keys_parse() {
        let ec = EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
        let sec1 = ec.private_key().as_der().unwrap();
        let pem_text = crate::bundle::pem_block("EC PRIVATE KEY", sec1.as_ref());
        let key = SigningKey::from_pem(pem_text.as_bytes()).unwrap();
        assert_eq!(key.kind(), KeyKind::EcP384);
        // PKCS#8 of an RSA-2048 key: SEQ, INTEGER 0, AlgorithmIdentifier (15 bytes), then an
        // OCTET STRING (04 82 len len) holding the PKCS#1 RSAPrivateKey.
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&rsa).unwrap();
        let der = pkcs8.as_ref();
        assert_eq!((der[22], der[23]), (0x04, 0x82));
        let pem_text = crate::bundle::pem_block("RSA PRIVATE KEY", &der[26..]);
        let key = SigningKey::from_pem(pem_text.as_bytes()).unwrap();
        assert_eq!(key.kind(), KeyKind::Rsa);
        assert!(SigningKey::from_pem(b"garbage").is_err());
        let junk = crate::bundle::pem_block("PRIVATE KEY", &[1, 2]);
        assert!(SigningKey::from_pem(junk.as_bytes()).is_err());
    }

    #[test]
    fn compact_decoding() {
        assert!(decode_compact("a.b").is_err());
        assert!(decode_compact("a.b.c.d").is_err());
        let t = format!(
            "{}.{}.{}",
            crate::jose::b64url(br#"{"alg":"EdDSA","kid":"k"}"#),
            crate::jose::b64url(b"{}"),
            crate::jose::b64url(b"sig")
        );
        let c = decode_compact(&t).unwrap();
        assert_eq!(c.header.alg, "EdDSA");
        assert_eq!(c.header.kid.as_deref(), Some("k"));
        assert_eq!(c.payload, b"{}");
        assert_eq!(c.signature, b"sig");
        assert_eq!(c.signing_input, &t[..t.rfind('.').unwrap()]);
    }
}
