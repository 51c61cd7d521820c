//! The `--jwt-*` and `--oidc-*` flags (Dapr's names and defaults) and their resolution into
//! [`JwtConfig`] and [`OidcConfig`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Args};

use super::{ConfigError, ListenAddr};
use sentry_core::bundle::jwt::JwtKeySettings;
use sentry_core::go_text::{go_bool, parse_go_duration};
use sentry_core::jose::{Algorithm, ALGORITHMS};
pub use sentry_runtime::server::oidc::{OidcConfig, OidcTls};

/// Default JWT key file name in the credentials directory.
pub const DEFAULT_JWT_KEY_FILENAME: &str = "jwt.key";
/// Default JWKS file name in the credentials directory.
pub const DEFAULT_JWKS_FILENAME: &str = "jwks.json";

/// JWT-SVID and OIDC discovery flags.
#[derive(Debug, Clone, Args)]
pub struct JwtFlags {
    /// Issue JWT-SVIDs beside X.509 SVIDs (and keep a JWT signing key and JWKS in the bundle).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", value_parser = go_bool)]
    pub jwt_enabled: bool,
    /// JWT signing key file; only an absolute path overrides `jwt.key` in the credentials
    /// directory (as in Dapr, a relative name is ignored).
    #[arg(long, default_value = DEFAULT_JWT_KEY_FILENAME)]
    pub jwt_key_filename: String,
    /// JWKS file; only an absolute path overrides `jwks.json` in the credentials directory.
    #[arg(long, default_value = DEFAULT_JWKS_FILENAME)]
    pub jwks_filename: String,
    /// `iss` claim of issued JWTs (and the OIDC issuer); absent when not given.
    #[arg(long)]
    pub jwt_issuer: Option<String>,
    /// Signature algorithm: RS256 (default), RS384, RS512, PS256, PS384, PS512, ES256, ES384,
    /// ES512 or EdDSA.
    #[arg(long, default_value = "RS256")]
    pub jwt_signing_algorithm: String,
    /// Key id of the signing key (must be in the JWKS when the key is supplied).
    #[arg(long)]
    pub jwt_key_id: Option<String>,
    /// Lifetime of issued JWTs (Go duration).
    #[arg(long, default_value = "24h")]
    pub jwt_ttl: String,
    /// Serve OIDC discovery and the JWKS (only together with --jwt-enabled).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", value_parser = go_bool)]
    pub oidc_enabled: bool,
    /// OIDC server port.
    #[arg(long, default_value_t = 9080)]
    pub oidc_server_listen_port: u16,
    /// OIDC server bind address.
    #[arg(long, default_value = "localhost")]
    pub oidc_server_listen_address: String,
    /// Serve OIDC over TLS (then both TLS file flags are required).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value_t = true, default_missing_value = "true", value_parser = go_bool)]
    pub oidc_server_tls_enabled: bool,
    /// OIDC server certificate chain (PEM).
    #[arg(long)]
    pub oidc_server_tls_cert_file: Option<PathBuf>,
    /// OIDC server private key (PEM).
    #[arg(long)]
    pub oidc_server_tls_key_file: Option<PathBuf>,
    /// `jwks_uri` announced in the discovery document instead of the served one.
    #[arg(long)]
    pub oidc_jwks_uri: Option<String>,
    /// Path prefix of both OIDC endpoints.
    #[arg(long)]
    pub oidc_path_prefix: Option<String>,
    /// Host names allowed to query the OIDC endpoints (comma-separated; `*` = any; empty = any).
    #[arg(long, value_delimiter = ',')]
    pub oidc_allowed_hosts: Vec<String>,
}

/// JWT-SVID issuance settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// Where the signing key lives (standalone); its base name is the Secret key (kubernetes).
    pub key_path: PathBuf,
    /// Where the JWKS lives; its base name is the Secret/ConfigMap key.
    pub jwks_path: PathBuf,
    /// Algorithm and required key id.
    pub key: JwtKeySettings,
    /// `iss` claim, when configured.
    pub issuer: Option<String>,
    /// Token lifetime.
    pub ttl: Duration,
}

