//! Configuration: flags, environment and the Dapr `Configuration`, resolved once at start-up into
//! one typed [`Config`]. Nothing else reads flags, files or the environment for settings.

mod file;
mod flags;
pub mod jwks;
pub mod jwt;
mod limits;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use file::{expand_env, ConfigurationFile, TokenValidatorSpec};
pub use flags::{normalize_args, Flags, LogLevel, Mode};
pub use jwt::{JwtConfig, JwtFlags, OidcConfig, OidcTls};
pub use limits::limits_from_flags;
pub use sentry_core::go_text::{go_bool, parse_go_duration};
pub use sentry_runtime::server::limits::Limits;
pub use sentry_runtime::server::listen_addr::ListenAddr;

use sentry_core::spiffe::{SpiffeError, SpiffeId, TrustDomain};
use sentry_runtime::store::file::CredentialPaths;
use sentry_runtime::telemetry::logging::LogOptions;
use sentry_runtime::validator::{ValidatorKind, ValidatorSet};
use tracing::Level;

/// Default workload certificate lifetime (Dapr's `24h`).
pub const DEFAULT_WORKLOAD_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default NotBefore backdating (Dapr's `15m`).
pub const DEFAULT_ALLOWED_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
/// The configuration name Dapr uses when `--config` is not given.
pub const DEFAULT_CONFIG_NAME: &str = "daprsystem";
/// The app id of Sentry's own identity.
pub const SENTRY_APP_ID: &str = "dapr-sentry";

/// Why the configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The `--config` path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The `--config` file is not a valid `Configuration`.
    #[error("config file {path}: {problem}")]
    Invalid {
        /// The `--config` path.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// `--trust-domain` is not a valid SPIFFE trust domain.
    #[error("--trust-domain {value:?}: {source}")]
    TrustDomain {
        /// The flag's value.
        value: String,
        /// Why it was refused.
        source: SpiffeError,
    },
    /// `NAMESPACE` is not a valid SPIFFE path segment.
    #[error("NAMESPACE {value:?}: {source}")]
    Namespace {
        /// The variable's value.
        value: String,
        /// Why it was refused.
        source: SpiffeError,
    },
    /// The Kubernetes `Configuration` could not be read.
    #[error("{0}")]
    Kubernetes(String),
    /// A flag's value, or a combination of flags, is invalid.
    #[error("{0}")]
    Flag(String),
    /// A capacity-limit flag is out of range.
    #[error("{0}")]
    Limit(String),
}

/// The logging settings the flags ask for.
pub fn log_options(flags: &Flags) -> LogOptions {
    const NOT_A_FLAG: &str =
        "not a flag (a boolean flag takes a value only as --flag=value, as in Dapr)";
    LogOptions {
        level: match flags.log_level {
            LogLevel::Debug => Level::DEBUG,
            LogLevel::Info => Level::INFO,
            LogLevel::Warn => Level::WARN,
            LogLevel::Error | LogLevel::Fatal => Level::ERROR,
        },
        file: flags.log_file.clone(),
        json: flags.log_as_json,
        notices: flags
            .ignored_args
            .iter()
            .map(|a| format!("ignoring argument {a:?}: {NOT_A_FLAG}"))
            .collect(),
    }
}

/// Everything Sentry needs to know, resolved once at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the bundle lives.
    pub mode: Mode,
    /// Control-plane trust domain.
    pub trust_domain: TrustDomain,
    /// Sentry's namespace (`NAMESPACE`, default `default`).
    pub namespace: String,
    /// Sentry's own SPIFFE ID: what clients authorise, and the token audience.
    pub sentry_id: SpiffeId,
    /// Workload certificate lifetime.
    pub workload_cert_ttl: Duration,
    /// NotBefore backdating.
    pub allowed_clock_skew: Duration,
    /// Enabled validators.
    pub validators: ValidatorSet,
    /// `--issuer-credentials`: where the files are (standalone); the mounted trust-bundle Secret
    /// whose changes a running Sentry watches (kubernetes).
    pub credentials_dir: PathBuf,
    /// Bundle file paths (standalone); their base names are the Secret keys (kubernetes).
    pub credentials: CredentialPaths,
    /// gRPC listener.
    pub grpc: ListenAddr,
    /// Health listener.
    pub healthz: ListenAddr,
    /// Metrics listener, when metrics are enabled.
    pub metrics: Option<ListenAddr>,
    /// Renewal and rotation.
    pub rotation: sentry_runtime::rotation::Settings,
    /// JWT-SVID issuance, when `--jwt-enabled`.
    pub jwt: Option<JwtConfig>,
    /// OIDC discovery server, when `--oidc-enabled`.
    pub oidc: Option<OidcConfig>,
    /// Capacity limits and load shedding.
    pub limits: Limits,
}

