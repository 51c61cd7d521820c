//! Wiring of the JWT features: the JWT part of the bundle (loaded or generated), the JWT-SVID
//! issuer, the OIDC discovery server and the `jwks` validator. Each part left unconfigured is
//! reported ready at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::bundle::jwt::{generate_jwt, JwtBundle};
use crate::ca::jwt::{JwtIssuer, JwtSettings};
use crate::config::{Config, JwtConfig, OidcConfig};
use crate::server::oidc::OidcSite;
use crate::server::oidc_listener;
use crate::store::jwt_file::JwtFileStore;
use crate::telemetry::health::Target;
use crate::telemetry::{Metrics, Readiness};
use crate::validator::jwks::JwksValidator;

/// How often the OIDC server looks for its TLS files when they are not there yet (Dapr: 5 s).
const TLS_FILE_POLL: Duration = Duration::from_secs(5);

/// The started JWT features, to be plugged into the request path.
pub(super) struct JwtParts {
    /// Issues JWT-SVIDs, when `--jwt-enabled`.
    pub issuer: Option<Arc<JwtIssuer>>,
    /// The `jwks` validator, when configured.
    pub jwks: Option<JwksValidator>,
}

/// Loads or generates the JWT key and JWKS, starts the OIDC server and the `jwks` validator.
pub(super) async fn start(
    config: &Config,
    metrics: &Metrics,
    readiness: &Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<JwtParts> {
    let bundle = match &config.jwt {
        Some(jwt) => Some(load_or_generate(jwt, metrics).context("error creating CA")?),
        None => None,
    };
    let issuer = match (&config.jwt, &bundle) {
        (Some(jwt), Some(b)) => {
            info!(algorithm = %b.algorithm, kid = %b.kid, "JWT-SVID issuance enabled");
            Some(Arc::new(JwtIssuer::new(
                b,
                JwtSettings {
                    issuer: jwt.issuer.clone(),
                    ttl: jwt.ttl,
                    allowed_clock_skew: config.allowed_clock_skew,
                },
            )))
        }
        _ => None,
    };
    match (&config.oidc, &bundle) {
        (Some(oidc), Some(b)) => {
            let issuer = config.jwt.as_ref().and_then(|j| j.issuer.clone());
            start_oidc(oidc, b, issuer, readiness.clone(), shutdown).await?;
        }
        (Some(_), None) => {
            warn!("--oidc-enabled has no effect without --jwt-enabled; the OIDC server is not started");
            readiness.set_ready(Target::OidcServer);
        }
        (None, _) => readiness.set_ready(Target::OidcServer),
    }
    let jwks = match &config.validators.jwks {
        Some(opts) => {
            info!("Adding validator 'jwks'");
            Some(JwksValidator::start(
                opts,
                &config.sentry_id,
                readiness.clone(),
            )?)
        }
        None => {
            readiness.set_ready(Target::JwksValidator);
            None
        }
    };
    Ok(JwtParts { issuer, jwks })
}

fn load_or_generate(config: &JwtConfig, metrics: &Metrics) -> anyhow::Result<JwtBundle> {
    let store = JwtFileStore::new(config.key_path.clone(), config.jwks_path.clone());
    if let Some(bundle) = store
        .load(&config.key)
        .context("failed to get JWT credentials")?
    {
        info!("JWT signing key and JWKS found: using credentials from store");
        return Ok(bundle);
    }
    info!(algorithm = %config.key.algorithm, "JWT signing key not found: generating a new key and JWKS");
    let bundle = generate_jwt(&config.key)?;
    store
        .save(&bundle)
        .context("failed to store JWT credentials")?;
    metrics.issuercert_changed.inc();
    Ok(bundle)
}

async fn start_oidc(
    oidc: &OidcConfig,
    bundle: &JwtBundle,
    issuer: Option<String>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = oidc.listen.to_bind_string();
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("OIDC server: listening on {addr}"))?;
    let jwks = Bytes::from(bundle.jwks.to_json());
    let router = OidcSite::new(oidc, jwks, bundle.algorithm.name(), issuer).router();
    let local = listener.local_addr()?;
    let tls_files = oidc.tls.clone();
    // TLS files present at start are loaded now, so that a bad file stops start-up.
    let tls_now = match &tls_files {
        Some(files) if oidc_listener::tls_files_present(files) => {
            Some(oidc_listener::load_tls(files)?)
        }
        _ => None,
    };
    tokio::spawn(async move {
        let tls = match (tls_now, tls_files) {
            (Some(acceptor), _) => Some(acceptor),
            (None, None) => None,
            (None, Some(files)) => {
                warn!(cert = %files.cert.display(), key = %files.key.display(), "Waiting for the OIDC server's TLS files");
                while !oidc_listener::tls_files_present(&files) {
                    tokio::time::sleep(TLS_FILE_POLL).await;
                }
                match oidc_listener::load_tls(&files) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        error!(error = %e, "OIDC server not started");
                        return;
                    }
                }
            }
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        info!(addr = %local, scheme, "OIDC discovery server is listening");
        readiness.set_ready(Target::OidcServer);
        oidc_listener::serve(listener, router, tls, shutdown).await;
    });
    Ok(())
}
