//! The Dapr `Configuration` YAML file read in standalone mode (`--config FILE`): the
//! `spec.mtls` fields Sentry uses, after Go-style `$VAR`/`${VAR}` expansion.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The parts of a Dapr `Configuration` resource that Sentry reads.
#[derive(Debug, Default, Deserialize)]
pub struct ConfigurationFile {
    /// `spec` of the resource.
    #[serde(default)]
    pub spec: Spec,
}

/// `spec` of a `Configuration`.
#[derive(Debug, Default, Deserialize)]
pub struct Spec {
    /// `spec.mtls`.
    #[serde(default)]
    pub mtls: Mtls,
}

/// `spec.mtls` of a `Configuration`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mtls {
    /// Workload certificate lifetime, Go duration.
    #[serde(rename = "workloadCertTTL")]
    pub workload_cert_ttl: Option<String>,
    /// NotBefore backdating, Go duration.
    pub allowed_clock_skew: Option<String>,
    /// Extra token validators (only `jwks` may be listed).
    #[serde(default)]
    pub token_validators: Vec<TokenValidatorSpec>,
}

/// One entry of `spec.mtls.tokenValidators`.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenValidatorSpec {
    /// Validator name.
    pub name: String,
    /// Options; every value is turned into a string as Dapr does.
    #[serde(default)]
    pub options: BTreeMap<String, serde_yaml::Value>,
}

/// Parses the YAML text after environment expansion.
pub(super) fn parse(text: &str) -> Result<ConfigurationFile, String> {
    let expanded = expand_env(text, |name| std::env::var(name).ok());
    if expanded.trim().is_empty() {
        return Ok(ConfigurationFile::default());
    }
    serde_yaml::from_str(&expanded).map_err(|e| e.to_string())
}

/// Replaces `${VAR}` and `$VAR` like Go's `os.ExpandEnv` (unset variables become empty).
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let rest = &text[i + 1..];
        if let Some(inner) = rest.strip_prefix('{') {
            if let Some(end) = inner.find('}') {
                out.push_str(&lookup(&inner[..end]).unwrap_or_default());
                for _ in 0..end + 2 {
                    chars.next();
                }
                continue;
            }
        }
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if len == 0 {
            out.push('$');
            continue;
        }
        out.push_str(&lookup(&rest[..len]).unwrap_or_default());
        for _ in 0..len {
            chars.next();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion() {
        let env = |k: &str| match k {
            "TTL" => Some("1h".to_owned()),
            "A_B" => Some("x".to_owned()),
            _ => None,
        };
        assert_eq!(expand_env("ttl: ${TTL}", env), "ttl: 1h");
        assert_eq!(expand_env("$A_B-$TTL.", env), "x-1h.");
        assert_eq!(expand_env("${NOPE}|$NOPE|$", env), "||$");
        assert_eq!(expand_env("cost: 5$ ok", env), "cost: 5$ ok");
    }

    #[test]
    fn parses_mtls() {
        let cfg = parse(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprsystem\nspec:\n  mtls:\n    workloadCertTTL: 5s\n    allowedClockSkew: 1h\n",
        )
        .unwrap();
        assert_eq!(cfg.spec.mtls.workload_cert_ttl.as_deref(), Some("5s"));
        assert_eq!(cfg.spec.mtls.allowed_clock_skew.as_deref(), Some("1h"));
        assert!(parse("").unwrap().spec.mtls.workload_cert_ttl.is_none());
        assert!(parse("spec: [").is_err());
    }
}
