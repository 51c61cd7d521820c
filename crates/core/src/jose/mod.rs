//! JOSE building blocks shared by JWT issuance, the JWKS validator and the OIDC server: the
//! signature algorithms of RFC 7518 ([`Algorithm`]), JSON Web Keys and their RFC 7638 thumbprints
//! ([`jwk`]), and compact JWS signing and verification on aws-lc-rs ([`jws`]).
//!
//! Pure crypto and encoding: no I/O and no claims policy (that belongs to the callers).

pub mod jwk;
pub mod jws;

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

pub use jwk::{Jwk, JwkError, JwkSet, PublicKey};
pub use jws::{decode_compact, Compact, KeyError, SigningKey};

/// A JSON problem in one short line, without serde's quote of the offending value: these
/// messages reach callers, statuses and logs, and their size must not be the input's choice.
pub fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "malformed JSON",
        Category::Eof => "truncated JSON",
        Category::Data => "a member has an unexpected type or value",
        Category::Io => "unreadable JSON",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// Text from a caller cut to 64 characters, for quoting it in a message.
pub fn quote_short(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The family (and curve) of a key, which decides the algorithms it can be used with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA (any size aws-lc-rs accepts, 2048–8192 bits).
    Rsa,
    /// ECDSA on NIST P-256.
    EcP256,
    /// ECDSA on NIST P-384.
    EcP384,
    /// ECDSA on NIST P-521.
    EcP521,
    /// Ed25519.
    Ed25519,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Rsa => "RSA",
            KeyKind::EcP256 => "ECDSA P-256",
            KeyKind::EcP384 => "ECDSA P-384",
            KeyKind::EcP521 => "ECDSA P-521",
            KeyKind::Ed25519 => "Ed25519",
        })
    }
}

/// A JWS signature algorithm Sentry can sign and verify with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (Dapr's default).
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// ECDSA P-521 with SHA-512.
    ES512,
    /// EdDSA with Ed25519.
    EdDSA,
}

/// Every supported algorithm.
pub const ALGORITHMS: [Algorithm; 10] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::ES512,
    Algorithm::EdDSA,
];

impl Algorithm {
    /// The registered `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::ES512 => "ES512",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// True when a key of `kind` can sign with this algorithm (Dapr's compatibility table).
    pub fn fits(self, kind: KeyKind) -> bool {
        use Algorithm::*;
        matches!(
            (self, kind),
            (RS256 | RS384 | RS512 | PS256 | PS384 | PS512, KeyKind::Rsa)
                | (ES256, KeyKind::EcP256)
                | (ES384, KeyKind::EcP384)
                | (ES512, KeyKind::EcP521)
                | (EdDSA, KeyKind::Ed25519)
        )
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALGORITHMS
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("unsupported signature algorithm: {s:?}"))
    }
}

/// Base64url without padding (JOSE's encoding).
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding (a trailing `=` is tolerated).
pub fn b64url_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_compatibility() {
        for alg in ALGORITHMS {
            assert_eq!(alg.name().parse::<Algorithm>().unwrap(), alg);
        }
        assert!("HS256".parse::<Algorithm>().is_err());
        assert!("none".parse::<Algorithm>().is_err());
        // Dapr's validateKeyAlgorithmCompatibility table.
        use Algorithm::*;
        assert!(RS256.fits(KeyKind::Rsa) && PS256.fits(KeyKind::Rsa));
        assert!(!ES256.fits(KeyKind::Rsa) && !EdDSA.fits(KeyKind::Rsa));
        assert!(ES256.fits(KeyKind::EcP256) && ES384.fits(KeyKind::EcP384));
        assert!(ES512.fits(KeyKind::EcP521));
        assert!(!ES384.fits(KeyKind::EcP256) && !RS256.fits(KeyKind::EcP256));
        assert!(!EdDSA.fits(KeyKind::EcP256));
        assert!(EdDSA.fits(KeyKind::Ed25519));
        assert!(!ES256.fits(KeyKind::Ed25519) && !RS256.fits(KeyKind::Ed25519));
    }
}
