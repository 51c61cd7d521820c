//! Command-line flags, with the names and defaults of Dapr's sentry (single-dash long flags such as
//! `-port 50001` are accepted, as Go's flag package does).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

use super::jwt::JwtFlags;
use sentry_core::bundle::KeyType;
use sentry_core::go_text::{go_bool, parse_go_duration};

/// Where the trust bundle lives and which identities Sentry trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Bundle in a directory; insecure validator by default.
    Standalone,
    /// Bundle in the `dapr-trust-bundle` Secret/ConfigMap; Kubernetes token validator.
    Kubernetes,
}

/// Log verbosity, Dapr's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Everything, including per-request outcomes.
    Debug,
    /// Normal operation.
    Info,
    /// Problems that need no action yet.
    Warn,
    /// Failures.
    Error,
    /// Only failures that stop Sentry.
    Fatal,
}

/// Sentry's flags (the `serve` command line; [`crate::cli::CommandLine`] adds the subcommands).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sentry",
    version,
    about = "Dapr Sentry certificate authority (Rust): serves SignCertificate; `sentry ca --help` for operator commands"
)]
pub struct Flags {
    /// Configuration: a `Configuration` YAML file (standalone) or resource name (kubernetes).
    /// Defaults to `daprsystem`; when not given and no such file exists, built-in defaults apply.
    #[arg(long)]
    pub config: Option<String>,
    /// Directory holding the trust bundle in standalone mode.
    #[arg(long, default_value = "/var/run/secrets/dapr.io/credentials")]
    pub issuer_credentials: PathBuf,
    /// Trust anchors file name (absolute path overrides the directory).
    #[arg(long, default_value = "ca.crt")]
    pub issuer_ca_filename: String,
    /// Issuer certificate chain file name (absolute path overrides the directory).
    #[arg(long, default_value = "issuer.crt")]
    pub issuer_certificate_filename: String,
    /// Issuer private key file name (absolute path overrides the directory).
    #[arg(long, default_value = "issuer.key")]
    pub issuer_key_filename: String,
    /// Control-plane trust domain (Sentry's own identity and generated CA subjects).
    #[arg(long, default_value = "localhost")]
    pub trust_domain: String,
    /// gRPC port.
    #[arg(long, default_value_t = 50001)]
    pub port: u16,
    /// gRPC bind address (empty: all interfaces).
    #[arg(long, default_value = "")]
    pub listen_address: String,
    /// Health endpoint port.
    #[arg(long, default_value_t = 8080)]
    pub healthz_port: u16,
    /// Health endpoint bind address (empty: all interfaces).
    #[arg(long, default_value = "")]
    pub healthz_listen_address: String,
    /// Where the bundle lives and how tokens are checked.
    #[arg(long, value_enum, default_value_t = Mode::Standalone)]
    pub mode: Mode,
    /// Kubeconfig used when not running inside a cluster.
    #[arg(long, env = "KUBE_CONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Key algorithm for a generated root and issuer (beyond Dapr, which always uses Ed25519).
    #[arg(long, value_enum, default_value_t = KeyType::Ed25519)]
    pub key_type: KeyType,
    /// Log level (any case, as Dapr).
    #[arg(long, value_enum, ignore_case = true, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
    /// Write logs to this file instead of standard output.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Logs as JSON lines.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", value_parser = go_bool)]
    pub log_as_json: bool,
    /// Serve Prometheus metrics.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value_t = true, default_missing_value = "true", value_parser = go_bool)]
    pub enable_metrics: bool,
    /// Metrics port.
    #[arg(long, default_value_t = 9090)]
    pub metrics_port: u16,
    /// Metrics bind address.
    #[arg(long, default_value = "0.0.0.0")]
    pub metrics_listen_address: String,
    /// Lifetime of a root Sentry generates (Go duration; Dapr: fixed 8760h).
    #[arg(long, default_value = "8760h", value_parser = duration_arg)]
    pub root_ttl: Duration,
    /// Lifetime of an issuer Sentry generates or renews (Go duration).
    #[arg(long, default_value = "8760h", value_parser = duration_arg)]
    pub issuer_ttl: Duration,
    /// Renew the issuer (and rotate the root) when less than this fraction of its life remains.
    #[arg(long, default_value_t = 1.0 / 3.0, value_parser = fraction_arg)]
    pub renew_when_remaining: f64,
    /// Rotate the root automatically before it expires, when Sentry holds the root key.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value_t = true, default_missing_value = "true", value_parser = go_bool)]
    pub auto_rotate_root: bool,
    /// Wait between publishing a new root and signing with its issuer (default: workloadCertTTL +
    /// allowedClockSkew, so every live client has fetched the new anchors).
    #[arg(long, value_parser = duration_arg)]
    pub root_rotation_grace: Option<Duration>,
    /// How often a bundle directory (standalone mode) is checked for changes.
    #[arg(long, default_value = "1s", value_parser = duration_arg)]
    pub bundle_check_interval: Duration,
    /// Kubernetes mode: how often the trust-bundle Secret is re-read without a change seen on its
    /// volume or watch (a safety net; renewals and rotations run on their own timers).
    #[arg(long, default_value = "5m", value_parser = duration_arg)]
    pub bundle_resync_interval: Duration,
    /// JWT-SVID and OIDC discovery flags.
    #[command(flatten)]
    pub jwt: JwtFlags,
    /// HTTP/2 stream bounds.
    #[command(flatten)]
    pub streams: super::limits::StreamFlags,
    /// Open gRPC connections at most (beyond Dapr); also capped by the file-descriptor limit.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// SignCertificate requests admitted at once; more are refused with RESOURCE_EXHAUSTED
    /// (beyond Dapr).
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight_requests: usize,
    /// Concurrent requests on one HTTP/2 connection (beyond Dapr).
    #[arg(long, default_value_t = 128)]
    pub max_streams_per_connection: u32,
    /// Requests per second allowed from one source IP; 0 = no limit (beyond Dapr).
    #[arg(long, default_value_t = 0.0)]
    pub peer_rate_limit: f64,
    /// Requests one source IP may send back to back (default: the rate, at least 1).
    #[arg(long)]
    pub peer_rate_burst: Option<u32>,
    /// Time a client has from connecting to finishing the TLS handshake (beyond Dapr).
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    pub tls_handshake_timeout: Duration,
    /// Time an established gRPC connection may stay silent before it is closed (beyond Dapr).
    #[arg(long, default_value = "60s", value_parser = duration_arg)]
    pub connection_idle_timeout: Duration,
    /// Arguments that are not flags. Dapr's flag parser leaves them unused, so they are ignored
    /// with a warning: the `false` of `--enable-metrics false` (a boolean flag takes a value only
    /// as `--flag=value`, so this form enables metrics, as in Dapr).
    #[arg(hide = true)]
    pub ignored_args: Vec<String>,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_go_duration(s)
}