impl Config {
    /// Resolves flags plus environment (`NAMESPACE`) plus the loaded `Configuration` (from
    /// [`load_configuration_file`] in standalone mode, from the API server in Kubernetes mode).
    pub fn resolve(
        flags: &Flags,
        namespace_env: Option<String>,
        configuration: Option<LoadedConfiguration>,
    ) -> Result<Self, ConfigError> {
        let (trust_domain, namespace, sentry_id) = identity(flags, namespace_env)?;
        let (cfg_path, mtls) = match &configuration {
            Some(c) => (PathBuf::from(&c.origin), Some(&c.file.spec.mtls)),
            None => (PathBuf::new(), None),
        };
        let (workload_cert_ttl, allowed_clock_skew) = lifetimes(mtls, &cfg_path)?;
        let specs = mtls.map(|m| m.token_validators.as_slice()).unwrap_or(&[]);
        let validators = resolve_validators(flags.mode, specs, &cfg_path)?;
        let rotation = rotation_settings(
            flags,
            &trust_domain,
            &namespace,
            workload_cert_ttl,
            allowed_clock_skew,
        );
        let (jwt, oidc) = jwt::resolve(&flags.jwt, &flags.issuer_credentials)?;
        let limits = limits_from_flags(flags).map_err(ConfigError::Limit)?;
        Ok(Self {
            mode: flags.mode,
            trust_domain,
            namespace,
            sentry_id,
            workload_cert_ttl,
            allowed_clock_skew,
            validators,
            credentials_dir: flags.issuer_credentials.clone(),
            credentials: CredentialPaths::new(
                &flags.issuer_credentials,
                &flags.issuer_ca_filename,
                &flags.issuer_certificate_filename,
                &flags.issuer_key_filename,
            ),
            grpc: ListenAddr {
                host: flags.listen_address.clone(),
                port: flags.port,
            },
            healthz: ListenAddr {
                host: flags.healthz_listen_address.clone(),
                port: flags.healthz_port,
            },
            metrics: flags.enable_metrics.then(|| ListenAddr {
                host: flags.metrics_listen_address.clone(),
                port: flags.metrics_port,
            }),
            rotation,
            jwt,
            oidc,
            limits,
        })
    }
}

/// A `Configuration` as loaded, with where it came from (for error messages).
#[derive(Debug)]
pub struct LoadedConfiguration {
    /// A file path, or `Configuration <ns>/<name>`.
    pub origin: String,
    /// The parsed content.
    pub file: ConfigurationFile,
}

/// The `--config` value and whether it was given explicitly (the default name is optional).
pub fn configuration_name(flags: &Flags) -> (String, bool) {
    match &flags.config {
        Some(p) if !p.is_empty() => (p.clone(), true),
        _ => (DEFAULT_CONFIG_NAME.to_owned(), false),
    }
}

