//! Wiring of the JWT features: the JWT part of the bundle (loaded or generated, in files or in the
//! Kubernetes Secret/ConfigMap, see [`JwtStore`]), the JWT-SVID issuer, the OIDC discovery server
//! and the `jwks` validator (whose readiness `Validators` reports). The OIDC server, when not
//! configured, is reported ready at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::config::{Config, JwtConfig, OidcConfig};
use sentry_core::bundle::jwt::{generate_jwt, JwtBundle};
use sentry_core::ca::jwt::{JwtIssuer, JwtSettings};
use sentry_runtime::server::oidc::OidcSite;
use sentry_runtime::server::oidc_listener;
use sentry_runtime::store::jwt::{JwtStore, JwtStoreError};
use sentry_runtime::store::{rbac, Store, StoreError};
use sentry_runtime::telemetry::health::Condition;
use sentry_runtime::telemetry::Metrics;
use sentry_runtime::validator::jwks::JwksValidator;

/// How often the OIDC server looks for its TLS files when they are not there yet (Dapr: 5 s).
const TLS_FILE_POLL: Duration = Duration::from_secs(5);
/// Reads of the JWT part before giving up when other writers keep changing the store.
const MAX_ATTEMPTS: usize = 20;

/// The readiness conditions the JWT features report on.
pub(super) struct Ready {
    /// The OIDC listener is up (or OIDC is not enabled).
    pub oidc: Condition,
}

/// The started JWT features, to be plugged into the request path.
pub(super) struct JwtParts {
    /// Issues JWT-SVIDs, when `--jwt-enabled`.
    pub issuer: Option<Arc<JwtIssuer>>,
    /// The `jwks` validator, when configured.
    pub jwks: Option<JwksValidator>,
}

/// The store of the JWT part beside the bundle `store`, when `--jwt-enabled`. Its stored pair is
/// read and verified here, before the CA writes anything, so that a partial or invalid pair stops
/// start-up with the store untouched.
pub(super) async fn checked_store(
    config: &Config,
    store: &Store,
) -> anyhow::Result<Option<JwtStore>> {
    let Some(jwt) = &config.jwt else {
        return Ok(None);
    };
    let jwt_store = JwtStore::beside(store, &jwt.key_path, &jwt.jwks_path);
    jwt_store
        .load(&jwt.key)
        .await
        .context("error creating CA: failed to get JWT credentials")?;
    Ok(Some(jwt_store))
}

/// Loads or generates the JWT key and JWKS (in `store`, from [`checked_store`]), starts the OIDC
/// server and the `jwks` validator.
pub(super) async fn start(
    config: &Config,
    store: Option<&JwtStore>,
    metrics: &Metrics,
    ready: Ready,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<JwtParts> {
    let bundle = match (&config.jwt, store) {
        (Some(jwt), Some(store)) => load_or_generate(store, jwt, metrics)
            .await
            .context("error creating CA")?,
        _ => None,
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
            start_oidc(oidc, b, issuer, ready.oidc, shutdown).await?;
        }
        (Some(_), None) => {
            warn!("--oidc-enabled has no effect without --jwt-enabled; the OIDC server is not started");
            ready.oidc.met();
        }
        (None, _) => ready.oidc.met(),
    }
    let jwks = match &config.validators.jwks {
        Some(opts) => {
            info!("Adding validator 'jwks'");
            Some(JwksValidator::start(opts, &config.sentry_id)?)
        }
        None => None,
    };
    Ok(JwtParts { issuer, jwks })
}

/// Loads the stored pair (publishing its JWKS), or generates one and stores it with
/// compare-and-swap: a replica that loses the race re-reads and uses the winner's pair. `None`
/// (logged once) when RBAC refuses to store a generated pair: the JWT features are off.
async fn load_or_generate(
    store: &JwtStore,
    config: &JwtConfig,
    metrics: &Metrics,
) -> anyhow::Result<Option<JwtBundle>> {
    let mut generated = false;
    for _ in 0..MAX_ATTEMPTS {
        let snap = store
            .load(&config.key)
            .await
            .context("failed to get JWT credentials")?;
        let outcome = match snap.bundle {
            Some(bundle) => match store.publish(&bundle).await {
                Err(JwtStoreError::Store(e)) if rbac::refused_publish(&e) => Ok(Some(bundle)),
                other => other.map(|()| Some(bundle)),
            },
            None => {
                info!(algorithm = %config.key.algorithm, "JWT signing key not found: generating a new key and JWKS");
                let bundle = generate_jwt(&config.key)?;
                store.save(&snap, &bundle).await.map(|()| None)
            }
        };
        match outcome {
            Ok(Some(bundle)) => {
                if generated {
                    metrics.issuercert_changed.inc();
                } else {
                    info!("JWT signing key and JWKS found: using credentials from store");
                }
                return Ok(Some(bundle));
            }
            // Stored: read it back (and publish it) on the next round.
            Ok(None) => generated = true,
            Err(e) if e.is_conflict() => {
                info!(
                    "JWT credentials changed concurrently (another replica?); reading them again"
                );
            }
            Err(JwtStoreError::Store(StoreError::Forbidden { verb, resource, .. })) => {
                rbac::report_refused(
                    verb,
                    &resource,
                    "JWT-SVID issuance and OIDC discovery (a generated JWT key cannot be stored)",
                );
                return Ok(None);
            }
            Err(e) => return Err(e).context("failed to store JWT credentials"),
        }
    }
    anyhow::bail!("the JWT credentials kept changing concurrently; giving up")
}

async fn start_oidc(
    oidc: &OidcConfig,
    bundle: &JwtBundle,
    issuer: Option<String>,
    ready: Condition,
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
        ready.met();
        oidc_listener::serve(listener, router, tls, shutdown).await;
    });
    Ok(())
}