/// Resolves the JWT and OIDC flags; `dir` is the credentials directory.
pub fn resolve(
    flags: &JwtFlags,
    dir: &Path,
) -> Result<(Option<JwtConfig>, Option<OidcConfig>), ConfigError> {
    let bad = |msg: String| ConfigError::Flag(msg);
    let oidc = if flags.oidc_enabled {
        Some(resolve_oidc(flags)?)
    } else {
        None
    };
    if !flags.jwt_enabled {
        if flags.jwt_issuer.is_some() {
            return Err(bad(
                "--jwt-issuer is set but JWT is not enabled (--jwt-enabled)".into(),
            ));
        }
        return Ok((None, oidc));
    }
    let algorithm = signing_algorithm(&flags.jwt_signing_algorithm)?;
    let ttl = parse_go_duration(&flags.jwt_ttl).map_err(|e| bad(format!("--jwt-ttl: {e}")))?;
    if ttl.is_zero() {
        return Err(bad("--jwt-ttl must be greater than zero".into()));
    }
    if flags.jwt_key_id.as_deref() == Some("") {
        return Err(bad("--jwt-key-id must not be empty".into()));
    }
    let jwt = JwtConfig {
        key_path: absolute_or_default(dir, &flags.jwt_key_filename, DEFAULT_JWT_KEY_FILENAME),
        jwks_path: absolute_or_default(dir, &flags.jwks_filename, DEFAULT_JWKS_FILENAME),
        key: JwtKeySettings {
            algorithm,
            key_id: flags.jwt_key_id.clone(),
        },
        issuer: flags.jwt_issuer.clone(),
        ttl,
    };
    Ok((Some(jwt), oidc))
}

/// The `--jwt-signing-algorithm` value in any case (`es256`, as Dapr takes it). Dapr also takes
/// names it cannot sign with here (`HS256`, `none`): one line names the flag and what works.
fn signing_algorithm(value: &str) -> Result<Algorithm, ConfigError> {
    ALGORITHMS
        .into_iter()
        .find(|a| a.name().eq_ignore_ascii_case(value))
        .ok_or_else(|| {
            let accepted: Vec<&str> = ALGORITHMS.iter().map(|a| a.name()).collect();
            ConfigError::Flag(format!(
                "--jwt-signing-algorithm {value:?} is not supported; accepted (any case): {}",
                accepted.join(", ")
            ))
        })
}

/// Dapr's quirk: an absolute name overrides the path, a relative one is ignored.
fn absolute_or_default(dir: &Path, name: &str, default: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(default)
    }
}

