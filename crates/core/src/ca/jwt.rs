//! JWT-SVIDs (Dapr §4.4): the base token with `aud` = [workload trust domain] + requested
//! audiences, and one token per audience. Signed with the bundle's parsed key (never re-parsed on
//! the hot path); the header is encoded once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::bundle::jwt::JwtBundle;
use crate::jose::{b64url, Algorithm, SigningKey};
use crate::spiffe::SpiffeId;

/// Most audiences one token may carry, the trust domain and duplicates included. Each distinct
/// one costs a signature (an RS256 one about 0.8 ms of CPU) and adds to the response, so one
/// request costs at most `1 + MAX_JWT_AUDIENCES` signatures. Dapr sets no bound; its callers
/// (`--sentry-request-jwt-audiences`, the `dapr.io/sentry-request-jwt-audiences` annotation)
/// ask for one to a few.
pub const MAX_JWT_AUDIENCES: usize = 8;

/// Longest audience accepted, in bytes (the SPIFFE ID bound): with it, the tokens of one
/// response stay far below the 4 MiB a client can receive.
pub const MAX_JWT_AUDIENCE_LEN: usize = 2048;

/// Why JWT-SVIDs could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The request asks for more audiences than allowed.
    #[error("too many JWT audiences: {0} requested, at most {MAX_JWT_AUDIENCES} allowed")]
    TooManyAudiences(usize),
    /// An audience is longer than [`MAX_JWT_AUDIENCE_LEN`].
    #[error("JWT audience of {0} bytes, at most {MAX_JWT_AUDIENCE_LEN} allowed")]
    AudienceTooLong(usize),
    /// The base token failed.
    #[error("failed to generate JWT: {0}")]
    Base(String),
    /// A per-audience token failed.
    #[error("failed to generate JWT for audience {audience}: {problem}")]
    Audience {
        /// The audience whose token failed, as the request named it.
        audience: String,
        /// What failed.
        problem: String,
    },
}

/// Issued tokens: the base JWT and one per audience.
#[derive(Debug, Clone)]
pub struct JwtSvids {
    /// `aud` = every audience.
    pub jwt: String,
    /// Audience → token whose `aud` is exactly that audience.
    pub per_audience: HashMap<String, String>,
}

/// Issuance settings (`--jwt-issuer`, `--jwt-ttl`, `allowedClockSkew`).
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// `iss` claim, when configured (an empty string is written as is).
    pub issuer: Option<String>,
    /// `exp` = now + ttl.
    pub ttl: Duration,
    /// `nbf` = now − skew.
    pub allowed_clock_skew: Duration,
}

/// Signs JWT-SVIDs.
pub struct JwtIssuer {
    key: Arc<SigningKey>,
    algorithm: Algorithm,
    header_b64: String,
    settings: JwtSettings,
}

#[derive(Serialize)]
struct Claims<'a> {
    jti: &'a str,
    sub: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    aud: &'a [&'a str],
    #[serde(rename = "use")]
    key_use: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

impl JwtIssuer {
    /// An issuer signing with the bundle's key, algorithm and key id.
    pub fn new(bundle: &JwtBundle, settings: JwtSettings) -> Self {
        let header = serde_json::json!({
            "alg": bundle.algorithm.name(),
            "kid": bundle.kid,
            "typ": "JWT",
        });
        Self {
            key: bundle.key.clone(),
            algorithm: bundle.algorithm,
            header_b64: b64url(header.to_string().as_bytes()),
            settings,
        }
    }

    /// Issues the base token and the per-audience tokens for `id`; the audiences are the trust
    /// domain of `id` followed by `requested`.
    pub fn issue(
        &self,
        id: &SpiffeId,
        requested: &[String],
        now: OffsetDateTime,
    ) -> Result<JwtSvids, JwtError> {
        let mut audiences: Vec<&str> = Vec::with_capacity(1 + requested.len());
        audiences.push(id.trust_domain().as_str());
        audiences.extend(requested.iter().map(String::as_str));
        if audiences.len() > MAX_JWT_AUDIENCES {
            return Err(JwtError::TooManyAudiences(audiences.len()));
        }
        if let Some(long) = audiences.iter().find(|a| a.len() > MAX_JWT_AUDIENCE_LEN) {
            return Err(JwtError::AudienceTooLong(long.len()));
        }
        let mut distinct = audiences.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let sub = id.to_string();
        let jwt = self.sign(&sub, &audiences, now).map_err(JwtError::Base)?;
        let mut per_audience = HashMap::with_capacity(distinct.len());
        if let [only] = distinct.as_slice() {
            // The base token already has exactly this one audience: it is the per-audience token.
            per_audience.insert((*only).to_owned(), jwt.clone());
        } else {
            for aud in distinct {
                let token = self
                    .sign(&sub, &[aud], now)
                    .map_err(|problem| JwtError::Audience {
                        audience: aud.to_owned(),
                        problem,
                    })?;
                per_audience.insert(aud.to_owned(), token);
            }
        }
        Ok(JwtSvids { jwt, per_audience })
    }