fn fraction_arg(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a fraction between 0 and 1")),
    }
}

/// Rewrites Go-style single-dash long flags (`-port`) to clap's double-dash form.
pub fn normalize_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, arg)| {
            let single_dash_long = i > 0
                && arg.len() > 2
                && arg.starts_with('-')
                && !arg.starts_with("--")
                && arg.as_bytes()[1].is_ascii_alphabetic();
            if single_dash_long {
                format!("-{arg}")
            } else {
                arg
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Flags {
        let mut all = vec!["sentry".to_owned()];
        all.extend(args.iter().map(|a| a.to_string()));
        Flags::try_parse_from(normalize_args(all)).unwrap()
    }

    #[test]
    fn single_dash_flags() {
        let args = normalize_args(
            [
                "sentry",
                "-port",
                "7",
                "--healthz-port=8",
                "-log-as-json",
                "-v",
            ]
            .map(String::from),
        );
        assert_eq!(
            args,
            [
                "sentry",
                "--port",
                "7",
                "--healthz-port=8",
                "--log-as-json",
                "-v"
            ]
        );
        let flags = Flags::try_parse_from(&args[..5]).unwrap();
        assert_eq!(flags.port, 7);
        assert_eq!(flags.healthz_port, 8);
        assert!(flags.log_as_json);
        assert!(flags.enable_metrics);
    }

    const TRUE: [&str; 6] = ["1", "t", "T", "TRUE", "true", "True"];
    const FALSE: [&str; 6] = ["0", "f", "F", "FALSE", "false", "False"];

    #[test]
    fn every_bool_flag_takes_go_parse_bool_spellings_after_equals() {
        type Get = fn(&Flags) -> bool;
        let flags: [(&str, Get); 6] = [
            ("log-as-json", |f| f.log_as_json),
            ("enable-metrics", |f| f.enable_metrics),
            ("auto-rotate-root", |f| f.auto_rotate_root),
            ("jwt-enabled", |f| f.jwt.jwt_enabled),
            ("oidc-enabled", |f| f.jwt.oidc_enabled),
            ("oidc-server-tls-enabled", |f| f.jwt.oidc_server_tls_enabled),
        ];
        for (name, get) in flags {
            for dashes in ["-", "--"] {
                for v in TRUE {
                    assert!(get(&parse(&[&format!("{dashes}{name}={v}")])), "{name}={v}");
                }
                for v in FALSE {
                    assert!(
                        !get(&parse(&[&format!("{dashes}{name}={v}")])),
                        "{name}={v}"
                    );
                }
                assert!(get(&parse(&[&format!("{dashes}{name}")])), "bare {name}");
            }
            for bad in ["yes", "on", "tRUE", "2", ""] {
                let arg = format!("--{name}={bad}");
                let err = Flags::try_parse_from(["sentry", &arg]).unwrap_err();
                assert!(err.to_string().contains("accepted: 1 t T"), "{arg}: {err}");
            }
        }
    }

    #[test]
    fn a_bool_flag_takes_no_separate_value_as_in_go() {
        // Go's flag parsing: `--enable-metrics false` enables metrics and leaves `false` unused.
        let flags = parse(&["--enable-metrics", "false", "--metrics-port", "9"]);
        assert!(flags.enable_metrics);
        assert_eq!(flags.metrics_port, 9);
        assert_eq!(flags.ignored_args, ["false"]);
        let flags = parse(&["--log-as-json", "--log-level", "debug"]);
        assert!(flags.log_as_json);
        assert_eq!(flags.log_level, LogLevel::Debug);
        assert!(flags.ignored_args.is_empty());
        // Helm's chart form: `--enable-metrics=false`.
        assert!(!parse(&["--enable-metrics=false"]).enable_metrics);
    }

    #[test]
    fn log_level_in_any_case() {
        for (v, want) in [
            ("debug", LogLevel::Debug),
            ("Debug", LogLevel::Debug),
            ("DEBUG", LogLevel::Debug),
            ("info", LogLevel::Info),
            ("INFO", LogLevel::Info),
            ("Info", LogLevel::Info),
            ("warn", LogLevel::Warn),
            ("WARN", LogLevel::Warn),
            ("error", LogLevel::Error),
            ("Error", LogLevel::Error),
            ("fatal", LogLevel::Fatal),
            ("FATAL", LogLevel::Fatal),
        ] {
            assert_eq!(parse(&["--log-level", v]).log_level, want, "{v}");
            assert_eq!(parse(&[&format!("-log-level={v}")]).log_level, want, "{v}");
        }
        assert!(Flags::try_parse_from(["sentry", "--log-level", "verbose"]).is_err());
    }
}