fn resolve_oidc(flags: &JwtFlags) -> Result<OidcConfig, ConfigError> {
    let tls = match (
        &flags.oidc_server_tls_cert_file,
        &flags.oidc_server_tls_key_file,
    ) {
        (Some(cert), Some(key)) => Some(OidcTls {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) if flags.oidc_server_tls_enabled => {
            return Err(ConfigError::Flag(
                "the OIDC server uses TLS (--oidc-server-tls-enabled) but --oidc-server-tls-cert-file and --oidc-server-tls-key-file are not set".into(),
            ))
        }
        (None, None) => None,
        _ => {
            return Err(ConfigError::Flag(
                "--oidc-server-tls-cert-file and --oidc-server-tls-key-file must be given together"
                    .into(),
            ))
        }
    };
    let prefix = flags
        .oidc_path_prefix
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/');
    let path_prefix = if prefix.is_empty() || prefix.starts_with('/') {
        prefix.to_owned()
    } else {
        format!("/{prefix}")
    };
    Ok(OidcConfig {
        listen: ListenAddr {
            host: flags.oidc_server_listen_address.clone(),
            port: flags.oidc_server_listen_port,
        },
        tls,
        jwks_uri: flags.oidc_jwks_uri.clone().filter(|u| !u.is_empty()),
        path_prefix,
        allowed_hosts: flags
            .oidc_allowed_hosts
            .iter()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Flags;
    use clap::Parser;

    fn resolve_args(args: &[&str]) -> Result<(Option<JwtConfig>, Option<OidcConfig>), ConfigError> {
        let mut all = vec!["sentry"];
        all.extend_from_slice(args);
        let flags = Flags::try_parse_from(all).unwrap();
        resolve(&flags.jwt, Path::new("/creds"))
    }

    #[test]
    fn signing_algorithm_in_any_case() {
        for a in ALGORITHMS {
            for v in [
                a.name().to_owned(),
                a.name().to_lowercase(),
                a.name().to_uppercase(),
            ] {
                let arg = format!("--jwt-signing-algorithm={v}");
                let (jwt, _) = resolve_args(&["--jwt-enabled", &arg]).unwrap();
                assert_eq!(jwt.unwrap().key.algorithm, a, "{v}");
            }
        }
        for v in ["HS256", "hs512", "none", ""] {
            let err = resolve_args(&["--jwt-enabled", "--jwt-signing-algorithm", v])
                .unwrap_err()
                .to_string();
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.starts_with("--jwt-signing-algorithm"), "{err}");
            assert!(
                err.contains("RS256, RS384") && err.contains("EdDSA"),
                "{err}"
            );
        }
    }

    #[test]
    fn disabled_by_default_and_issuer_needs_jwt() {
        assert_eq!(resolve_args(&[]).unwrap(), (None, None));
        let err = resolve_args(&["--jwt-issuer", "x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--jwt-issuer"), "{err}");
    }

    #[test]
    fn defaults_and_the_relative_file_name_quirk() {
        let (jwt, _) = resolve_args(&["--jwt-enabled", "--jwt-key-filename", "other.key"]).unwrap();
        let jwt = jwt.unwrap();
        assert_eq!(jwt.key_path, Path::new("/creds/jwt.key"));
        assert_eq!(jwt.jwks_path, Path::new("/creds/jwks.json"));
        assert_eq!(jwt.key.algorithm, Algorithm::RS256);
        assert_eq!(jwt.ttl, Duration::from_secs(86400));
        assert_eq!(jwt.issuer, None);
        let (jwt, _) = resolve_args(&[
            "--jwt-enabled=true",
            "--jwks-filename",
            "/abs/keys.json",
            "--jwt-signing-algorithm",
            "EdDSA",
            "--jwt-ttl",
            "1h30m",
            "--jwt-issuer",
            "",
        ])
        .unwrap();
        let jwt = jwt.unwrap();
        assert_eq!(jwt.jwks_path, Path::new("/abs/keys.json"));
        assert_eq!(jwt.key.algorithm, Algorithm::EdDSA);
        assert_eq!(jwt.ttl, Duration::from_secs(5400));
        assert_eq!(jwt.issuer.as_deref(), Some(""));
        assert!(resolve_args(&["--jwt-enabled", "--jwt-signing-algorithm", "HS256"]).is_err());
        assert!(resolve_args(&["--jwt-enabled", "--jwt-ttl", "0s"]).is_err());
    }

    #[test]
    fn oidc_tls_and_prefix_rules() {
        assert!(
            resolve_args(&["--oidc-enabled"]).is_err(),
            "TLS on by default needs files"
        );
        assert!(resolve_args(&["--oidc-enabled", "--oidc-server-tls-cert-file", "/c"]).is_err());
        let (_, oidc) = resolve_args(&[
            "--oidc-enabled",
            "--oidc-server-tls-enabled=false",
            "--oidc-path-prefix",
            "auth/",
            "--oidc-allowed-hosts",
            "a.example,b.example",
            "--oidc-allowed-hosts",
            "c.example",
        ])
        .unwrap();
        let oidc = oidc.unwrap();
        assert_eq!(oidc.tls, None);
        assert_eq!(oidc.path_prefix, "/auth");
        assert_eq!(oidc.allowed_hosts, ["a.example", "b.example", "c.example"]);
        assert_eq!(oidc.listen.host, "localhost");
        assert_eq!(oidc.listen.port, 9080);
        let (_, oidc) = resolve_args(&[
            "--oidc-enabled",
            "--oidc-server-tls-enabled=false",
            "--oidc-server-tls-cert-file",
            "/c",
            "--oidc-server-tls-key-file",
            "/k",
            "--oidc-path-prefix",
            "/",
        ])
        .unwrap();
        let oidc = oidc.unwrap();
        assert!(oidc.tls.is_some(), "files given: TLS even when disabled");
        assert_eq!(oidc.path_prefix, "");
    }
}
