//! SPIFFE names: trust domains and workload IDs `spiffe://<td>/ns/<namespace>/<app-id>`.
//!
//! Owns the syntax rules of the SPIFFE standard (and the messages go-spiffe uses for them) so
//! that no other module builds an identity string by hand.

use std::fmt;

/// Why a trust domain or SPIFFE ID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    /// The trust domain is empty.
    #[error("trust domain is missing")]
    MissingTrustDomain,
    /// The trust domain has characters outside `[a-z0-9._-]`.
    #[error("trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores")]
    BadTrustDomainChar,
    /// The trust domain is longer than 255 bytes.
    #[error("trust domain is too long")]
    TrustDomainTooLong,
    /// A path segment is empty.
    #[error("path cannot contain empty segments")]
    EmptySegment,
    /// A path segment is `.` or `..`.
    #[error("path cannot contain dot segments")]
    DotSegment,
    /// A path segment has characters outside `[A-Za-z0-9._-]`.
    #[error(
        "path segment characters are limited to letters, numbers, dots, dashes, and underscores"
    )]
    BadPathChar,
    /// A `spiffe://` form has a path where only a trust domain was expected.
    #[error("scheme is missing or invalid")]
    BadScheme,
    /// The whole ID would be longer than [`MAX_ID_LEN`] bytes.
    #[error("SPIFFE ID is longer than {MAX_ID_LEN} bytes")]
    IdTooLong,
}

/// Longest SPIFFE ID issued, in bytes: the SPIFFE standard's 2048-byte bound on URIs that
/// implementations must support and should not exceed. Without it, a huge namespace would make
/// a certificate too large for the client to receive.
pub const MAX_ID_LEN: usize = 2048;

/// A validated SPIFFE trust domain (lower-case, `[a-z0-9._-]`, 1–255 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrustDomain(String);

/// The trust domain used when a request names none.
pub const DEFAULT_TRUST_DOMAIN: &str = "public";

impl TrustDomain {
    /// Parses a trust domain given bare (`example.org`) or as an ID (`spiffe://example.org`).
    pub fn parse(input: &str) -> Result<Self, SpiffeError> {
        let name = match input.strip_prefix("spiffe://") {
            Some(rest) => {
                let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
                if !path.is_empty() {
                    validate_path(path)?;
                }
                td
            }
            None if input.contains("://") => return Err(SpiffeError::BadScheme),
            None => input,
        };
        if name.is_empty() {
            return Err(SpiffeError::MissingTrustDomain);
        }
        if name.len() > 255 {
            return Err(SpiffeError::TrustDomainTooLong);
        }
        if !name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        }) {
            return Err(SpiffeError::BadTrustDomainChar);
        }
        Ok(Self(name.to_owned()))
    }

    /// The trust domain `public`, used when a request names none.
    pub fn public() -> Self {
        Self(DEFAULT_TRUST_DOMAIN.to_owned())
    }

    /// The trust domain as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn validate_segment(segment: &str) -> Result<(), SpiffeError> {
    match segment {
        "" => Err(SpiffeError::EmptySegment),
        "." | ".." => Err(SpiffeError::DotSegment),
        s if s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) =>
        {
            Ok(())
        }
        _ => Err(SpiffeError::BadPathChar),
    }
}

fn validate_path(path: &str) -> Result<(), SpiffeError> {
    path.split('/').try_for_each(validate_segment)
}

/// A Dapr workload identity `spiffe://<td>/ns/<namespace>/<app-id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    namespace: String,
    app_id: String,
}

impl SpiffeId {
    /// Builds an ID, refusing namespace or app-id segments that SPIFFE does not allow.
    pub fn new(
        trust_domain: TrustDomain,
        namespace: &str,
        app_id: &str,
    ) -> Result<Self, SpiffeError> {
        validate_segment(namespace)?;
        validate_segment(app_id)?;
        let len = "spiffe://".len()
            + trust_domain.as_str().len()
            + "/ns/".len()
            + namespace.len()
            + 1
            + app_id.len();
        if len > MAX_ID_LEN {
            return Err(SpiffeError::IdTooLong);
        }
        Ok(Self {
            trust_domain,
            namespace: namespace.to_owned(),
            app_id: app_id.to_owned(),
        })
    }

    /// The trust domain part.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The namespace part.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The app-id part.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/{}",
            self.trust_domain, self.namespace, self.app_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_domain_forms() {
        assert_eq!(
            TrustDomain::parse("example.org").unwrap().as_str(),
            "example.org"
        );
        assert_eq!(
            TrustDomain::parse("spiffe://example.org").unwrap().as_str(),
            "example.org"
        );
        assert_eq!(TrustDomain::parse(""), Err(SpiffeError::MissingTrustDomain));
        assert_eq!(
            TrustDomain::parse("Example.org"),
            Err(SpiffeError::BadTrustDomainChar)
        );
        assert_eq!(
            TrustDomain::parse("a b"),
            Err(SpiffeError::BadTrustDomainChar)
        );
        assert_eq!(TrustDomain::parse("http://x"), Err(SpiffeError::BadScheme));
        assert_eq!(
            TrustDomain::parse(&"a".repeat(256)),
            Err(SpiffeError::TrustDomainTooLong)
        );
    }

    #[test]
    fn id_segments() {
        let td = TrustDomain::public();
        let id = SpiffeId::new(td.clone(), "default", "my-app_1.v2").unwrap();
        assert_eq!(id.to_string(), "spiffe://public/ns/default/my-app_1.v2");
        assert_eq!(
            SpiffeId::new(td.clone(), "", "a"),
            Err(SpiffeError::EmptySegment)
        );
        assert_eq!(
            SpiffeId::new(td.clone(), "ns", ".."),
            Err(SpiffeError::DotSegment)
        );
        assert_eq!(
            SpiffeId::new(td.clone(), "ns", "a/b"),
            Err(SpiffeError::BadPathChar)
        );
        assert_eq!(
            SpiffeId::new(td.clone(), "n s", "a"),
            Err(SpiffeError::BadPathChar)
        );
        // "spiffe://public/ns/" is 19 bytes, "/a" 2: a namespace of 2027 bytes just fits.
        let ns = "n".repeat(MAX_ID_LEN - 21);
        assert_eq!(
            SpiffeId::new(td.clone(), &ns, "a")
                .unwrap()
                .to_string()
                .len(),
            MAX_ID_LEN
        );
        let ns = "n".repeat(MAX_ID_LEN - 20);
        assert_eq!(SpiffeId::new(td, &ns, "a"), Err(SpiffeError::IdTooLong));
    }
}