    fn sign(&self, sub: &str, aud: &[&str], now: OffsetDateTime) -> Result<String, String> {
        let now_s = now.unix_timestamp();
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let jti = random_jti();
        let claims = Claims {
            jti: &jti,
            sub,
            iat: now_s,
            nbf: now_s.saturating_sub(secs(self.settings.allowed_clock_skew)),
            exp: now_s.saturating_add(secs(self.settings.ttl)),
            aud,
            key_use: "sig",
            iss: self.settings.issuer.as_deref(),
        };
        let payload = serde_json::to_vec(&claims).map_err(|e| e.to_string())?;
        let mut token = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 400);
        token.push_str(&self.header_b64);
        token.push('.');
        token.push_str(&b64url(&payload));
        let signature = self
            .key
            .sign(self.algorithm, token.as_bytes())
            .map_err(|e| e.to_string())?;
        token.push('.');
        token.push_str(&b64url(&signature));
        Ok(token)
    }
}

/// 16 random bytes as 32 lower-case hex characters.
fn random_jti() -> String {
    let mut bytes = [0u8; 16];
    // The system RNG does not fail on supported platforms; a zero jti would still be well-formed.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::jwt::{generate_jwt, JwtKeySettings};
    use crate::jose::{b64url_decode, decode_compact};
    use crate::spiffe::TrustDomain;

    fn issuer(alg: Algorithm, iss: Option<&str>) -> (JwtIssuer, JwtBundle) {
        let bundle = generate_jwt(&JwtKeySettings {
            algorithm: alg,
            key_id: None,
        })
        .unwrap();
        let settings = JwtSettings {
            issuer: iss.map(str::to_owned),
            ttl: Duration::from_secs(3600),
            allowed_clock_skew: Duration::from_secs(900),
        };
        (JwtIssuer::new(&bundle, settings), bundle)
    }

    fn claims(token: &str, bundle: &JwtBundle) -> serde_json::Value {
        let c = decode_compact(token).unwrap();
        assert!(bundle.key.public_key().verify(
            bundle.algorithm,
            c.signing_input.as_bytes(),
            &c.signature
        ));
        let header: serde_json::Value =
            serde_json::from_slice(&b64url_decode(token.split('.').next().unwrap()).unwrap())
                .unwrap();
        assert_eq!(header["alg"], bundle.algorithm.name());
        assert_eq!(header["kid"], bundle.kid);
        assert_eq!(header["typ"], "JWT");
        serde_json::from_slice(&c.payload).unwrap()
    }

    #[test]
    fn claims_follow_dapr() {
        let (iss, bundle) = issuer(Algorithm::EdDSA, None);
        let id =
            SpiffeId::new(TrustDomain::parse("example.com").unwrap(), "default", "app").unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let out = iss
            .issue(
                &id,
                &["api".to_owned(), "api".to_owned(), "db".to_owned()],
                now,
            )
            .unwrap();
        let c = claims(&out.jwt, &bundle);
        assert_eq!(c["sub"], "spiffe://example.com/ns/default/app");
        assert_eq!(
            c["aud"],
            serde_json::json!(["example.com", "api", "api", "db"])
        );
        assert_eq!(c["iat"], 1_700_000_000);
        assert_eq!(c["nbf"], 1_700_000_000 - 900);
        assert_eq!(c["exp"], 1_700_000_000 + 3600);
        assert_eq!(c["use"], "sig");
        assert!(c.get("iss").is_none());
        let jti = c["jti"].as_str().unwrap();
        assert_eq!(jti.len(), 32);
        assert!(jti
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(out.per_audience.len(), 3);
        for (aud, token) in &out.per_audience {
            let c = claims(token, &bundle);
            assert_eq!(c["aud"], serde_json::json!([aud]));
            assert_ne!(c["jti"], jti);
        }
    }

    #[test]
    fn single_audience_and_issuer() {
        let (iss, bundle) = issuer(Algorithm::ES256, Some(""));
        let id = SpiffeId::new(TrustDomain::public(), "ns", "app").unwrap();
        let out = iss.issue(&id, &[], OffsetDateTime::now_utc()).unwrap();
        let c = claims(&out.jwt, &bundle);
        assert_eq!(c["aud"], serde_json::json!(["public"]));
        assert_eq!(c["iss"], "");
        assert_eq!(out.per_audience["public"], out.jwt);
        let many: Vec<String> = (0..MAX_JWT_AUDIENCES).map(|i| format!("a{i}")).collect();
        assert_eq!(
            iss.issue(&id, &many, OffsetDateTime::now_utc())
                .unwrap_err(),
            JwtError::TooManyAudiences(MAX_JWT_AUDIENCES + 1)
        );
        // Duplicates count: each one lengthens the base token.
        let dups = vec!["a".to_owned(); 1_000_000];
        assert_eq!(
            iss.issue(&id, &dups, OffsetDateTime::now_utc())
                .unwrap_err(),
            JwtError::TooManyAudiences(1_000_001)
        );
        let long = vec!["a".repeat(MAX_JWT_AUDIENCE_LEN + 1)];
        assert_eq!(
            iss.issue(&id, &long, OffsetDateTime::now_utc())
                .unwrap_err(),
            JwtError::AudienceTooLong(MAX_JWT_AUDIENCE_LEN + 1)
        );
        let longest = vec!["a".repeat(MAX_JWT_AUDIENCE_LEN)];
        iss.issue(&id, &longest, OffsetDateTime::now_utc()).unwrap();
    }
}