/// Reads the standalone configuration file: an explicit `--config` must load; the default name
/// is optional.
pub fn load_configuration_file(flags: &Flags) -> Result<Option<LoadedConfiguration>, ConfigError> {
    let (name, explicit) = configuration_name(flags);
    let path = PathBuf::from(&name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    let parsed = file::parse(&text).map_err(|problem| ConfigError::Invalid {
        path: path.clone(),
        problem,
    })?;
    Ok(Some(LoadedConfiguration {
        origin: name,
        file: parsed,
    }))
}

/// The trust domain, Sentry's namespace (`NAMESPACE`, default `default`) and Sentry's own ID.
fn identity(
    flags: &Flags,
    namespace_env: Option<String>,
) -> Result<(TrustDomain, String, SpiffeId), ConfigError> {
    let trust_domain =
        TrustDomain::parse(&flags.trust_domain).map_err(|source| ConfigError::TrustDomain {
            value: flags.trust_domain.clone(),
            source,
        })?;
    let namespace = namespace_env
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    let sentry_id =
        SpiffeId::new(trust_domain.clone(), &namespace, SENTRY_APP_ID).map_err(|source| {
            ConfigError::Namespace {
                value: namespace.clone(),
                source,
            }
        })?;
    Ok((trust_domain, namespace, sentry_id))
}

/// The workload certificate TTL and the allowed clock skew from `spec.mtls` (of the
/// Configuration at `cfg_path`), else Dapr's defaults.
fn lifetimes(
    mtls: Option<&file::Mtls>,
    cfg_path: &Path,
) -> Result<(Duration, Duration), ConfigError> {
    let duration = |value: Option<&String>, field: &str, default: Duration| match value {
        None => Ok(default),
        Some(v) if v.trim().is_empty() => Ok(default),
        Some(v) => parse_go_duration(v).map_err(|problem| ConfigError::Invalid {
            path: cfg_path.to_path_buf(),
            problem: format!("spec.mtls.{field}: {problem}"),
        }),
    };
    let workload_cert_ttl = duration(
        mtls.and_then(|m| m.workload_cert_ttl.as_ref()),
        "workloadCertTTL",
        DEFAULT_WORKLOAD_CERT_TTL,
    )?;
    if workload_cert_ttl.is_zero() {
        return Err(ConfigError::Invalid {
            path: cfg_path.to_path_buf(),
            problem: "spec.mtls.workloadCertTTL must be greater than zero".into(),
        });
    }
    let allowed_clock_skew = duration(
        mtls.and_then(|m| m.allowed_clock_skew.as_ref()),
        "allowedClockSkew",
        DEFAULT_ALLOWED_CLOCK_SKEW,
    )?;
    Ok((workload_cert_ttl, allowed_clock_skew))
}

/// Renewal and rotation from the flags and the resolved lifetimes.
fn rotation_settings(
    flags: &Flags,
    trust_domain: &TrustDomain,
    namespace: &str,
    workload_cert_ttl: Duration,
    allowed_clock_skew: Duration,
) -> sentry_runtime::rotation::Settings {
    let params = sentry_core::bundle::CaParams {
        trust_domain: trust_domain.clone(),
        namespace: namespace.to_owned(),
        key_type: flags.key_type,
        allowed_clock_skew,
        root_ttl: flags.root_ttl,
        issuer_ttl: flags.issuer_ttl,
    };
    sentry_runtime::rotation::Settings {
        renew_fraction: flags.renew_when_remaining,
        grace: flags
            .root_rotation_grace
            .unwrap_or(workload_cert_ttl + allowed_clock_skew),
        retire_after: workload_cert_ttl + allowed_clock_skew,
        auto_root_rotation: flags.auto_rotate_root,
        interval: flags.bundle_check_interval.max(Duration::from_millis(100)),
        resync: flags.bundle_resync_interval.max(Duration::from_secs(1)),
        ..sentry_runtime::rotation::Settings::new(params)
    }
}

fn resolve_validators(
    mode: Mode,
    specs: &[TokenValidatorSpec],
    path: &Path,
) -> Result<ValidatorSet, ConfigError> {
    let invalid = |problem: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        problem,
    };
    let mut jwks = None;
    for spec in specs {
        match spec.name.to_ascii_lowercase().as_str() {
            "kubernetes" | "insecure" => return Err(invalid(
                "the built-in 'kubernetes' and 'insecure' validators cannot be configured manually"
                    .into(),
            )),
            "jwks" => {
                jwks = Some(jwks::parse_options(&spec.options).map_err(&invalid)?);
            }
            other => return Err(invalid(format!("invalid token validator name: {other}"))),
        }
    }
    Ok(match (mode, jwks) {
        // Standalone: jwks replaces insecure, and requests must name it (no default).
        (Mode::Standalone, Some(jwks)) => ValidatorSet {
            enabled: vec![ValidatorKind::Jwks],
            default: None,
            jwks: Some(jwks),
        },
        (Mode::Standalone, None) => ValidatorSet {
            enabled: vec![ValidatorKind::Insecure],
            default: Some(ValidatorKind::Insecure),
            jwks: None,
        },
        // Kubernetes: jwks is added beside the Kubernetes validator, which stays the default.
        (Mode::Kubernetes, jwks) => ValidatorSet {
            enabled: [ValidatorKind::Kubernetes]
                .into_iter()
                .chain(jwks.is_some().then_some(ValidatorKind::Jwks))
                .collect(),
            default: Some(ValidatorKind::Kubernetes),
            jwks,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_without_config_file() {
        let flags = Flags::try_parse_from(["sentry"]).unwrap();
        let cfg = Config::resolve(&flags, None, load_configuration_file(&flags).unwrap()).unwrap();
        assert_eq!(cfg.workload_cert_ttl, DEFAULT_WORKLOAD_CERT_TTL);
        assert_eq!(cfg.allowed_clock_skew, DEFAULT_ALLOWED_CLOCK_SKEW);
        assert_eq!(cfg.namespace, "default");
        assert_eq!(
            cfg.sentry_id.to_string(),
            "spiffe://localhost/ns/default/dapr-sentry"
        );
        assert_eq!(cfg.validators.default, Some(ValidatorKind::Insecure));
    }

    #[test]
    fn explicit_missing_config_is_an_error() {
        let flags = Flags::try_parse_from(["sentry", "--config", "/nonexistent/cfg.yaml"]).unwrap();
        let err = load_configuration_file(&flags).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/cfg.yaml"), "{err}");
    }

    #[test]
    fn absolute_file_names_override_dir() {
        let p = CredentialPaths::new(Path::new("/d"), "ca.crt", "/abs/issuer.crt", "k");
        assert_eq!(p.anchors, Path::new("/d/ca.crt"));
        assert_eq!(p.issuer_cert, Path::new("/abs/issuer.crt"));
        assert_eq!(p.issuer_key, Path::new("/d/k"));
    }

    #[test]
    fn manual_builtin_validators_refused() {
        let spec = TokenValidatorSpec {
            name: "Kubernetes".into(),
            options: Default::default(),
        };
        assert!(resolve_validators(Mode::Standalone, &[spec], Path::new("c")).is_err());
    }

    #[test]
    fn jwks_validator_replaces_insecure_or_joins_kubernetes() {
        let spec = TokenValidatorSpec {
            name: "JWKS".into(),
            options: [("source".to_owned(), "{\"keys\":[]}".into())].into(),
        };
        let set = resolve_validators(
            Mode::Standalone,
            std::slice::from_ref(&spec),
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(set.enabled, [ValidatorKind::Jwks]);
        assert_eq!(set.default, None);
        assert_eq!(set.jwks.unwrap().source, "{\"keys\":[]}");
        let set = resolve_validators(Mode::Kubernetes, &[spec], Path::new("c")).unwrap();
        assert_eq!(
            set.enabled,
            [ValidatorKind::Kubernetes, ValidatorKind::Jwks]
        );
        assert_eq!(set.default, Some(ValidatorKind::Kubernetes));
        let no_source = TokenValidatorSpec {
            name: "jwks".into(),
            options: Default::default(),
        };
        assert!(resolve_validators(Mode::Standalone, &[no_source], Path::new("c")).is_err());
    }

    #[test]
    fn jwt_in_kubernetes_mode_keeps_the_file_base_names_as_keys() {
        let flags = Flags::try_parse_from([
            "sentry",
            "--mode",
            "kubernetes",
            "--jwt-enabled",
            "--jwks-filename",
            "/etc/keys/public.json",
        ])
        .unwrap();
        let jwt = Config::resolve(&flags, None, None).unwrap().jwt.unwrap();
        let key = sentry_runtime::store::kube::base_name(&jwt.key_path);
        let jwks = sentry_runtime::store::kube::base_name(&jwt.jwks_path);
        assert_eq!((key.as_str(), jwks.as_str()), ("jwt.key", "public.json"));
    }

    #[test]
    fn bad_trust_domain_flag() {
        let flags = Flags::try_parse_from(["sentry", "--trust-domain", "Bad Domain"]).unwrap();
        assert!(Config::resolve(&flags, None, None).is_err());
    }
}
